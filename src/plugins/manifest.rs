//! The `plugin.toml` format.

use serde::Deserialize;

/// A plugin's manifest, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must equal the directory name.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// Vendor name, the default `vendor` of identified devices.
    pub vendor: String,
    /// One line for listings.
    #[serde(default)]
    pub description: String,
    /// Models covered (informative).
    #[serde(default)]
    pub models: Vec<String>,
    /// SIP NOTIFY `Event` that makes the phone resync.
    #[serde(default)]
    pub sync_event: Option<String>,
    /// Identification rules.
    #[serde(default)]
    pub identify: Vec<RuleSpec>,
    /// File routes, in order.
    #[serde(default)]
    pub files: Vec<RouteSpec>,
    /// DHCP options for this vendor.
    #[serde(default)]
    pub dhcp: Option<DhcpSpec>,
    /// The provisioning-code form in the phone's XML browser, when the vendor has one.
    #[serde(default)]
    pub code_form: Option<CodeFormSpec>,
    /// Vendor packages (firmware, language files) that the admin may install.
    #[serde(default)]
    pub packages: Vec<PackageSpec>,
}

/// One `[[packages]]`, as written (docs/plugins.md, "Vendor packages").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    /// Unique within the plugin: a-z, 0-9, `.`, `-`, `_`.
    pub id: String,
    /// The package's version.
    pub version: String,
    /// One line for listings.
    #[serde(default)]
    pub description: String,
    /// Where it is downloaded from (http or https).
    pub url: String,
    /// SHA-256 of the download, 64 hex digits.
    pub sha256: String,
    /// Exact size of the download in bytes.
    pub size: u64,
    /// The vendor's licence.
    #[serde(default)]
    pub licence_url: Option<String>,
    /// Installing needs the admin's explicit acceptance of the licence.
    #[serde(default)]
    pub licence_acceptance_required: bool,
    /// How the download is unpacked.
    pub format: PackageFormatSpec,
    /// Which files land where in the plugin's served files.
    pub files: Vec<PackageFileSpec>,
}

/// `format` of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageFormatSpec {
    /// The download is the file itself.
    Raw,
    /// A zip archive.
    Zip,
    /// A tar archive, gzip-compressed or not.
    Tar,
}

/// One `[[packages.files]]`: archive members (a glob) to a served name or directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageFileSpec {
    /// Member path or glob (`*`, `?` within one path component); absent for `raw`.
    #[serde(default)]
    pub from: Option<String>,
    /// Served path; ending with `/`, a directory that keeps the members' base names.
    pub to: String,
}

/// `[code_form]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeFormSpec {
    /// Template of the input screen.
    pub input: String,
    /// Template of the result screen.
    pub result: String,
    /// Content type of both screens; by the input template's extension when unset.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Query parameter that carries the code in the submission (`code` when unset).
    #[serde(default)]
    pub param: Option<String>,
}

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    /// HTTP `User-Agent`.
    UserAgent,
    /// DHCP option 60.
    DhcpVendorClass,
    /// DHCP option 77.
    DhcpUserClass,
    /// Requested file path (HTTP or TFTP), relative to the provisioning root.
    Filename,
}

impl RuleSource {
    /// The name written in plugin.toml, listings and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleSource::UserAgent => "user_agent",
            RuleSource::DhcpVendorClass => "dhcp_vendor_class",
            RuleSource::DhcpUserClass => "dhcp_user_class",
            RuleSource::Filename => "filename",
        }
    }
}

/// One `[[identify]]` rule, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Attribute matched.
    pub source: RuleSource,
    /// Regex with optional named groups `vendor`, `model`, `version`, `mac`, `sn`.
    pub pattern: String,
    /// Weight against other plugins' rules.
    #[serde(default = "default_score")]
    pub score: u32,
    /// Fixed vendor when the pattern has no `vendor` group.
    #[serde(default)]
    pub vendor: Option<String>,
    /// Fixed model when the pattern has no `model` group.
    #[serde(default)]
    pub model: Option<String>,
}

fn default_score() -> u32 {
    50
}

/// One `[[files]]` route, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Path pattern with `{mac}`, `{MAC}` and `*`.
    pub path: String,
    /// Template rendering the file.
    #[serde(default)]
    pub template: Option<String>,
    /// Serve the file from `static/`.
    #[serde(default, rename = "static")]
    pub is_static: bool,
    /// Content type; by extension when unset.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// `[dhcp]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpSpec {
    /// Regex over option 60 selecting the clients that get the options.
    #[serde(default)]
    pub vendor_class: Option<String>,
    /// Options to send.
    #[serde(default)]
    pub options: Vec<DhcpOptionSpec>,
}

/// One option to inject.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpOptionSpec {
    /// Option code, 1–254.
    pub code: u8,
    /// Value with placeholders `{provisioning_url}`, `{server_ip}`, `{tftp_server}`.
    pub value: String,
    /// Sent even when the client did not request it.
    #[serde(default)]
    pub always: bool,
}
