//! Rollouts (seed 004's "Rollout of many phones"): one 7-day code per user of a list, for one
//! provisioning category; each entry goes Pending → Registered when its code is used, or
//! Expired. Exported as CSV for the people who hand the codes out.

use super::codes::{check_config, check_label, draw, provisioning_category};
use super::{ManageError, Result, Scope};
use crate::model::{Code, EntryState, Rollout, RolloutEntry, UnixTime, ROLLOUT_TTL_SECS};
use crate::store::{Store, StoreError};

/// Entries of one rollout (each is a live code until used or expired).
pub const MAX_ENTRIES: usize = 10_000;

/// Attempts at drawing a batch whose codes are all free.
const MAX_DRAWS: usize = 8;

/// One user of a new rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEntry {
    /// Free text, the user's name.
    pub label: Option<String>,
    /// Config the user's phone receives.
    pub config: Option<String>,
}

fn not_found(id: &str) -> ManageError {
    ManageError::NotFound(format!("no rollout {id:?}"))
}

/// Creates a rollout of one code per entry for the provisioning category `category` (id or
/// name) of the caller.
pub fn create(
    store: &Store,
    scope: &Scope,
    category: &str,
    entries: Vec<NewEntry>,
    now: UnixTime,
) -> Result<Rollout> {
    let category = provisioning_category(store, scope, category)?;
    if entries.is_empty() || entries.len() > MAX_ENTRIES {
        return Err(ManageError::field(
            "entries",
            format!("1 to {MAX_ENTRIES} entries"),
        ));
    }
    for (n, entry) in entries.iter().enumerate() {
        if let Some(label) = &entry.label {
            check_label(&format!("entries.{n}.label"), label)?;
        }
        if let Some(config) = &entry.config {
            check_config(store, scope, &category, config).map_err(|e| match e {
                ManageError::Field { message, .. } => {
                    ManageError::field(format!("entries.{n}.config"), message)
                }
                e => e,
            })?;
        }
    }
    let expires = now + ROLLOUT_TTL_SECS;
    for _ in 0..MAX_DRAWS {
        let mut drawn = std::collections::HashSet::with_capacity(entries.len());
        while drawn.len() < entries.len() {
            drawn.insert(draw()?);
        }
        let rollout = Rollout {
            id: crate::model::new_id(),
            tenant: category.tenant.clone(),
            category: category.id.clone(),
            created: now,
            expires,
            entries: entries
                .iter()
                .zip(drawn)
                .map(|(e, code)| RolloutEntry {
                    code,
                    label: e.label.clone(),
                    config: e.config.clone(),
                    state: EntryState::Pending,
                    device: None,
                    device_mac: None,
                    registered_at: None,
                })
                .collect(),
            revision: 0,
        };
        let codes: Vec<Code> = rollout
            .entries
            .iter()
            .map(|e| Code {
                code: e.code.clone(),
                tenant: rollout.tenant.clone(),
                category: rollout.category.clone(),
                config: e.config.clone(),
                label: e.label.clone(),
                rollout: Some(rollout.id.clone()),
                created: now,
                expires,
            })
            .collect();
        match store.create_rollout(&rollout, &codes) {
            Ok(created) => {
                tracing::info!(rollout = %created.id, tenant = %created.tenant, category = %category.name, codes = created.entries.len(), "rollout created");
                return Ok(created);
            }
            Err(StoreError::AlreadyExists { kind: "code", .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ManageError::Internal(
        "no free batch of provisioning codes found; too many live codes".into(),
    ))
}

/// The rollout `id` of the caller's subtree.
pub fn get(store: &Store, scope: &Scope, id: &str) -> Result<Rollout> {
    match store.rollout(id)? {
        Some(r) if scope.reaches(&r.tenant) => Ok(r),
        _ => Err(not_found(id)),
    }
}

/// The rollouts of the acting tenant (or its subtree), newest first.
pub fn list(store: &Store, scope: &Scope, recurse: bool) -> Result<Vec<Rollout>> {
    let mut found: Vec<Rollout> = store
        .rollouts()?
        .into_iter()
        .filter(|r| scope.lists(&r.tenant, recurse))
        .collect();
    found.sort_by(|a, b| (b.created, &b.id).cmp(&(a.created, &a.id)));
    Ok(found)
}

/// Deletes the rollout `id` and its codes still live.
pub fn delete(store: &Store, scope: &Scope, id: &str) -> Result<Rollout> {
    get(store, scope, id)?;
    let gone = store.delete_rollout(id)?;
    tracing::info!(rollout = %id, tenant = %gone.tenant, "rollout deleted with its live codes");
    Ok(gone)
}

/// Reads the entries of a rollout from CSV: a header naming `label` and optionally `config`
/// (any order, other columns ignored), or no header and `label[,config]` per line.
pub fn parse_csv(text: &str) -> Result<Vec<NewEntry>> {
    let bad = |line: usize, what: String| ManageError::field("csv", format!("line {line}: {what}"));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut entries = Vec::new();
    let mut columns = (0usize, Some(1usize));
    let mut first = true;
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            bad(line, e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        if first {
            first = false;
            let names: Vec<String> = record.iter().map(|f| f.to_ascii_lowercase()).collect();
            if let Some(label) = names.iter().position(|n| n == "label") {
                columns = (label, names.iter().position(|n| n == "config"));
                continue;
            }
        }
        if record.iter().all(str::is_empty) {
            continue;
        }
        if entries.len() >= MAX_ENTRIES {
            return Err(bad(line, format!("more than {MAX_ENTRIES} entries")));
        }
        let field = |i: Option<usize>| {
            i.and_then(|i| record.get(i))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        entries.push(NewEntry {
            label: field(Some(columns.0)),
            config: field(columns.1),
        });
    }
    Ok(entries)
}

/// A cell that a spreadsheet will not run as a formula (OWASP's CSV injection advice: a
/// leading `=`, `+`, `-`, `@`, tab or carriage return gets a `'`).
fn inert(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

/// The rollout as CSV (RFC 4180): `code,label,category,state,device_mac,registered_at`, one
/// line per entry, states as of `now`, times in RFC 3339 UTC.
pub fn to_csv(rollout: &Rollout, category_name: &str, now: UnixTime) -> Result<String> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let io = |e: csv::Error| ManageError::Internal(format!("CSV: {e}"));
    writer
        .write_record([
            "code",
            "label",
            "category",
            "state",
            "device_mac",
            "registered_at",
        ])
        .map_err(io)?;
    for entry in &rollout.entries {
        let state = match rollout.state_at(entry, now) {
            EntryState::Pending => "pending",
            EntryState::Registered => "registered",
            EntryState::Expired => "expired",
            EntryState::Revoked => "revoked",
        };
        writer
            .write_record([
                entry.code.clone(),
                inert(entry.label.as_deref().unwrap_or("")),
                inert(category_name),
                state.to_owned(),
                entry.device_mac.map(|m| m.to_string()).unwrap_or_default(),
                entry.registered_at.map(rfc3339).unwrap_or_default(),
            ])
            .map_err(io)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| ManageError::Internal(format!("CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| ManageError::Internal(format!("CSV: {e}")))
}

/// A Unix time as RFC 3339 UTC, seconds precision.
pub fn rfc3339(t: UnixTime) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_entries_with_or_without_a_header() {
        let with = parse_csv("Config,Label,Room\r\nline-1,\"Doe, Jane\",12\n,Bob,\n\n").unwrap();
        assert_eq!(
            with,
            vec![
                NewEntry {
                    label: Some("Doe, Jane".into()),
                    config: Some("line-1".into())
                },
                NewEntry {
                    label: Some("Bob".into()),
                    config: None
                },
            ]
        );
        let without = parse_csv("Alice,cfg-a\nBob\n").unwrap();
        assert_eq!(without.len(), 2);
        assert_eq!(without[1].config, None);
    }

    #[test]
    fn formula_cells_are_made_inert() {
        assert_eq!(inert("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(inert("-2+3"), "'-2+3");
        assert_eq!(inert("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(inert("Jane"), "Jane");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
