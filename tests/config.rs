//! Configuration loading: file discovery, conf.d merge order, error reporting, validation.

use std::fs;
use std::path::{Path, PathBuf};

use provisiond::config::{
    changed_keys, load, ConfigErrors, DhcpMode, HttpAuthStrategy, Loaded, Settings, Source,
};

struct Dir {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        Dir { _tmp: tmp, root }
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    fn main(&self) -> PathBuf {
        self.root.join("provisiond.toml")
    }

    fn load(&self) -> Result<Loaded, ConfigErrors> {
        load(
            Some(&self.main()),
            Path::new("/nonexistent/provisiond.toml"),
        )
    }
}

fn load_one(text: &str) -> Result<Loaded, ConfigErrors> {
    let dir = Dir::new();
    dir.write("provisiond.toml", text);
    dir.load()
}

fn errors_of(text: &str) -> Vec<String> {
    match load_one(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(errors) => errors
            .0
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect(),
    }
}

#[test]
fn conf_d_fragments_merge_in_name_order_over_the_main_file() {
    let dir = Dir::new();
    dir.write(
        "provisiond.toml",
        "[http]\nlisten = \"127.0.0.1:1001\"\n[tftp]\nlisten = \"127.0.0.1:1069\"\n[log]\nlevel = \"warn\"\n",
    );
    dir.write(
        "conf.d/20-second.toml",
        "[http]\nlisten = \"127.0.0.1:1003\"\n",
    );
    dir.write(
        "conf.d/10-first.toml",
        "[http]\nlisten = \"127.0.0.1:1002\"\nenabled = false\n[log]\nlevel = \"debug\"\n",
    );
    // Not fragments: hidden files and dpkg leftovers are ignored even though they are invalid.
    dir.write("conf.d/.30-hidden.toml", "this is not toml");
    dir.write("conf.d/40-old.toml.dpkg-old", "this is not toml");
    dir.write("conf.d/50-notes.txt", "this is not toml");

    let loaded = dir.load().expect("valid");
    let s = &loaded.settings;
    assert_eq!(
        s.http.listen.to_string(),
        "127.0.0.1:1003",
        "the last fragment wins"
    );
    assert!(
        !s.http.enabled,
        "keys not repeated later keep the earlier value"
    );
    assert_eq!(
        s.tftp.listen.to_string(),
        "127.0.0.1:1069",
        "tables merge key by key"
    );
    assert_eq!(s.log.level, "debug");
    assert_eq!(
        loaded.sources,
        vec![
            Source::File(dir.main()),
            Source::File(dir.root.join("conf.d/10-first.toml")),
            Source::File(dir.root.join("conf.d/20-second.toml")),
        ]
    );
    assert!(!loaded.is_embedded());
}

#[test]
fn arrays_are_replaced_whole_not_appended() {
    let dir = Dir::new();
    dir.write(
        "provisiond.toml",
        r#"
[dhcp]
mode = "server"
interfaces = ["eth0", "eth1"]
[[dhcp.pools]]
subnet = "10.0.0.0/24"
ranges = [{ start = "10.0.0.10", end = "10.0.0.20" }]
[[dhcp.pools]]
subnet = "10.0.1.0/24"
ranges = [{ start = "10.0.1.10", end = "10.0.1.20" }]
"#,
    );
    dir.write(
        "conf.d/10-voice.toml",
        r#"
[dhcp]
interfaces = ["vlan20"]
[[dhcp.pools]]
subnet = "10.20.0.0/16"
ranges = [{ start = "10.20.1.1", end = "10.20.1.200" }]
"#,
    );
    let s = dir.load().expect("valid").settings;
    assert_eq!(s.dhcp.mode, DhcpMode::Server);
    assert_eq!(s.dhcp.interfaces, vec!["vlan20".to_string()]);
    assert_eq!(s.dhcp.pools.len(), 1);
    assert_eq!(s.dhcp.pools[0].subnet.to_string(), "10.20.0.0/16");
    assert_eq!(s.dhcp.pools[0].lease_time, 86_400, "pool defaults apply");
}

#[test]
fn the_main_file_falls_back_to_the_default_path_then_to_the_embedded_default() {
    let dir = Dir::new();
    let missing = dir.root.join("absent.toml");
    let embedded = load(None, &missing).expect("embedded default is valid");
    assert!(embedded.is_embedded());
    assert_eq!(embedded.settings.http.listen.to_string(), "127.0.0.1:8667");
    assert_eq!(embedded.settings.api.listen.to_string(), "127.0.0.1:8666");
    assert_eq!(embedded.settings.tftp.listen.to_string(), "127.0.0.1:6969");
    assert_eq!(embedded.settings.dhcp.mode, DhcpMode::Off);
    assert_eq!(
        embedded.settings.general.data_dir,
        PathBuf::from("provisiond-data")
    );

    let present = dir.write("etc/provisiond.toml", "[log]\nlevel = \"trace\"\n");
    dir.write(
        "etc/conf.d/10-x.toml",
        "[auth]\nhttp_auth_strategy = \"url_key\"\n",
    );
    let from_file = load(None, &present).expect("valid");
    assert!(!from_file.is_embedded());
    assert_eq!(from_file.settings.log.level, "trace");
    assert_eq!(
        from_file.settings.auth.http_auth_strategy,
        HttpAuthStrategy::UrlKey
    );
    // A file without the key keeps the packaged default, not the development one.
    assert_eq!(from_file.settings.http.listen.to_string(), "0.0.0.0:8667");
}

#[test]
fn an_explicit_file_must_exist() {
    let dir = Dir::new();
    let errors = dir.load().expect_err("missing file");
    let text = errors.to_string();
    assert!(
        text.starts_with(&dir.main().display().to_string()),
        "{text}"
    );
    assert!(text.contains("cannot read"), "{text}");
}

#[test]
fn unknown_keys_are_rejected_with_file_and_key_path() {
    let dir = Dir::new();
    dir.write("provisiond.toml", "[http]\nlisten = \"127.0.0.1:8667\"\n");
    let fragment = dir.write(
        "conf.d/10-typo.toml",
        "[http]\nlisten = \"127.0.0.1:8668\"\nlistn = \"x\"\n",
    );
    let errors = dir.load().expect_err("unknown key");
    assert_eq!(errors.0.len(), 1, "{errors}");
    let e = &errors.0[0];
    assert_eq!(e.source, Some(Source::File(fragment.clone())));
    assert_eq!(e.path, "http.listn");
    assert!(e.message.contains("unknown field `listn`"), "{}", e.message);
    assert!(
        e.message.contains("line 3"),
        "the line is named: {}",
        e.message
    );
    assert!(errors
        .to_string()
        .starts_with(&format!("{}: http.listn: ", fragment.display())));

    for (text, path) in [
        ("[nosuchsection]\nx = 1\n", "nosuchsection"),
        ("toplevel = 1\n", "toplevel"),
        ("[[dhcp.pools]]\nsubnet = \"10.0.0.0/24\"\nrange = []\n", "dhcp.pools[0].range"),
        ("[dhcp]\n[[dhcp.pools]]\nsubnet = \"10.0.0.0/24\"\n[[dhcp.pools.reservations]]\nmac = \"00:15:65:aa:bb:cc\"\nip = \"10.0.0.5\"\nfoo = 1\n", "dhcp.pools[0].reservations[0].foo"),
    ] {
        let errors = errors_of(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(&format!("{path}: ")), "{text} -> {errors:?}");
        assert!(errors[0].contains("unknown field"), "{errors:?}");
    }
}

#[test]
fn wrong_types_and_bad_values_name_the_key() {
    for (text, path, fragment) in [
        ("[http]\nlisten = 8667\n", "http.listen", "invalid type"),
        ("[http]\nlisten = \"localhost\"\n", "http.listen", "invalid socket address"),
        ("[http]\nenabled = \"yes\"\n", "http.enabled", "invalid type"),
        ("[dhcp]\nmode = \"inform-only\"\n", "dhcp.mode", "unknown variant"),
        ("[auth]\nhttp_auth_strategy = \"token\"\n", "auth.http_auth_strategy", "unknown variant"),
        ("[dhcp]\nport = 70000\n", "dhcp.port", "70000"),
        ("[general]\nbase_url = \"not a url\"\n", "general.base_url", "relative URL"),
        ("[[dhcp.pools]]\nsubnet = \"10.0.0.0/33\"\n", "dhcp.pools[0].subnet", "invalid"),
        ("[[dhcp.pools]]\nsubnet = \"10.0.0.0/24\"\n[[dhcp.pools.reservations]]\nmac = \"00:15:65\"\nip = \"10.0.0.5\"\n", "dhcp.pools[0].reservations[0].mac", "invalid MAC"),
        ("[[dhcp.pools]]\nranges = []\n", "dhcp.pools[0]", "missing field `subnet`"),
    ] {
        let errors = errors_of(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(&format!("{path}: ")), "{text} -> {errors:?}");
        assert!(errors[0].contains(fragment), "{text} -> {errors:?}");
    }
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    let dir = Dir::new();
    dir.write(
        "provisiond.toml",
        "[log]\nlevel = \"info\"\n\n[http\nlisten = 1\n",
    );
    let errors = dir.load().expect_err("syntax error");
    let text = errors.to_string();
    assert!(
        text.starts_with(&dir.main().display().to_string()),
        "{text}"
    );
    assert!(text.contains("line 4"), "{text}");
}

const POOL: &str = "[dhcp]\nmode = \"server\"\n[[dhcp.pools]]\nsubnet = \"10.0.0.0/24\"\n";

/// Every semantic check: the snippet, the path the error must name, and a part of the message.
#[test]
fn every_validation_rule_reports_its_key_path() {
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("{POOL}ranges = [{{ start = \"10.0.0.50\", end = \"10.0.0.10\" }}]\n"), "dhcp.pools[0].ranges[0]", "start 10.0.0.50 is after end 10.0.0.10"),
        (format!("{POOL}ranges = [{{ start = \"10.0.1.5\", end = \"10.0.0.10\" }}]\n"), "dhcp.pools[0].ranges[0].start", "not a usable address of 10.0.0.0/24"),
        (format!("{POOL}ranges = [{{ start = \"10.0.0.5\", end = \"10.0.0.255\" }}]\n"), "dhcp.pools[0].ranges[0].end", "not a usable address"),
        (format!("{POOL}ranges = [{{ start = \"10.0.0.5\", end = \"10.0.0.20\" }}, {{ start = \"10.0.0.20\", end = \"10.0.0.30\" }}]\n"), "dhcp.pools[0].ranges[1]", "overlaps dhcp.pools[0].ranges[0]"),
        (format!("{POOL}ranges = []\n"), "dhcp.pools[0].ranges", "at least one range or reservation"),
        ("[dhcp]\nmode = \"server\"\n[[dhcp.pools]]\nsubnet = \"10.0.0.7/24\"\nranges = [{ start = \"10.0.0.5\", end = \"10.0.0.9\" }]\n".into(), "dhcp.pools[0].subnet", "host bits set; the subnet is 10.0.0.0/24"),
        ("[[dhcp.pools]]\nsubnet = \"10.0.0.4/31\"\nranges = [{ start = \"10.0.0.4\", end = \"10.0.0.5\" }]\n".into(), "dhcp.pools[0].subnet", "no room for clients"),
        (format!("{POOL}ranges = [{{ start = \"10.0.0.5\", end = \"10.0.0.9\" }}]\n[[dhcp.pools]]\nsubnet = \"10.0.0.0/16\"\nranges = [{{ start = \"10.0.1.5\", end = \"10.0.1.9\" }}]\n"), "dhcp.pools[1].subnet", "overlaps dhcp.pools[0].subnet"),
        (format!("{POOL}ranges = [{{ start = \"10.0.0.5\", end = \"10.0.0.9\" }}]\nrouter = \"10.9.0.1\"\n"), "dhcp.pools[0].router", "not a usable address"),
        (format!("{POOL}ranges = [{{ start = \"10.0.0.5\", end = \"10.0.0.9\" }}]\ndomain = \"bad_domain..x\"\n"), "dhcp.pools[0].domain", "not a domain name"),
        (format!("{POOL}ranges = [{{ start = \"10.0.0.5\", end = \"10.0.0.9\" }}]\nlease_time = 10\n"), "dhcp.pools[0].lease_time", "at least 60"),
        (format!("{POOL}ranges = [{{ start = \"10.0.0.5\", end = \"10.0.0.9\" }}]\nlease_time = 3600\nrenew_time = 3600\nrebind_time = 3599\n"), "dhcp.pools[0].renew_time", "shorter than lease_time"),
        (format!("{POOL}ranges = [{{ start = \"10.0.0.5\", end = \"10.0.0.9\" }}]\nlease_time = 3600\nrebind_time = 4000\n"), "dhcp.pools[0].rebind_time", "shorter than lease_time"),
        (format!("{POOL}ranges = [{{ start = \"10.0.0.5\", end = \"10.0.0.9\" }}]\nlease_time = 3600\nrenew_time = 3000\nrebind_time = 2000\n"), "dhcp.pools[0].renew_time", "shorter than rebind_time"),
        (format!("{POOL}ranges = [{{ start = \"10.0.0.5\", end = \"10.0.0.9\" }}]\nexclude = [\"10.1.0.6\"]\n"), "dhcp.pools[0].exclude[0]", "outside 10.0.0.0/24"),
        (format!("{POOL}reservations = [{{ mac = \"00:15:65:aa:bb:cc\", ip = \"10.0.1.2\" }}]\n"), "dhcp.pools[0].reservations[0].ip", "not a usable address"),
        (format!("{POOL}exclude = [\"10.0.0.2\"]\nreservations = [{{ mac = \"00:15:65:aa:bb:cc\", ip = \"10.0.0.2\" }}]\n"), "dhcp.pools[0].reservations[0].ip", "also in dhcp.pools[0].exclude"),
        (format!("{POOL}reservations = [{{ mac = \"00:15:65:aa:bb:cc\", ip = \"10.0.0.2\" }}, {{ mac = \"00-15-65-AA-BB-CC\", ip = \"10.0.0.3\" }}]\n"), "dhcp.pools[0].reservations[1].mac", "already reserved by dhcp.pools[0].reservations[0]"),
        (format!("{POOL}reservations = [{{ mac = \"00:15:65:aa:bb:cc\", ip = \"10.0.0.2\" }}, {{ mac = \"00:15:65:aa:bb:cd\", ip = \"10.0.0.2\" }}]\n"), "dhcp.pools[0].reservations[1].ip", "already reserved"),
        (format!("{POOL}ranges = [{{ start = \"10.0.0.5\", end = \"10.0.0.9\" }}]\nbase_url = \"ftp://10.0.0.1/\"\n"), "dhcp.pools[0].base_url", "scheme must be http or https"),
        ("[dhcp]\nmode = \"phones-only\"\n".into(), "dhcp.pools", "at least one pool is needed when dhcp.mode = \"phones-only\""),
        ("[dhcp]\ninterfaces = [\"a-very-long-interface-name\"]\n".into(), "dhcp.interfaces[0]", "not a network interface name"),
        ("[dhcp]\ninterfaces = [\"../x\"]\n".into(), "dhcp.interfaces[0]", "not a network interface name"),
        ("[dhcp]\nport = 0\n".into(), "dhcp.port", "must not be 0"),
        ("[general]\ndata_dir = \"\"\n".into(), "general.data_dir", "must not be empty"),
        ("[general]\nplugins_dir = \"\"\n".into(), "general.plugins_dir", "must not be empty"),
        ("[general]\ndefault_tenant = \"a/b\"\n".into(), "general.default_tenant", "invalid id"),
        ("[general]\nbase_url = \"mailto:x@example.com\"\n".into(), "general.base_url", "scheme must be http or https"),
        ("[general]\nbase_url = \"http://10.0.0.1:8667/?a=b\"\n".into(), "general.base_url", "no query or fragment"),
        ("[https]\nenabled = true\nkey = \"/etc/ssl/k.pem\"\n".into(), "https.cert", "required when https.enabled = true"),
        ("[https]\nenabled = true\ncert = \"/etc/ssl/c.pem\"\n".into(), "https.key", "required when https.enabled = true"),
        ("[http]\nlisten = \"127.0.0.1:9000\"\n[api]\nlisten = \"127.0.0.1:9000\"\n".into(), "api.listen", "already used by http.listen"),
        ("[http]\nlisten = \"0.0.0.0:9000\"\n[api]\nlisten = \"127.0.0.1:9000\"\n".into(), "api.listen", "already used by http.listen"),
        ("[https]\nenabled = true\ncert = \"c\"\nkey = \"k\"\nlisten = \"0.0.0.0:8667\"\n".into(), "https.listen", "already used by http.listen"),
        (format!("{POOL}ranges = [{{ start = \"10.0.0.5\", end = \"10.0.0.9\" }}]\n[tftp]\nlisten = \"0.0.0.0:67\"\n"), "tftp.listen", "already used by dhcp.port"),
        ("[http]\nmax_request_bytes = 10\n".into(), "http.max_request_bytes", "at least 1024"),
        ("[http]\nrequest_timeout_secs = 0\n".into(), "http.request_timeout_secs", "at least 1"),
        ("[api]\nmax_body_bytes = 0\n".into(), "api.max_body_bytes", "at least 1024"),
        ("[api]\nsocket = \"\"\n".into(), "api.socket", "must not be empty"),
        ("[dhcpinfo]\nsocket = \"\"\n".into(), "dhcpinfo.socket", "must not be empty"),
        ("[tftp]\nmax_transfers = 0\n".into(), "tftp.max_transfers", "at least 1"),
        ("[tftp]\nmax_per_client = 0\n".into(), "tftp.max_per_client", "at least 1"),
        ("[general]\nautocreate_per_second = 0\n".into(), "general.autocreate_per_second", "at least 1"),
        ("[general]\nautocreate_burst = 0\n".into(), "general.autocreate_burst", "at least 1"),
        ("[general]\nstore_cache_mib = 4\n".into(), "general.store_cache_mib", "between 8 and 65536"),
        ("[tftp]\ntimeout_secs = 0\n".into(), "tftp.timeout_secs", "between 1 and 255"),
        ("[tftp]\nretries = 0\n".into(), "tftp.retries", "at least 1"),
        ("[sync]\ntimeout_secs = 0\n".into(), "sync.timeout_secs", "between 1 and 32"),
        ("[sync]\ntimeout_secs = 33\n".into(), "sync.timeout_secs", "between 1 and 32"),
        ("[sync]\nqueue_max = 0\n".into(), "sync.queue_max", "at least 1"),
        ("[sync]\nrate = 0\n".into(), "sync.rate", "between 1 and 10000"),
        ("[sync]\nrate = 10001\n".into(), "sync.rate", "between 1 and 10000"),
        ("[sync]\nconcurrency = 0\n".into(), "sync.concurrency", "between 1 and 256"),
        ("[sync]\nconcurrency = 257\n".into(), "sync.concurrency", "between 1 and 256"),
        ("[log]\nlevel = \"provisiond=loud\"\n".into(), "log.level", "invalid filter"),
    ];
    for (text, path, fragment) in &cases {
        let errors = errors_of(text);
        let wanted = format!("{path}: ");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&wanted) && e.contains(fragment)),
            "expected `{path}: …{fragment}…` for\n{text}\ngot {errors:#?}"
        );
    }
    // The same rules accept their valid counterparts.
    load_one(&format!(
        "{POOL}ranges = [{{ start = \"10.0.0.10\", end = \"10.0.0.10\" }}, {{ start = \"10.0.0.20\", end = \"10.0.0.200\" }}]\n\
         router = \"10.0.0.1\"\ndns = [\"10.0.0.1\"]\ndomain = \"voice.example.com.\"\nlease_time = 3600\nrenew_time = 1800\nrebind_time = 3000\n\
         exclude = [\"10.0.0.100\"]\nreservations = [{{ mac = \"00:15:65:aa:bb:cc\", ip = \"10.0.0.5\", hostname = \"t54w\" }}]\n\
         base_url = \"https://prov.example.com:8443/p\"\n[general]\nbase_url = \"http://10.0.0.2:8667\"\n"
    ))
    .expect("valid pool");
}

#[test]
fn all_problems_are_reported_at_once() {
    let errors = errors_of("[tftp]\nretries = 0\nmax_transfers = 0\n[sync]\ntimeout_secs = 0\n");
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[test]
fn validation_errors_name_the_file_that_set_the_key() {
    let dir = Dir::new();
    dir.write(
        "provisiond.toml",
        "[http]\nlisten = \"127.0.0.1:9000\"\n[dhcp]\nmode = \"server\"\n",
    );
    let pools = dir.write(
        "conf.d/20-pools.toml",
        "[[dhcp.pools]]\nsubnet = \"10.0.0.0/24\"\nranges = [{ start = \"10.0.0.50\", end = \"10.0.0.10\" }]\n",
    );
    let api = dir.write("conf.d/30-api.toml", "[api]\nlisten = \"127.0.0.1:9000\"\n");
    let errors = dir.load().expect_err("invalid");
    let lines: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
    assert!(
        lines.contains(&format!(
            "{}: dhcp.pools[0].ranges[0]: start 10.0.0.50 is after end 10.0.0.10",
            pools.display()
        )),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!(
            "{}: api.listen: 127.0.0.1:9000 is already used by http.listen",
            api.display()
        )),
        "{lines:#?}"
    );

    // A clash with a value nobody wrote is blamed on the built-in default.
    let dir = Dir::new();
    dir.write(
        "provisiond.toml",
        "[https]\nenabled = true\ncert = \"c\"\nkey = \"k\"\nlisten = \"0.0.0.0:8667\"\n",
    );
    let errors = dir.load().expect_err("clash with default http.listen");
    assert_eq!(errors.0[0].source, Some(Source::File(dir.main())));
}

#[test]
fn changed_keys_lists_leaf_paths() {
    let old = Settings::default();
    let mut new = old.clone();
    assert!(changed_keys(&old, &new).is_empty());
    new.log.level = "debug".into();
    new.http.listen = "127.0.0.1:1".parse().unwrap();
    new.dhcp.interfaces = vec!["eth0".into()];
    assert_eq!(
        changed_keys(&old, &new),
        vec!["dhcp.interfaces", "http.listen", "log.level"]
    );
}

fn shipped_example() -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/provisiond.toml"))
        .expect("etc/provisiond.toml")
}

/// The shipped file only documents: as installed it changes nothing, and each commented
/// setting (`#key = value`, `#[section]`) shows the real default.
#[test]
fn the_shipped_config_documents_the_defaults() {
    let text = shipped_example();
    assert_eq!(
        load_one(&text).expect("shipped file is valid").settings,
        Settings::default()
    );

    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[')
                    || rest.chars().next().is_some_and(|c| c.is_ascii_lowercase()) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let settings_lines = text
        .lines()
        .filter(|l| l.starts_with('#') && !l.starts_with("# ") && l.len() > 1)
        .count();
    assert!(
        settings_lines > 30,
        "the example documents every key ({settings_lines} found)"
    );
    let loaded = load_one(&uncommented)
        .unwrap_or_else(|e| panic!("uncommented example invalid: {e}\n{uncommented}"));
    assert_eq!(loaded.settings, Settings::default());
}

#[test]
fn the_printed_configuration_loads_back_to_the_same_settings() {
    let dir = Dir::new();
    dir.write(
        "provisiond.toml",
        &format!("{POOL}ranges = [{{ start = \"10.0.0.10\", end = \"10.0.0.20\" }}]\nreservations = [{{ mac = \"00:15:65:aa:bb:cc\", ip = \"10.0.0.5\" }}]\n[general]\nbase_url = \"http://10.0.0.2:8667/\"\n"),
    );
    let settings = dir.load().expect("valid").settings;
    let printed = toml::to_string_pretty(&settings).expect("printable");
    assert_eq!(
        load_one(&printed).expect("printed is valid").settings,
        settings
    );
}
