//! The built-in plugins as compiled into the binary by build.rs: the lowest layer of the
//! plugin set, so that phones are provisioned even where no plugin directory exists (a
//! `provisiond serve` started outside the source tree, a binary copied alone).

/// One file of an embedded plugin.
#[derive(Debug)]
pub struct EmbeddedFile {
    /// Path inside the plugin directory, `/`-separated (`templates/mac.cfg.tera`).
    pub path: &'static str,
    /// Content.
    pub bytes: &'static [u8],
    /// Modification time of the source file at build time, in seconds since the epoch.
    pub modified: u64,
}

/// A plugin directory as it was at build time.
#[derive(Debug)]
pub struct EmbeddedPlugin {
    /// Directory name.
    pub name: &'static str,
    /// `plugin.toml`, `templates/*`, `static/**`.
    pub files: &'static [EmbeddedFile],
}

impl EmbeddedPlugin {
    /// The file at `path`, if embedded.
    pub fn file(&self, path: &str) -> Option<&'static EmbeddedFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// The repository's `plugins/` at build time.
pub static BUILT_IN: &[EmbeddedPlugin] = include!(concat!(env!("OUT_DIR"), "/embedded_plugins.rs"));
