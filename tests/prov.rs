//! Provisioning codes and rollouts through the `manage` layer on a real store in a
//! temporary directory, with the clock passed in (every function there takes `now`), so that
//! expiry is checked to the second without sleeping: issue, redemption, reuse, expiry,
//! revocation, the sweeper, uniqueness under concurrent issues, and rollout states over time.

mod common;

use std::collections::HashSet;
use std::net::IpAddr;

use provisiond::manage::categories::{self, CategorySpec};
use provisiond::manage::codes::{
    self, NewCode, RedeemRequest, RedeemTarget, Redeemed, NOT_ACCEPTED,
};
use provisiond::manage::guard::SecretGuard;
use provisiond::manage::rollouts::{self, NewEntry};
use provisiond::manage::{ManageError, Scope};
use provisiond::model::{
    Category, EntryState, Mac, ProvisionedBy, Tenant, CODE_TTL_SECS, ROLLOUT_TTL_SECS,
};
use provisiond::store::Store;

const ROOT: &str = "master";
const TENANT: &str = "acme";
/// The clock of these tests: any fixed second works, the store never reads the real one.
const T0: u64 = 1_900_000_000;

/// A store with tenant `acme` below the root and its provisioning category `desk`.
struct Env {
    store: Store,
    scope: Scope,
    category: Category,
    guard: SecretGuard,
    events: provisiond::events::Events,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    store.ensure_defaults(ROOT).unwrap();
    store
        .create_tenant(&Tenant::new(TENANT, Some(ROOT)))
        .unwrap();
    let scope = Scope::new(&store, TENANT, None, ROOT).unwrap();
    let category = categories::create(
        &store,
        &scope,
        CategorySpec {
            name: "desk".into(),
            provisioning: true,
            ..CategorySpec::default()
        },
    )
    .unwrap();
    Env {
        store,
        scope,
        category,
        guard: SecretGuard::default(),
        events: Default::default(),
        _dir: dir,
    }
}

impl Env {
    fn issue(&self, now: u64) -> String {
        let new = NewCode {
            category: "desk".into(),
            ..NewCode::default()
        };
        codes::create(&self.store, &self.scope, new, now)
            .unwrap()
            .code
    }

    /// Redeems `code` for the phone `mac` as an installer would (no API scope).
    fn redeem(&self, code: &str, mac: &str, now: u64) -> Result<Redeemed, ManageError> {
        let source: IpAddr = "192.0.2.1".parse().unwrap();
        let req = RedeemRequest {
            code: code.to_owned(),
            target: RedeemTarget::Mac(mac.parse().unwrap()),
            source,
        };
        codes::redeem(&self.store, &self.guard, &self.events, None, &req, now)
    }

    fn live(&self, code: &str) -> bool {
        self.store.code(code).unwrap().is_some()
    }
}

/// True for the one neutral refusal of a code.
fn not_accepted(result: &Result<Redeemed, ManageError>) -> bool {
    matches!(result, Err(ManageError::NotFound(m)) if m == NOT_ACCEPTED)
}

#[test]
fn a_code_is_used_once_and_refused_from_its_expiry_second_on() {
    let env = env();
    let code = env.issue(T0);
    assert!(
        code.len() == 12 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    let stored = env.store.code(&code).unwrap().expect("the code is stored");
    assert_eq!(
        (stored.tenant.as_str(), stored.category.as_str()),
        (TENANT, env.category.id.as_str())
    );
    assert_eq!(stored.expires, T0 + CODE_TTL_SECS);

    let done = env.redeem(&code, "80:5e:c0:00:00:01", T0 + 1).unwrap();
    assert_eq!(done.tenant, TENANT);
    assert_eq!(done.category.as_deref(), Some(env.category.id.as_str()));
    let device = env
        .store
        .device_by_mac(&"80:5e:c0:00:00:01".parse::<Mac>().unwrap())
        .unwrap()
        .expect("the phone became a device");
    assert_eq!(device.tenant, TENANT);
    assert_eq!(device.category.as_deref(), Some(env.category.id.as_str()));
    assert!(device.configured);
    let provisioned = device.provisioned.expect("marked as provisioned");
    assert_eq!(provisioned.by, ProvisionedBy::Code);
    assert_eq!(provisioned.at, T0 + 1);
    assert_eq!(
        provisioned.code_tail.as_deref(),
        Some(format!("…{}", &code[9..]).as_str()),
        "the record keeps only the tail"
    );
    assert!(!env.live(&code), "a used code is deleted");

    // Used: refused for another phone, which is not even created.
    let again = env.redeem(&code, "80:5e:c0:00:00:02", T0 + 2);
    assert!(not_accepted(&again), "{again:?}");
    assert_eq!(
        env.store
            .device_by_mac(&"80:5e:c0:00:00:02".parse::<Mac>().unwrap())
            .unwrap(),
        None
    );

    // The last second of a code is still good; its expiry second is not.
    let last = env.issue(T0);
    let expires = T0 + CODE_TTL_SECS;
    assert!(env.redeem(&last, "80:5e:c0:00:00:03", expires - 1).is_ok());
    let late = env.issue(T0);
    let refused = env.redeem(&late, "80:5e:c0:00:00:04", expires);
    assert!(not_accepted(&refused), "{refused:?}");
    assert!(
        env.live(&late),
        "a refusal does not consume; the sweeper deletes"
    );
    let listed = |now| -> Vec<String> {
        codes::list(&env.store, &env.scope, false, now)
            .unwrap()
            .into_iter()
            .map(|c| c.code)
            .collect()
    };
    assert_eq!(listed(expires - 1), vec![late.clone()]);
    assert!(listed(expires).is_empty(), "an expired code is not listed");
    assert!(codes::get(&env.store, &env.scope, &late, expires).is_err());

    // Revoked: gone, refused, and revoking twice is not found.
    let revoked = env.issue(T0);
    codes::revoke(&env.store, &env.events, &env.scope, &revoked, T0 + 5).unwrap();
    assert!(!env.live(&revoked));
    let refused = env.redeem(&revoked, "80:5e:c0:00:00:05", T0 + 6);
    assert!(not_accepted(&refused), "{refused:?}");
    assert!(matches!(
        codes::revoke(&env.store, &env.events, &env.scope, &revoked, T0 + 6),
        Err(ManageError::NotFound(_))
    ));

    // Another tenant's scope neither sees nor revokes the code.
    env.store
        .create_tenant(&Tenant::new("other", Some(ROOT)))
        .unwrap();
    let other = Scope::new(&env.store, "other", None, ROOT).unwrap();
    let live = env.issue(T0);
    assert!(codes::get(&env.store, &other, &live, T0).is_err());
    assert!(codes::revoke(&env.store, &env.events, &other, &live, T0).is_err());
    assert!(env.live(&live));
}

#[test]
fn the_sweeper_deletes_only_expired_codes() {
    let env = env();
    // Expiring at T0, at T0 + 1, and at T0 + 600.
    let gone = env.issue(T0 - CODE_TTL_SECS);
    let next = env.issue(T0 - CODE_TTL_SECS + 1);
    let fresh = env.issue(T0);
    assert_eq!(codes::sweep(&env.store, T0 - 1).unwrap(), 0);
    assert!(env.live(&gone));
    assert_eq!(codes::sweep(&env.store, T0).unwrap(), 1);
    assert!(!env.live(&gone));
    assert!(env.live(&next) && env.live(&fresh));
    assert_eq!(codes::sweep(&env.store, T0).unwrap(), 0);
    assert_eq!(codes::sweep(&env.store, T0 + 1).unwrap(), 1);
    assert!(!env.live(&next));
    assert!(env.live(&fresh));
    assert_eq!(env.store.codes().unwrap().len(), 1);
}

#[test]
fn ten_thousand_concurrent_issues_give_distinct_stored_codes() {
    const THREADS: usize = 16;
    const EACH: usize = 625;
    let env = env();
    let issued: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| s.spawn(|| (0..EACH).map(|_| env.issue(T0)).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(issued.len(), THREADS * EACH);
    let distinct: HashSet<&String> = issued.iter().collect();
    assert_eq!(distinct.len(), THREADS * EACH, "two issues gave one code");
    let stored: HashSet<String> = env
        .store
        .codes()
        .unwrap()
        .into_iter()
        .map(|c| c.code)
        .collect();
    assert_eq!(stored.len(), THREADS * EACH);
    assert!(issued.iter().all(|c| stored.contains(c)));
}

#[test]
fn concurrent_redemptions_of_one_code_make_one_phone() {
    const PHONES: usize = 8;
    let env = env();
    let code = env.issue(T0);
    let results: Vec<Result<Redeemed, ManageError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..PHONES)
            .map(|n| {
                let (env, code) = (&env, &code);
                s.spawn(move || env.redeem(code, &format!("80:5e:c0:00:02:{n:02x}"), T0 + 1))
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let won: Vec<&Redeemed> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(
        results.iter().filter(|r| r.is_err()).all(not_accepted),
        "{results:?}"
    );
    let in_tenant: Vec<String> = (0..PHONES)
        .filter_map(|n| {
            let mac: Mac = format!("80:5e:c0:00:02:{n:02x}").parse().unwrap();
            env.store.device_by_mac(&mac).unwrap()
        })
        .filter(|d| d.tenant == TENANT)
        .map(|d| d.id)
        .collect();
    assert_eq!(in_tenant, [won[0].device.id.clone()]);
}

/// The rows of a rollout's CSV at `now`, read back by a CSV reader, header checked.
fn csv_rows(env: &Env, id: &str, now: u64) -> Vec<Vec<String>> {
    let rollout = rollouts::get(&env.store, &env.scope, id).unwrap();
    common::csv_rows(&rollouts::to_csv(&rollout, &env.category.name, now).unwrap())
}

#[test]
fn rollout_entries_go_pending_registered_revoked_expired() {
    let env = env();
    let labels = ["Alice", "Bob", "Carol"];
    let entries = labels
        .iter()
        .map(|l| NewEntry {
            label: Some((*l).to_owned()),
            config: None,
        })
        .collect();
    let rollout = rollouts::create(&env.store, &env.scope, "desk", entries, T0).unwrap();
    assert_eq!(rollout.expires, T0 + ROLLOUT_TTL_SECS);
    let code = |i: usize| rollout.entries[i].code.clone();
    for (entry, label) in rollout.entries.iter().zip(labels) {
        let stored = env.store.code(&entry.code).unwrap().expect("a live code");
        assert_eq!(stored.rollout.as_deref(), Some(rollout.id.as_str()));
        assert_eq!(stored.label.as_deref(), Some(label));
        assert_eq!(stored.expires, rollout.expires);
    }

    env.redeem(&code(0), "80:5e:c0:00:01:00", T0 + 60).unwrap();
    codes::revoke(&env.store, &env.events, &env.scope, &code(1), T0 + 61).unwrap();
    let stored = rollouts::get(&env.store, &env.scope, &rollout.id).unwrap();
    let states: Vec<EntryState> = stored
        .entries
        .iter()
        .map(|e| stored.state_at(e, rollout.expires - 1))
        .collect();
    assert_eq!(
        states,
        [
            EntryState::Registered,
            EntryState::Revoked,
            EntryState::Pending
        ]
    );
    let registered = &stored.entries[0];
    assert_eq!(
        registered.device_mac,
        Some("80:5e:c0:00:01:00".parse().unwrap())
    );
    assert_eq!(registered.registered_at, Some(T0 + 60));

    // The last second of the week: still pending; from the expiry second: expired.
    let before = csv_rows(&env, &rollout.id, rollout.expires - 1);
    let after = csv_rows(&env, &rollout.id, rollout.expires);
    let column = |rows: &[Vec<String>], n: usize| -> Vec<String> {
        rows.iter().map(|r| r[n].clone()).collect()
    };
    assert_eq!(column(&before, 3), ["registered", "revoked", "pending"]);
    assert_eq!(column(&after, 3), ["registered", "revoked", "expired"]);
    assert_eq!(column(&after, 0), [code(0), code(1), code(2)]);
    assert_eq!(column(&after, 1), labels);
    assert_eq!(column(&after, 2), ["desk"; 3]);
    assert_eq!(column(&after, 4), ["80:5e:c0:00:01:00", "", ""]);
    assert_eq!(
        column(&after, 5),
        [rollouts::rfc3339(T0 + 60), String::new(), String::new()]
    );

    // The expired entry's code is refused at the second, then swept; the entry stays expired.
    let refused = env.redeem(&code(2), "80:5e:c0:00:01:02", rollout.expires);
    assert!(not_accepted(&refused), "{refused:?}");
    assert_eq!(codes::sweep(&env.store, rollout.expires).unwrap(), 1);
    assert!(!env.live(&code(2)));
    let swept = csv_rows(&env, &rollout.id, rollout.expires);
    assert_eq!(column(&swept, 3), ["registered", "revoked", "expired"]);
}
