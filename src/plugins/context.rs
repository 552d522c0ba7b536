//! From a device and its config hierarchy to the template context.
//!
//! The raw config is the wazo-provd one (free-form JSON with known keys); the known keys are
//! typed here, with their defaults, so that templates stay simple and a wrong type is a clear
//! error naming the key rather than a silently empty value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::tz::{self, TzInfo};
use crate::model::{Device, RawConfig};

/// Why a context could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A known raw-config key has a value of the wrong type or out of range.
    #[error("raw config key {path}: {message}")]
    BadValue {
        /// Key path (`sip_lines.1.registrar_port`).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Neither the config nor the device has an admin password.
    #[error("device {0} has no admin password (it is generated when the device is identified)")]
    NoAdminPassword(String),
}

/// How phones reach this server, from the daemon's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// `[general] base_url`.
    pub base_url: Option<Url>,
    /// `http_auth_strategy = "url_key"`: URLs carry the device tenant's provisioning key.
    pub url_key_strategy: bool,
}

/// Deep-merges raw configs in order: later wins, objects merge key by key.
pub fn merged_raw_config<'a>(layers: impl IntoIterator<Item = &'a RawConfig>) -> RawConfig {
    fn merge(into: &mut RawConfig, from: &RawConfig) {
        for (key, value) in from {
            match (into.get_mut(key), value) {
                (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
                _ => {
                    into.insert(key.clone(), value.clone());
                }
            }
        }
    }
    let mut out = RawConfig::new();
    for layer in layers {
        merge(&mut out, layer);
    }
    out
}

#[derive(Debug, Default, Deserialize)]
struct Params {
    ip: Option<String>,
    http_port: Option<u16>,
    tftp_port: Option<u16>,
    provisioning_url: Option<String>,
    #[serde(default)]
    sip_lines: BTreeMap<String, RawLine>,
    sip_proxy_ip: Option<String>,
    sip_proxy_port: Option<u16>,
    sip_registrar_ip: Option<String>,
    sip_registrar_port: Option<u16>,
    sip_outbound_proxy_ip: Option<String>,
    sip_outbound_proxy_port: Option<u16>,
    sip_transport: Option<Transport>,
    sip_dtmf_mode: Option<WazoDtmf>,
    ntp_enabled: Option<bool>,
    ntp_ip: Option<String>,
    timezone: Option<String>,
    locale: Option<String>,
    admin_username: Option<String>,
    admin_password: Option<String>,
    user_password: Option<String>,
    vlan_enabled: Option<bool>,
    vlan_id: Option<u16>,
    vlan_priority: Option<u8>,
    syslog_enabled: Option<bool>,
    syslog_ip: Option<String>,
    syslog_port: Option<u16>,
    syslog_level: Option<String>,
    firmware: Option<Firmware>,
    #[serde(default)]
    funckeys: BTreeMap<String, RawFunckey>,
}

#[derive(Debug, Default, Deserialize)]
struct RawLine {
    username: Option<String>,
    auth_username: Option<String>,
    password: Option<String>,
    display_name: Option<String>,
    number: Option<String>,
    label: Option<String>,
    registrar_ip: Option<String>,
    registrar_port: Option<u16>,
    proxy_ip: Option<String>,
    proxy_port: Option<u16>,
    outbound_proxy_ip: Option<String>,
    outbound_proxy_port: Option<u16>,
    transport: Option<Transport>,
    voicemail: Option<String>,
}

/// SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS.
    Tls,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum WazoDtmf {
    #[serde(rename = "RTP-in-band")]
    InBand,
    #[serde(rename = "RTP-out-of-band")]
    OutOfBand,
    #[serde(rename = "SIP-INFO")]
    SipInfo,
}

/// Firmware the phone should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    /// Version string.
    pub version: String,
    /// File name under the plugin's static dir (or a URL).
    pub file: String,
}

#[derive(Debug, Default, Deserialize)]
struct RawFunckey {
    #[serde(rename = "type")]
    kind: Option<FunckeyType>,
    value: Option<String>,
    label: Option<String>,
    line: Option<u16>,
}

/// Function key kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunckeyType {
    /// Speed dial.
    Speeddial,
    /// Busy lamp field.
    Blf,
    /// Call park.
    Park,
}

/// The template context, as documented in docs/plugins.md.
#[derive(Debug, Serialize)]
pub struct Context {
    device: DeviceView,
    configured: bool,
    server: ServerView,
    lines: Vec<Line>,
    dtmf_mode: Option<&'static str>,
    ntp_ip: Option<String>,
    timezone: Option<String>,
    tz: Option<TzInfo>,
    locale: Option<String>,
    language: Option<String>,
    admin_username: String,
    admin_password: String,
    user_password: Option<String>,
    vlan_id: Option<u16>,
    vlan_priority: Option<u8>,
    syslog: Option<Syslog>,
    firmware: Option<Firmware>,
    funckeys: Vec<Funckey>,
    /// Absolute URL of the device's provisioning-code form, for the key or idle screen of
    /// an autoprov file; `None` when the device is not in autoprov or its plugin has no form.
    code_form_url: Option<String>,
    raw: RawConfig,
}

impl Context {
    /// Sets [`Context`]'s `code_form_url` (the renderer knows the device's state and the key).
    pub fn set_code_form_url(&mut self, url: Option<String>) {
        self.code_form_url = url;
    }
}

#[derive(Debug, Serialize)]
struct DeviceView {
    id: String,
    mac: Option<String>,
    mac_bare: Option<String>,
    mac_upper: Option<String>,
    ip: Option<String>,
    vendor: Option<String>,
    model: Option<String>,
    version: Option<String>,
    sn: Option<String>,
    tenant: String,
}

#[derive(Debug, Serialize)]
struct ServerView {
    base_url: Option<String>,
    host: Option<String>,
    http_port: Option<u16>,
    tftp_port: Option<u16>,
}

#[derive(Debug, Serialize)]
struct Line {
    index: u16,
    username: String,
    auth_username: String,
    password: String,
    display_name: String,
    number: String,
    label: String,
    registrar_ip: String,
    registrar_port: u16,
    proxy_ip: String,
    proxy_port: u16,
    outbound_proxy_ip: Option<String>,
    outbound_proxy_port: Option<u16>,
    transport: Transport,
    voicemail: Option<String>,
}

#[derive(Debug, Serialize)]
struct Syslog {
    ip: String,
    port: u16,
    level: String,
}

#[derive(Debug, Serialize)]
struct Funckey {
    index: u16,
    #[serde(rename = "type")]
    kind: FunckeyType,
    value: String,
    label: String,
    line: u16,
}

fn bad(path: impl Into<String>, message: impl Into<String>) -> ContextError {
    ContextError::BadValue {
        path: path.into(),
        message: message.into(),
    }
}

fn index_of(map: &str, key: &str) -> Result<u16, ContextError> {
    match key.parse::<u16>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(bad(format!("{map}.{key}"), "keys must be numbers from 1")),
    }
}

/// Builds the template context of `device` from its merged raw config.
/// `url_key` is the device tenant's provisioning key when the `url_key` strategy is on.
pub fn build_context(
    device: &Device,
    raw: RawConfig,
    server: &ServerInfo,
    url_key: Option<&str>,
) -> Result<Context, ContextError> {
    let params: Params = serde_path_to_error::deserialize(Value::Object(raw.clone()))
        .map_err(|e| bad(e.path().to_string(), e.inner().to_string()))?;

    let mut lines = Vec::with_capacity(params.sip_lines.len());
    for (key, raw_line) in &params.sip_lines {
        let index = index_of("sip_lines", key)?;
        let at = |field: &str| format!("sip_lines.{key}.{field}");
        let username = raw_line
            .username
            .clone()
            .ok_or_else(|| bad(at("username"), "required"))?;
        let registrar_ip = raw_line
            .registrar_ip
            .clone()
            .or_else(|| params.sip_registrar_ip.clone())
            .ok_or_else(|| bad(at("registrar_ip"), "required (or sip_registrar_ip)"))?;
        let transport = raw_line
            .transport
            .or(params.sip_transport)
            .unwrap_or(Transport::Udp);
        let default_port = if transport == Transport::Tls {
            5061
        } else {
            5060
        };
        let registrar_port = raw_line
            .registrar_port
            .or(params.sip_registrar_port)
            .unwrap_or(default_port);
        let proxy_ip = raw_line
            .proxy_ip
            .clone()
            .or_else(|| params.sip_proxy_ip.clone())
            .unwrap_or_else(|| registrar_ip.clone());
        let proxy_port = raw_line
            .proxy_port
            .or(params.sip_proxy_port)
            .unwrap_or(registrar_port);
        let outbound_proxy_ip = raw_line
            .outbound_proxy_ip
            .clone()
            .or_else(|| params.sip_outbound_proxy_ip.clone());
        let outbound_proxy_port = outbound_proxy_ip.as_ref().map(|_| {
            raw_line
                .outbound_proxy_port
                .or(params.sip_outbound_proxy_port)
                .unwrap_or(default_port)
        });
        lines.push(Line {
            index,
            auth_username: raw_line
                .auth_username
                .clone()
                .unwrap_or_else(|| username.clone()),
            password: raw_line.password.clone().unwrap_or_default(),
            display_name: raw_line
                .display_name
                .clone()
                .unwrap_or_else(|| username.clone()),
            number: raw_line.number.clone().unwrap_or_else(|| username.clone()),
            label: raw_line.label.clone().unwrap_or_else(|| username.clone()),
            username,
            registrar_ip,
            registrar_port,
            proxy_ip,
            proxy_port,
            outbound_proxy_ip,
            outbound_proxy_port,
            transport,
            voicemail: raw_line.voicemail.clone(),
        });
    }
    lines.sort_by_key(|l| l.index);
    if let Some(pair) = lines.windows(2).find(|w| w[0].index == w[1].index) {
        return Err(bad(
            "sip_lines",
            format!(
                "line {} is given twice (e.g. \"1\" and \"01\")",
                pair[0].index
            ),
        ));
    }

    let mut funckeys = Vec::with_capacity(params.funckeys.len());
    for (key, raw_key) in &params.funckeys {
        let index = index_of("funckeys", key)?;
        let value = raw_key
            .value
            .clone()
            .ok_or_else(|| bad(format!("funckeys.{key}.value"), "required"))?;
        funckeys.push(Funckey {
            index,
            kind: raw_key.kind.unwrap_or(FunckeyType::Speeddial),
            label: raw_key.label.clone().unwrap_or_else(|| value.clone()),
            value,
            line: raw_key.line.unwrap_or(1),
        });
    }
    funckeys.sort_by_key(|k| k.index);
    if let Some(pair) = funckeys.windows(2).find(|w| w[0].index == w[1].index) {
        return Err(bad(
            "funckeys",
            format!("key {} is given twice", pair[0].index),
        ));
    }

    // A phone provisioned by code or automatic URL never gets the tenant's password (seed
    // 004): its own random one wins over the configs'.
    let admin_password = if device.provisioned.is_some() {
        device
            .admin_password
            .clone()
            .or(params.admin_password.clone())
    } else {
        params
            .admin_password
            .clone()
            .or_else(|| device.admin_password.clone())
    }
    .ok_or_else(|| ContextError::NoAdminPassword(device.id.clone()))?;
    if params.vlan_id.is_some_and(|id| id > 4094) {
        return Err(bad("vlan_id", "must be between 0 and 4094"));
    }
    if params.vlan_priority.is_some_and(|p| p > 7) {
        return Err(bad("vlan_priority", "must be between 0 and 7"));
    }
    let tz = params.timezone.as_deref().and_then(tz::lookup);
    let language = params
        .locale
        .as_deref()
        .and_then(|l| l.split(['_', '-', '.']).next())
        .filter(|l| !l.is_empty())
        .map(str::to_owned);
    let enabled = |flag: Option<bool>| flag.unwrap_or(true);

    Ok(Context {
        device: DeviceView {
            id: device.id.clone(),
            mac: device.mac.map(|m| m.to_string()),
            mac_bare: device.mac.map(|m| m.to_bare()),
            mac_upper: device.mac.map(|m| m.to_bare().to_ascii_uppercase()),
            ip: device.ip.map(|ip| ip.to_string()),
            vendor: device.vendor.clone(),
            model: device.model.clone(),
            version: device.version.clone(),
            sn: device.sn.clone(),
            tenant: device.tenant.clone(),
        },
        configured: !lines.is_empty(),
        server: server_view(&params, server, url_key),
        lines,
        dtmf_mode: params.sip_dtmf_mode.map(|m| match m {
            WazoDtmf::InBand => "inband",
            WazoDtmf::OutOfBand => "rfc2833",
            WazoDtmf::SipInfo => "sip-info",
        }),
        ntp_ip: params.ntp_ip.filter(|_| enabled(params.ntp_enabled)),
        timezone: params.timezone,
        tz,
        language,
        locale: params.locale,
        admin_username: params.admin_username.unwrap_or_else(|| "admin".to_owned()),
        admin_password,
        user_password: params.user_password,
        vlan_id: params.vlan_id.filter(|_| enabled(params.vlan_enabled)),
        vlan_priority: params
            .vlan_priority
            .filter(|_| enabled(params.vlan_enabled)),
        syslog: params
            .syslog_ip
            .filter(|_| enabled(params.syslog_enabled))
            .map(|ip| Syslog {
                ip,
                port: params.syslog_port.unwrap_or(514),
                level: params.syslog_level.unwrap_or_else(|| "info".to_owned()),
            }),
        firmware: params.firmware,
        funckeys,
        code_form_url: None,
        raw,
    })
}

/// Where phones reach this server, without any `url_key` part: the raw config's
/// `provisioning_url`, else `[general] base_url`, else `http://<ip>:<http_port>/` from the raw
/// config; `None` when none is known.
fn base_of(
    provisioning_url: Option<&str>,
    ip: Option<&str>,
    http_port: Option<u16>,
    server: &ServerInfo,
) -> Option<Url> {
    let url_from_raw = || {
        let host = ip?;
        let port = http_port.unwrap_or(80);
        Url::parse(&format!("http://{host}:{port}/")).ok()
    };
    provisioning_url
        .and_then(|u| Url::parse(u).ok())
        .or_else(|| server.base_url.clone())
        .or_else(url_from_raw)
}

/// [`base_of`] for a merged raw config: the base of the URLs written into a device's files
/// (its provisioning URL and its code form's). Values of the wrong type count as unset here;
/// rendering the device's files reports them.
pub fn server_base(raw: &RawConfig, server: &ServerInfo) -> Option<Url> {
    let text = |key: &str| raw.get(key).and_then(Value::as_str);
    let port = raw
        .get("http_port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok());
    base_of(text("provisioning_url"), text("ip"), port, server)
}

fn server_view(params: &Params, server: &ServerInfo, url_key: Option<&str>) -> ServerView {
    let base = base_of(
        params.provisioning_url.as_deref(),
        params.ip.as_deref(),
        params.http_port,
        server,
    );
    let base_url = base.as_ref().map(|url| {
        let mut text = url.as_str().trim_end_matches('/').to_owned();
        if let Some(key) = url_key {
            text.push_str("/device/provisioning/");
            text.push_str(key);
        }
        text.push('/');
        text
    });
    ServerView {
        host: base
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_owned))
            .or_else(|| params.ip.clone()),
        http_port: base
            .as_ref()
            .and_then(|u| u.port_or_known_default())
            .or(params.http_port),
        tftp_port: params.tftp_port.or(Some(69)),
        base_url,
    }
}
