//! Console sessions, in memory (a restart signs everybody out): random ids, an idle and an
//! absolute expiry, a CSRF token each; sign-out ends one, sign-out everywhere all of a
//! user's (or of an API token's).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::Role;

/// Sessions kept at once; past it, expired ones are dropped, then new sign-ins are refused.
const MAX_SESSIONS: usize = 10_000;

/// Who signed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Who {
    /// A console user, by name.
    User(String),
    /// An API token, by hash.
    Token(String),
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who signed in.
    pub who: Who,
    /// Tenant the session acts for.
    pub tenant: String,
    /// What it may change.
    pub role: Role,
    /// Token every form of the session carries.
    pub csrf: String,
    created: Instant,
    last: Instant,
}

impl Session {
    /// The name shown in the page header.
    pub fn display_name(&self) -> String {
        match &self.who {
            Who::User(name) => name.clone(),
            Who::Token(hash) => format!("token {}", &hash[..16.min(hash.len())]),
        }
    }
}

/// Every live session, by id.
pub struct Sessions {
    idle: Duration,
    max_age: Duration,
    map: Mutex<HashMap<String, Session>>,
}

/// The session store is full of live sessions.
#[derive(Debug, thiserror::Error)]
#[error("too many console sessions; try again later")]
pub struct Full;

impl Sessions {
    /// An empty store with these expiries.
    pub fn new(idle: Duration, max_age: Duration) -> Sessions {
        Sessions {
            idle,
            max_age,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The absolute lifetime, for the cookie's Max-Age.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.saturating_duration_since(s.last) < self.idle
            && now.saturating_duration_since(s.created) < self.max_age
    }

    /// Starts a session under a fresh `id` with a fresh CSRF token.
    pub fn start(
        &self,
        id: String,
        csrf: String,
        who: Who,
        tenant: String,
        role: Role,
        now: Instant,
    ) -> Result<(), Full> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| self.live(s, now));
            if map.len() >= MAX_SESSIONS {
                return Err(Full);
            }
        }
        map.insert(
            id,
            Session {
                who,
                tenant,
                role,
                csrf,
                created: now,
                last: now,
            },
        );
        Ok(())
    }

    /// The live session `id`, its idle clock restarted; an expired one is ended.
    pub fn touch(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.live(map.get(id)?, now);
        if !live {
            map.remove(id);
            return None;
        }
        let session = map.get_mut(id)?;
        session.last = now;
        Some(session.clone())
    }

    /// True while session `id` lives; unlike [`Sessions::touch`], not a use of it (an open
    /// event stream does not keep a session alive).
    pub fn alive(&self, id: &str, now: Instant) -> bool {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).is_some_and(|s| self.live(s, now))
    }

    /// Ends the session `id`.
    pub fn end(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Ends every session of `who`; how many there were.
    pub fn end_all(&self, who: &Who) -> usize {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        map.retain(|_, s| &s.who != who);
        before - map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_absolute_expiry() {
        let t0 = Instant::now();
        let s = Sessions::new(Duration::from_secs(10), Duration::from_secs(25));
        let who = Who::User("a".into());
        s.start(
            "1".into(),
            "c".into(),
            who.clone(),
            "master".into(),
            Role::Admin,
            t0,
        )
        .unwrap();
        assert!(s.touch("1", t0 + Duration::from_secs(9)).is_some());
        assert!(s.touch("1", t0 + Duration::from_secs(18)).is_some());
        // Used every 9 s, it still ends 25 s after sign-in.
        assert!(s.touch("1", t0 + Duration::from_secs(26)).is_none());
        s.start(
            "2".into(),
            "c".into(),
            who.clone(),
            "master".into(),
            Role::Admin,
            t0,
        )
        .unwrap();
        assert!(s.touch("2", t0 + Duration::from_secs(11)).is_none());
        s.start(
            "3".into(),
            "c".into(),
            who.clone(),
            "master".into(),
            Role::Admin,
            t0,
        )
        .unwrap();
        s.start(
            "4".into(),
            "c".into(),
            who.clone(),
            "master".into(),
            Role::Admin,
            t0,
        )
        .unwrap();
        assert_eq!(s.end_all(&who), 2);
        assert!(s.touch("3", t0).is_none());
    }
}
