//! Operations in progress (wazo-provd's OIP): long work started by one request and followed
//! by the client through a status resource, `[label|]state[;current[/end]](sub)*` (wazo-provd's
//! REST documentation, "Operation In Progress"). Plugin installs, index updates and package
//! downloads are such operations.
//!
//! The registry lives in memory: an operation is only meaningful to the client that started
//! it, while the daemon that runs it is up. Clients delete their operations; the oldest
//! finished ones are dropped beyond [`MAX_OIPS`], never one that is still running.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Operations kept at most.
pub const MAX_OIPS: usize = 1024;

/// The state of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OipState {
    /// Not started.
    Waiting,
    /// Running.
    Progress,
    /// Done.
    Success,
    /// Failed; the registry keeps the reason.
    Fail,
}

impl OipState {
    /// The word of the status format.
    pub fn as_str(self) -> &'static str {
        match self {
            OipState::Waiting => "waiting",
            OipState::Progress => "progress",
            OipState::Success => "success",
            OipState::Fail => "fail",
        }
    }

    fn finished(self) -> bool {
        matches!(self, OipState::Success | OipState::Fail)
    }
}

/// A snapshot of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oip {
    /// What runs (`download`, `install`…), when named.
    pub label: Option<String>,
    /// Its state.
    pub state: OipState,
    /// Units done (bytes, files), when counted.
    pub current: Option<u64>,
    /// Units in all, when known.
    pub end: Option<u64>,
    /// Why it failed, for the log and the CLI (not part of wazo-provd's status format).
    pub error: Option<String>,
    /// Steps below it, in order.
    pub subs: Vec<Oip>,
}

impl Oip {
    fn new(label: Option<&str>) -> Oip {
        Oip {
            label: label.map(str::to_owned),
            state: OipState::Waiting,
            current: None,
            end: None,
            error: None,
            subs: Vec::new(),
        }
    }

    /// The status string: `[label|]state[;current[/end]]` then each sub-operation's status
    /// in parentheses.
    pub fn status(&self) -> String {
        let mut out = String::new();
        if let Some(label) = &self.label {
            out.push_str(label);
            out.push('|');
        }
        out.push_str(self.state.as_str());
        if let Some(current) = self.current {
            out.push_str(&format!(";{current}"));
            if let Some(end) = self.end {
                out.push_str(&format!("/{end}"));
            }
        }
        for sub in &self.subs {
            out.push('(');
            out.push_str(&sub.status());
            out.push(')');
        }
        out
    }
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    oips: BTreeMap<u64, Oip>,
}

/// The registry of operations, shared by the API and the tasks that run them.
#[derive(Debug, Clone, Default)]
pub struct Oips {
    inner: Arc<Mutex<Inner>>,
}

impl Oips {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new operation, waiting, and returns the handle its task updates.
    pub fn start(&self, label: Option<&str>) -> OipHandle {
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        inner.oips.insert(id, Oip::new(label));
        while inner.oips.len() > MAX_OIPS {
            let oldest_done = inner
                .oips
                .iter()
                .find(|(_, oip)| oip.state.finished())
                .map(|(n, _)| *n);
            match oldest_done {
                Some(n) => inner.oips.remove(&n),
                None => break,
            };
        }
        OipHandle {
            id,
            oips: self.clone(),
        }
    }

    /// The operation `id`, if kept.
    pub fn get(&self, id: u64) -> Option<Oip> {
        self.lock().oips.get(&id).cloned()
    }

    /// Forgets the operation `id` (it runs on if it runs); false when it was not kept.
    pub fn delete(&self, id: u64) -> bool {
        self.lock().oips.remove(&id).is_some()
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Oip)) {
        if let Some(oip) = self.lock().oips.get_mut(&id) {
            change(oip);
        }
    }
}

/// What a running operation updates; it may outlive the registry's record (a client deleted
/// it), then updates go nowhere.
#[derive(Debug, Clone)]
pub struct OipHandle {
    id: u64,
    oips: Oips,
}

impl OipHandle {
    /// The operation's number, for its URL.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Running, with `current` of `end` units done.
    pub fn progress(&self, current: Option<u64>, end: Option<u64>) {
        self.oips.update(self.id, |oip| {
            oip.state = OipState::Progress;
            oip.current = current;
            oip.end = end;
        });
    }

    /// Sets the sub-operations (labels and states), replacing earlier ones.
    pub fn subs(&self, subs: Vec<Oip>) {
        self.oips.update(self.id, |oip| oip.subs = subs);
    }

    /// Finished well.
    pub fn succeed(&self) {
        self.oips
            .update(self.id, |oip| oip.state = OipState::Success);
    }

    /// Finished badly, for `reason`.
    pub fn fail(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.oips.update(self.id, |oip| {
            oip.state = OipState::Fail;
            oip.error = Some(reason);
        });
    }
}

/// A sub-operation for [`OipHandle::subs`].
pub fn sub(label: &str, state: OipState, current: Option<u64>, end: Option<u64>) -> Oip {
    Oip {
        label: Some(label.to_owned()),
        state,
        current,
        end,
        error: None,
        subs: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_strings_follow_wazo_provds_format() {
        let oips = Oips::default();
        let op = oips.start(Some("download"));
        assert_eq!(oips.get(op.id()).unwrap().status(), "download|waiting");
        op.progress(Some(10), None);
        assert_eq!(oips.get(op.id()).unwrap().status(), "download|progress;10");
        op.progress(Some(10), Some(100));
        op.subs(vec![
            sub("file_1", OipState::Progress, Some(20), Some(100)),
            sub("file_2", OipState::Waiting, Some(0), Some(50)),
        ]);
        assert_eq!(
            oips.get(op.id()).unwrap().status(),
            "download|progress;10/100(file_1|progress;20/100)(file_2|waiting;0/50)"
        );
        op.fail("disk full");
        let done = oips.get(op.id()).unwrap();
        assert_eq!(done.state, OipState::Fail);
        assert_eq!(done.error.as_deref(), Some("disk full"));
        let unnamed = oips.start(None);
        unnamed.succeed();
        assert_eq!(oips.get(unnamed.id()).unwrap().status(), "success");
        assert!(oips.delete(unnamed.id()));
        assert!(!oips.delete(unnamed.id()));
        unnamed.progress(None, None);
        assert_eq!(
            oips.get(unnamed.id()),
            None,
            "a deleted operation stays gone"
        );
    }

    #[test]
    fn finished_operations_make_room_and_running_ones_stay() {
        let oips = Oips::default();
        let running = oips.start(Some("install"));
        running.progress(None, None);
        let first_done = oips.start(None);
        first_done.succeed();
        for _ in 0..MAX_OIPS {
            oips.start(None).succeed();
        }
        assert!(oips.get(running.id()).is_some());
        assert!(oips.get(first_done.id()).is_none());
        assert_eq!(oips.lock().oips.len(), MAX_OIPS);
    }
}
