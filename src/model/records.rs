use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::{Mac, UnixTime};

/// Raw configuration parameters of a provisioning config (typed by the plugin engine on use).
pub type RawConfig = serde_json::Map<String, serde_json::Value>;

/// How a device record came to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Added {
    /// Created by an administrator or an API client.
    #[default]
    Manual,
    /// Created by identification when an unknown phone showed up.
    Auto,
}

/// A phone or gateway known to provisiond.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Store key; 32 hex digits when generated.
    pub id: String,
    /// Normalized MAC address, unique across devices.
    #[serde(default)]
    pub mac: Option<Mac>,
    /// Last known IP address (several devices may share one behind NAT).
    #[serde(default)]
    pub ip: Option<IpAddr>,
    /// Vendor name as identified (`Yealink`, `Snom`, …).
    #[serde(default)]
    pub vendor: Option<String>,
    /// Model as identified (`T54W`, …).
    #[serde(default)]
    pub model: Option<String>,
    /// Firmware version as identified.
    #[serde(default)]
    pub version: Option<String>,
    /// Serial number as identified.
    #[serde(default)]
    pub sn: Option<String>,
    /// Id of the plugin that renders this device's files.
    #[serde(default)]
    pub plugin: Option<String>,
    /// Id of the provisioning config this device receives.
    #[serde(default)]
    pub config: Option<String>,
    /// Whether the plugin has generated this device's files from its config.
    #[serde(default)]
    pub configured: bool,
    /// Id of the owning tenant.
    pub tenant: String,
    /// True until the device has been provisioned with a non-autoprov config.
    #[serde(default)]
    pub is_new: bool,
    /// How the record was created.
    #[serde(default)]
    pub added: Added,
    /// Free text set by administrators.
    #[serde(default)]
    pub description: Option<String>,
    /// Last time the device contacted us (DHCP, HTTP or TFTP).
    #[serde(default)]
    pub last_seen: Option<UnixTime>,
    /// SIP user of line 1 as last provisioned (used to resync by SIP NOTIFY).
    #[serde(default)]
    pub remote_state_sip_username: Option<String>,
    /// Keys that API clients set and provisiond does not interpret (`X_…`, `options`, `uuid`,
    /// …), kept as sent; the API shows them at the top level of the device object.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
    /// Admin password generated for this device when its config sets none (and always for a
    /// device provisioned by code or automatic URL, where it wins over the configs'); shown
    /// only to callers allowed `provd.dev_mgr.secrets.read`.
    #[serde(default)]
    pub admin_password: Option<String>,
    /// Provisioning category of the tenant, set when a code or an automatic URL provisioned
    /// the device; its config and jobs apply to the device.
    #[serde(default)]
    pub category: Option<String>,
    /// How and when a code or an automatic URL provisioned the device.
    #[serde(default)]
    pub provisioned: Option<super::Provisioned>,
    /// Incremented by the store on every write; used for optimistic concurrency and caching.
    #[serde(default)]
    pub revision: u64,
}

impl Device {
    /// A device with only its id and tenant set.
    pub fn new(id: impl Into<String>, tenant: impl Into<String>) -> Self {
        Device {
            id: id.into(),
            mac: None,
            ip: None,
            vendor: None,
            model: None,
            version: None,
            sn: None,
            plugin: None,
            config: None,
            configured: false,
            tenant: tenant.into(),
            is_new: true,
            added: Added::Manual,
            description: None,
            last_seen: None,
            remote_state_sip_username: None,
            extra: Default::default(),
            admin_password: None,
            category: None,
            provisioned: None,
            revision: 0,
        }
    }
}

/// A provisioning config: raw parameters inherited from its parents, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Store key.
    pub id: String,
    /// Parents, from the most general to the most specific; later ones win on merge.
    #[serde(default)]
    pub parent_ids: Vec<String>,
    /// This config's own parameters.
    #[serde(default)]
    pub raw_config: RawConfig,
    /// Id of the owning tenant.
    pub tenant: String,
    /// False for the built-in configs (`base`, `autoprov`) and for the configs written so;
    /// such a config cannot be deleted. The default tenant's undeletable configs are shared
    /// with every tenant.
    #[serde(default = "default_true")]
    pub deletable: bool,
    /// Deleted with the last device that uses it (wazo-provd's autocreated configs).
    #[serde(default)]
    pub transient: bool,
    /// `autocreate` marks the template of `POST /cfg_mgr/autocreate`; `default` the config of
    /// devices that have none.
    #[serde(default)]
    pub role: Option<String>,
    /// Keys that API clients set and provisiond does not interpret (`X_type`, `displayname`,
    /// `registrar_main`, `label`, …), kept as sent; shown at the top level of the config.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
    /// Incremented by the store on every write.
    #[serde(default)]
    pub revision: u64,
    /// Random, new on every write (also after a delete and re-create under the same id, when
    /// the revision starts again at 1); render caches key on it.
    #[serde(default)]
    pub generation: u64,
}

fn default_true() -> bool {
    true
}

/// A tenant: the owner of devices and configs, isolated from the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Store key (`master` for the default tenant).
    pub id: String,
    /// Human name.
    #[serde(default)]
    pub name: String,
    /// The tenant above this one; `None` for the default tenant, the root of the tree.
    #[serde(default)]
    pub parent: Option<String>,
    /// Key that phones of this tenant put in their URL when `http_auth_strategy = "url_key"`.
    #[serde(default)]
    pub provisioning_key: Option<String>,
    /// Config merged between `base` and each device's config, for settings shared by the
    /// tenant's phones.
    #[serde(default)]
    pub default_config: Option<String>,
    /// Security token of automatic provisioning: devices whose provisioning URL is
    /// `/auto/<tenant>/<token>/<category>/` join the tenant without a code. `None`: off.
    #[serde(default)]
    pub auto_token: Option<String>,
    /// Incremented by the store on every write.
    #[serde(default)]
    pub revision: u64,
}

impl Tenant {
    /// A tenant named after its id, under `parent`, with no key and no default config.
    pub fn new(id: impl Into<String>, parent: Option<&str>) -> Self {
        let id = id.into();
        Tenant {
            name: id.clone(),
            id,
            parent: parent.map(str::to_owned),
            provisioning_key: None,
            default_config: None,
            auto_token: None,
            revision: 0,
        }
    }
}

/// An API token; only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Hex SHA-256 of the secret, the store key.
    pub hash: String,
    /// Tenant the token acts for.
    pub tenant: String,
    /// Access rules (`dev_mgr.read`, `*`, …).
    #[serde(default)]
    pub acl: Vec<String>,
    /// Creation time.
    pub created: UnixTime,
    /// Expiry time; `None` never expires.
    #[serde(default)]
    pub expires: Option<UnixTime>,
    /// Free text shown in listings.
    #[serde(default)]
    pub description: Option<String>,
}

/// State of a DHCP lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Offered, waiting for the client's REQUEST.
    Offered,
    /// Acknowledged.
    Bound,
    /// Released by the client.
    Released,
    /// Declined by the client (address in use); quarantined.
    Declined,
    /// Past its end without renewal.
    Expired,
}

/// A DHCPv4 lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Leased address, the store key.
    pub ip: Ipv4Addr,
    /// Client hardware address.
    pub mac: Mac,
    /// Client identifier (option 61) in hex, when the client sent one.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Host name the client sent (option 12).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Start of the current binding.
    pub starts: UnixTime,
    /// End of the current binding.
    pub ends: UnixTime,
    /// Lease state.
    pub state: LeaseState,
}

/// A lease record read in place, without its host name: what passes over every lease (the
/// DHCP engine's start, the index check) need, with nothing copied to the heap but a client
/// identifier written with escapes (never, in records this daemon writes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LeaseView<'a> {
    /// Leased address.
    pub ip: Ipv4Addr,
    /// Client hardware address.
    pub mac: Mac,
    /// Client identifier (option 61) in hex.
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    pub client_id: Option<std::borrow::Cow<'a, str>>,
    /// Start of the current binding.
    pub starts: UnixTime,
    /// End of the current binding.
    pub ends: UnixTime,
    /// Lease state.
    pub state: LeaseState,
}

/// An optional string, borrowed from the input when it holds no escape (serde copies every
/// `Cow` it finds inside an `Option`).
fn borrowed_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::borrow::Cow<'de, str>>, D::Error> {
    use std::borrow::Cow;
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
        fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(text)))
        }
        fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(text.to_owned())))
        }
    }
    deserializer.deserialize_option(Text)
}

/// What a console user may do in their tenant's subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads every page, changes nothing.
    Viewer,
    /// Also issues and revokes codes, creates rollouts, resynchronises devices.
    Operator,
    /// Everything the console offers.
    Admin,
}

impl Role {
    /// The role's name, as written on the command line and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "no role {other:?}: expected admin, operator or viewer"
            )),
        }
    }
}

/// A person who signs in to the web console; only an argon2id hash of the password is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleUser {
    /// Sign-in name, the store key.
    pub name: String,
    /// Tenant whose subtree the user sees.
    pub tenant: String,
    /// What the user may change.
    pub role: Role,
    /// The password's argon2id hash in PHC string form (salt and parameters included).
    pub password_hash: String,
    /// Creation time.
    pub created: UnixTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_view_reads_what_a_lease_record_holds_but_its_host_name() {
        let lease = Lease {
            ip: Ipv4Addr::new(10, 0, 0, 7),
            mac: "00:15:65:aa:bb:cc".parse().unwrap(),
            client_id: Some("01001565aabbcc".to_owned()),
            hostname: Some("desk \"7\"".to_owned()),
            starts: 100,
            ends: 200,
            state: LeaseState::Bound,
        };
        let json = serde_json::to_vec(&lease).unwrap();
        let view: LeaseView<'_> = serde_json::from_slice(&json).unwrap();
        assert_eq!(view.ip, lease.ip);
        assert_eq!(view.mac, lease.mac);
        assert_eq!(view.client_id.as_deref(), lease.client_id.as_deref());
        assert!(matches!(
            view.client_id,
            Some(std::borrow::Cow::Borrowed(_))
        ));
        assert_eq!(
            (view.starts, view.ends, view.state),
            (100, 200, LeaseState::Bound)
        );
        // An escaped identifier (no record of ours has one) still reads, copied.
        let escaped = br#"{"ip":"10.0.0.8","mac":"00-15-65-AA-BB-CD","client_id":"\u0030\u0031ab","starts":1,"ends":2,"state":"released"}"#;
        let view: LeaseView<'_> = serde_json::from_slice(escaped).unwrap();
        assert_eq!(view.client_id.as_deref(), Some("01ab"));
        assert_eq!(view.mac.to_string(), "00:15:65:aa:bb:cd");
        let none = br#"{"ip":"10.0.0.9","mac":"001565aabbce","client_id":null,"starts":1,"ends":2,"state":"expired"}"#;
        assert_eq!(
            serde_json::from_slice::<LeaseView<'_>>(none)
                .unwrap()
                .client_id,
            None
        );
    }
}
