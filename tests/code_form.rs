//! The provisioning-code form in the phone's own XML browser (issue 15, "on the phone
//! itself"), end to end against the daemon over real HTTP on 127.0.0.1: for each vendor with a
//! form, a phone fetches its autoprov file, the test finds the form's URL on the key the file
//! sets, fetches the form as the phone, submits codes the way the vendor's browser builds the
//! URL, and checks the result screens, the device through the REST API, and the NOTIFY that
//! follows a redemption (challenged with a 401 and answered with the line's digest).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{curl, listening_on, write_config, ApiReply, Daemon};
use provisiond::store::Store;
use serde_json::{json, Value};

const MEDIA: &str = "application/vnd.proformatique.provd+json";
const TENANT: &str = "acme";

/// How a vendor's phone shows and submits the form.
#[derive(Debug, Clone, Copy)]
enum Vendor {
    Yealink,
    Cisco,
    Snom,
    Polycom,
    Mitel,
}

/// A phone: its vendor, MAC, User-Agent and autoprov file.
struct Phone {
    vendor: Vendor,
    mac: &'static str,
    user_agent: String,
    file: String,
}

impl Phone {
    fn new(vendor: Vendor, mac: &'static str) -> Phone {
        let bare = mac.replace(':', "");
        let (user_agent, file) = match vendor {
            Vendor::Yealink => (
                format!("Yealink SIP-T54W 96.86.0.70 {mac}"),
                format!("{bare}.cfg"),
            ),
            Vendor::Cisco => (
                format!("Cisco-CP-8851-3PCC/11.3.7 ({bare})"),
                format!("{bare}.xml"),
            ),
            Vendor::Snom => (
                format!(
                    "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-00004-g9ba52f5 {} SXM:0 UXM:0)",
                    bare.to_uppercase()
                ),
                format!("snomD785-{}.htm", bare.to_uppercase()),
            ),
            Vendor::Polycom => (
                format!("FileTransport PolycomVVX-VVX_450-UA/6.4.0.1234 (SN:{bare})"),
                format!("{bare}-user.cfg"),
            ),
            Vendor::Mitel => (
                format!(
                    "Aastra6867i MAC:{} V:5.1.0.2051-SIP",
                    mac.replace(':', "-").to_uppercase()
                ),
                format!("{}.cfg", bare.to_uppercase()),
            ),
        };
        Phone {
            vendor,
            mac,
            user_agent,
            file,
        }
    }
}

/// The phones' SIP side: every phone of the test is at 127.0.0.1, so one UDP socket on the
/// daemon's `[sync] sip_port` receives every NOTIFY.
struct SipPhones {
    socket: std::net::UdpSocket,
    answered: std::collections::BTreeSet<String>,
}

impl SipPhones {
    fn bind() -> SipPhones {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(common::PATIENCE)).unwrap();
        SipPhones {
            socket,
            answered: Default::default(),
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    /// Waits for the next NOTIFY, challenges it with a 401 as a phone that protects its SIP
    /// port does, checks that the retried NOTIFY answers the challenge with the digest of
    /// `user` and `password` (RFC 2617, MD5, qop=auth), accepts it with a 200, and returns its
    /// `Event` header. Retransmissions of a request already answered get the same answer.
    fn expect_notify(&mut self, user: &str, password: &str) -> String {
        const NONCE: &str = "form-nonce";
        let mut buf = [0u8; 4096];
        loop {
            let (n, from) = self.socket.recv_from(&mut buf).expect("a NOTIFY");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(text.starts_with("NOTIFY sip:"), "{text}");
            let header = |name: &str| {
                text.split("\r\n").skip(1).find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_owned())
                })
            };
            let required =
                |name: &str| header(name).unwrap_or_else(|| panic!("no {name} in {text}"));
            let authorization = header("Authorization");
            let status = match &authorization {
                None => "401 Unauthorized",
                Some(answer) => {
                    let p = common::digest_params(answer);
                    assert_eq!(p["username"], user, "{answer}");
                    assert_eq!(p["nonce"], NONCE, "{answer}");
                    assert_eq!(p["qop"], "auth", "{answer}");
                    let md5 = |t: String| {
                        use md5::Digest;
                        md5::Md5::digest(t.as_bytes())
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>()
                    };
                    let ha1 = md5(format!("{user}:{}:{password}", p["realm"]));
                    let ha2 = md5(format!("NOTIFY:{}", p["uri"]));
                    let expected = md5(format!(
                        "{ha1}:{NONCE}:{}:{}:auth:{ha2}",
                        p["nc"], p["cnonce"]
                    ));
                    assert_eq!(p["response"], expected, "a wrong digest: {answer}");
                    "200 OK"
                }
            };
            let mut answer = format!("SIP/2.0 {status}\r\n");
            for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
                answer.push_str(&format!("{name}: {}\r\n", required(name)));
            }
            if authorization.is_none() {
                answer.push_str(&format!(
                    "WWW-Authenticate: Digest realm=\"phone\", nonce=\"{NONCE}\", qop=\"auth\", algorithm=MD5\r\n"
                ));
            }
            answer.push_str("Content-Length: 0\r\n\r\n");
            self.socket.send_to(answer.as_bytes(), from).unwrap();
            if authorization.is_some() && self.answered.insert(required("Call-ID")) {
                return required("Event");
            }
        }
    }
}

/// The daemon with its phones' HTTP address and its admin socket.
struct Server {
    daemon: std::cell::RefCell<Daemon>,
    http: std::net::SocketAddr,
    socket: std::path::PathBuf,
    /// What phones put before their file names (`device/provisioning/<key>/` under url_key).
    files_prefix: String,
    sip: std::cell::RefCell<SipPhones>,
}

impl Server {
    /// A daemon on the default configuration plus `body`.
    fn start(dir: &Path, body: &str) -> Server {
        let sip = SipPhones::bind();
        let config = write_config(dir, &format!("{body}[sync]\nsip_port = {}\n", sip.port()));
        let mut daemon = Daemon::start({
            let mut cmd = common::command(dir);
            cmd.args(["serve", "--config"]).arg(&config);
            cmd
        });
        let http = listening_on(&daemon.expect_line(&["HTTP provisioning on"]));
        daemon.expect_line(&["ready"]);
        Server {
            daemon: std::cell::RefCell::new(daemon),
            http,
            socket: dir.join("api.sock"),
            files_prefix: String::new(),
            sip: std::cell::RefCell::new(sip),
        }
    }

    /// The REST API over the admin socket, acting for `tenant` when given.
    fn api(&self, method: &str, path: &str, tenant: Option<&str>, body: Option<Value>) -> ApiReply {
        let via = ["--unix-socket", self.socket.to_str().unwrap()];
        let headers: Vec<String> = tenant
            .map(|t| format!("Wazo-Tenant: {t}"))
            .into_iter()
            .collect();
        curl(
            &via,
            &format!("http://localhost/api/provd/0.2{path}"),
            method,
            &headers,
            body.map(|b| (MEDIA.to_owned(), b.to_string())),
        )
    }

    /// A GET (or HEAD) of `url` as a phone with `user_agent`: status and body.
    fn phone_get(&self, method: &str, url: &str, user_agent: &str) -> (u16, String) {
        let head = method == "HEAD";
        let mut args = vec![];
        if head {
            args.push("-I");
        }
        let reply = curl(
            &args,
            url,
            if head { "HEAD" } else { "GET" },
            &[format!("User-Agent: {user_agent}")],
            None,
        );
        let text = match reply.body {
            Value::String(text) => text,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        (reply.status, text)
    }

    /// The value of the `/metrics` line that starts with `series`.
    fn metric(&self, series: &str) -> u64 {
        let via = ["--unix-socket", self.socket.to_str().unwrap()];
        let r = curl(&via, "http://localhost/metrics", "GET", &[], None);
        assert_eq!(r.status, 200);
        let text = r.body.as_str().unwrap_or_default().to_owned();
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|n| n.trim().parse().unwrap())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    fn device(&self, mac: &str) -> Value {
        let r = self.api("GET", "/dev_mgr/devices?recurse=true", None, None);
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["mac"] == mac)
            .cloned()
            .unwrap_or_else(|| panic!("no device {mac} in {:?}", r.body))
    }
}

/// The form's URL that `phone`'s autoprov file puts on its key, with the checks that the key
/// is set the vendor's way.
fn form_url_in_file(vendor: Vendor, file: &str) -> String {
    match vendor {
        Vendor::Yealink => {
            let keys: BTreeMap<&str, &str> = file
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect();
            assert_eq!(
                keys.get("linekey.1.type"),
                Some(&"27"),
                "XML browser key:\n{file}"
            );
            assert_eq!(keys.get("linekey.1.label"), Some(&"Code"));
            keys["linekey.1.value"].to_owned()
        }
        Vendor::Cisco => {
            let doc = roxmltree::Document::parse(file).unwrap();
            let text = |name: &str| {
                doc.descendants()
                    .find(|n| n.has_tag_name(name))
                    .and_then(|n| n.text())
                    .unwrap_or_else(|| panic!("no {name} in\n{file}"))
                    .to_owned()
            };
            assert_eq!(text("Programmable_Softkey_Enable"), "Yes");
            assert!(
                text("Idle_Key_List")
                    .split(';')
                    .any(|k| k.starts_with("psk1")),
                "psk1 on the idle screen"
            );
            let psk = text("PSK_1");
            let fields: BTreeMap<&str, &str> =
                psk.split(';').filter_map(|f| f.split_once('=')).collect();
            assert_eq!(fields.get("fnc"), Some(&"xml"), "{psk}");
            assert_eq!(fields.get("nme"), Some(&"Code"), "{psk}");
            fields["url"].to_owned()
        }
        Vendor::Snom => {
            let doc = roxmltree::Document::parse(file).unwrap();
            let key = doc
                .descendants()
                .find(|n| n.has_tag_name("fkey") && n.attribute("idx") == Some("0"))
                .unwrap_or_else(|| panic!("no fkey 0 in\n{file}"));
            assert_eq!(key.attribute("label"), Some("Code"));
            key.text()
                .and_then(|t| t.strip_prefix("url "))
                .unwrap_or_else(|| panic!("fkey 0 is not an Action URL key: {key:?}"))
                .to_owned()
        }
        Vendor::Mitel => {
            let keys: BTreeMap<&str, &str> = file
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect();
            assert_eq!(
                keys.get("softkey1 type"),
                Some(&"xml"),
                "XML soft key:\n{file}"
            );
            assert_eq!(keys.get("softkey1 label"), Some(&"Code"));
            keys["softkey1 value"].to_owned()
        }
        Vendor::Polycom => {
            let doc = roxmltree::Document::parse(file).unwrap();
            doc.descendants()
                .find_map(|n| n.attribute("mb.main.home"))
                .filter(|home| !home.is_empty())
                .unwrap_or_else(|| panic!("no microbrowser home in\n{file}"))
                .to_owned()
        }
    }
}

/// The `sync_event` of the vendor's plugin (its plugin.toml).
fn sync_event(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Yealink | Vendor::Snom => "check-sync;reboot=false",
        Vendor::Cisco => "resync",
        Vendor::Polycom | Vendor::Mitel => "check-sync",
    }
}

/// True when the file no longer offers the form.
fn has_no_form_key(vendor: Vendor, file: &str) -> bool {
    !file.contains("code-form/")
        && match vendor {
            Vendor::Yealink => !file.contains("linekey.1.type = 27"),
            Vendor::Cisco => file.contains("<Programmable_Softkey_Enable ua=\"na\">No<"),
            Vendor::Mitel => !file.contains("softkey1 type: xml"),
            Vendor::Snom | Vendor::Polycom => true,
        }
}

/// How the phone's browser submits `code` from the input screen `screen`: the URL it fetches.
fn submission(vendor: Vendor, screen: &str, code: &str) -> String {
    let doc = roxmltree::Document::parse(screen)
        .unwrap_or_else(|e| panic!("input screen is not XML: {e}\n{screen}"));
    let root = doc.root_element();
    let child_text = |node: roxmltree::Node, name: &str| {
        node.descendants()
            .find(|n| n.has_tag_name(name))
            .and_then(|n| n.text())
            .unwrap_or_else(|| panic!("no {name} in\n{screen}"))
            .to_owned()
    };
    // Yealink, Cisco and an HTML form append `param=value` to the URL's query.
    let append = |url: &str, param: &str| {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{param}={code}")
    };
    match vendor {
        Vendor::Yealink => {
            assert_eq!(root.tag_name().name(), "YealinkIPPhoneInputScreen");
            let field = root
                .children()
                .find(|n| n.has_tag_name("InputField"))
                .expect("InputField");
            assert_eq!(field.attribute("type"), Some("number"));
            append(&child_text(root, "URL"), &child_text(field, "Parameter"))
        }
        Vendor::Cisco => {
            assert_eq!(root.tag_name().name(), "CiscoIPPhoneInput");
            let item = root
                .children()
                .find(|n| n.has_tag_name("InputItem"))
                .expect("InputItem");
            assert_eq!(child_text(item, "InputFlags"), "N");
            append(
                &child_text(root, "URL"),
                &child_text(item, "QueryStringParam"),
            )
        }
        Vendor::Snom => {
            // The phone replaces the token wherever it stands in the URL.
            assert_eq!(root.tag_name().name(), "SnomIPPhoneInput");
            let item = root
                .children()
                .find(|n| n.has_tag_name("InputItem"))
                .expect("InputItem");
            assert_eq!(child_text(item, "InputFlags"), "n");
            let token = child_text(item, "InputToken");
            let url = child_text(root, "Url");
            assert!(url.contains(&token), "{url} lacks {token}");
            url.replace(&token, code)
        }
        Vendor::Mitel => {
            assert_eq!(root.tag_name().name(), "AastraIPPhoneInputScreen");
            assert_eq!(root.attribute("type"), Some("number"));
            append(&child_text(root, "URL"), &child_text(root, "Parameter"))
        }
        Vendor::Polycom => {
            let form = doc
                .descendants()
                .find(|n| n.has_tag_name("form"))
                .expect("form");
            assert_eq!(form.attribute("method"), Some("get"));
            let input = form
                .descendants()
                .find(|n| n.has_tag_name("input") && n.attribute("type") == Some("text"))
                .expect("text input");
            append(
                form.attribute("action").unwrap(),
                input.attribute("name").unwrap(),
            )
        }
    }
}

/// The one line a result screen shows.
fn result_text(vendor: Vendor, screen: &str) -> String {
    let doc = roxmltree::Document::parse(screen)
        .unwrap_or_else(|e| panic!("result screen is not XML: {e}\n{screen}"));
    let (root, line) = match vendor {
        Vendor::Yealink => ("YealinkIPPhoneTextScreen", "Text"),
        Vendor::Cisco => ("CiscoIPPhoneText", "Text"),
        Vendor::Snom => ("SnomIPPhoneText", "Text"),
        Vendor::Polycom => ("html", "p"),
        Vendor::Mitel => ("AastraIPPhoneTextScreen", "Text"),
    };
    assert_eq!(doc.root_element().tag_name().name(), root, "{screen}");
    doc.descendants()
        .find(|n| n.has_tag_name(line))
        .and_then(|n| n.text())
        .unwrap_or_else(|| panic!("no {line} in {screen}"))
        .to_owned()
}

/// A 12-digit string that is not `code` (so not a live code either: `code` is the only one).
fn wrong_code(code: &str) -> String {
    let last = code.chars().last().and_then(|c| c.to_digit(10)).unwrap();
    format!("{}{}", &code[..11], (last + 1) % 10)
}

/// The tenant, its category and a config with one line for each phone.
fn provision_tenant(server: &Server, phones: &[Phone]) {
    let r = server.api(
        "POST",
        "/tenants",
        None,
        Some(json!({"tenant": {"id": TENANT, "name": "Acme"}})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = server.api(
        "POST",
        "/prov_mgr/categories",
        Some(TENANT),
        Some(json!({"category": {"name": "Office", "provisioning": true}})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    for phone in phones {
        let r = server.api(
            "POST",
            "/cfg_mgr/configs",
            Some(TENANT),
            Some(json!({"config": {
                "id": line_config(phone),
                "parent_ids": ["base"],
                "raw_config": {"sip_lines": {"1": {
                    "username": line_user(phone),
                    "password": line_password(phone),
                    "registrar_ip": "10.0.0.10"
                }}}
            }})),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
}

/// SIP user and password of the phone's line, which answer its NOTIFY challenge.
fn line_user(phone: &Phone) -> String {
    format!("u{}", phone.mac.replace(':', ""))
}

fn line_password(phone: &Phone) -> String {
    format!("pw-{}", phone.mac.replace(':', ""))
}

fn line_config(phone: &Phone) -> String {
    format!("line-{}", phone.mac.replace(':', ""))
}

/// The URL phones reach the daemon at, in the `base` config as a PBX sets it
/// (`ip`/`http_port`), since the listener's port is only known once it listens.
fn set_base_url(server: &Server) {
    let r = server.api("GET", "/cfg_mgr/configs/base", None, None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut base = r.body["config"].clone();
    base["raw_config"]["ip"] = json!(server.http.ip().to_string());
    base["raw_config"]["http_port"] = json!(server.http.port());
    let r = server.api(
        "PUT",
        "/cfg_mgr/configs/base",
        None,
        Some(json!({ "config": base })),
    );
    assert_eq!(r.status, 204, "{:?}", r.body);
}

fn new_code(server: &Server, phone: &Phone) -> String {
    let r = server.api(
        "POST",
        "/prov_mgr/codes",
        Some(TENANT),
        Some(json!({"code": {"category": "Office", "config": line_config(phone)}})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let code = r.body["code"]["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 12);
    code
}

/// One phone through the whole form; `other` is another phone of the same vendor; the phone
/// fetches its file under `after_prefix` once redeemed.
fn exercise(server: &Server, phone: &Phone, other: &Phone, after_prefix: &str) {
    let what = format!("{:?}", phone.vendor);
    let file_url = format!(
        "http://{}/{}{}",
        server.http, server.files_prefix, phone.file
    );
    let (status, file) = server.phone_get("GET", &file_url, &phone.user_agent);
    assert_eq!(status, 200, "{what}: {file}");
    let form = form_url_in_file(phone.vendor, &file);
    assert!(
        form.starts_with(&format!("http://{}/code-form/", server.http)),
        "{what}: {form}"
    );
    let before = server.device(phone.mac);
    assert_eq!(before["config"], "autoprov", "{what}");

    // Another signature, another phone's MAC in the User-Agent: no form.
    let mut forged = form.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(
        server.phone_get("GET", &forged, &phone.user_agent).0,
        404,
        "{what}"
    );
    // The same vendor's User-Agent, with another MAC.
    let foreign_ua = &other.user_agent;
    assert_eq!(server.phone_get("GET", &form, foreign_ua).0, 404, "{what}");

    let (status, screen) = server.phone_get("GET", &form, &phone.user_agent);
    assert_eq!(status, 200, "{what}: {screen}");
    let code = new_code(server, phone);

    // Another phone cannot submit on this one's form either, nor can a HEAD redeem.
    let stolen = submission(phone.vendor, &screen, &code);
    assert_eq!(
        server.phone_get("GET", &stolen, foreign_ua).0,
        404,
        "{what}"
    );
    assert_eq!(
        server.phone_get("HEAD", &stolen, &phone.user_agent).0,
        405,
        "{what}"
    );

    // A wrong code: the neutral answer, nothing changed.
    let wrong = submission(phone.vendor, &screen, &wrong_code(&code));
    let (status, result) = server.phone_get("GET", &wrong, &phone.user_agent);
    assert_eq!(status, 200, "{what}: {result}");
    assert_eq!(
        result_text(phone.vendor, &result),
        "Code not accepted",
        "{what}"
    );
    let unchanged = server.device(phone.mac);
    assert_eq!(unchanged["tenant_uuid"], before["tenant_uuid"], "{what}");
    assert_eq!(unchanged["config"], "autoprov", "{what}");

    // The right code, as the phone submits it.
    let (status, result) = server.phone_get("GET", &stolen, &phone.user_agent);
    assert_eq!(status, 200, "{what}: {result}");
    assert_eq!(
        result_text(phone.vendor, &result),
        "Phone provisioned, updating",
        "{what}"
    );
    let after = server.device(phone.mac);
    assert_eq!(after["tenant_uuid"], TENANT, "{what}: {after}");
    assert_eq!(
        after["config"],
        line_config(phone).as_str(),
        "{what}: {after}"
    );
    assert_eq!(after["configured"], true, "{what}: {after}");
    // And the phone is told to fetch its new files, with its vendor's event.
    let event = server
        .sip
        .borrow_mut()
        .expect_notify(&line_user(phone), &line_password(phone));
    assert_eq!(event, sync_event(phone.vendor), "{what}");

    // Provisioned: the form is gone, from the server and from the phone's file.
    assert_eq!(
        server.phone_get("GET", &form, &phone.user_agent).0,
        404,
        "{what}"
    );
    let file_url = format!("http://{}/{after_prefix}{}", server.http, phone.file);
    let (status, file) = server.phone_get("GET", &file_url, &phone.user_agent);
    assert_eq!(status, 200, "{what}: {file}");
    assert!(has_no_form_key(phone.vendor, &file), "{what}:\n{file}");
}

#[test]
fn each_vendor_redeems_a_code_from_its_own_form() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), "");
    let phones = [
        (
            Phone::new(Vendor::Yealink, "80:5e:c0:aa:bb:01"),
            Phone::new(Vendor::Yealink, "80:5e:c0:aa:bb:11"),
        ),
        (
            Phone::new(Vendor::Cisco, "00:56:2b:aa:bb:02"),
            Phone::new(Vendor::Cisco, "00:56:2b:aa:bb:12"),
        ),
        (
            Phone::new(Vendor::Snom, "00:04:13:aa:bb:03"),
            Phone::new(Vendor::Snom, "00:04:13:aa:bb:13"),
        ),
        (
            Phone::new(Vendor::Polycom, "00:04:f2:aa:bb:04"),
            Phone::new(Vendor::Polycom, "00:04:f2:aa:bb:14"),
        ),
        (
            Phone::new(Vendor::Mitel, "00:08:5d:aa:bb:06"),
            Phone::new(Vendor::Mitel, "00:08:5d:aa:bb:16"),
        ),
    ];
    let owned: Vec<Phone> = phones
        .iter()
        .map(|(p, _)| Phone::new(p.vendor, p.mac))
        .collect();
    provision_tenant(&server, &owned);
    set_base_url(&server);
    for (phone, other) in &phones {
        exercise(&server, phone, other, "");
    }
    // The access log names the form by its MAC, never with its signature.
    let line = server
        .daemon
        .borrow_mut()
        .expect_line(&["code-form/805ec0aabb01/…/submit", "status=200"]);
    let sig_shown = regex::Regex::new("code-form/[0-9a-f]{12}/[0-9a-f]{32}").unwrap();
    assert!(
        !server
            .daemon
            .borrow()
            .seen
            .iter()
            .any(|l| sig_shown.is_match(l)),
        "{line}"
    );
    let malformed = format!("http://{}/code-form/805ec0aabb01", server.http);
    let ua = &phones[0].0.user_agent;
    assert_eq!(server.phone_get("GET", &malformed, ua).0, 404);
    // Every refusal above is counted: per phone a forged signature, another phone's form and
    // submission, the form after its redemption; and the malformed path.
    assert_eq!(
        server.metric("provisiond_rejected_total{transport=\"http\",reason=\"code_form\"}"),
        4 * phones.len() as u64 + 1
    );
}

#[test]
fn the_code_form_secret_is_created_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Concurrent first callers agree on one secret.
    let secrets: Vec<[u8; 32]> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| store.code_form_secret().unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = secrets[0];
    assert!(secrets.iter().all(|s| *s == first), "{secrets:?}");
    assert_ne!(first, [0u8; 32]);
    drop(store);
    // URLs written into phones' files stay valid after a restart.
    let store = common::retry_locked(|| Store::open(dir.path()));
    assert_eq!(store.code_form_secret().unwrap(), first);
    // Another store has its own.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Store::open(other_dir.path()).unwrap();
    assert_ne!(other.code_form_secret().unwrap(), first);
}

/// Under the `url_key` strategy phones fetch their files under their tenant's key, but the
/// form's URL carries no key: its signature authenticates it.
#[test]
fn the_form_is_outside_the_url_key_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path(), "[auth]\nhttp_auth_strategy = \"url_key\"\n");
    let key = "Key-0123456789";
    let r = server.api(
        "PUT",
        "/configure/provisioning_key",
        None,
        Some(json!({"param": {"value": key}})),
    );
    assert_eq!(r.status, 204, "{:?}", r.body);
    server.files_prefix = format!("device/provisioning/{key}/");
    let phone = Phone::new(Vendor::Yealink, "80:5e:c0:aa:bb:05");
    let other = Phone::new(Vendor::Yealink, "80:5e:c0:aa:bb:15");
    // Without the key, no file.
    let bare = format!("http://{}/{}", server.http, phone.file);
    assert_eq!(server.phone_get("GET", &bare, &phone.user_agent).0, 404);
    provision_tenant(&server, std::slice::from_ref(&phone));
    set_base_url(&server);
    // Under url_key a phone is served under its own tenant's key only: once redeemed it is
    // acme's, whose key is where the test looks at its new file.
    let acme_key = "Acme-0123456789";
    let r = server.api(
        "PUT",
        "/configure/provisioning_key",
        Some(TENANT),
        Some(json!({"param": {"value": acme_key}})),
    );
    assert_eq!(r.status, 204, "{:?}", r.body);
    exercise(
        &server,
        &phone,
        &other,
        &format!("device/provisioning/{acme_key}/"),
    );
}
