//! Cargo.toml's `[package.metadata.deb]`, for users who run `cargo deb` (cargo-deb is not
//! installed in CI), against packaging/build-deb, which CI builds and tests: every file the
//! metadata names exists, and what both ship goes to the same place.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn metadata() -> toml::Value {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let manifest: toml::Value = toml::from_str(&text).unwrap();
    manifest["package"]["metadata"]["deb"].clone()
}

/// `[source, dest, mode]` of every asset.
fn assets(deb: &toml::Value) -> Vec<(String, String)> {
    deb["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| {
            let a = a.as_array().expect("[source, dest, mode]");
            (
                a[0].as_str().unwrap().to_owned(),
                a[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// True when `pattern` (a path, or a glob whose `*` come after a directory) names a file.
fn names_a_file(pattern: &str) -> bool {
    match pattern.split_once('*') {
        None => root().join(pattern).is_file(),
        Some((prefix, _)) => {
            let dir = root().join(prefix);
            std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some())
        }
    }
}

#[test]
fn cargo_deb_metadata_names_existing_files() {
    let deb = metadata();
    for key in ["extended-description-file", "changelog"] {
        let path = deb[key].as_str().unwrap();
        assert!(root().join(path).is_file(), "{key} = {path}");
    }
    let license = deb["license-file"][0].as_str().unwrap();
    assert!(root().join(license).is_file(), "license-file {license}");
    let scripts = root().join(deb["maintainer-scripts"].as_str().unwrap());
    for script in ["postinst", "prerm", "postrm"] {
        assert!(scripts.join(script).is_file(), "{script}");
    }
    for (source, dest) in assets(&deb) {
        if source.starts_with("target/release/") {
            continue;
        }
        assert!(
            names_a_file(&source),
            "asset {source} -> {dest}: no such file"
        );
    }
}

#[test]
fn cargo_deb_ships_what_build_deb_ships_where_build_deb_puts_it() {
    let deb = metadata();
    let script = std::fs::read_to_string(root().join("packaging/build-deb")).unwrap();
    let assets = assets(&deb);
    let dest_of = |source: &str| {
        assets
            .iter()
            .find(|(s, _)| s == source)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no asset {source} in [package.metadata.deb]"))
    };
    // (build-deb's source, where build-deb installs it, the metadata's source, its dest).
    let shared = [
        (
            "systemd/provisiond.service",
            "$stage/lib/systemd/system/provisiond.service",
            "systemd/provisiond.service",
            "lib/systemd/system/",
        ),
        (
            "etc/provisiond.toml",
            "$stage/etc/provisiond/provisiond.toml",
            "etc/provisiond.toml",
            "etc/provisiond/",
        ),
        (
            "cp -R plugins",
            "$stage/usr/share/provisiond/plugins",
            "plugins/**/*",
            "usr/share/provisiond/plugins/",
        ),
        (
            "etc/examples",
            "$doc/examples",
            "etc/examples/*",
            "usr/share/doc/provisiond/examples/",
        ),
        (
            "packaging/debian/lintian-overrides",
            "$stage/usr/share/lintian/overrides/provisiond",
            "packaging/debian/lintian-overrides",
            "usr/share/lintian/overrides/provisiond",
        ),
    ];
    for (script_source, script_dest, source, dest) in shared {
        assert!(
            script.contains(script_source) && script.contains(script_dest),
            "build-deb no longer installs {script_source} as {script_dest}: update Cargo.toml"
        );
        assert_eq!(dest_of(source), dest, "{source}");
    }
    // cargo-deb installs its license-file as /usr/share/doc/provisiond/copyright.
    assert!(script.contains("packaging/debian/copyright \"$doc/copyright\""));
    assert_eq!(
        deb["license-file"][0].as_str(),
        Some("packaging/debian/copyright")
    );
    assert_eq!(dest_of("target/release/provisiond"), "usr/bin/");

    // The same maintainer scripts, conffile, description and dependencies.
    assert!(
        script.contains("packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm")
    );
    assert_eq!(
        deb["maintainer-scripts"].as_str(),
        Some("packaging/debian/")
    );
    let conffiles = std::fs::read_to_string(root().join("packaging/debian/conffiles")).unwrap();
    assert_eq!(
        conffiles.trim(),
        "/etc/provisiond/provisiond.toml",
        "cargo-deb marks every file under /etc as a conffile, and only those"
    );
    assert!(script.contains("packaging/debian/description"));
    assert_eq!(
        deb["extended-description-file"].as_str(),
        Some("packaging/debian/description")
    );
    let control = std::fs::read_to_string(root().join("packaging/debian/control.in")).unwrap();
    for field in ["Section", "Priority", "Maintainer"] {
        let line = control
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}: ")))
            .unwrap_or_else(|| panic!("{field} in control.in"));
        assert_eq!(deb[field.to_lowercase()].as_str(), Some(line), "{field}");
    }
    assert!(control.contains("Depends: @SHLIBS@, adduser"));
    assert_eq!(deb["depends"].as_str(), Some("$auto, adduser"));
}
