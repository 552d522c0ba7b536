//! `provisiond dhcp-snippet`: the output for ISC dhcpd, Kea and dnsmasq is accepted by the
//! real servers' configuration checks (installed by .ci/run) and carries the plugins' options.

mod common;

use std::path::Path;
use std::process::Command;

use common::{command, run};

/// A configuration with the repository's plugins and `extra` appended.
fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("provisiond.toml");
    std::fs::write(
        &path,
        format!(
            "[general]\ndata_dir = \"{}\"\nplugins_dir = \"{}\"\n{extra}",
            dir.join("data").display(),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("plugins")
                .display()
        ),
    )
    .unwrap();
    path
}

/// `provisiond dhcp-snippet --config CONFIG ARGS…`: (exit code, stdout, stderr).
fn snippet(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = command(config.parent().unwrap());
    cmd.args(["dhcp-snippet", "--config"])
        .arg(config)
        .args(args);
    run(&mut cmd)
}

/// Runs a foreign server's configuration check; a missing server fails with its package.
fn check(program: &str, package: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (apt-get install {package})"));
    assert!(
        out.status.success(),
        "{program} {args:?} refused the snippet:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `dhcpd -t` on a dhcpd.conf in `dir` that includes `snippet` beside one subnet.
fn check_dhcpd(dir: &Path, snippet: &Path) {
    let dhcpd = dir.join("dhcpd.conf");
    std::fs::write(
        &dhcpd,
        format!(
            "include \"{}\";\nsubnet 10.213.9.0 netmask 255.255.255.0 {{ range 10.213.9.100 10.213.9.150; }}\n",
            snippet.display()
        ),
    )
    .unwrap();
    let leases = dir.join("dhcpd.leases");
    std::fs::write(&leases, "").unwrap();
    let (conf, leases) = (dhcpd.to_str().unwrap(), leases.to_str().unwrap());
    check(
        "dhcpd",
        "isc-dhcp-server",
        &["-t", "-4", "-cf", conf, "-lf", leases],
    );
}

const BASE: &str = "base_url = \"http://10.213.9.1:8667\"\n";

#[test]
fn isc_dhcpd_accepts_the_snippet_and_matches_by_option_60() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (code, text, stderr) = snippet(&config(dir, BASE), &["--format", "isc"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains("class \"provisiond-yealink\" {"), "{text}");
    assert!(
        text.contains("substring(option vendor-class-identifier, 0, 7) = \"yealink\""),
        "{text}"
    );
    assert!(
        text.contains("option tftp-server-name \"http://10.213.9.1:8667/\";"),
        "{text}"
    );
    // Polycom's option 60 starts with binary bytes; its 160 goes out unasked.
    assert!(
        text.contains("substring(option vendor-class-identifier, 0, 4) = 00:00:36:3d"),
        "{text}"
    );
    assert!(
        text.contains("concat(option dhcp-parameter-request-list, a0)"),
        "{text}"
    );
    // Cisco's TFTP address list (150) and server (66) come from the base URL's host.
    assert!(text.contains("option provisiond-150 10.213.9.1;"), "{text}");
    std::fs::write(dir.join("provisiond.conf"), &text).unwrap();
    check_dhcpd(dir, &dir.join("provisiond.conf"));
}

#[test]
fn kea_accepts_the_client_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (code, text, stderr) = snippet(&config(dir, BASE), &["--format", "kea"]);
    assert_eq!(code, 0, "{stderr}");
    let json: String = text
        .lines()
        .filter(|l| !l.starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let body: serde_json::Value = serde_json::from_str(&json).expect("JSON after the comments");
    let classes = body["client-classes"].as_array().expect("client-classes");
    let yealink = classes
        .iter()
        .find(|c| c["name"] == "provisiond-yealink")
        .expect("a Yealink class");
    assert_eq!(
        yealink["test"],
        "substring(option[60].hex, 0, 7) == 'YEALINK' or substring(option[60].hex, 0, 7) == 'Yealink' or substring(option[60].hex, 0, 7) == 'yealink'"
    );
    let option = &yealink["option-data"][0];
    assert_eq!(option["code"], 66);
    let hex: String = b"http://10.213.9.1:8667/"
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(option["data"], hex.as_str());
    let polycom = classes
        .iter()
        .find(|c| c["name"] == "provisiond-polycom")
        .expect("a Polycom class");
    assert_eq!(
        polycom["test"],
        "substring(option[60].hex, 0, 4) == 0x0000363d"
    );
    assert_eq!(polycom["option-data"][0]["always-send"], true);

    let mut dhcp4 = serde_json::json!({
        "interfaces-config": { "interfaces": [] },
        "lease-database": { "type": "memfile", "persist": false },
        "subnet4": [{ "id": 1, "subnet": "10.213.9.0/24",
                      "pools": [{ "pool": "10.213.9.100 - 10.213.9.150" }] }],
    });
    dhcp4["client-classes"] = body["client-classes"].clone();
    let path = dir.join("kea-dhcp4.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&serde_json::json!({ "Dhcp4": dhcp4 })).unwrap(),
    )
    .unwrap();
    check(
        "kea-dhcp4",
        "kea-dhcp4-server",
        &["-t", path.to_str().unwrap()],
    );
}

#[test]
fn dnsmasq_accepts_the_tags_and_says_what_it_cannot_match() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (code, text, stderr) = snippet(&config(dir, BASE), &["--format", "dnsmasq"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        text.contains("dhcp-vendorclass=set:provisiond-yealink,yealink\n"),
        "{text}"
    );
    assert!(
        text.contains("dhcp-option=tag:provisiond-yealink,66,\"http://10.213.9.1:8667/\"\n"),
        "{text}"
    );
    // dnsmasq compares option 60 as text: Polycom's binary prefix is reported, not written.
    assert!(!text.contains("set:provisiond-polycom"), "{text}");
    assert!(
        stderr.contains("polycom: option 60 prefix 00:00:36:3d is not plain text"),
        "{stderr}"
    );
    let path = dir.join("provisiond-dnsmasq.conf");
    std::fs::write(&path, &text).unwrap();
    check(
        "dnsmasq",
        "dnsmasq-base",
        &["--test", &format!("--conf-file={}", path.display())],
    );
}

#[test]
fn under_url_key_the_urls_carry_the_key_given() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let keyed = config(
        dir,
        &format!("{BASE}[auth]\nhttp_auth_strategy = \"url_key\"\n"),
    );
    let (code, text, stderr) = snippet(&keyed, &["--format", "dnsmasq", "--key", "SiteKey42"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        text.contains(
            "dhcp-option=tag:provisiond-yealink,66,\"http://10.213.9.1:8667/device/provisioning/SiteKey42/\""
        ),
        "{text}"
    );
    // Without the key no URL would be served: the URL options are left out, and said so.
    let (code, text, stderr) = snippet(&keyed, &["--format", "dnsmasq"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!text.contains("provisiond-yealink,66"), "{text}");
    assert!(
        stderr.contains("yealink: option 66 needs the tenant's provisioning key: give --key"),
        "{stderr}"
    );
    let (code, _, stderr) = snippet(&keyed, &["--format", "isc", "--key", "bad key"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("--key: 8 to 256 characters among A-Z a-z 0-9 - $ ~ ."),
        "{stderr}"
    );
    // A key without the strategy is a mistake, not something to ignore.
    let plain = config(dir, BASE);
    let (code, _, stderr) = snippet(&plain, &["--format", "kea", "--key", "SiteKey42"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("url_key"), "{stderr}");
}

#[test]
fn without_a_base_url_the_admin_is_told_which_flag_to_give() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (code, text, stderr) = snippet(&config(dir, ""), &["--format", "isc"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!text.contains("tftp-server-name"), "{text}");
    assert!(
        stderr.contains("yealink: option 66 needs the provisioning URL: set [general] base_url or give --base-url"),
        "{stderr}"
    );
    let (code, text, stderr) = snippet(
        &config(dir, ""),
        &[
            "--format",
            "isc",
            "--base-url",
            "https://prov.example.test/p",
            "--server-ip",
            "10.213.9.2",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        text.contains("option tftp-server-name \"https://prov.example.test/p/\";"),
        "{text}"
    );
    assert!(
        text.contains("option provisiond-159 \"10.213.9.2\";"),
        "{text}"
    );
}

/// Admin plugins whose option values (evil) and rule (evil2, quoted in the snippet's
/// comments) try to break out of the generated file.
fn hostile_plugins(dir: &Path) {
    let manifests = [
        (
            "evil",
            r#"vendor_class = '^evil phone'
[[dhcp.options]]
code = 66
value = "{provisioning_url}café\"x\\y.cfg"
[[dhcp.options]]
code = 160
value = "{provisioning_url}\";\noption domain-name-servers 6.6.6.6;"
"#,
        ),
        (
            "evil2",
            r#"vendor_class = '''(?x)evil2
option domain-name-servers 6.6.6.6; #'''
[[dhcp.options]]
code = 66
value = "{provisioning_url}"
"#,
        ),
    ];
    for (name, dhcp) in manifests {
        let plugin = dir.join("data/plugins").join(name);
        std::fs::create_dir_all(plugin.join("templates")).unwrap();
        std::fs::write(
            plugin.join("plugin.toml"),
            format!(
                "name = \"{name}\"\nversion = \"1\"\nvendor = \"Evil\"\n[[files]]\npath = \"{{mac}}.cfg\"\ntemplate = \"mac.cfg.tera\"\n[dhcp]\n{dhcp}"
            ),
        )
        .unwrap();
        std::fs::write(plugin.join("templates/mac.cfg.tera"), "x = 1\n").unwrap();
    }
}

#[test]
fn a_hostile_plugin_cannot_write_configuration_into_the_snippet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    hostile_plugins(dir);
    let config = config(dir, BASE);
    for format in ["isc", "kea", "dnsmasq"] {
        let (code, text, stderr) = snippet(&config, &["--format", format]);
        assert_eq!(code, 0, "{stderr}");
        assert!(text.contains("provisiond-evil"), "{format}: {text}");
        // evil2's rule is not anchored: quoted in a comment, on one line.
        assert!(
            text.contains(r"is not anchored with ^: match it by hand"),
            "{format}: {text}"
        );
        assert!(
            stderr.contains("evil2: option 60 rule '(?x)evil2\\noption"),
            "{stderr}"
        );
        // The injected directive never starts a line.
        assert!(
            !text
                .lines()
                .any(|l| l.trim_start().starts_with("option domain-name-servers")),
            "{format}: {text}"
        );
        let path = dir.join(format!("evil.{format}"));
        std::fs::write(&path, &text).unwrap();
    }
    let isc = std::fs::read_to_string(dir.join("evil.isc")).unwrap();
    assert!(
        isc.contains(r#"option tftp-server-name "http://10.213.9.1:8667/caf\303\251\"x\\y.cfg";"#),
        "{isc}"
    );
    check_dhcpd(dir, &dir.join("evil.isc"));
    check(
        "dnsmasq",
        "dnsmasq-base",
        &[
            "--test",
            &format!("--conf-file={}", dir.join("evil.dnsmasq").display()),
        ],
    );
}
