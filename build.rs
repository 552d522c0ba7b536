//! Compiles the built-in plugins (`plugins/<name>/plugin.toml`, `templates/`, `static/`) into
//! the binary, so that `provisiond` has them wherever it runs and however it was installed;
//! a plugin directory on disk with the same name still wins at run time (src/plugins/embedded.rs).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let root = manifest_dir.join("plugins");
    println!("cargo:rerun-if-changed=build.rs");
    // Cargo scans a directory given here recursively, so added files rebuild too.
    println!("cargo:rerun-if-changed=plugins");

    let mut code = String::from("&[\n");
    for dir in visible_entries(&root).into_iter().filter(|p| p.is_dir()) {
        let name = utf8_name(&dir);
        let mut files = Vec::new();
        let manifest = dir.join("plugin.toml");
        if manifest.is_file() {
            files.push(("plugin.toml".to_owned(), manifest));
        }
        // The loader reads only the files directly in templates/.
        let templates = dir.join("templates");
        for file in visible_entries(&templates)
            .into_iter()
            .filter(|p| p.is_file())
        {
            files.push((format!("templates/{}", utf8_name(&file)), file));
        }
        collect_static(&dir.join("static"), "static", &mut files);

        writeln!(code, "    EmbeddedPlugin {{ name: {name:?}, files: &[").expect("to a String");
        for (path, file) in files {
            let modified = std::fs::metadata(&file)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            let absolute = file.to_str().unwrap_or_else(|| {
                panic!("{}: the path must be UTF-8 to be embedded", file.display())
            });
            writeln!(
                code,
                "        EmbeddedFile {{ path: {path:?}, bytes: include_bytes!({absolute:?}), modified: {modified} }},"
            )
            .expect("to a String");
        }
        code.push_str("    ] },\n");
    }
    code.push_str("]\n");
    std::fs::write(out_dir.join("embedded_plugins.rs"), code)
        .expect("cannot write embedded_plugins.rs in OUT_DIR");
}

/// Every file under `dir`, recursively, as `prefix/relative/path`.
fn collect_static(dir: &Path, prefix: &str, files: &mut Vec<(String, PathBuf)>) {
    for entry in visible_entries(dir) {
        let path = format!("{prefix}/{}", utf8_name(&entry));
        if entry.is_dir() {
            collect_static(&entry, &path, files);
        } else if entry.is_file() {
            files.push((path, entry));
        }
    }
}

/// The entries of `dir` whose names do not start with a dot, sorted (a missing dir has none).
fn visible_entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("cannot list a plugin directory").path())
        .filter(|p| !utf8_name(p).starts_with('.'))
        .collect();
    paths.sort();
    paths
}

fn utf8_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| panic!("{}: plugin file names must be UTF-8", path.display()))
        .to_owned()
}
