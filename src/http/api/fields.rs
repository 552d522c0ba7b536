//! Rules shared by the objects that clients write: bounds on strings, lists and JSON trees, and
//! the types of the read-only fields that clients may send back. Each bound is a named
//! constant so that errors, docs/architecture.md and api.yml cite the same number.

use std::collections::BTreeMap;
use std::io;

use serde_json::{Map, Value};

use super::ApiError;
use crate::model;

/// Characters in each string field of a device (`mac`, `vendor`, `description`, …).
pub const MAX_DEVICE_TEXT_CHARS: usize = 256;

/// Characters in a config's `role`.
pub const MAX_ROLE_CHARS: usize = 64;

/// Characters in a tenant's name and in a token's description.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

/// Bounds of a token's ACL, whose rules are `manage::tokens`'.
pub use crate::manage::tokens::{MAX_ACLS, MAX_ACL_CHARS};

/// Nesting levels of a raw config or of an extra key's value, the outer object or array being
/// level 1: merging and rendering walk these trees recursively.
pub const MAX_JSON_DEPTH: usize = 32;

/// Bytes of a raw config written as compact JSON: it is merged into the context of every file
/// that a phone fetches.
pub const MAX_RAW_CONFIG_BYTES: usize = 256 * 1024;

/// Extra top-level keys of one device or config: keys that provisiond keeps for its clients
/// (wazo-confd's `displayname`, `registrar_main`, `X_type`, …) without interpreting them. Their
/// total size is bounded by `[api] max_body_bytes`; the count bounds what every listing of the
/// object copies.
pub const MAX_EXTRA_KEYS: usize = 64;

/// Characters in the name of an extra key.
pub const MAX_EXTRA_KEY_CHARS: usize = 128;

/// Characters in a URL parameter of `/configure` (`plugin_server`, `http_proxy`).
pub const MAX_URL_CHARS: usize = 2048;

/// The JSON type that a read-only field must have when a client sends it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnly {
    /// `true`, `false` or `null`.
    Bool,
    /// A string or `null`.
    Text,
    /// An object or `null`.
    Object,
}

/// Refuses a read-only field of `object` that has the wrong type; a well-typed one is ignored
/// (clients send back what they read).
pub fn check_read_only(
    object: &Map<String, Value>,
    fields: &[(&str, ReadOnly)],
) -> Result<(), ApiError> {
    for (name, kind) in fields {
        let ok = matches!(
            (object.get(*name), kind),
            (None | Some(Value::Null), _)
                | (Some(Value::Bool(_)), ReadOnly::Bool)
                | (Some(Value::String(_)), ReadOnly::Text)
                | (Some(Value::Object(_)), ReadOnly::Object)
        );
        if !ok {
            let wanted = match kind {
                ReadOnly::Bool => "a boolean",
                ReadOnly::Text => "a string",
                ReadOnly::Object => "an object",
            };
            return Err(ApiError::field(
                *name,
                format!("read-only; when sent it must be {wanted} or null"),
            ));
        }
    }
    Ok(())
}

/// The `id` of a written device or config, if it has one. It is checked on update too,
/// where the id in the path wins, so that a malformed one is never silently ignored.
pub fn body_id(object: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match object.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => {
            model::validate_id(id).map_err(|e| ApiError::field("id", e.to_string()))?;
            Ok(Some(id.clone()))
        }
        Some(_) => Err(ApiError::field("id", "must be a string")),
    }
}

/// The keys of a written `object` (the `device` or `config` of the envelope named `what`) that
/// provisiond does not interpret (neither in `interpreted` nor read-only), kept as sent. At
/// most [`MAX_EXTRA_KEYS`] of them, each name 1 to [`MAX_EXTRA_KEY_CHARS`] characters without
/// control characters, each value nested at most [`MAX_JSON_DEPTH`] levels.
pub fn extras(
    object: &Map<String, Value>,
    what: &str,
    interpreted: &[&str],
    read_only: &[(&str, ReadOnly)],
) -> Result<BTreeMap<String, Value>, ApiError> {
    let mut kept = BTreeMap::new();
    for (key, value) in object {
        if interpreted.contains(&key.as_str()) || read_only.iter().any(|(name, _)| name == key) {
            continue;
        }
        if key.is_empty()
            || key.chars().count() > MAX_EXTRA_KEY_CHARS
            || key.chars().any(char::is_control)
        {
            let shown: String = key.chars().take(MAX_EXTRA_KEY_CHARS).collect();
            return Err(ApiError::field(
                shown,
                format!(
                    "a key name has 1 to {MAX_EXTRA_KEY_CHARS} characters, no control characters"
                ),
            ));
        }
        check_depth(key, value)?;
        if kept.len() == MAX_EXTRA_KEYS {
            return Err(ApiError::field(
                what,
                format!("more than {MAX_EXTRA_KEYS} keys that provisiond does not interpret"),
            ));
        }
        kept.insert(key.clone(), value.clone());
    }
    Ok(kept)
}

/// Refuses a string over `max` characters or with a control character.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            format!("at most {max} characters, no control characters"),
        ));
    }
    Ok(())
}

/// Refuses a tree nested deeper than [`MAX_JSON_DEPTH`].
pub fn check_depth(field: &str, value: &Value) -> Result<(), ApiError> {
    if deeper_than(value, MAX_JSON_DEPTH) {
        return Err(ApiError::field(
            field,
            format!("nested deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    Ok(())
}

/// Refuses a raw config nested deeper than [`MAX_JSON_DEPTH`] or larger than
/// [`MAX_RAW_CONFIG_BYTES`].
pub fn check_raw_config(raw: &Map<String, Value>) -> Result<(), ApiError> {
    for (key, value) in raw {
        // The raw config itself is level 1.
        if deeper_than(value, MAX_JSON_DEPTH - 1) {
            return Err(ApiError::field(
                format!("raw_config.{key}"),
                format!("nested deeper than {MAX_JSON_DEPTH} levels (counting raw_config)"),
            ));
        }
    }
    let mut size = ByteCount(0);
    // Writing into a counter fails only if the counter did, and it never does.
    let _ = serde_json::to_writer(&mut size, raw);
    if size.0 > MAX_RAW_CONFIG_BYTES {
        return Err(ApiError::field(
            "raw_config",
            format!(
                "{} bytes as compact JSON, over the limit of {MAX_RAW_CONFIG_BYTES}",
                size.0
            ),
        ));
    }
    Ok(())
}

/// Whether `value` has more than `levels` levels of objects and arrays. The recursion is
/// bounded: serde_json refuses to parse trees deeper than 128.
fn deeper_than(value: &Value, levels: usize) -> bool {
    match value {
        Value::Object(map) => levels == 0 || map.values().any(|v| deeper_than(v, levels - 1)),
        Value::Array(items) => levels == 0 || items.iter().any(|v| deeper_than(v, levels - 1)),
        _ => false,
    }
}

/// Counts the bytes written into it, so that a size is measured without a copy.
struct ByteCount(usize);

impl io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        (1..levels).fold(json!({}), |inner, _| json!({ "k": inner }))
    }

    #[test]
    fn depth_counts_objects_and_arrays() {
        assert!(!deeper_than(&json!(1), 0));
        assert!(deeper_than(&json!({}), 0));
        assert!(!deeper_than(&json!([]), 1));
        assert!(!deeper_than(&json!({"a": [1, {"b": 2}]}), 3));
        assert!(deeper_than(&json!({"a": [1, {"b": {}}]}), 3));
        assert!(!deeper_than(&nested(32), 32));
        assert!(deeper_than(&nested(33), 32));
    }
}
