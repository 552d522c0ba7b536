//! Console sessions, in memory (a restart signs everybody out): random ids, an idle and an
//! absolute expiry, a CSRF token each; sign-out ends one, sign-out everywhere all of a
//! user's (or of an API token's).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::api::auth::acl_matches;
use crate::model::{ConsoleUser, Role, Token};

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
    /// What tells the record signed in with apart ([`user_stamp`], [`token_stamp`]): a user
    /// deleted and created again under the same name is another user, whose record the
    /// session does not match.
    pub stamp: u64,
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
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &self,
        id: String,
        csrf: String,
        who: Who,
        tenant: String,
        role: Role,
        stamp: u64,
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
                stamp,
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

/// The ACLs of the console's pages that a viewer opens (read only), each as the REST handler
/// of the same data requires it, `any` standing for an id.
const VIEWER: &[&str] = &[
    "provd.dev_mgr.devices.read",
    "provd.dev_mgr.devices.any.read",
    "provd.cfg_mgr.configs.read",
    "provd.cfg_mgr.configs.any.read",
    "provd.prov_mgr.categories.read",
    "provd.prov_mgr.codes.read",
    "provd.prov_mgr.rollouts.read",
    "provd.prov_mgr.jobs.read",
    "provd.prov_mgr.auto.read",
    "provd.tenants.read",
    "provd.users.read",
];
/// What a viewer of the default tenant also opens: tokens, plugins, operations.
const VIEWER_MASTER: &[&str] = &[
    "provd.tokens.read",
    "provd.pg_mgr.read",
    "provd.pg_mgr.plugins.read",
    "provd.pg_mgr.plugins.any.read",
    "provd.operation.read",
];
/// What an operator does beyond a viewer.
const OPERATOR: &[&str] = &[
    "provd.dev_mgr.synchronize.create",
    "provd.prov_mgr.codes.create",
    "provd.prov_mgr.codes.delete",
    "provd.prov_mgr.rollouts.create",
    "provd.prov_mgr.jobs.create",
    "provd.prov_mgr.jobs.delete",
];
/// What an admin does beyond an operator (the provisioning key's ACL, which names the
/// tenant, is added by [`token_role`]).
const ADMIN: &[&str] = &[
    "provd.dev_mgr.devices.any.delete",
    "provd.dev_mgr.devices.any.reset",
    "provd.prov_mgr.categories.create",
    "provd.cfg_mgr.configs.create",
    "provd.cfg_mgr.configs.any.update",
    "provd.cfg_mgr.configs.any.delete",
    "provd.prov_mgr.auto.update",
    "provd.tenants.create",
    "provd.tenants.delete",
    "provd.tenants.update",
    "provd.users.create",
    "provd.users.delete",
];
/// What an admin of the default tenant also does: tokens and plugins.
const ADMIN_MASTER: &[&str] = &[
    "provd.tokens.create",
    "provd.tokens.delete",
    "provd.pg_mgr.install.update.create",
    "provd.pg_mgr.install.install.create",
    "provd.pg_mgr.install.upgrade.create",
    "provd.pg_mgr.install.uninstall.create",
    "provd.pg_mgr.plugins.any.install.install.create",
    "provd.pg_mgr.plugins.any.install.upgrade.create",
    "provd.pg_mgr.plugins.any.install.uninstall.create",
];

/// The role an API token of `tenant` signs in with: the highest whose whole list of ACLs
/// (those of its pages and actions, as the REST API checks them) the token's ACL grants, so
/// that the console never lets a token do what the API would refuse it. A token limited to
/// one id (`devices.<id>.delete`) gets no role from that entry. `None`: not even a viewer's.
pub fn token_role(acl: &[String], tenant: &str, default_tenant: &str) -> Option<Role> {
    let grants = |required: &str| acl.iter().any(|p| acl_matches(p, required));
    let all = |list: &[&str]| list.iter().all(|r| grants(r));
    let master = tenant == default_tenant;
    let viewer = all(VIEWER) && (!master || all(VIEWER_MASTER));
    let operator = viewer && all(OPERATOR);
    // The console sets the key of any tenant of the subtree; the API checks the ACL against
    // the tenant named by `Wazo-Tenant`: only a grant for any tenant covers them all.
    let key = "provd.configure.any.provisioning_key.update";
    let admin = operator && all(ADMIN) && grants(key) && (!master || all(ADMIN_MASTER));
    if admin {
        Some(Role::Admin)
    } else if operator {
        Some(Role::Operator)
    } else if viewer {
        Some(Role::Viewer)
    } else {
        None
    }
}

/// The stamp of a session signed in as `user`: its creation time (seconds) and its password
/// hash, whose salt is new for every record, so that a user deleted and created again in the
/// same second is still another record.
pub fn user_stamp(user: &ConsoleUser) -> u64 {
    let mut hasher = DefaultHasher::new();
    (user.created, &user.password_hash).hash(&mut hasher);
    hasher.finish()
}

/// The stamp of a session signed in with `token` (whose hash already names it).
pub fn token_stamp(token: &Token) -> u64 {
    let mut hasher = DefaultHasher::new();
    token.created.hash(&mut hasher);
    hasher.finish()
}

/// True while the user signed in with is still the one whose record the session was started
/// from: same tenant, same role, not deleted (and created again) since.
pub fn user_matches(session: &Session, user: Option<&ConsoleUser>) -> bool {
    user.is_some_and(|u| {
        u.tenant == session.tenant && u.role == session.role && user_stamp(u) == session.stamp
    })
}

/// True while the token signed in with still exists, has not expired, and its ACL still
/// gives the session's role in the session's tenant.
pub fn token_matches(session: &Session, token: Option<&Token>, default_tenant: &str) -> bool {
    token.is_some_and(|t| {
        t.tenant == session.tenant
            && token_stamp(t) == session.stamp
            && t.expires.is_none_or(|at| at > crate::model::now())
            && token_role(&t.acl, &t.tenant, default_tenant) == Some(session.role)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn token_roles_need_every_acl_of_the_role() {
        let m = "master";
        assert_eq!(token_role(&acl(&["provd.#"]), m, m), Some(Role::Admin));
        assert_eq!(token_role(&acl(&["provd.#"]), "t1", m), Some(Role::Admin));
        // Devices and provisioning only: not the tokens, users, tenants nor plugins pages.
        let dev_prov = acl(&["provd.dev_mgr.#", "provd.prov_mgr.#"]);
        assert_eq!(token_role(&dev_prov, m, m), None);
        assert_eq!(
            token_role(&acl(&["provd.dev_mgr.devices.read"]), m, m),
            None
        );
        let mut viewer: Vec<String> = acl(VIEWER);
        assert_eq!(token_role(&viewer, "t1", m), Some(Role::Viewer));
        assert_eq!(token_role(&viewer, m, m), None);
        viewer.extend(acl(VIEWER_MASTER));
        assert_eq!(token_role(&viewer, m, m), Some(Role::Viewer));
        let mut admin = viewer.clone();
        admin.extend(acl(OPERATOR));
        assert_eq!(token_role(&admin, m, m), Some(Role::Operator));
        admin.extend(acl(ADMIN));
        admin.push("provd.configure.master.provisioning_key.update".into());
        assert_eq!(token_role(&admin, m, m), Some(Role::Operator));
        admin.push("provd.configure.*.provisioning_key.update".into());
        admin.extend(acl(ADMIN_MASTER));
        assert_eq!(token_role(&admin, m, m), Some(Role::Admin));
        // One device's deletion only is not "any device".
        let one = admin
            .iter()
            .map(|a| a.replace("devices.any.delete", "devices.abc.delete"))
            .collect::<Vec<_>>();
        assert_eq!(token_role(&one, m, m), Some(Role::Operator));
        // `*` stands for any id.
        let star = admin
            .iter()
            .map(|a| a.replace(".any.", ".*."))
            .collect::<Vec<_>>();
        assert_eq!(token_role(&star, m, m), Some(Role::Admin));
    }

    #[test]
    fn a_user_created_again_in_the_same_second_is_another_user() {
        let user = |salt: &str| ConsoleUser {
            name: "dave".into(),
            tenant: "master".into(),
            role: Role::Operator,
            password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1${salt}$hash"),
            created: 1_800_000_000,
        };
        let (first, again) = (user("c2FsdA"), user("b3RoZXI"));
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let now = Instant::now();
        s.start(
            "1".into(),
            "c".into(),
            Who::User("dave".into()),
            "master".into(),
            Role::Operator,
            user_stamp(&first),
            now,
        )
        .unwrap();
        let session = s.touch("1", now).unwrap();
        assert!(user_matches(&session, Some(&first)));
        assert!(!user_matches(&session, Some(&again)));
        assert!(!user_matches(&session, None));
    }

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
            0,
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
            0,
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
            0,
            t0,
        )
        .unwrap();
        s.start(
            "4".into(),
            "c".into(),
            who.clone(),
            "master".into(),
            Role::Admin,
            0,
            t0,
        )
        .unwrap();
        assert_eq!(s.end_all(&who), 2);
        assert!(s.touch("3", t0).is_none());
    }
}
