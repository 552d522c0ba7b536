//! Rendering a plugin's file for a device, with an in-memory cache keyed by revisions.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use super::context::{build_context, merged_raw_config, server_base, ContextError, ServerInfo};
use super::{error_chain, Plugin, Resolved, Target};
use crate::codeform::FormKey;
use crate::model::{Config, Device, RawConfig};
use crate::store::{Store, StoreError, AUTOPROV_CONFIG, BASE_CONFIG};

/// Entries kept before the cache is emptied; bounds memory whatever the request mix.
const CACHE_CAPACITY: usize = 16_384;

/// A rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// File content.
    pub body: Arc<[u8]>,
    /// Content type.
    pub content_type: String,
    /// Strong validator: changes whenever the content can.
    pub etag: String,
    /// When this content was first rendered (its inputs have not changed since).
    pub modified: std::time::SystemTime,
}

/// What a file is rendered from, besides its plugin and template.
#[derive(Debug, Clone)]
pub struct RenderInputs {
    /// The merged raw config of the device's chain.
    pub raw: RawConfig,
    /// The device.
    pub device: Device,
    /// Its tenant's provisioning key, when the `url_key` strategy puts it in URLs.
    pub url_key: Option<String>,
}

/// Why a file could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The device has no config assigned.
    #[error("device {0} has no config")]
    NoConfig(String),
    /// A config of the chain is missing.
    #[error("config {0:?} referenced by device {1} does not exist")]
    MissingConfig(String, String),
    /// The raw config is unusable.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The route is a static file, not a template.
    #[error("{0} is a static file")]
    NotATemplate(String),
    /// The template failed (undefined variable, bad filter…).
    #[error("plugin {plugin} template {template}: {message}")]
    Template {
        /// Plugin name.
        plugin: String,
        /// Template name.
        template: String,
        /// Tera's error chain.
        message: String,
    },
}

#[derive(PartialEq, Eq, Hash, Clone)]
struct CacheKey {
    device: String,
    /// The device fields templates can see (not `last_seen`, not the revision, which moves
    /// with it: a phone polling every few minutes keeps its ETag).
    device_fields: u64,
    /// Ids and generations of the configs of the chain (a generation is new on every write,
    /// also when a config is deleted and created again under the same id).
    configs: u64,
    url_key: Option<String>,
    plugin: String,
    plugin_version: String,
    template: String,
    content_type: String,
}

fn device_fields(device: &Device) -> u64 {
    let mut h = DefaultHasher::new();
    (
        &device.mac,
        &device.ip,
        &device.vendor,
        &device.model,
        &device.version,
        &device.sn,
    )
        .hash(&mut h);
    (
        &device.tenant,
        &device.admin_password,
        &device.remote_state_sip_username,
        &device.config,
        &device.category,
        device.provisioned.is_some(),
    )
        .hash(&mut h);
    h.finish()
}

/// Renders templates, caching results until a revision in their inputs changes.
pub struct Renderer {
    store: Store,
    server: ServerInfo,
    cache: Mutex<HashMap<CacheKey, Rendered>>,
    form_key: std::sync::OnceLock<FormKey>,
}

impl Renderer {
    /// A renderer reading configs from `store`.
    pub fn new(store: Store, server: ServerInfo) -> Renderer {
        Renderer {
            store,
            server,
            cache: Mutex::new(HashMap::new()),
            form_key: std::sync::OnceLock::new(),
        }
    }

    /// The key of the code form's URLs, read from the store (created there on first use).
    /// Blocking the first time.
    pub fn form_key(&self) -> Result<FormKey, RenderError> {
        if let Some(key) = self.form_key.get() {
            return Ok(key.clone());
        }
        let key = FormKey::new(self.store.code_form_secret()?);
        Ok(self.form_key.get_or_init(|| key).clone())
    }

    /// True when `device` is in autoprov: `autoprov` is in its config chain (the built-in
    /// config itself, or a config made from it such as `POST /cfg_mgr/autocreate`'s). Its
    /// files then carry the code form's key, and the form answers for it.
    pub fn in_autoprov(&self, device: &Device) -> Result<bool, RenderError> {
        if device.config.is_none() {
            return Ok(false);
        }
        Ok(self
            .config_chain(device)?
            .iter()
            .any(|c| c.id == AUTOPROV_CONFIG))
    }

    /// Where `device` reaches this server (the base of the URLs in its files), from its
    /// merged raw config and `[general] base_url`; `None` when unknown.
    pub fn base_url(&self, device: &Device) -> Result<Option<url::Url>, RenderError> {
        let chain = self.config_chain(device)?;
        let raw = merged_raw_config(chain.iter().map(|c| &c.raw_config));
        Ok(server_base(&raw, &self.server))
    }

    /// The configs whose raw configs are merged for `device`, most general first:
    /// `base`, the default configs of the tenants from the root down to the device's (each with
    /// its chain), the config of the device's category (with its chain), the device config
    /// chain, then the layers of its category's jobs (see [`crate::manage::jobs::layers`]),
    /// named `job:<id>`.
    pub fn config_chain(&self, device: &Device) -> Result<Vec<Config>, RenderError> {
        let config_id = device
            .config
            .as_deref()
            .ok_or_else(|| RenderError::NoConfig(device.id.clone()))?;
        let mut chain: Vec<Config> = Vec::new();
        let mut roots = vec![BASE_CONFIG.to_owned()];
        roots.extend(self.store.default_configs(&device.tenant)?);
        let category = match device.category.as_deref() {
            Some(id) => self
                .store
                .category(id)?
                .filter(|c| c.tenant == device.tenant),
            None => None,
        };
        roots.extend(category.as_ref().and_then(|c| c.config.clone()));
        roots.push(config_id.to_owned());
        for root in roots {
            self.linearize(&root, device, &mut chain, 0)?;
        }
        if category.is_some() {
            for (job, raw) in crate::manage::jobs::layers(&self.store, device)? {
                chain.push(Config {
                    id: format!("job:{}", job.id),
                    parent_ids: Vec::new(),
                    raw_config: raw,
                    tenant: job.tenant,
                    deletable: true,
                    transient: false,
                    role: None,
                    extra: Default::default(),
                    revision: 1,
                    generation: job.seq,
                });
            }
        }
        Ok(chain)
    }

    /// Appends `id`'s ancestors then `id` itself, each once.
    fn linearize(
        &self,
        id: &str,
        device: &Device,
        chain: &mut Vec<Config>,
        depth: usize,
    ) -> Result<(), RenderError> {
        if chain.iter().any(|c| c.id == id) {
            return Ok(());
        }
        // The store refuses cycles; the bound only protects against a hand-edited store.
        if depth > 64 {
            return Err(RenderError::MissingConfig(id.to_owned(), device.id.clone()));
        }
        let config = self
            .store
            .config(id)?
            .ok_or_else(|| RenderError::MissingConfig(id.to_owned(), device.id.clone()))?;
        for parent in &config.parent_ids {
            self.linearize(parent, device, chain, depth + 1)?;
        }
        if !chain.iter().any(|c| c.id == id) {
            chain.push(config);
        }
        Ok(())
    }

    /// Renders the template behind `resolved` for `device` with `plugin`.
    pub fn render(
        &self,
        plugin: &Plugin,
        device: &Device,
        resolved: &Resolved,
    ) -> Result<Rendered, RenderError> {
        self.render_with(plugin, device, resolved, true)
            .map(|r| r.unwrap_or_else(unreachable_miss))
    }

    /// The cached file only: `Ok(None)` on a miss (cheap enough to call on the async runtime).
    pub fn cached_render(
        &self,
        plugin: &Plugin,
        device: &Device,
        resolved: &Resolved,
    ) -> Result<Option<Rendered>, RenderError> {
        self.render_with(plugin, device, resolved, false)
    }

    fn render_with(
        &self,
        plugin: &Plugin,
        device: &Device,
        resolved: &Resolved,
        render_on_miss: bool,
    ) -> Result<Option<Rendered>, RenderError> {
        let template = template_of(resolved)?;
        let chain = self.config_chain(device)?;
        let mut hasher = DefaultHasher::new();
        for config in &chain {
            config.id.hash(&mut hasher);
            config.generation.hash(&mut hasher);
        }
        let url_key = self.url_key(device)?;
        let key = CacheKey {
            device: device.id.clone(),
            device_fields: device_fields(device),
            configs: hasher.finish(),
            url_key,
            plugin: plugin.name.clone(),
            plugin_version: plugin.version.clone(),
            template: template.clone(),
            content_type: resolved.content_type.clone(),
        };
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Some(hit.clone()));
        }
        if !render_on_miss {
            return Ok(None);
        }
        let inputs = RenderInputs {
            raw: merged_raw_config(chain.iter().map(|c| &c.raw_config)),
            device: device.clone(),
            url_key: key.url_key.clone(),
        };
        let rendered = self.render_uncached(plugin, &chain, template, &key.content_type, inputs)?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, rendered.clone());
        Ok(Some(rendered))
    }

    /// Renders the template behind `resolved` for `device` as [`Renderer::render`] does, past
    /// the cache, once `edit` has changed its inputs: the console's previews put placeholders
    /// in place of secrets this way, so that what they show comes from the same code.
    pub fn render_edited(
        &self,
        plugin: &Plugin,
        device: &Device,
        resolved: &Resolved,
        edit: impl FnOnce(&mut RenderInputs),
    ) -> Result<Rendered, RenderError> {
        let template = template_of(resolved)?;
        let chain = self.config_chain(device)?;
        let url_key = self.url_key(device)?;
        let mut inputs = RenderInputs {
            raw: merged_raw_config(chain.iter().map(|c| &c.raw_config)),
            device: device.clone(),
            url_key,
        };
        edit(&mut inputs);
        self.render_uncached(plugin, &chain, template, &resolved.content_type, inputs)
    }

    /// The device's tenant's provisioning key, when URLs carry one (an input of its files).
    fn url_key(&self, device: &Device) -> Result<Option<String>, RenderError> {
        Ok(if self.server.url_key_strategy {
            self.store
                .tenant(&device.tenant)?
                .and_then(|t| t.provisioning_key)
        } else {
            None
        })
    }

    fn render_uncached(
        &self,
        plugin: &Plugin,
        chain: &[Config],
        template: &str,
        content_type: &str,
        inputs: RenderInputs,
    ) -> Result<Rendered, RenderError> {
        let RenderInputs {
            raw,
            device,
            url_key,
        } = inputs;
        let device = &device;
        let form_base = match (&plugin.code_form, device.mac) {
            (Some(_), Some(mac)) if chain.iter().any(|c| c.id == AUTOPROV_CONFIG) => {
                server_base(&raw, &self.server).map(|base| (base, mac))
            }
            _ => None,
        };
        let mut context = build_context(device, raw, &self.server, url_key.as_deref())?;
        if let Some((base, mac)) = form_base {
            context.set_code_form_url(Some(self.form_key()?.form_url(&base, &mac)));
        }
        let tera_context =
            tera::Context::from_serialize(&context).map_err(|e| RenderError::Template {
                plugin: plugin.name.clone(),
                template: template.to_owned(),
                message: error_chain(&e),
            })?;
        let body = plugin
            .tera_for(template)
            .render(template, &tera_context)
            .map_err(|e| RenderError::Template {
                plugin: plugin.name.clone(),
                template: template.to_owned(),
                message: error_chain(&e),
            })?;
        // The validator depends on what is sent, nothing else.
        let mut hasher = DefaultHasher::new();
        content_type.hash(&mut hasher);
        body.hash(&mut hasher);
        Ok(Rendered {
            body: Arc::from(body.into_bytes()),
            content_type: content_type.to_owned(),
            etag: format!("\"{:016x}\"", hasher.finish()),
            modified: std::time::SystemTime::now(),
        })
    }

    /// Drops every cached file (after a plugin reload).
    pub fn clear_cache(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Number of cached files.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// `render_with(…, true)` always renders on a miss.
fn unreachable_miss() -> Rendered {
    Rendered {
        body: Arc::from(Vec::new()),
        content_type: String::new(),
        etag: String::new(),
        modified: std::time::SystemTime::UNIX_EPOCH,
    }
}

/// The template a resolved route renders; a static file is not one.
fn template_of(resolved: &Resolved) -> Result<&String, RenderError> {
    match &resolved.target {
        Target::Template(name) => Ok(name),
        Target::Static(path) => Err(RenderError::NotATemplate(path.display().to_string())),
    }
}
