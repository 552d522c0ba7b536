//! The console's device and config pages with curl against the real daemon: filters and
//! pages list the devices that the API's query lists, the overview's counts, a device's
//! identification history after its fetches, its config chain and previews with no secret in
//! them, tenant isolation by URL, viewers without buttons and with 403 on actions, and configs
//! created, re-parented and deleted (with the API's refusals) through the forms.

mod common;

use common::console::*;
use common::*;
use serde_json::{json, Value};

/// A file fetched from the provisioning server as a phone with `user_agent`.
fn phone_get(c: &Console, file: &str, user_agent: &str) -> (u16, String) {
    let reply = curl(
        &[],
        &format!("http://{}/{file}", c.http()),
        "GET",
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

/// The device ids a console list page shows, in order.
fn listed(page: &str) -> Vec<String> {
    page.split("class=\"device\">")
        .skip(1)
        .map(|rest| rest.split('<').next().unwrap().to_owned())
        .collect()
}

/// The `href` of the link with this id attribute, unescaped.
fn link(page: &str, id: &str) -> Option<String> {
    let at = page.find(&format!("id=\"{id}\""))?;
    let start = page[..at].rfind("href=\"")? + 6;
    let end = start + page[start..].find('"')?;
    Some(
        page[start..end]
            .replace("&amp;", "&")
            .replace("&#x2F;", "/"),
    )
}

fn ids(reply: &ApiReply) -> Vec<String> {
    reply.body["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("{:?}", reply.body))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

fn enc(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[test]
fn filters_and_pages_list_what_the_api_lists_and_tenants_stay_apart() {
    let c = Console::start("");
    for t in ["acme", "beta"] {
        c.cli(&["tenant", "create", t]);
    }
    // 130 devices over two tenants, two plugins, three models; a third in autoprov.
    let mut by_tenant = std::collections::BTreeMap::<&str, Vec<String>>::new();
    for n in 0..130u32 {
        let tenant = if n % 2 == 0 { "acme" } else { "beta" };
        let (vendor, plugin) = if n % 5 < 3 {
            ("Yealink", "yealink")
        } else {
            ("Snom", "snom")
        };
        let model = ["T54W", "T46U", "D785"][(n % 3) as usize];
        let mut device = json!({
            "mac": format!("00:15:65:00:{:02x}:{:02x}", n / 256, n % 256),
            "ip": format!("10.1.{}.{}", n / 200, n % 200 + 1),
            "vendor": vendor, "model": model, "plugin": plugin,
        });
        if n % 3 == 0 {
            device["config"] = json!("autoprov");
        }
        let r = c.api(
            "POST",
            "/dev_mgr/devices",
            Some(tenant),
            Some(json!({ "device": device })),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
        by_tenant
            .entry(tenant)
            .or_default()
            .push(r.body["id"].as_str().unwrap().to_owned());
    }
    let admin = c.signed_in("admin", "master", "admin");

    // Every filter set, every page: the console lists what the API's query lists.
    let sets: Vec<Vec<(&str, &str, &str)>> = vec![
        vec![],
        vec![("vendor", "vendor", "Yealink")],
        vec![("tenant", "tenant_uuid", "acme")],
        vec![
            ("plugin", "plugin", "snom"),
            ("tenant", "tenant_uuid", "beta"),
        ],
        vec![("model", "model", "T54W")],
        vec![("config", "config", "autoprov"), ("model", "model", "T54W")],
        vec![("ip", "ip", "10.1.0.7")],
    ];
    for set in &sets {
        let selector: serde_json::Map<String, Value> = set
            .iter()
            .map(|(_, key, v)| ((*key).to_owned(), json!(v)))
            .collect();
        let all = ids(&c.api(
            "GET",
            &format!(
                "/dev_mgr/devices?recurse=true&q={}",
                enc(&Value::Object(selector.clone()).to_string())
            ),
            None,
            None,
        ));
        assert!(!all.is_empty(), "{set:?}");
        let query: String = set
            .iter()
            .map(|(field, _, v)| format!("&{field}={}", enc(v)))
            .collect();
        let mut seen = Vec::new();
        let mut path = format!("/console/devices?page=1{query}");
        for page in 1.. {
            let (status, html) = c.get(&admin, &path);
            assert_eq!(status, 200, "{path}: {html}");
            let shown = listed(&html);
            let api = ids(&c.api(
                "GET",
                &format!(
                    "/dev_mgr/devices?recurse=true&skip={}&limit=50&q={}",
                    (page - 1) * 50,
                    enc(&Value::Object(selector.clone()).to_string())
                ),
                None,
                None,
            ));
            assert_eq!(shown, api, "{set:?} page {page}");
            seen.extend(shown);
            match link(&html, "next") {
                Some(next) => path = next,
                None => break,
            }
        }
        assert_eq!(seen, all, "{set:?}: the pages together");
    }

    // The free search takes a MAC as people write it, or an address.
    let (_, html) = c.get(&admin, "/console/devices?q=00-15-65-00-00-07");
    assert_eq!(listed(&html).len(), 1, "{html}");
    let (_, html) = c.get(&admin, "/console/devices?q=10.1.0.8");
    assert_eq!(listed(&html).len(), 1, "{html}");
    // A MAC that is not one: 400 with the error; no match: the empty state.
    let (status, html) = c.get(&admin, "/console/devices?mac=00:15:zz");
    assert_eq!(status, 400);
    assert!(
        html.contains("search-error") && html.contains("not a MAC"),
        "{html}"
    );
    let (status, html) = c.get(&admin, "/console/devices?vendor=Nobody");
    assert_eq!(status, 200);
    assert!(html.contains("id=\"no-devices\""), "{html}");
    assert!(
        html.contains("<label for=\"f-vendor\">"),
        "labelled fields: {html}"
    );

    // The overview's counts, from the store's counts.
    let (status, html) = c.get(&admin, "/console/");
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("id=\"total\">130<"), "{html}");
    assert!(
        html.contains("tenant=acme\">acme</a></td><td>65<"),
        "{html}"
    );
    assert!(html.contains("<td>autoprov</td><td>44<"), "{html}");
    assert!(html.contains("<td>not configured</td><td>86<"), "{html}");
    assert!(
        html.contains("plugin=yealink\">yealink</a></td><td>78<"),
        "{html}"
    );

    // A user of acme sees acme's devices only, and beta's not even by URL.
    let acme = c.signed_in("ann", "acme", "admin");
    let (_, html) = c.get(&acme, "/console/devices");
    let mut pages = listed(&html);
    let mut next = link(&html, "next");
    while let Some(path) = next {
        let (_, html) = c.get(&acme, &path);
        pages.extend(listed(&html));
        next = link(&html, "next");
    }
    pages.sort();
    let mut expected = by_tenant["acme"].clone();
    expected.sort();
    assert_eq!(pages, expected);
    let (status, html) = c.get(&acme, "/console/devices?tenant=beta");
    assert!(status == 200 && listed(&html).is_empty(), "{html}");
    let (_, html) = c.get(&acme, "/console/");
    assert!(
        html.contains("id=\"total\">65<") && !html.contains(">beta<"),
        "{html}"
    );
    let beta_device = &by_tenant["beta"][0];
    let (status, _) = c.get(&acme, &format!("/console/devices/{beta_device}"));
    assert_eq!(status, 404);
    let (_, html) = c.get(&acme, "/console/devices");
    let csrf = csrf_of(&html);
    let (status, _, _) = c.post(
        &acme,
        &format!("/console/devices/{beta_device}/delete"),
        &[("csrf", &csrf), ("confirm", "yes")],
    );
    assert_eq!(status, 404);
    assert_eq!(
        c.api(
            "GET",
            &format!("/dev_mgr/devices/{beta_device}"),
            None,
            None
        )
        .status,
        200,
        "still there"
    );
}

#[test]
fn device_page_history_chain_previews_tenants_roles_and_store_check() {
    let mut c = Console::start("");
    for t in ["acme", "beta"] {
        c.cli(&["tenant", "create", t]);
    }
    // A config of acme with a SIP line's password and other secrets.
    let r = c.api(
        "POST",
        "/cfg_mgr/configs",
        Some("acme"),
        Some(json!({ "config": {
            "id": "acme-line", "parent_ids": ["base"],
            "raw_config": {
                "sip_lines": { "1": { "username": "alice", "password": "LinePw9f3k2",
                    "auth_username": "alice", "display_name": "Alice", "registrar_ip": "10.0.0.1" } },
                "X_voicemail_pin": "480711",
                "X_api_token": "tok77319zz"
            }
        }})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let mac = "80:5e:c0:11:22:33";
    let r = c.api(
        "POST",
        "/dev_mgr/devices",
        Some("acme"),
        Some(json!({ "device": { "mac": mac, "plugin": "yealink", "config": "acme-line" } })),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();

    // Two fetches as the phone; the second after a firmware upgrade.
    let file = "805ec0112233.cfg";
    let (status, first) = phone_get(&c, file, &format!("Yealink SIP-T54W 96.86.0.70 {mac}"));
    assert_eq!(status, 200, "{first}");
    assert!(
        first.contains("LinePw9f3k2"),
        "the phone gets its password: {first}"
    );
    let (status, _) = phone_get(&c, file, &format!("Yealink SIP-T54W 96.86.0.80 {mac}"));
    assert_eq!(status, 200);
    let secrets = c.api("GET", &format!("/dev_mgr/devices/{id}/secrets"), None, None);
    let admin_password = secrets.body["secrets"]["admin_password"]
        .as_str()
        .unwrap_or_else(|| panic!("{:?}", secrets.body))
        .to_owned();
    assert!(first.contains(&admin_password), "{first}");

    let admin = c.signed_in("ann", "acme", "admin");
    let (status, page) = c.get(&admin, &format!("/console/devices/{id}"));
    assert_eq!(status, 200, "{page}");
    // History: newest first, through HTTP, the version change and the first facts.
    let history = &page[page.find("id=\"history-table\"").expect(&page)..];
    assert!(history.contains("<td>http</td>"), "{history}");
    assert!(
        history.contains("version 96.86.0.70 → 96.86.0.80"),
        "{history}"
    );
    assert!(history.contains("model — → T54W"), "{history}");
    assert!(
        history.find("96.86.0.80").unwrap() < history.find("model — →").unwrap(),
        "newest first: {history}"
    );
    // The chain, most general first, with links.
    let chain = &page[page.find("id=\"chain-list\"").expect(&page)..];
    let base_at = chain.find("/console/configs/base\"").expect(chain);
    let line_at = chain.find("/console/configs/acme%2Dline\"").expect(chain);
    assert!(base_at < line_at, "{chain}");
    // The preview: the file, rendered, with every secret masked.
    assert!(page.contains(&format!("<code>{file}</code>")), "{page}");
    assert!(page.contains("alice"), "{page}");
    assert!(page.contains("••••••••"), "{page}");
    for secret in [
        "LinePw9f3k2",
        "480711",
        "tok77319zz",
        admin_password.as_str(),
    ] {
        assert!(!page.contains(secret), "{secret} shown: {page}");
    }
    assert!(page.contains("id=\"resync\"") && page.contains("id=\"delete\""));

    // A viewer of acme: the page without buttons; the actions by URL are 403.
    let viewer = c.signed_in("vic", "acme", "viewer");
    let (status, vpage) = c.get(&viewer, &format!("/console/devices/{id}"));
    assert_eq!(status, 200);
    for button in ["id=\"resync\"", "id=\"reset\"", "id=\"delete\""] {
        assert!(!vpage.contains(button), "{button}: {vpage}");
    }
    assert!(!vpage.contains("LinePw9f3k2"));
    let vcsrf = csrf_of(&vpage);
    for action in ["resync", "reset", "delete"] {
        let (status, _, _) = c.post(
            &viewer,
            &format!("/console/devices/{id}/{action}"),
            &[("csrf", &vcsrf), ("confirm", "yes")],
        );
        assert_eq!(status, 403, "{action}");
    }

    // An admin of beta reaches neither the device, its preview, nor acme's config.
    let beta = c.signed_in("bob", "beta", "admin");
    for path in [
        format!("/console/devices/{id}"),
        "/console/configs/acme-line".to_owned(),
    ] {
        let (status, page) = c.get(&beta, &path);
        assert_eq!(status, 404, "{path}: {page}");
        assert!(!page.contains("LinePw9f3k2"));
    }
    let (_, bpage) = c.get(&beta, "/console/devices");
    let bcsrf = csrf_of(&bpage);
    let (status, _, _) = c.post(
        &beta,
        &format!("/console/devices/{id}/resync"),
        &[("csrf", &bcsrf)],
    );
    assert_eq!(status, 404);

    // A second phone keeps its history after the first one is deleted from the console.
    let (status, _) = phone_get(
        &c,
        "805ec0445566.cfg",
        "Yealink SIP-T46U 108.86.0.20 80:5e:c0:44:55:66",
    );
    assert_eq!(status, 200);
    let csrf = csrf_of(&page);
    let (status, _, confirm) = c.post(
        &admin,
        &format!("/console/devices/{id}/delete"),
        &[("csrf", &csrf)],
    );
    assert_eq!(status, 200, "a confirmation page first");
    assert!(confirm.contains("id=\"confirm\""), "{confirm}");
    let (status, _, _) = c.post(
        &admin,
        &format!("/console/devices/{id}/delete"),
        &[("csrf", &csrf), ("confirm", "yes")],
    );
    assert_eq!(status, 303);
    assert_eq!(c.get(&admin, &format!("/console/devices/{id}")).0, 404);

    // With the daemon stopped, the store check finds one history per device left.
    c.stop();
    let (code, out, err) = run(command(c.dir())
        .args(["store", "check", "--config"])
        .arg(c.dir().join("provisiond.toml")));
    assert_eq!(code, 0, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("dev_history"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("ok") && line.contains("1 entries expected, 1 found"),
        "{line}"
    );
}

#[test]
fn previews_mask_percent_encoded_secrets_and_leave_a_one_digit_pin_elsewhere_alone() {
    let c = Console::start("");
    c.cli(&["tenant", "create", "acme"]);
    // Passwords with characters the `percent` filter escapes and some it leaves (`.`); line 2's
    // password is `1`, a character the file holds in many other places.
    let r = c.api(
        "POST",
        "/cfg_mgr/configs",
        Some("acme"),
        Some(json!({ "config": {
            "id": "acme-inno", "parent_ids": ["base"],
            "raw_config": {
                "admin_password": "Pass.word!&%<",
                "sip_lines": {
                    "1": { "username": "1001", "password": "Li.ne!&%<9", "registrar_ip": "10.0.0.1" },
                    "2": { "username": "1002", "password": "1", "registrar_ip": "10.0.0.1" }
                }
            }
        }})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = c.api(
        "POST",
        "/dev_mgr/devices",
        Some("acme"),
        Some(
            json!({ "device": { "mac": "00:90:33:01:02:03", "model": "IP232",
            "plugin": "innovaphone", "config": "acme-inno" } }),
        ),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();

    // The phone gets its passwords percent-encoded, `.` left as it is.
    let (status, script) = phone_get(&c, "update-IP232-00-90-33-01-02-03.htm", "innovaphone");
    assert_eq!(status, 200, "{script}");
    assert!(
        script.contains("/password Pass.word%21%26%25%3C"),
        "{script}"
    );
    assert!(script.contains("/pwd Li.ne%21%26%25%3C9 "), "{script}");
    assert!(script.contains("/pwd 1 "), "{script}");

    let viewer = c.signed_in("vic", "acme", "viewer");
    let (status, page) = c.get(&viewer, &format!("/console/devices/{id}"));
    assert_eq!(status, 200, "{page}");
    let text = page
        .replace("&#x2F;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    for shown in [&page, &text] {
        for secret in ["Pass.word", "Li.ne", "%21%26%25%3C", "!&%<", "/pwd 1 "] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
    }
    let after = text.split("/password ••••••••").nth(1).expect(&text);
    assert!(
        after.starts_with(['\r', '\n']),
        "the whole password: {text}"
    );
    assert_eq!(text.matches("/pwd •••••••• /gk-addr").count(), 2, "{text}");
    // The other `1`s are left as they are.
    for kept in [
        "PHONE/USER1 /proto",
        "/e164 1001",
        "/gk-addr 10.0.0.1:5060",
        "/e164 1002",
    ] {
        assert!(text.contains(kept), "{kept}: {text}");
    }
}

#[test]
fn configs_create_reparent_delete_refusals_roles_and_firmware_jobs() {
    let c = Console::start("");
    let admin = c.signed_in("admin", "master", "admin");
    let viewer = c.signed_in("vera", "master", "viewer");
    let (status, page) = c.get(&admin, "/console/configs");
    assert_eq!(status, 200);
    assert!(page.contains("id=\"create-config\""), "{page}");
    let csrf = csrf_of(&page);
    let create = |id: &str, parents: &str, raw: &str| {
        c.post(
            &admin,
            "/console/configs",
            &[
                ("csrf", &csrf),
                ("id", id),
                ("parent_ids", parents),
                ("raw_config", raw),
            ],
        )
    };
    let (status, head, page) = create("desk", "base", r#"{"X_site": "hq"}"#);
    assert_eq!(status, 303, "{page}");
    assert!(head.contains("location: /console/configs/desk"), "{head}");
    let (status, _, page) = create("desk-2", "base, desk", "{}");
    assert_eq!(status, 303, "{page}");
    let r = c.api("GET", "/cfg_mgr/configs/desk-2", None, None);
    assert_eq!(
        r.body["config"]["parent_ids"],
        json!(["base", "desk"]),
        "{:?}",
        r.body
    );
    assert_eq!(
        c.api("GET", "/cfg_mgr/configs/desk", None, None).body["config"]["raw_config"]["X_site"],
        "hq"
    );

    // Refusals: the form again (400), the error at the field, the text as typed.
    let (status, _, page) = create("desk-3", "nope", "{}");
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("parent_ids: no config"), "{page}");
    assert!(page.contains("id=\"new-parents\" name=\"parent_ids\" value=\"nope\" placeholder=\"base\" aria-invalid=\"true\""), "{page}");
    let (status, _, page) = create("desk", "base", "{}");
    assert_eq!(status, 400);
    assert!(page.contains("already exists"), "{page}");
    let (status, _, page) = create("desk-3", "base", "{not json");
    assert_eq!(status, 400);
    assert!(
        page.contains("raw_config: not JSON") && page.contains("{not json"),
        "{page}"
    );
    assert_eq!(
        c.api("GET", "/cfg_mgr/configs/desk-3", None, None).status,
        404
    );

    // Parents: a cycle is refused at the field; a valid list is saved.
    let (status, _, page) = c.post(
        &admin,
        "/console/configs/desk/parents",
        &[("csrf", &csrf), ("parent_ids", "base, desk-2")],
    );
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("parent_ids-error"), "{page}");
    // Deleting a config another config inherits from is refused, with why.
    let (status, _, page) = c.post(&admin, "/console/configs/desk/delete", &[("csrf", &csrf)]);
    assert_eq!(status, 200, "a confirmation page first: {page}");
    assert!(page.contains("id=\"confirm\""));
    let (status, _, page) = c.post(
        &admin,
        "/console/configs/desk/delete",
        &[("csrf", &csrf), ("confirm", "yes")],
    );
    assert_eq!(status, 409, "{page}");
    assert!(
        page.contains("id=\"refusal\"") && page.contains("still used by"),
        "{page}"
    );
    let (status, _, page) = c.post(
        &admin,
        "/console/configs/desk-2/parents",
        &[("csrf", &csrf), ("parent_ids", "base")],
    );
    assert_eq!(status, 303, "{page}");
    assert_eq!(
        c.api("GET", "/cfg_mgr/configs/desk-2", None, None).body["config"]["parent_ids"],
        json!(["base"])
    );
    // A built-in config is refused too.
    let (status, _, page) = c.post(
        &admin,
        "/console/configs/base/delete",
        &[("csrf", &csrf), ("confirm", "yes")],
    );
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("cannot be deleted"), "{page}");
    // An unused one goes.
    let (status, _, _) = c.post(
        &admin,
        "/console/configs/desk/delete",
        &[("csrf", &csrf), ("confirm", "yes")],
    );
    assert_eq!(status, 303);
    assert_eq!(
        c.api("GET", "/cfg_mgr/configs/desk", None, None).status,
        404
    );

    // A viewer: no forms, and 403 on each of them by URL.
    let (_, vpage) = c.get(&viewer, "/console/configs");
    assert!(!vpage.contains("create-config"), "{vpage}");
    let (_, vpage) = c.get(&viewer, "/console/configs/desk-2");
    assert!(!vpage.contains("save-parents") && !vpage.contains("delete-config"));
    let vcsrf = csrf_of(&vpage);
    for (path, form) in [
        (
            "/console/configs",
            vec![("id", "v"), ("parent_ids", "base")],
        ),
        ("/console/configs/desk-2/parents", vec![("parent_ids", "")]),
        ("/console/configs/desk-2/delete", vec![("confirm", "yes")]),
    ] {
        let mut form = form;
        form.push(("csrf", &vcsrf));
        let (status, _, _) = c.post(&viewer, path, &form);
        assert_eq!(status, 403, "{path}");
    }
    assert_eq!(
        c.api("GET", "/cfg_mgr/configs/desk-2", None, None).status,
        200
    );

    // A firmware job from the jobs page, as POST /prov_mgr/jobs makes it.
    let (status, _, _) = c.post(
        &admin,
        "/console/categories",
        &[("csrf", &csrf), ("name", "phones"), ("provisioning", "on")],
    );
    assert_eq!(status, 303);
    let versions = r#"{"T54W": {"version": "96.86.0.100", "file": "T54W-96.86.0.100.rom"}}"#;
    let (status, _, page) = c.post(
        &admin,
        "/console/jobs",
        &[
            ("csrf", &csrf),
            ("category", "phones"),
            ("type", "firmware"),
            ("params", versions),
        ],
    );
    assert_eq!(status, 303, "{page}");
    let jobs = c.api("GET", "/prov_mgr/jobs", None, None);
    let job = &jobs.body["jobs"][0];
    assert_eq!(job["kind"], "firmware", "{:?}", jobs.body);
    assert_eq!(job["versions"]["T54W"]["version"], "96.86.0.100", "{job}");
    // Without versions and without a policy in the category: the API's refusal, at the field.
    let (status, _, page) = c.post(
        &admin,
        "/console/jobs",
        &[
            ("csrf", &csrf),
            ("category", "phones"),
            ("type", "firmware"),
            ("params", "{}"),
        ],
    );
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("params-error") && page.contains("firmware policy"),
        "{page}"
    );
    let (_, page) = c.get(&admin, "/console/jobs");
    assert!(page.contains("<td>firmware</td>"), "{page}");
}
