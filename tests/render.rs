//! Rendering through the engine with small plugins written by the test: strictness, escaping,
//! config merging, the url_key base URL and the cache.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use provisiond::model::{Config, Device, RawConfig, Tenant};
use provisiond::plugins::{Origin, Plugin, PluginSet, RenderError, Renderer, ServerInfo};
use provisiond::store::Store;
use serde_json::json;

fn raw(value: serde_json::Value) -> RawConfig {
    value.as_object().cloned().unwrap()
}

struct Env {
    _dir: tempfile::TempDir,
    store: Store,
    plugin: Arc<Plugin>,
}

fn env(templates: &[(&str, &str)]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("plugins/t");
    fs::create_dir_all(pdir.join("templates")).unwrap();
    let mut manifest = String::from("name = \"t\"\nversion = \"1\"\nvendor = \"T\"\n");
    for (name, body) in templates {
        fs::write(pdir.join("templates").join(name), body).unwrap();
        let path = name.trim_end_matches(".tera");
        manifest.push_str(&format!(
            "[[files]]\npath = \"{path}\"\ntemplate = \"{name}\"\n"
        ));
    }
    fs::write(pdir.join("plugin.toml"), manifest).unwrap();
    let set = PluginSet::load(&[(dir.path().join("plugins"), Origin::Builtin)]);
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    let plugin = set.get("t").unwrap().clone();
    let store = Store::open(&dir.path().join("data")).unwrap();
    store.ensure_defaults("master").unwrap();
    Env {
        _dir: dir,
        store,
        plugin,
    }
}

impl Env {
    fn device(&self, config: &str) -> Device {
        let mut d = Device::new("d1", "master");
        d.mac = Some("00:15:65:aa:bb:cc".parse().unwrap());
        d.config = Some(config.into());
        d.admin_password = Some("generated-password-123".into());
        self.store.create_device(&d).unwrap()
    }

    fn config(&self, id: &str, parents: &[&str], value: serde_json::Value) -> Config {
        self.store
            .create_config(&Config {
                id: id.into(),
                parent_ids: parents.iter().map(|p| p.to_string()).collect(),
                raw_config: raw(value),
                tenant: "master".into(),
                deletable: true,
                transient: false,
                role: None,
                extra: Default::default(),
                generation: 0,
                revision: 0,
            })
            .unwrap()
    }

    fn render(
        &self,
        renderer: &Renderer,
        device: &Device,
        path: &str,
    ) -> Result<String, RenderError> {
        let resolved = self.plugin.resolve(path).unwrap();
        renderer
            .render(&self.plugin, device, &resolved)
            .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
    }
}

fn server() -> ServerInfo {
    ServerInfo {
        base_url: Some("http://10.0.0.2:8667".parse().unwrap()),
        url_key_strategy: false,
    }
}

#[test]
fn an_undefined_variable_is_an_error_never_a_partial_file() {
    let env = env(&[("a.cfg.tera", "first = 1\nsecond = {{ no_such_variable }}\n")]);
    let device = env.device("autoprov");
    let renderer = Renderer::new(env.store.clone(), server());
    match env.render(&renderer, &device, "a.cfg") {
        Err(RenderError::Template { message, .. }) => {
            assert!(message.contains("no_such_variable"), "{message}")
        }
        other => panic!("expected a template error, got {other:?}"),
    }
    assert_eq!(renderer.cached(), 0, "failures are not cached");
}

#[test]
fn configs_merge_base_then_tenant_default_then_device_chain() {
    let env = env(&[(
        "a.cfg.tera",
        "ntp = {{ ntp_ip }}\ntz = {{ timezone }}\nlocale = {{ locale }}\nlang = {{ language }}\n{% for l in lines %}line{{ l.index }} = {{ l.username }}/{{ l.auth_username }}@{{ l.registrar_ip }}:{{ l.registrar_port }}/{{ l.transport }} proxy {{ l.proxy_ip }}:{{ l.proxy_port }}\n{% endfor %}url = {{ server.base_url }}\nadmin = {{ admin_username }}:{{ admin_password }}\nconfigured = {{ configured }}\nx = {{ raw.X_custom }}\n",
    )]);
    let mut base = env.store.config("base").unwrap().unwrap();
    base.raw_config = raw(
        json!({"ntp_ip": "10.0.0.1", "timezone": "UTC", "locale": "en_US", "sip_lines": {"1": {"registrar_ip": "10.9.9.9"}}}),
    );
    env.store.update_config(&base).unwrap();
    env.config(
        "tenant-defaults",
        &[],
        json!({"timezone": "Europe/Paris", "X_custom": "from-tenant"}),
    );
    let mut tenant: Tenant = env.store.tenant("master").unwrap().unwrap();
    tenant.default_config = Some("tenant-defaults".into());
    env.store.update_tenant(&tenant).unwrap();
    env.config(
        "site",
        &["base"],
        json!({"locale": "fr_FR", "sip_registrar_ip": "10.0.0.10"}),
    );
    env.config(
        "phone",
        &["site"],
        json!({"sip_lines": {"1": {"username": "1001", "password": "p"}, "2": {"username": "1002", "registrar_ip": "10.0.0.11", "transport": "tls"}}}),
    );
    let device = env.device("phone");
    let renderer = Renderer::new(env.store.clone(), server());
    let text = env.render(&renderer, &device, "a.cfg").unwrap();
    let expected = "ntp = 10.0.0.1\ntz = Europe/Paris\nlocale = fr_FR\nlang = fr\n\
        line1 = 1001/1001@10.9.9.9:5060/udp proxy 10.9.9.9:5060\n\
        line2 = 1002/1002@10.0.0.11:5061/tls proxy 10.0.0.11:5061\n\
        url = http://10.0.0.2:8667/\nadmin = admin:generated-password-123\nconfigured = true\nx = from-tenant\n";
    assert_eq!(text, expected);
}

#[test]
fn wrong_types_in_the_raw_config_name_the_key() {
    let env = env(&[("a.cfg.tera", "x\n")]);
    env.config("bad", &["base"], json!({"sip_lines": {"1": {"username": "1001", "registrar_ip": "h", "registrar_port": "five"}}}));
    let device = env.device("bad");
    let renderer = Renderer::new(env.store.clone(), server());
    let err = env
        .render(&renderer, &device, "a.cfg")
        .unwrap_err()
        .to_string();
    assert!(err.contains("sip_lines.1.registrar_port"), "{err}");
    let env3 = self::env(&[("a.cfg.tera", "x\n")]);
    env3.config("dup", &["base"], json!({"sip_lines": {"1": {"username": "a", "registrar_ip": "h"}, "01": {"username": "b", "registrar_ip": "h"}}}));
    let device = env3.device("dup");
    let err = env3
        .render(
            &Renderer::new(env3.store.clone(), server()),
            &device,
            "a.cfg",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 1 is given twice"), "{err}");
    let env2 = self::env(&[("a.cfg.tera", "x\n")]);
    env2.config(
        "bad2",
        &["base"],
        json!({"sip_lines": {"first": {"username": "1001", "registrar_ip": "h"}}}),
    );
    let device = env2.device("bad2");
    let err = env2
        .render(
            &Renderer::new(env2.store.clone(), server()),
            &device,
            "a.cfg",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("sip_lines.first"), "{err}");
}

#[test]
fn the_url_key_goes_into_the_base_url_of_its_tenant_only() {
    let env = env(&[("a.cfg.tera", "{{ server.base_url }}")]);
    let mut tenant = env.store.tenant("master").unwrap().unwrap();
    tenant.provisioning_key = Some("a1b2c3d4e5f6g7h8".into());
    env.store.update_tenant(&tenant).unwrap();
    let device = env.device("autoprov");
    let keyed = Renderer::new(
        env.store.clone(),
        ServerInfo {
            url_key_strategy: true,
            ..server()
        },
    );
    assert_eq!(
        env.render(&keyed, &device, "a.cfg").unwrap(),
        "http://10.0.0.2:8667/device/provisioning/a1b2c3d4e5f6g7h8/"
    );
    let plain = Renderer::new(env.store.clone(), server());
    assert_eq!(
        env.render(&plain, &device, "a.cfg").unwrap(),
        "http://10.0.0.2:8667/"
    );
}

#[test]
fn xml_templates_escape_and_text_templates_keep_values_on_one_line() {
    let env = env(&[
        (
            "a.xml.tera",
            "<r n=\"{{ lines.0.display_name }}\">{{ lines.0.display_name }}</r>",
        ),
        (
            "b.cfg.tera",
            "name = {{ lines.0.display_name }}\nnext = 1\n",
        ),
    ]);
    env.config("c", &["base"], json!({"sip_lines": {"1": {"username": "1", "registrar_ip": "h", "display_name": "<a href=\"x\">&'\nb = 2"}}}));
    let device = env.device("c");
    let renderer = Renderer::new(env.store.clone(), server());
    assert_eq!(
        env.render(&renderer, &device, "a.xml").unwrap(),
        "<r n=\"&lt;a href=&quot;x&quot;&gt;&amp;&apos; b = 2\">&lt;a href=&quot;x&quot;&gt;&amp;&apos; b = 2</r>"
    );
    assert_eq!(
        env.render(&renderer, &device, "b.cfg").unwrap(),
        "name = <a href=\"x\">&' b = 2\nnext = 1\n"
    );
}

#[test]
fn the_cache_serves_until_a_revision_changes() {
    let env = env(&[("a.cfg.tera", "ntp = {{ ntp_ip }}\n")]);
    env.config("c", &["base"], json!({"ntp_ip": "10.0.0.1"}));
    let device = env.device("c");
    let renderer = Renderer::new(env.store.clone(), server());
    let resolved = env.plugin.resolve("a.cfg").unwrap();
    let first = renderer.render(&env.plugin, &device, &resolved).unwrap();
    let second = renderer.render(&env.plugin, &device, &resolved).unwrap();
    assert!(
        Arc::ptr_eq(&first.body, &second.body),
        "second render is a cache hit"
    );
    assert_eq!(first.etag, second.etag);

    // A change in a parent config is seen at once.
    let mut base = env.store.config("base").unwrap().unwrap();
    base.raw_config = raw(json!({"timezone": "UTC"}));
    env.store.update_config(&base).unwrap();
    let third = renderer.render(&env.plugin, &device, &resolved).unwrap();
    assert!(!Arc::ptr_eq(&first.body, &third.body));
    assert_eq!(&*third.body, b"ntp = 10.0.0.1\n");

    let mut c = env.store.config("c").unwrap().unwrap();
    c.raw_config = raw(json!({"ntp_ip": "10.0.0.99"}));
    env.store.update_config(&c).unwrap();
    let fourth = renderer.render(&env.plugin, &device, &resolved).unwrap();
    assert_eq!(&*fourth.body, b"ntp = 10.0.0.99\n");
    assert_ne!(fourth.etag, first.etag);
}

#[test]
fn a_device_without_config_or_with_a_missing_one_is_not_rendered() {
    let env = env(&[("a.cfg.tera", "x\n")]);
    let mut device = Device::new("d2", "master");
    device.admin_password = Some("x".repeat(20));
    let device = env.store.create_device(&device).unwrap();
    let renderer = Renderer::new(env.store.clone(), server());
    assert!(matches!(
        env.render(&renderer, &device, "a.cfg"),
        Err(RenderError::NoConfig(_))
    ));
    let mut gone = device.clone();
    gone.config = Some("deleted".into());
    assert!(matches!(
        env.render(&renderer, &gone, "a.cfg"),
        Err(RenderError::MissingConfig(..))
    ));
}

#[test]
fn timezone_facts_come_from_tzdata() {
    if !Path::new("/usr/share/zoneinfo/Europe/Paris").exists() {
        panic!("tzdata is required (apt-get install tzdata)");
    }
    let env = env(&[(
        "a.cfg.tera",
        "{{ tz.posix }} {{ tz.utc_offset }} {{ tz.utc_offset_minutes }}",
    )]);
    env.config("c", &["base"], json!({"timezone": "America/New_York"}));
    let device = env.device("c");
    let renderer = Renderer::new(env.store.clone(), server());
    assert_eq!(
        env.render(&renderer, &device, "a.cfg").unwrap(),
        "EST5EDT,M3.2.0,M11.1.0 -05:00 -300"
    );
}

#[test]
fn the_cache_follows_recreated_configs_key_rotation_and_ignores_last_seen() {
    let env = env(&[(
        "a.cfg.tera",
        "pw = {{ lines.0.password }} url = {{ server.base_url }}\n",
    )]);
    env.config(
        "alice",
        &["base"],
        json!({"sip_lines": {"1": {"username": "1", "registrar_ip": "h", "password": "OLDPASS"}}}),
    );
    let device = env.device("alice");
    let renderer = Renderer::new(
        env.store.clone(),
        ServerInfo {
            url_key_strategy: true,
            ..server()
        },
    );
    let resolved = env.plugin.resolve("a.cfg").unwrap();
    let first = renderer.render(&env.plugin, &device, &resolved).unwrap();
    assert!(String::from_utf8_lossy(&first.body).contains("OLDPASS"));

    // Deleted and created again under the same id: revision 1 again, new content.
    env.store.delete_config("alice").unwrap();
    env.config(
        "alice",
        &["base"],
        json!({"sip_lines": {"1": {"username": "1", "registrar_ip": "h", "password": "NEWPASS"}}}),
    );
    let second = renderer.render(&env.plugin, &device, &resolved).unwrap();
    assert!(
        String::from_utf8_lossy(&second.body).contains("NEWPASS"),
        "stale file after a re-create"
    );

    // A rotated provisioning key shows at once.
    let mut tenant = env.store.tenant("master").unwrap().unwrap();
    tenant.provisioning_key = Some("RotatedKey99".into());
    env.store.update_tenant(&tenant).unwrap();
    let third = renderer.render(&env.plugin, &device, &resolved).unwrap();
    assert!(String::from_utf8_lossy(&third.body).contains("/device/provisioning/RotatedKey99/"));

    // last_seen moves the revision but not the file: same ETag, cache hit.
    let mut seen = env.store.device("d1").unwrap().unwrap();
    seen.last_seen = Some(12345);
    let seen = env.store.update_device(&seen).unwrap();
    let fourth = renderer.render(&env.plugin, &seen, &resolved).unwrap();
    assert_eq!(fourth.etag, third.etag);
    assert!(Arc::ptr_eq(&fourth.body, &third.body));
}

#[test]
fn one_template_behind_two_routes_keeps_each_content_type() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("plugins/t");
    fs::create_dir_all(pdir.join("templates")).unwrap();
    fs::write(pdir.join("templates/phone.htm.tera"), "<x/>").unwrap();
    fs::write(
        pdir.join("plugin.toml"),
        "name = \"t\"\nversion = \"1\"\nvendor = \"T\"\n[[files]]\npath = \"a.htm\"\ntemplate = \"phone.htm.tera\"\n[[files]]\npath = \"a.xml\"\ntemplate = \"phone.htm.tera\"\n",
    )
    .unwrap();
    let set = PluginSet::load(&[(dir.path().join("plugins"), Origin::Builtin)]);
    let plugin = set.get("t").unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    store.ensure_defaults("master").unwrap();
    let mut d = Device::new("d1", "master");
    d.config = Some("autoprov".into());
    d.admin_password = Some("x".repeat(20));
    let d = store.create_device(&d).unwrap();
    let renderer = Renderer::new(store, server());
    let htm = renderer
        .render(plugin, &d, &plugin.resolve("a.htm").unwrap())
        .unwrap();
    let xml = renderer
        .render(plugin, &d, &plugin.resolve("a.xml").unwrap())
        .unwrap();
    assert_eq!(
        (htm.content_type.as_str(), xml.content_type.as_str()),
        ("text/plain", "application/xml")
    );
}
