//! Rendering a plugin's file for a device, with an in-memory cache keyed by revisions.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use super::context::{build_context, merged_raw_config, ContextError, ServerInfo};
use super::{error_chain, Plugin, Resolved, Target};
use crate::model::{Config, Device};
use crate::store::{Store, StoreError, BASE_CONFIG};

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
    device_revision: u64,
    configs: u64,
    plugin: String,
    plugin_version: String,
    template: String,
}

/// Renders templates, caching results until a revision in their inputs changes.
pub struct Renderer {
    store: Store,
    server: ServerInfo,
    cache: Mutex<HashMap<CacheKey, Rendered>>,
}

impl Renderer {
    /// A renderer reading configs from `store`.
    pub fn new(store: Store, server: ServerInfo) -> Renderer {
        Renderer {
            store,
            server,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The configs whose raw configs are merged for `device`, most general first:
    /// `base`, the tenant's default config chain, then the device config chain.
    pub fn config_chain(&self, device: &Device) -> Result<Vec<Config>, RenderError> {
        let config_id = device
            .config
            .as_deref()
            .ok_or_else(|| RenderError::NoConfig(device.id.clone()))?;
        let mut chain: Vec<Config> = Vec::new();
        let mut roots = vec![BASE_CONFIG.to_owned()];
        if let Some(tenant) = self.store.tenant(&device.tenant)? {
            roots.extend(tenant.default_config);
        }
        roots.push(config_id.to_owned());
        for root in roots {
            self.linearize(&root, device, &mut chain, 0)?;
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
        let template = match &resolved.target {
            Target::Template(name) => name,
            Target::Static(path) => {
                return Err(RenderError::NotATemplate(path.display().to_string()))
            }
        };
        let chain = self.config_chain(device)?;
        let mut hasher = DefaultHasher::new();
        for config in &chain {
            config.id.hash(&mut hasher);
            config.revision.hash(&mut hasher);
        }
        let key = CacheKey {
            device: device.id.clone(),
            device_revision: device.revision,
            configs: hasher.finish(),
            plugin: plugin.name.clone(),
            plugin_version: plugin.version.clone(),
            template: template.clone(),
        };
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(hit.clone());
        }
        let rendered = self.render_uncached(
            plugin,
            device,
            &chain,
            template,
            &resolved.content_type,
            &key,
        )?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, rendered.clone());
        Ok(rendered)
    }

    fn render_uncached(
        &self,
        plugin: &Plugin,
        device: &Device,
        chain: &[Config],
        template: &str,
        content_type: &str,
        key: &CacheKey,
    ) -> Result<Rendered, RenderError> {
        let raw = merged_raw_config(chain.iter().map(|c| &c.raw_config));
        let url_key = if self.server.url_key_strategy {
            self.store
                .tenant(&device.tenant)?
                .and_then(|t| t.provisioning_key)
        } else {
            None
        };
        let context = build_context(device, raw, &self.server, url_key.as_deref())?;
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
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
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
