//! File routes: `{mac}.cfg`-style patterns compiled to regexes, and safe relative paths.

use std::path::PathBuf;

use regex::Regex;

use crate::model::Mac;

/// Longest request path considered; phones ask for short names.
pub const MAX_PATH_LEN: usize = 255;

/// Compiles a route pattern: literal text, `{mac}`, `{MAC}` and `*`.
pub(super) fn compile(pattern: &str) -> Result<(Regex, bool), String> {
    if pattern.is_empty() || pattern.starts_with('/') {
        return Err("must be a relative path without a leading /".into());
    }
    let mut re = String::from("^");
    let mut rest = pattern;
    let mut has_mac = false;
    while !rest.is_empty() {
        if let Some(tail) = rest.strip_prefix("{mac}") {
            if has_mac {
                return Err("{mac} or {MAC} may appear once".into());
            }
            re.push_str("(?P<mac>[0-9a-f]{12})");
            has_mac = true;
            rest = tail;
        } else if let Some(tail) = rest.strip_prefix("{MAC}") {
            if has_mac {
                return Err("{mac} or {MAC} may appear once".into());
            }
            re.push_str("(?P<mac>[0-9A-F]{12})");
            has_mac = true;
            rest = tail;
        } else if let Some(tail) = rest.strip_prefix('*') {
            re.push_str("[^/]*");
            rest = tail;
        } else if rest.starts_with('{') || rest.starts_with('}') {
            return Err(format!(
                "unknown placeholder in {pattern:?}: only {{mac}} and {{MAC}} exist"
            ));
        } else {
            let ch = rest.chars().next().unwrap_or_default();
            re.push_str(&regex::escape(&ch.to_string()));
            rest = &rest[ch.len_utf8()..];
        }
    }
    re.push('$');
    Regex::new(&re)
        .map(|r| (r, has_mac))
        .map_err(|e| e.to_string())
}

/// Matches a compiled route; returns whether it matched and the MAC it carried.
pub(super) fn matches(regex: &Regex, path: &str) -> Option<Option<Mac>> {
    let caps = regex.captures(path)?;
    Some(caps.name("mac").and_then(|m| m.as_str().parse().ok()))
}

/// `path` as a relative path of plain components, or `None` when it could leave its root
/// (`..`, absolute, NUL, backslash, empty or hidden components) or is too long.
pub fn safe_relative(path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.len() > MAX_PATH_LEN || path.contains(['\0', '\\']) {
        return None;
    }
    // Split by hand: Path::components() silently drops `.` segments, and a path that needs
    // normalising is not one a phone sends.
    let mut out = PathBuf::new();
    for part in path.split('/') {
        if part.is_empty() || part.starts_with('.') {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

/// Content type from a file name's extension.
pub(super) fn content_type_for(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("xml") => "application/xml",
        Some("cfg" | "txt" | "htm" | "conf" | "ini") => "text/plain",
        Some("html") => "text/html",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let (re, has_mac) = compile("{mac}.cfg").unwrap();
        assert!(has_mac);
        assert_eq!(
            matches(&re, "001565aabbcc.cfg"),
            Some(Some("00:15:65:aa:bb:cc".parse().unwrap()))
        );
        assert_eq!(matches(&re, "001565AABBCC.cfg"), None);
        assert_eq!(matches(&re, "x001565aabbcc.cfg"), None);
        assert_eq!(matches(&re, "001565aabbcc.cfgx"), None);
        let (re, _) = compile("SEP{MAC}.cnf.xml").unwrap();
        assert!(matches(&re, "SEP001565AABBCC.cnf.xml").is_some());
        assert!(
            matches(&re, "SEP001565AABBCCxcnf.xml").is_none(),
            "dots are literal"
        );
        let (re, has_mac) = compile("fw/*.rom").unwrap();
        assert!(!has_mac);
        assert_eq!(matches(&re, "fw/T54W-96.rom"), Some(None));
        assert_eq!(
            matches(&re, "fw/a/b.rom"),
            None,
            "* stays within a directory"
        );
        assert!(compile("{mac}{MAC}").is_err());
        assert!(compile("{serial}.cfg").is_err());
        assert!(compile("/abs.cfg").is_err());
        assert!(compile("").is_err());
    }

    #[test]
    fn safe_paths() {
        for ok in ["a.cfg", "fw/T54W.rom", "a/b/c"] {
            assert!(safe_relative(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            ".hidden",
            "a/.git/config",
            "a\\b",
            "a\0b",
            "a//b",
            "a/",
            &"a".repeat(300),
        ] {
            assert!(safe_relative(bad).is_none(), "{bad:?}");
        }
    }
}
