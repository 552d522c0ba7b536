//! Admin commands that talk to the running daemon: `device`, `config`, `tenant`, `token`.
//!
//! They call the REST API over the local admin socket (`[api] socket`), where the daemon
//! admits root, its own user and members of group `provisiond` (SO_PEERCRED) without a
//! token; requests act as the default tenant unless `--tenant` sends `Wazo-Tenant`.

mod packages;
mod plugins;
mod prov;
pub use packages::packages;
pub use plugins::plugin_remote;
pub use prov::{auto, category, code, job, rollout};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};
use tokio::net::UnixStream;

use crate::cli::{
    ApiArgs, ConfigAction, ConfigObjArgs, DeviceAction, DeviceArgs, DeviceFields, TenantAction,
    TenantArgs, TokenAction, TokenArgs,
};
use crate::config;
use crate::http::api::MEDIA_TYPE;

/// Base path of the API on the socket.
const BASE: &str = "/api/provd/0.2";
/// Bound on one request, connection included.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Characters left as they are in a path segment (ids are letters, digits, `_`, `-`, `.`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');
/// Device keys that the API computes itself: not sent back by `device edit`.
const DEVICE_COMPUTED: &[&str] = &[
    "configured",
    "is_new",
    "added",
    "tenant_uuid",
    "category",
    "provisioned_by",
    "provisioned_at",
];

/// A failure, already worded for the user.
type Result<T> = std::result::Result<T, String>;

/// One connection target and the tenant to act for.
struct Client {
    socket: PathBuf,
    tenant: Option<String>,
    runtime: tokio::runtime::Runtime,
}

/// A successful answer: the body as received and as JSON (`Null` when empty).
struct Answer {
    text: String,
    json: Value,
    /// `Location` of a 201 (an operation to follow).
    location: Option<String>,
}

impl Client {
    fn new(api: &ApiArgs, tenant: Option<&str>) -> Result<Client> {
        let socket = match &api.socket {
            Some(path) => path.clone(),
            None => match config::load(api.source.config.as_deref(), &api.source.default_config) {
                Ok(loaded) => loaded.settings.api.socket,
                Err(errors) => {
                    return Err(format!(
                        "{errors}\ncannot read the configuration to find [api] socket (or give \
                         --socket PATH)"
                    ))
                }
            },
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        Ok(Client {
            socket,
            tenant: tenant.map(str::to_owned),
            runtime,
        })
    }

    /// Acts for `tenant` from now on.
    fn for_tenant(mut self, tenant: &str) -> Client {
        self.tenant = Some(tenant.to_owned());
        self
    }

    fn get(&self, path: &str) -> Result<Answer> {
        self.call(Method::GET, path, None)
    }

    fn post(&self, path: &str, body: Value) -> Result<Answer> {
        self.call(Method::POST, path, Some(body))
    }

    fn put(&self, path: &str, body: Value) -> Result<Answer> {
        self.call(Method::PUT, path, Some(body))
    }

    fn delete(&self, path: &str) -> Result<Answer> {
        self.call(Method::DELETE, path, None)
    }

    /// One request; a non-2xx answer becomes the API's error message.
    fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Answer> {
        let (status, answer) = self.send(method, path, body, self.tenant.as_deref())?;
        if status.is_success() {
            Ok(answer)
        } else {
            Err(failure(status, &answer))
        }
    }

    /// One request acting for `tenant` (the default tenant when `None`), whatever the status.
    fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        tenant: Option<&str>,
    ) -> Result<(StatusCode, Answer)> {
        let request = request(method, path, body, tenant)?;
        let exchange = async { tokio::time::timeout(TIMEOUT, self.exchange(request)).await };
        let (status, location, bytes) = self.runtime.block_on(exchange).map_err(|_| {
            format!(
                "no answer from provisiond on {} within {} s",
                self.socket.display(),
                TIMEOUT.as_secs()
            )
        })??;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Ok((
            status,
            Answer {
                text,
                json,
                location,
            },
        ))
    }

    /// An HTTP/1 connection to the admin socket, and the task that drives it.
    async fn connect(
        &self,
    ) -> Result<(
        hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        tokio::task::JoinHandle<()>,
    )> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| connect_error(&self.socket, &e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                format!(
                    "cannot talk HTTP to provisiond on {}: {e}",
                    self.socket.display()
                )
            })?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((sender, driver))
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Option<String>, Bytes)> {
        let shown = self.socket.display();
        let (mut sender, driver) = self.connect().await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unanswered(&self.socket, &e))?;
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("cannot read the answer of provisiond on {shown}: {e}"))?
            .to_bytes();
        drop(sender);
        let _ = driver.await;
        Ok((status, location, bytes))
    }
}

/// Chunks of a streamed answer waiting for the reader at most.
const STREAM_QUEUE: usize = 8;

impl Client {
    /// A GET whose answer is handed over as it arrives: `read` runs on another thread with a
    /// reader over the body, while this one receives it. A non-2xx answer is read whole and
    /// becomes the API's error message. The timeout applies to each wait for data, not to
    /// the whole transfer (a million devices take longer than any single wait).
    fn stream<T: Send>(
        &self,
        path: &str,
        read: impl FnOnce(&mut dyn std::io::Read) -> Result<T> + Send,
    ) -> Result<T> {
        let request = request(Method::GET, path, None, self.tenant.as_deref())?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_QUEUE);
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                read(&mut ChannelReader {
                    rx,
                    chunk: Bytes::new(),
                })
            });
            let received = self.runtime.block_on(self.receive(request, tx));
            // The reader ends once the sender is gone (end of body or failure).
            let parsed = reader
                .join()
                .unwrap_or_else(|_| Err("the answer's reader failed".to_owned()));
            received.and(parsed)
        })
    }

    async fn receive(
        &self,
        request: Request<Full<Bytes>>,
        tx: tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<()> {
        let shown = self.socket.display();
        let wait = |what: &str| {
            format!(
                "no {what} from provisiond on {shown} within {} s",
                TIMEOUT.as_secs()
            )
        };
        let (mut sender, driver) = self.connect().await?;
        let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| wait("answer"))?
            .map_err(|e| unanswered(&self.socket, &e))?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| format!("cannot read the answer of provisiond on {shown}: {e}"))?
                .to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let json = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(failure(
                status,
                &Answer {
                    text,
                    json,
                    location: None,
                },
            ));
        }
        loop {
            let frame = tokio::time::timeout(TIMEOUT, body.frame())
                .await
                .map_err(|_| wait("data"))?;
            match frame {
                None => break,
                Some(Err(e)) => {
                    return Err(format!(
                        "the answer of provisiond on {shown} broke off: {e}"
                    ))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if tx.send(data).await.is_err() {
                            // The reader stopped (its error is the one reported).
                            break;
                        }
                    }
                }
            }
        }
        drop(sender);
        let _ = driver.await;
        Ok(())
    }
}

/// The daemon closes the connection of a peer that it does not admit without a word.
fn unanswered(socket: &Path, e: &hyper::Error) -> String {
    let why = if e.is_canceled() || e.is_incomplete_message() {
        String::new()
    } else {
        format!(" ({e})")
    };
    format!(
        "provisiond on {} closed the connection without answering{why}: it refused this user \
         (the admin socket admits root, provisiond's user and members of group provisiond \
         only) or it is shutting down",
        socket.display()
    )
}

/// A blocking reader over the chunks of a streamed answer.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// Reads `{"<key>": [ … ], …}` from `input`, handing each element of the list to `each` as
/// soon as it is parsed (memory: one element at a time).
fn each_element(
    input: &mut dyn std::io::Read,
    key: &'static str,
    each: &mut dyn FnMut(Value),
) -> Result<()> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct Envelope<'a> {
        key: &'static str,
        each: &'a mut dyn FnMut(Value),
    }
    struct Elements<'a>(&'a mut dyn FnMut(Value));
    impl<'de> DeserializeSeed<'de> for Elements<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for Elements<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
            while let Some(element) = seq.next_element::<Value>()? {
                (self.0)(element);
            }
            Ok(())
        }
    }
    impl<'de> Visitor<'de> for Envelope<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an object with the key {:?}", self.key)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
            while let Some(name) = map.next_key::<String>()? {
                if name == self.key {
                    map.next_value_seed(Elements(&mut *self.each))?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_reader(input);
    de.deserialize_map(Envelope { key, each })
        .and_then(|()| de.end())
        .map_err(|e| format!("cannot read the answer: {e}"))
}

/// Rows of a table printed as they come: the widths are those of the first rows (at most
/// [`TABLE_SAMPLE`] held); a longer cell later only pushes its own line.
struct StreamedTable<'a> {
    headers: &'a [&'a str],
    held: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
}

/// Rows held to size a streamed table's columns.
const TABLE_SAMPLE: usize = 1000;

impl<'a> StreamedTable<'a> {
    fn new(headers: &'a [&'a str]) -> Self {
        StreamedTable {
            headers,
            held: Vec::new(),
            widths: None,
        }
    }

    fn row(&mut self, row: Vec<String>) {
        match &self.widths {
            Some(widths) => print_row(widths, &row),
            None => {
                self.held.push(row);
                if self.held.len() >= TABLE_SAMPLE {
                    self.flush();
                }
            }
        }
    }

    fn flush(&mut self) {
        let widths = self.widths.get_or_insert_with(|| {
            let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
            for row in &self.held {
                for (width, value) in widths.iter_mut().zip(row) {
                    *width = (*width).max(value.chars().count());
                }
            }
            let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
            print_row(&widths, &header);
            widths
        });
        for row in self.held.drain(..) {
            print_row(widths, &row);
        }
    }
}

fn print_row(widths: &[usize], cells: &[String]) {
    let last = cells.len().saturating_sub(1);
    let mut out = String::new();
    for (i, (value, width)) in cells.iter().zip(widths).enumerate() {
        if i == last {
            out.push_str(value);
        } else {
            out.push_str(&format!("{value:<width$}  "));
        }
    }
    println!("{}", out.trim_end());
}

/// An API request: path under the base, provd media type, `Wazo-Tenant` when given.
fn request(
    method: Method,
    path: &str,
    body: Option<Value>,
    tenant: Option<&str>,
) -> Result<Request<Full<Bytes>>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{BASE}{path}"))
        .header(header::HOST, "localhost")
        .header(header::ACCEPT, MEDIA_TYPE);
    if let Some(tenant) = tenant {
        let value =
            HeaderValue::from_str(tenant).map_err(|_| format!("invalid tenant {tenant:?}"))?;
        builder = builder.header("Wazo-Tenant", value);
    }
    let bytes = match body {
        Some(value) => {
            builder = builder.header(header::CONTENT_TYPE, MEDIA_TYPE);
            Bytes::from(value.to_string())
        }
        None => Bytes::new(),
    };
    builder
        .body(Full::new(bytes))
        .map_err(|e| format!("cannot build the request: {e}"))
}

/// The API's error message of a failed request, with the status.
fn failure(status: StatusCode, answer: &Answer) -> String {
    let message = answer.json["error"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| answer.text.trim().to_owned());
    format!("{message} ({status})")
}

/// The message for a socket that cannot be reached.
fn connect_error(socket: &Path, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let shown = socket.display();
    match e.kind() {
        ErrorKind::NotFound => format!(
            "cannot connect to {shown}: no such socket; is provisiond running, and is this its \
             [api] socket? (--config FILE or --socket PATH)"
        ),
        ErrorKind::PermissionDenied => format!(
            "cannot connect to {shown}: permission denied; run as root or as a member of group \
             provisiond"
        ),
        ErrorKind::ConnectionRefused => {
            format!("cannot connect to {shown}: nobody listens there; provisiond is not running")
        }
        _ => format!(
            "cannot connect to {shown}: {e}; is provisiond running, and may this user use its \
             socket (root or group provisiond)?"
        ),
    }
}

/// A path segment, percent-encoded.
fn seg(id: &str) -> String {
    utf8_percent_encode(id, SEGMENT).to_string()
}

/// Prints a failure and gives exit code 1.
fn finish(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the raw answer for `--json`, else runs `human`.
fn output(api: &ApiArgs, answer: &Answer, human: impl FnOnce(&Value)) {
    if api.json {
        if !answer.text.trim().is_empty() {
            println!("{}", answer.text.trim_end());
        }
    } else {
        human(&answer.json);
    }
}

/// `provisiond device …`.
pub fn device(args: &DeviceArgs) -> ExitCode {
    finish(device_inner(args))
}

fn device_inner(args: &DeviceArgs) -> Result<()> {
    let client = Client::new(&args.api, args.tenant.as_deref())?;
    let api = &args.api;
    match &args.action {
        DeviceAction::List { all } => {
            let path = if *all {
                "/dev_mgr/devices?recurse=true"
            } else {
                "/dev_mgr/devices"
            };
            // Printed as it arrives: a listing of a million devices holds one at a time.
            if api.json {
                client.stream(path, |input| {
                    let mut out = std::io::stdout().lock();
                    std::io::copy(input, &mut out)
                        .and_then(|_| std::io::Write::write_all(&mut out, b"\n"))
                        .map(|_| ())
                        .map_err(|e| format!("cannot write the answer: {e}"))
                })?;
            } else {
                const KEYS: [&str; 8] = [
                    "id",
                    "mac",
                    "ip",
                    "vendor",
                    "model",
                    "plugin",
                    "config",
                    "tenant_uuid",
                ];
                client.stream(path, |input| {
                    let headers = [
                        "ID", "MAC", "IP", "VENDOR", "MODEL", "PLUGIN", "CONFIG", "TENANT",
                    ];
                    let mut table = StreamedTable::new(&headers);
                    each_element(input, "devices", &mut |d| {
                        table.row(KEYS.iter().map(|k| cell(d.get(*k))).collect())
                    })?;
                    table.flush();
                    Ok(())
                })?;
            }
        }
        DeviceAction::Show { id } => {
            let answer = client.get(&format!("/dev_mgr/devices/{}", seg(id)))?;
            output(api, &answer, |json| fields(&json["device"]));
        }
        DeviceAction::Add { mac, fields: given } => {
            let mut device = Map::new();
            device.insert("mac".into(), json!(mac));
            apply(&mut device, given);
            let answer = client.post("/dev_mgr/devices", json!({ "device": device }))?;
            output(api, &answer, |json| {
                println!("device {} created", cell(json.get("id")))
            });
        }
        DeviceAction::Edit {
            id,
            mac,
            fields: given,
        } => {
            let changes = mac.is_some()
                || given.ip.is_some()
                || given.plugin.is_some()
                || given.config_id.is_some()
                || given.description.is_some();
            if !changes {
                return Err(
                    "nothing to change: give --mac, --ip, --plugin, --config-id or --description"
                        .into(),
                );
            }
            let path = format!("/dev_mgr/devices/{}", seg(id));
            let current = fetch_for_edit(&client, &path)?;
            let Some(mut device) = current
                .json
                .get("device")
                .and_then(Value::as_object)
                .cloned()
            else {
                return Err(format!(
                    "unexpected answer for device {id:?}: {}",
                    current.text
                ));
            };
            for key in DEVICE_COMPUTED {
                device.remove(*key);
            }
            if let Some(mac) = mac {
                set(&mut device, "mac", mac);
            }
            apply(&mut device, given);
            let answer = client.put(&path, json!({ "device": device }))?;
            output(api, &answer, |_| println!("device {id} updated"));
        }
        DeviceAction::Delete { id } => {
            let answer = client.delete(&format!("/dev_mgr/devices/{}", seg(id)))?;
            output(api, &answer, |_| println!("device {id} deleted"));
        }
        DeviceAction::Reset { id } => {
            let answer = client.post(&format!("/dev_mgr/devices/{}/reset", seg(id)), json!({}))?;
            output(api, &answer, |_| {
                println!("device {id} reset to autoprov; a resync is queued")
            });
        }
        DeviceAction::Password { id } => {
            let answer = client.get(&format!("/dev_mgr/devices/{}/secrets", seg(id)))?;
            output(api, &answer, |json| {
                println!("{}", cell(json["secrets"].get("admin_password")))
            });
        }
    }
    Ok(())
}

/// The device to edit. A device still in the default tenant is invisible to another tenant,
/// yet that tenant's update claims it (wazo-provd's rule): with `--tenant`, such a device is
/// read as the default tenant and then written as the tenant.
fn fetch_for_edit(client: &Client, path: &str) -> Result<Answer> {
    let (status, answer) = client.send(Method::GET, path, None, client.tenant.as_deref())?;
    if status == StatusCode::NOT_FOUND && client.tenant.is_some() {
        let (status, unclaimed) = client.send(Method::GET, path, None, None)?;
        if status.is_success() && unclaimed.json["device"]["is_new"] == json!(true) {
            return Ok(unclaimed);
        }
    }
    if status.is_success() {
        Ok(answer)
    } else {
        Err(failure(status, &answer))
    }
}

/// Sets the given device fields; an empty value removes the field.
fn apply(device: &mut Map<String, Value>, given: &DeviceFields) {
    let pairs = [
        ("ip", &given.ip),
        ("plugin", &given.plugin),
        ("config", &given.config_id),
        ("description", &given.description),
    ];
    for (key, value) in pairs {
        if let Some(value) = value {
            set(device, key, value);
        }
    }
}

fn set(object: &mut Map<String, Value>, key: &str, value: &str) {
    if value.is_empty() {
        object.remove(key);
    } else {
        object.insert(key.to_owned(), json!(value));
    }
}

/// `provisiond config …`.
pub fn config(args: &ConfigObjArgs) -> ExitCode {
    finish(config_inner(args))
}

fn config_inner(args: &ConfigObjArgs) -> Result<()> {
    let api = &args.api;
    // Read the raw config before connecting: a bad file fails without touching the daemon.
    let raw = match &args.action {
        ConfigAction::Add {
            raw_json, raw_file, ..
        } => Some(raw_config(raw_json.as_deref(), raw_file.as_deref())?),
        _ => None,
    };
    let client = Client::new(api, args.tenant.as_deref())?;
    match &args.action {
        ConfigAction::List { all } => {
            let path = if *all {
                "/cfg_mgr/configs?recurse=true"
            } else {
                "/cfg_mgr/configs"
            };
            let answer = client.get(path)?;
            output(api, &answer, |json| {
                let rows = list(json, "configs")
                    .iter()
                    .map(|c| {
                        vec![
                            cell(c.get("id")),
                            cell(c.get("parent_ids")),
                            cell(c.get("role")),
                            cell(c.get("deletable")),
                            cell(c.get("transient")),
                            cell(c.get("tenant_uuid")),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "PARENTS", "ROLE", "DELETABLE", "TRANSIENT", "TENANT"],
                    rows,
                );
            });
        }
        ConfigAction::Show { id } => {
            let answer = client.get(&format!("/cfg_mgr/configs/{}", seg(id)))?;
            output(api, &answer, |json| {
                let mut config = json["config"].as_object().cloned().unwrap_or_default();
                let raw = config.remove("raw_config");
                fields(&Value::Object(config));
                println!("raw_config:");
                flat(raw.as_ref().unwrap_or(&Value::Null));
            });
        }
        ConfigAction::Raw { id } => {
            let answer = client.get(&format!("/cfg_mgr/configs/{}/raw", seg(id)))?;
            output(api, &answer, |json| flat(&json["raw_config"]));
        }
        ConfigAction::Add { id, parents, .. } => {
            let mut config = Map::new();
            if let Some(id) = id {
                config.insert("id".into(), json!(id));
            }
            config.insert("parent_ids".into(), json!(parents));
            config.insert("raw_config".into(), Value::Object(raw.unwrap_or_default()));
            let answer = client.post("/cfg_mgr/configs", json!({ "config": config }))?;
            output(api, &answer, |json| {
                println!("config {} created", cell(json.get("id")))
            });
        }
        ConfigAction::Delete { id } => {
            let answer = client.delete(&format!("/cfg_mgr/configs/{}", seg(id)))?;
            output(api, &answer, |_| println!("config {id} deleted"));
        }
    }
    Ok(())
}

/// The raw config of `config add`: `--raw-json`, `--raw-file` (`-`: standard input) or `{}`.
fn raw_config(text: Option<&str>, file: Option<&Path>) -> Result<Map<String, Value>> {
    let (text, origin) = match (text, file) {
        (Some(text), _) => (text.to_owned(), "--raw-json".to_owned()),
        (None, Some(path)) if path == Path::new("-") => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read the standard input: {e}"))?;
            (text, "the standard input".to_owned())
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            (text, path.display().to_string())
        }
        (None, None) => return Ok(Map::new()),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("{origin}: the raw config must be a JSON object")),
        Err(e) => Err(format!("{origin}: not JSON: {e}")),
    }
}

/// `provisiond tenant …`.
pub fn tenant(args: &TenantArgs) -> ExitCode {
    finish(tenant_inner(args))
}

fn tenant_inner(args: &TenantArgs) -> Result<()> {
    let api = &args.api;
    let client = Client::new(api, args.tenant.as_deref())?;
    match &args.action {
        TenantAction::List => {
            let answer = client.get("/tenants")?;
            output(api, &answer, |json| {
                let rows = list(json, "tenants")
                    .iter()
                    .map(|t| {
                        vec![
                            cell(t.get("id")),
                            cell(t.get("name")),
                            cell(t.get("parent")),
                            cell(t.get("default_config")),
                            cell(t.get("has_provisioning_key")),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "NAME", "PARENT", "DEFAULT-CONFIG", "PROVISIONING-KEY"],
                    rows,
                );
            });
        }
        TenantAction::Show { id } => {
            let answer = client.get(&format!("/tenants/{}", seg(id)))?;
            output(api, &answer, |json| fields(&json["tenant"]));
        }
        TenantAction::Create { id, name, parent } => {
            let mut tenant = Map::new();
            tenant.insert("id".into(), json!(id));
            if let Some(name) = name {
                tenant.insert("name".into(), json!(name));
            }
            if let Some(parent) = parent {
                tenant.insert("parent".into(), json!(parent));
            }
            let answer = client.post("/tenants", json!({ "tenant": tenant }))?;
            output(api, &answer, |json| {
                println!("tenant {} created", cell(json.get("id")))
            });
        }
        TenantAction::Delete { id } => {
            let answer = client.delete(&format!("/tenants/{}", seg(id)))?;
            output(api, &answer, |_| println!("tenant {id} deleted"));
        }
        TenantAction::SetKey { id, key } => {
            let answer = client.for_tenant(id).put(
                "/configure/provisioning_key",
                json!({ "param": { "value": key } }),
            )?;
            output(api, &answer, |_| {
                println!("provisioning key of tenant {id} set")
            });
        }
        TenantAction::ClearKey { id } => {
            let answer = client.for_tenant(id).put(
                "/configure/provisioning_key",
                json!({ "param": { "value": null } }),
            )?;
            output(api, &answer, |_| {
                println!("provisioning key of tenant {id} removed")
            });
        }
    }
    Ok(())
}

/// `provisiond token …`.
/// `provisiond user`.
pub fn user(args: &crate::cli::UserArgs) -> ExitCode {
    finish(user_inner(args))
}

/// The first line of `path` (`-`: standard input), or of the terminal without echo.
fn read_password(path: Option<&std::path::Path>) -> Result<String> {
    use std::io::BufRead;
    let mut line = String::new();
    match path {
        Some(p) if p == std::path::Path::new("-") => {
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password: {e}"))?;
        }
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            line = text.lines().next().unwrap_or("").to_owned();
        }
        None => {
            use nix::sys::termios;
            let stdin = std::io::stdin();
            let saved = termios::tcgetattr(&stdin).ok();
            if let Some(saved) = &saved {
                let mut quiet = saved.clone();
                quiet.local_flags.remove(termios::LocalFlags::ECHO);
                let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &quiet);
            }
            eprint!("Password: ");
            let read = stdin.lock().read_line(&mut line);
            if let Some(saved) = &saved {
                let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, saved);
                eprintln!();
            }
            read.map_err(|e| format!("cannot read the password: {e}"))?;
        }
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn user_inner(args: &crate::cli::UserArgs) -> Result<()> {
    use crate::cli::UserAction;
    let api = &args.api;
    match &args.action {
        UserAction::Create {
            name,
            tenant,
            role,
            password_file,
        } => {
            let password = read_password(password_file.as_deref())?;
            let client = Client::new(api, None)?;
            let answer = client.post(
                "/users",
                json!({ "user": { "name": name, "tenant": tenant, "role": role, "password": password } }),
            )?;
            output(api, &answer, |_| {
                println!("user {name} created ({role} of tenant {tenant}); sign in at /console/")
            });
        }
        UserAction::List => {
            let client = Client::new(api, None)?;
            let answer = client.get("/users")?;
            output(api, &answer, |json| {
                let rows = list(json, "users")
                    .iter()
                    .map(|u| {
                        vec![
                            cell(u.get("name")),
                            cell(u.get("tenant")),
                            cell(u.get("role")),
                            cell(Some(&time(&u["created"]))),
                        ]
                    })
                    .collect();
                table(&["NAME", "TENANT", "ROLE", "CREATED"], rows);
            });
        }
        UserAction::Delete { name } => {
            let client = Client::new(api, None)?;
            let answer = client.delete(&format!("/users/{}", seg(name)))?;
            output(api, &answer, |_| println!("user {name} deleted"));
        }
    }
    Ok(())
}

pub fn token(args: &TokenArgs) -> ExitCode {
    finish(token_inner(args))
}

fn token_inner(args: &TokenArgs) -> Result<()> {
    let api = &args.api;
    let client = Client::new(api, None)?;
    match &args.action {
        TokenAction::Create {
            tenant,
            acl,
            expires,
            description,
        } => {
            let mut token = Map::new();
            token.insert("tenant".into(), json!(tenant));
            if !acl.is_empty() {
                token.insert("acl".into(), json!(acl));
            }
            if let Some(seconds) = expires {
                token.insert("expires_in".into(), json!(seconds));
            }
            if let Some(description) = description {
                token.insert("description".into(), json!(description));
            }
            let answer = client.post("/tokens", json!({ "token": token }))?;
            output(api, &answer, |json| {
                let lines = [
                    ("id", cell(json.get("id"))),
                    ("tenant", cell(json.get("tenant"))),
                    ("acl", cell(json.get("acl"))),
                    ("expires", expiry(&json["expires"])),
                    ("description", cell(json.get("description"))),
                    ("secret", cell(json.get("token"))),
                ];
                for (key, value) in lines {
                    println!("{key:<12} {value}");
                }
                println!(
                    "The secret cannot be shown again: keep it now (send it as X-Auth-Token)."
                );
            });
        }
        TokenAction::List { tenant } => {
            let answer = client.get("/tokens")?;
            let keep = |t: &Value| {
                tenant
                    .as_deref()
                    .is_none_or(|want| t["tenant"].as_str() == Some(want))
            };
            if api.json {
                let tokens: Vec<Value> = list(&answer.json, "tokens")
                    .iter()
                    .filter(|t| keep(t))
                    .cloned()
                    .collect();
                println!("{}", json!({ "tokens": tokens }));
                return Ok(());
            }
            let rows = list(&answer.json, "tokens")
                .iter()
                .filter(|t| keep(t))
                .map(|t| {
                    vec![
                        cell(t.get("id")),
                        cell(t.get("tenant")),
                        cell(t.get("acl")),
                        cell(Some(&time(&t["created"]))),
                        expiry(&t["expires"]),
                        cell(t.get("description")),
                    ]
                })
                .collect();
            table(
                &["ID", "TENANT", "ACL", "CREATED", "EXPIRES", "DESCRIPTION"],
                rows,
            );
        }
        TokenAction::Delete { id } => {
            let answer = client.delete(&format!("/tokens/{}", seg(id)))?;
            output(api, &answer, |_| println!("token {id} deleted"));
        }
    }
    Ok(())
}

/// The array under `key` of a list answer.
fn list<'a>(json: &'a Value, key: &str) -> &'a [Value] {
    json.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// One table cell: strings as they are, arrays comma-joined, nothing as `-`.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.is_empty() => "-".to_owned(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| cell(Some(v)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// Aligned columns, one line per row; the last column is not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut table = StreamedTable::new(headers);
    for row in rows {
        table.row(row);
    }
    table.flush();
}

/// `key  value` lines for the keys of an object.
fn fields(object: &Value) {
    let Some(map) = object.as_object() else {
        return;
    };
    let width = map
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(12);
    for (key, value) in map {
        let shown = match value {
            Value::Object(_) => value.to_string(),
            other => cell(Some(other)),
        };
        println!("{key:<width$} {shown}");
    }
}

/// `a.b.c = value` lines for every leaf of a JSON value, keys in order.
fn flat(value: &Value) {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, child, out);
                }
            }
            Value::String(s) => out.push((prefix.to_owned(), s.clone())),
            other => out.push((prefix.to_owned(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    if value.as_object().is_some_and(|m| !m.is_empty()) {
        walk("", value, &mut out);
    }
    for (key, value) in out {
        println!("  {key} = {value}");
    }
}

/// A token's expiry: its time, marked when it is past; `never` when absent.
fn expiry(value: &Value) -> String {
    let shown = cell(Some(&time(value)));
    match value.as_u64() {
        Some(at) if at <= crate::model::now() => format!("{shown} (expired)"),
        _ => shown,
    }
}

/// A UNIX time as `YYYY-MM-DD HH:MM:SSZ` (UTC); `never` when absent.
fn time(value: &Value) -> Value {
    let Some(secs) = value.as_u64() else {
        return json!("never");
    };
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    json!(format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(&json!(0)), json!("1970-01-01 00:00:00Z"));
        assert_eq!(time(&json!(951_782_400)), json!("2000-02-29 00:00:00Z"));
        assert_eq!(time(&json!(1_767_225_599)), json!("2025-12-31 23:59:59Z"));
        assert_eq!(time(&Value::Null), json!("never"));
    }

    #[test]
    fn cells() {
        assert_eq!(cell(None), "-");
        assert_eq!(cell(Some(&json!(["a", "b"]))), "a,b");
        assert_eq!(cell(Some(&json!(true))), "true");
        assert_eq!(seg("a b/../c"), "a%20b%2F%2E%2E%2Fc");
    }
}
