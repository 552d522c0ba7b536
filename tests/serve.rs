//! The `provisiond` binary as a process: check-config exit codes, serve start-up, signals.

mod common;

use std::process::Command;

use common::{command, listening_on, run, write_config, Daemon};
use nix::sys::signal::Signal;
use provisiond::store::Store;

#[test]
fn version_is_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run(command(tmp.path()).arg("--version"));
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("provisiond {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_exits_0_when_valid_and_1_with_every_problem_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let (code, _, stderr) = run(command(dir).arg("check-config"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("configuration OK: <embedded development default>"),
        "{stderr}"
    );

    let good = write_config(dir, "[http]\nlisten = \"127.0.0.1:18080\"\n");
    let (code, stdout, stderr) = run(command(dir)
        .args(["check-config", "--print", "--config"])
        .arg(&good));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("configuration OK: {}", good.display())),
        "{stderr}"
    );
    assert!(stdout.contains("listen = \"127.0.0.1:18080\""), "{stdout}");

    std::fs::create_dir(dir.join("conf.d")).unwrap();
    let fragment = dir.join("conf.d/50-dhcp.toml");
    std::fs::write(
        &fragment,
        "[dhcp]\nmode = \"server\"\n[[dhcp.pools]]\nsubnet = \"10.0.0.0/24\"\nranges = [{ start = \"10.0.0.50\", end = \"10.0.0.10\" }]\n[tftp]\nretries = 0\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(command(dir)
        .args(["check-config", "--print", "-c"])
        .arg(&good));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stdout.is_empty(),
        "nothing printed for an invalid configuration: {stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "{}: dhcp.pools[0].ranges[0]: start 10.0.0.50 is after end 10.0.0.10",
            fragment.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}: tftp.retries: must be at least 1",
            fragment.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("configuration invalid: 2 problems"),
        "{stderr}"
    );

    let (code, _, stderr) = run(command(dir)
        .args(["check-config", "--config"])
        .arg(dir.join("missing.toml")));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("missing.toml: cannot read"), "{stderr}");

    let (code, _, stderr) = run(command(dir).args(["check-config", "--bogus"]));
    assert_eq!(code, 2, "usage errors are clap's exit 2: {stderr}");
}

fn serve_embedded_and_stop_with(signal: Signal, announced: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut daemon = Daemon::start({
        let mut cmd = command(dir);
        cmd.arg("serve");
        cmd
    });
    let first = daemon.expect_line(&[]);
    assert!(
        first.contains("running on the embedded development default"),
        "first line says so: {first}"
    );
    daemon.expect_line(&["store open; ready", "provisiond-data/db"]);
    // No plugins/ in this directory: the embedded plugins provision a phone.
    for file in ["805ec0112233.cfg", "y000000000096.cfg"] {
        let (status, body) = fetch_as_yealink("127.0.0.1:8667", file);
        assert_eq!(status, 200, "{file}: {body}");
        assert!(body.starts_with("#!version:1.0.0.1\n"), "{file}: {body}");
    }
    // A new phone on the embedded default gets the code form on a key, at the address where
    // this host's phones reach the HTTP listener: a rollout works without a config file.
    let (_, body) = fetch_as_yealink("127.0.0.1:8667", "805ec0112233.cfg");
    assert!(
        body.contains("linekey.1.value = http://127.0.0.1:8667/code-form/805ec0112233/"),
        "{body}"
    );
    daemon.signal(signal);
    daemon.expect_line(&[announced]);
    let status = daemon.wait();
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        daemon.seen.join("\n")
    );
    assert!(
        daemon.seen.iter().any(|l| l.contains("stopped cleanly")),
        "{:?}",
        daemon.seen
    );

    // The store was created in the working directory, with its first records.
    let store = Store::open(&dir.join("provisiond-data")).expect("store reopens after shutdown");
    assert!(store.tenant("master").unwrap().is_some());
    assert_eq!(
        store.config("autoprov").unwrap().unwrap().parent_ids,
        vec!["base".to_string()]
    );
    assert!(store.config("base").unwrap().is_some());
}

/// `GET http://ADDR/FILE` with a Yealink T54W's User-Agent: (status, body).
fn fetch_as_yealink(addr: &str, file: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-A",
            "Yealink SIP-T54W 96.86.0.70 80:5e:c0:11:22:33",
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("http://{addr}/{file}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("curl: {}", String::from_utf8_lossy(&out.stderr)));
    (status.parse().expect("an HTTP status"), body.to_owned())
}

/// A daemon on `config` (which sets `plugins_dir`), run from `dir`; its HTTP address.
fn serve_from(dir: &std::path::Path, config: &std::path::Path) -> (Daemon, String) {
    let mut daemon = Daemon::start({
        let mut cmd = command(dir);
        cmd.args(["serve", "--config"]).arg(config);
        cmd
    });
    let http = listening_on(&daemon.expect_line(&["HTTP provisioning on"]));
    daemon.expect_line(&["store open; ready"]);
    (daemon, http.to_string())
}

/// `write_config` with `plugins_dir` set to `plugins`.
fn config_with_plugins_dir(dir: &std::path::Path, plugins: &std::path::Path) -> std::path::PathBuf {
    let config = write_config(dir, "");
    let repository = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        &format!("plugins_dir = \"{}\"", repository.display()),
        &format!("plugins_dir = \"{}\"", plugins.display()),
        1,
    );
    assert!(text.contains(&plugins.display().to_string()), "{text}");
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn without_a_plugin_directory_the_embedded_plugins_provision_phones() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config_with_plugins_dir(tmp.path(), &tmp.path().join("no-such-dir"));
    let (mut daemon, http) = serve_from(tmp.path(), &config);
    assert!(daemon
        .seen
        .iter()
        .any(|l| l.contains("plugins loaded") && l.contains("yealink (embedded)")));
    for file in ["805ec0112233.cfg", "y000000000096.cfg"] {
        let (status, body) = fetch_as_yealink(&http, file);
        assert_eq!(status, 200, "{file}: {body}");
        assert!(
            body.contains("generated by provisiond"),
            "{file}: the built-in template: {body}"
        );
    }
    // A plugin reload through the API loads the same layers.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(tmp.path().join("api.sock"))
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"id": "yealink"}"#,
            "http://localhost/0.2/pg_mgr/reload",
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "204");
    assert_eq!(fetch_as_yealink(&http, "805ec0112233.cfg").0, 200);
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait().success());

    let (code, stdout, stderr) = run(command(tmp.path())
        .args(["plugin", "list", "--config"])
        .arg(&config));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.lines().any(|l| l.starts_with("yealink")
            && l.contains(" embedded ")
            && l.contains("(embedded)")),
        "{stdout}"
    );
}

#[test]
fn a_plugin_directory_replaces_the_embedded_plugin_of_the_same_name() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    let yealink = plugins.join("yealink");
    std::fs::create_dir_all(yealink.join("templates")).unwrap();
    // Only the MAC file: the directory replaces the whole plugin, not file by file.
    std::fs::write(
        yealink.join("plugin.toml"),
        "name = \"yealink\"\nversion = \"7.0-local\"\nvendor = \"Yealink\"\n\
         [[identify]]\nsource = \"user_agent\"\n\
         pattern = '^Yealink SIP-(?P<model>\\S+) (?P<version>\\S+) (?P<mac>[0-9a-f:]{17})$'\nscore = 100\n\
         [[files]]\npath = \"{mac}.cfg\"\ntemplate = \"mac.cfg.tera\"\n",
    )
    .unwrap();
    std::fs::write(
        yealink.join("templates/mac.cfg.tera"),
        "# local yealink plugin for {{ device.mac_bare }}\n",
    )
    .unwrap();
    let config = config_with_plugins_dir(tmp.path(), &plugins);
    let (mut daemon, http) = serve_from(tmp.path(), &config);
    let (status, body) = fetch_as_yealink(&http, "805ec0112233.cfg");
    assert_eq!(
        (status, body.as_str()),
        (200, "# local yealink plugin for 805ec0112233\n")
    );
    let (status, _) = fetch_as_yealink(&http, "y000000000096.cfg");
    assert_eq!(status, 404, "the embedded yealink's routes are gone");
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait().success());

    let (code, stdout, stderr) = run(command(tmp.path())
        .args(["plugin", "list", "--config"])
        .arg(&config));
    assert_eq!(code, 0, "{stderr}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_owned()
    };
    let yealink_line = line("yealink");
    assert!(
        yealink_line.contains("7.0-local")
            && yealink_line.contains(" builtin ")
            && yealink_line.contains(&yealink.display().to_string()),
        "{stdout}"
    );
    assert!(line("snom").contains(" embedded "), "{stdout}");
    let (code, stdout, stderr) = run(command(tmp.path())
        .args(["plugin", "show", "yealink", "--config"])
        .arg(&config));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("replaces:    the embedded plugin yealink"),
        "{stdout}"
    );
}

/// One test for both signals: the embedded default has fixed ports, so two daemons on it
/// cannot run in parallel.
#[test]
fn serve_runs_on_the_embedded_default_and_stops_cleanly_on_sigterm_and_ctrl_c() {
    serve_embedded_and_stop_with(Signal::SIGTERM, "SIGTERM received");
    serve_embedded_and_stop_with(Signal::SIGINT, "SIGINT received");
}

#[test]
fn serve_refuses_an_invalid_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), "[log]\nlevel = \"info\"\nbogus = 1\n");
    let (code, _, stderr) = run(command(tmp.path()).args(["serve", "--config"]).arg(&config));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{}: log.bogus", config.display())),
        "{stderr}"
    );
    assert!(
        !tmp.path().join("data").exists(),
        "nothing is created before the configuration is valid"
    );
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), "");
    let start = || {
        let mut cmd = command(tmp.path());
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    };
    let mut first = Daemon::start(start());
    first.expect_line(&["ready"]);
    let mut second = Daemon::start(start());
    let status = second.wait();
    assert_eq!(status.code(), Some(1), "{:?}", second.seen);
    assert!(
        second
            .seen
            .iter()
            .any(|l| l.contains("cannot open the store") && l.contains("another provisiond")),
        "{:?}",
        second.seen
    );
    first.signal(Signal::SIGTERM);
    assert!(first.wait().success());
}

#[test]
fn sighup_applies_the_log_level_and_names_changes_that_need_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), "[log]\nlevel = \"info\"\n");
    let mut daemon = Daemon::start({
        let mut cmd = command(tmp.path());
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    });
    daemon.expect_line(&[
        "starting with configuration from",
        &config.display().to_string(),
    ]);
    daemon.expect_line(&["ready"]);

    daemon.signal(Signal::SIGHUP);
    daemon.expect_line(&["nothing changed"]);

    write_config(
        tmp.path(),
        "[log]\nlevel = \"debug\"\n[http]\nlisten = \"127.0.0.1:18111\"\n[tftp]\nlisten = \"127.0.0.1:0\"\nretries = 9\n",
    );
    daemon.signal(Signal::SIGHUP);
    // Only visible once the new filter is in force.
    daemon.expect_line(&["DEBUG", "log filter is now \"debug\""]);
    daemon.expect_line(&["applied log.level"]);
    daemon.expect_line(&["only after a restart: http.listen, tftp.retries"]);

    // A broken file is reported and the daemon keeps running on the previous configuration.
    write_config(
        tmp.path(),
        "[log]\nlevel = \"debug\"\n[http]\nlisten = \"nonsense\"\n",
    );
    daemon.signal(Signal::SIGHUP);
    daemon.expect_line(&[&format!(
        "{}: http.listen: TOML parse error at line",
        config.display()
    )]);
    daemon.expect_line(&["reload failed: keeping the running configuration"]);

    // The restart-only keys are still pending: they are named again on the next reload.
    write_config(
        tmp.path(),
        "[log]\nlevel = \"debug\"\n[http]\nlisten = \"127.0.0.1:18111\"\n[tftp]\nlisten = \"127.0.0.1:0\"\nretries = 9\n",
    );
    daemon.signal(Signal::SIGHUP);
    daemon.expect_line(&["only after a restart: http.listen, tftp.retries"]);

    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait().success(), "{:?}", daemon.seen);
}

#[test]
fn plugin_list_and_show_report_what_loaded_and_why_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let builtin = dir.join("builtin/acme");
    std::fs::create_dir_all(builtin.join("templates")).unwrap();
    std::fs::write(
        builtin.join("plugin.toml"),
        "name = \"acme\"\nversion = \"2.0\"\nvendor = \"Acme\"\nmodels = [\"A1\", \"A2\"]\nsync_event = \"check-sync\"\n\
         [[identify]]\nsource = \"user_agent\"\npattern = '^Acme (?P<model>A\\d)'\n\
         [[files]]\npath = \"{mac}.cfg\"\ntemplate = \"mac.cfg.tera\"\n\
         [dhcp]\n[[dhcp.options]]\ncode = 66\nvalue = \"{provisioning_url}\"\n",
    )
    .unwrap();
    std::fs::write(builtin.join("templates/mac.cfg.tera"), "x = 1\n").unwrap();
    let config = dir.join("provisiond.toml");
    std::fs::write(
        &config,
        format!(
            "[general]\ndata_dir = \"{}\"\nplugins_dir = \"{}\"\n",
            dir.join("data").display(),
            dir.join("builtin").display()
        ),
    )
    .unwrap();

    let (code, stdout, stderr) = run(command(dir)
        .args(["plugin", "list", "--config"])
        .arg(&config));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.lines().any(|l| l.starts_with("acme")
            && l.contains("2.0")
            && l.contains("builtin")
            && l.contains(" user_agent ")
            && l.contains("A1 A2")),
        "{stdout}"
    );

    let (code, stdout, stderr) = run(command(dir)
        .args(["plugin", "show", "acme", "--config"])
        .arg(&config));
    assert_eq!(code, 0, "{stderr}");
    for fragment in [
        "version:     2.0",
        "sync event:  check-sync",
        "{mac}.cfg -> templates/mac.cfg.tera",
        "66 = {provisioning_url}",
        "UserAgent (score 50)",
    ] {
        assert!(stdout.contains(fragment), "{fragment} in {stdout}");
    }

    // A broken admin plugin is reported with its file and field; the others still list.
    let admin = dir.join("data/plugins/broken");
    std::fs::create_dir_all(&admin).unwrap();
    std::fs::write(admin.join("plugin.toml"), "name = \"broken\"\nversion = \"1\"\nvendor = \"B\"\n[[identify]]\nsource = \"user_agent\"\npattern = \"(\"\n").unwrap();
    let (code, stdout, stderr) = run(command(dir)
        .args(["plugin", "list", "--config"])
        .arg(&config));
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.contains("acme"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "not loaded: {}: identify[0].pattern",
            admin.join("plugin.toml").display()
        )),
        "{stderr}"
    );

    let (code, _, stderr) = run(command(dir)
        .args(["plugin", "show", "nope", "--config"])
        .arg(&config));
    assert_eq!(code, 1);
    assert!(stderr.contains("no plugin \"nope\""), "{stderr}");
}

#[test]
fn the_daemon_serves_the_same_bytes_over_http_and_tftp() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[general]\n",
        "[general]\nbase_url = \"http://10.0.0.2:8667\"\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let mut daemon = Daemon::start({
        let mut cmd = command(tmp.path());
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    });
    let http = listening_on(&daemon.expect_line(&["HTTP provisioning on"]));
    let tftp = listening_on(&daemon.expect_line(&["TFTP provisioning on"]));
    daemon.expect_line(&["ready"]);

    let body = tmp.path().join("http.cfg");
    let out = Command::new("curl")
        .args([
            "-sS",
            "-f",
            "-A",
            "Yealink SIP-T54W 96.86.0.70 80:5e:c0:11:22:33",
            "-o",
        ])
        .arg(&body)
        .arg(format!("http://{http}/805ec0112233.cfg"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let over_http = std::fs::read(&body).unwrap();
    assert!(String::from_utf8_lossy(&over_http)
        .contains("static.auto_provision.server.url = http://10.0.0.2:8667/"));

    let hpa = tmp.path().join("tftp-hpa.cfg");
    let out = Command::new("tftp")
        .args([
            "127.0.0.1",
            &tftp.port().to_string(),
            "-m",
            "octet",
            "-c",
            "get",
            "805ec0112233.cfg",
        ])
        .arg(&hpa)
        .output()
        .expect("tftp (apt-get install tftp-hpa)");
    assert!(
        out.status.success() && std::fs::read(&hpa).ok().as_deref() == Some(&over_http[..]),
        "tftp-hpa: {out:?}"
    );

    let atftp = tmp.path().join("atftp.cfg");
    let out = Command::new("atftp")
        .args([
            "--option",
            "blksize 1428",
            "--option",
            "tsize",
            "-g",
            "-r",
            "805ec0112233.cfg",
            "-l",
        ])
        .arg(&atftp)
        .args(["127.0.0.1", &tftp.port().to_string()])
        .output()
        .expect("atftp (apt-get install atftp)");
    assert!(out.status.success(), "atftp: {out:?}");
    assert_eq!(
        std::fs::read(&atftp).unwrap(),
        over_http,
        "TFTP and HTTP serve the same bytes"
    );
    assert!(daemon
        .expect_line(&["provisiond::tftp::access", "status=\"ok\""])
        .contains("805ec0112233.cfg"));

    // The counters reach /metrics, read over the local admin socket without a token.
    let out = Command::new("curl")
        .args(["-sS", "-f", "--unix-socket"])
        .arg(tmp.path().join("api.sock"))
        .arg("http://localhost/metrics")
        .output()
        .expect("curl");
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(
        metrics.contains("provisiond_files_total{transport=\"http\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("provisiond_files_total{transport=\"tftp\",outcome=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("provisiond_devices{tenant=\"master\",plugin=\"yealink\"} 1"),
        "{metrics}"
    );

    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait().success());
}

/// `provisiond_dhcp_packets_total{outcome="…"}` from `/metrics` on the admin socket.
fn dhcp_metric(dir: &std::path::Path, outcome: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(dir.join("api.sock")).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let prefix = format!("provisiond_dhcp_packets_total{{outcome=\"{outcome}\"}} ");
    answer
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|n| n.trim().parse().unwrap())
}

#[test]
fn the_dhcp_server_counts_what_it_did_in_the_metrics() {
    use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
    use dhcproto::{Decodable, Decoder, Encodable, Encoder};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // An ephemeral port, free a moment ago (dhcp.port may not be 0).
    let port = common::free_udp_port();
    let config = write_config(
        dir,
        &format!(
            "[dhcp]\nmode = \"server\"\nport = {port}\n[[dhcp.pools]]\nsubnet = \"10.77.0.0/24\"\n\
             ranges = [{{ start = \"10.77.0.10\", end = \"10.77.0.20\" }}]\n"
        ),
    );
    let mut daemon = Daemon::start({
        let mut cmd = command(dir);
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    });
    daemon.expect_line(&["DHCP server ready"]);
    // Exported once the server runs, from zero.
    assert_eq!(dhcp_metric(dir, "received"), Some(0));

    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(common::PATIENCE)).unwrap();
    client
        .send_to(b"not a DHCP message", ("127.0.0.1", port))
        .unwrap();
    let mut discover = Message::default();
    discover
        .set_opcode(Opcode::BootRequest)
        .set_xid(0x5eed)
        .set_chaddr(&[0x80, 0x5e, 0xc0, 0, 0x77, 1]);
    let opts = discover.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Discover));
    // RFC 3011: the pool of 10.77.0.0/24, although the request came in on the loopback.
    opts.insert(DhcpOption::SubnetSelection([10, 77, 0, 0].into()));
    let mut buf = Vec::new();
    discover.encode(&mut Encoder::new(&mut buf)).unwrap();
    client.send_to(&buf, ("127.0.0.1", port)).unwrap();
    let mut reply = [0u8; 1500];
    let (n, _) = client.recv_from(&mut reply).expect("an OFFER in time");
    let offer = Message::decode(&mut Decoder::new(&reply[..n])).unwrap();
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));

    let deadline = std::time::Instant::now() + common::PATIENCE;
    while dhcp_metric(dir, "malformed") != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "malformed never counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(dhcp_metric(dir, "received"), Some(2));
    assert_eq!(dhcp_metric(dir, "offer"), Some(1));
    assert_eq!(dhcp_metric(dir, "ack"), Some(0));
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait().success(), "{:?}", daemon.seen);
}
