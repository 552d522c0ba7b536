//! The provisioning-code form on the provisioning server (issue 15, "on the phone itself"):
//! `GET /code-form/<mac>/<sig>` answers the input screen of the device's plugin, and
//! `GET /code-form/<mac>/<sig>/submit?<param>=<digits>` redeems the code for that device and
//! answers the result screen. See [`crate::codeform`] for the signed URLs.
//!
//! The form answers only for its own device: the signature must be the MAC's, the device
//! must exist, be in autoprov and have a plugin with a form, and a User-Agent that names a
//! MAC must name that one. Every other request is a 404 counted as
//! [`Kind::HttpCodeForm`]. The result screens never say why a code was refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::provisioning::{plain, refused, Outcome, Provisioning};
use crate::codeform::{self, FormPage, InputScreen, ResultScreen};
use crate::files::FileService;
use crate::manage::{codes, ManageError};
use crate::model::{Device, Mac};
use crate::plugins::{PluginSet, RenderError, RuleSource, Screen};
use crate::ratelimit::Kind;
use crate::sync::Reason;

/// Longest code value passed on: a code has 12 digits, anything much longer is refused the
/// same way without carrying it further.
const MAX_CODE_CHARS: usize = 64;

/// Why a form request gets no screen.
#[derive(Debug, thiserror::Error)]
enum FormError {
    /// The client's fault: a 404 counted in the rejected-requests log.
    #[error("{reason}")]
    Refused {
        /// For the access log.
        reason: String,
        /// Logged as a warning (a phone asking for another phone's form).
        warning: bool,
        /// The device concerned, when known.
        device: Option<String>,
    },
    /// A HEAD on the submission, which would redeem without showing the result.
    #[error("the submission takes GET only")]
    Method,
    /// Ours: a 500.
    #[error("{0}")]
    Internal(String),
}

impl From<RenderError> for FormError {
    fn from(e: RenderError) -> FormError {
        FormError::Internal(e.to_string())
    }
}

impl From<crate::store::StoreError> for FormError {
    fn from(e: crate::store::StoreError) -> FormError {
        FormError::Internal(e.to_string())
    }
}

fn refusal(reason: impl Into<String>) -> FormError {
    FormError::Refused {
        reason: reason.into(),
        warning: false,
        device: None,
    }
}

/// A screen to send.
struct Page {
    body: String,
    content_type: String,
    device: Device,
    plugin: String,
    /// What the access log says about a submission (never the code).
    reason: Option<String>,
    /// The device to resync: a code was redeemed for it.
    resync: Option<String>,
}

/// Answers a request for a path under `code-form/` (decoded, without its leading `/`).
pub(super) async fn answer(
    state: &Arc<Provisioning>,
    peer: SocketAddr,
    method: &Method,
    path: String,
    query: Option<&str>,
    user_agent: Option<String>,
) -> Outcome {
    let request = Request {
        src: peer.ip().to_canonical(),
        head: method == Method::HEAD,
        path,
        query: query.map(str::to_owned),
        user_agent,
    };
    let files = Arc::clone(&state.files);
    // Store reads and writes, rendering, and the redemption's flush: off the runtime.
    let served = tokio::task::spawn_blocking(move || serve(&files, &request)).await;
    match served {
        Ok(Ok(page)) => {
            if let Some(device) = &page.resync {
                state.sync.queue(device, Reason::Redeemed);
            }
            respond(page, method)
        }
        Ok(Err(FormError::Refused {
            reason,
            warning,
            device,
        })) => {
            let mut outcome = refused(StatusCode::NOT_FOUND, Kind::HttpCodeForm, reason.clone());
            outcome.warning = warning.then_some(reason);
            outcome.device = device;
            outcome
        }
        Ok(Err(e @ FormError::Method)) => {
            let mut outcome = refused(
                StatusCode::METHOD_NOT_ALLOWED,
                Kind::HttpMethod,
                e.to_string(),
            );
            outcome
                .response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            outcome
        }
        Ok(Err(FormError::Internal(e))) => {
            tracing::error!(%peer, "code form: {e}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, e)
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("task: {e}")),
    }
}

/// One form request, as the transport saw it.
struct Request {
    src: IpAddr,
    head: bool,
    path: String,
    query: Option<String>,
    user_agent: Option<String>,
}

/// The MAC that the best-scoring User-Agent rule of any plugin finds, if any.
fn mac_in_user_agent(plugins: &PluginSet, user_agent: &str) -> Option<Mac> {
    plugins
        .iter()
        .filter_map(|p| p.extract(RuleSource::UserAgent, user_agent))
        .filter(|found| found.mac.is_some())
        .max_by_key(|found| found.score)
        .and_then(|found| found.mac)
}

fn serve(files: &FileService, request: &Request) -> Result<Page, FormError> {
    let form = codeform::parse_path(&request.path).map_err(|e| refusal(e.to_string()))?;
    let renderer = files.renderer();
    let key = renderer.form_key()?;
    if !key.verify(&form.mac, &form.sig) {
        return Err(refusal(format!("wrong signature for {}", form.mac)));
    }
    let device = files
        .store()
        .device_by_mac(&form.mac)?
        .ok_or_else(|| refusal(format!("no device has MAC {}", form.mac)))?;
    let refused_for = |reason: String| FormError::Refused {
        reason,
        warning: false,
        device: Some(device.id.clone()),
    };
    let plugins = files.plugins();
    let (plugin, form_spec) = device
        .plugin
        .as_deref()
        .and_then(|name| plugins.get(name))
        .and_then(|p| Some((p, p.code_form.as_ref()?)))
        .ok_or_else(|| {
            refused_for(format!(
                "device {} has no plugin with a code form",
                device.id
            ))
        })?;
    if let Some(claimed) = request
        .user_agent
        .as_deref()
        .and_then(|ua| mac_in_user_agent(&plugins, ua))
    {
        if claimed != form.mac {
            return Err(FormError::Refused {
                reason: format!(
                    "the phone with MAC {claimed} asked for the code form of device {} ({})",
                    device.id, form.mac
                ),
                warning: true,
                device: Some(device.id.clone()),
            });
        }
    }
    if !renderer.in_autoprov(&device)? {
        return Err(refused_for(format!(
            "device {} is not in autoprov",
            device.id
        )));
    }
    let render = |screen: Screen<'_>| -> Result<String, FormError> {
        match plugin.render_screen(screen) {
            Some(rendered) => Ok(rendered?),
            None => Err(FormError::Internal(format!(
                "plugin {} lost its code form",
                plugin.name
            ))),
        }
    };
    let page = |body: String, reason: Option<String>| Page {
        body,
        content_type: form_spec.content_type.clone(),
        device: device.clone(),
        plugin: plugin.name.clone(),
        reason,
        resync: None,
    };
    match form.page {
        FormPage::Input => {
            let base = renderer.base_url(&device)?.ok_or_else(|| {
                FormError::Internal(format!(
                    "no base URL for device {}: set [general] base_url",
                    device.id
                ))
            })?;
            let body = render(Screen::Input(&InputScreen {
                submit_url: codeform::submit_url(&base, &form.mac, &form.sig),
                param: form_spec.param.clone(),
                title: codeform::TITLE.to_owned(),
                prompt: codeform::PROMPT.to_owned(),
                digits: 12,
            }))?;
            Ok(page(body, None))
        }
        FormPage::Submit => {
            if request.head {
                return Err(FormError::Method);
            }
            let code: String = request
                .query
                .as_deref()
                .and_then(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .find(|(name, _)| *name == form_spec.param.as_str())
                        .map(|(_, value)| value.trim().chars().take(MAX_CODE_CHARS).collect())
                })
                .unwrap_or_default();
            let (redemption, redeemed) = redeem_code(files, form.mac, &code, request.src)?;
            let (ok, message, reason) = match redemption {
                Redemption::Accepted => (true, codeform::ACCEPTED, "code accepted"),
                Redemption::Refused => (false, codeform::REFUSED, "code not accepted"),
                Redemption::TooMany => (
                    false,
                    codeform::TOO_MANY,
                    "code refused: too many failures from this address",
                ),
            };
            let body = render(Screen::Result(&ResultScreen {
                title: codeform::TITLE.to_owned(),
                ok,
                message: message.to_owned(),
            }))?;
            let mut answered = page(body, Some(reason.to_owned()));
            // The access log shows the device as the redemption left it (its new tenant).
            if let Some(redeemed) = redeemed {
                answered.resync = Some(redeemed.id.clone());
                answered.device = redeemed;
            }
            Ok(answered)
        }
    }
}

/// What a submission came to, as the result screen tells it.
enum Redemption {
    /// Redeemed; the resync is queued.
    Accepted,
    /// Wrong, expired or used code, or a MAC that belongs to another tenant.
    Refused,
    /// The address is over its failure budget.
    TooMany,
}

/// Redeems `code` for the device of `mac` (the manage layer counts and bounds the failures
/// of `source`).
fn redeem_code(
    files: &FileService,
    mac: Mac,
    code: &str,
    source: IpAddr,
) -> Result<(Redemption, Option<Device>), FormError> {
    let request = codes::RedeemRequest {
        code: code.to_owned(),
        target: codes::RedeemTarget::Mac(mac),
        source,
    };
    match codes::redeem(
        files.store(),
        &files.guard,
        &files.events,
        None,
        &request,
        crate::model::now(),
    ) {
        Ok(done) => Ok((Redemption::Accepted, Some(done.device))),
        Err(ManageError::RateLimited) => Ok((Redemption::TooMany, None)),
        Err(ManageError::Store(e)) => Err(FormError::Internal(e.to_string())),
        Err(ManageError::Internal(e)) => Err(FormError::Internal(e)),
        // Wrong, expired or used code, a MAC of another tenant, a config gone: one answer.
        Err(_) => Ok((Redemption::Refused, None)),
    }
}

fn respond(page: Page, method: &Method) -> Outcome {
    let length = page.body.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(page.body)
    };
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &page.content_type)
        .header(header::CONTENT_LENGTH, length)
        // Each answer is for this moment only (a result, a form that may be gone).
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default();
    Outcome {
        status: StatusCode::OK,
        mac: page.device.mac.map(|m| m.to_string()),
        tenant: Some(page.device.tenant.clone()),
        device: Some(page.device.id),
        plugin: Some(page.plugin),
        reason: page.reason,
        rejection: None,
        warning: None,
        response,
    }
}
