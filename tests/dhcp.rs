//! The DHCP responder on real UDP sockets on 127.0.0.1 (a high port: every reply comes back to
//! the sender), driven with packets built by dhcproto. Most requests carry a relay address
//! (giaddr) or option 118, as perfdhcp does, so that the server picks the pool.
//!
//! Silence is checked without timing: the silent request is followed by a probe the server
//! always answers (an INFORM); the engine handles requests in order, so the first reply must
//! be the probe's.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhcproto::v4::relay::{RelayAgentInformation, RelayInfo};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use provisiond::config::{Dhcp, DhcpMode, HttpAuthStrategy, Pool, Range, Reservation};
use provisiond::dhcp::{Counters, DhcpServer};
use provisiond::files::FileService;
use provisiond::model::{Device, LeaseState, Mac, Tenant};
use provisiond::plugins::{Origin, PluginSet, Renderer, ServerInfo};
use provisiond::store::Store;
use tokio::sync::watch;

const BASE_URL: &str = "http://10.99.0.5:8667";
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// Bound on every wait; never reached when things work.
const PATIENCE: Duration = Duration::from_secs(20);

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn pool(subnet: &str, start: &str, end: &str) -> Pool {
    Pool {
        subnet: subnet.parse().unwrap(),
        ranges: vec![Range {
            start: ip(start),
            end: ip(end),
        }],
        router: None,
        dns: Vec::new(),
        domain: None,
        ntp: Vec::new(),
        lease_time: 3600,
        renew_time: None,
        rebind_time: None,
        exclude: Vec::new(),
        reservations: Vec::new(),
        base_url: None,
        tenant: None,
    }
}

fn voice_pool() -> Pool {
    Pool {
        router: Some(RELAY),
        dns: vec![ip("10.99.0.2"), ip("10.99.0.3")],
        domain: Some("voice.test".into()),
        ntp: vec![ip("10.99.0.4")],
        ..pool("10.99.0.0/24", "10.99.0.10", "10.99.0.20")
    }
}

fn settings(mode: DhcpMode, pools: Vec<Pool>) -> Dhcp {
    Dhcp {
        mode,
        interfaces: Vec::new(),
        port: 0,
        server_id: None,
        offer_hold_secs: 30,
        pools,
    }
}

fn plugin_roots() -> Vec<(PathBuf, Origin)> {
    vec![(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins"),
        Origin::Builtin,
    )]
}

struct Server {
    port: u16,
    store: Store,
    files: Arc<FileService>,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start(data: &Path, dhcp: Dhcp) -> Server {
        Server::start_with(data, dhcp, HttpAuthStrategy::Disabled, |_| {})
    }

    /// `prepare` writes to the store before the server reads it.
    fn start_with(
        data: &Path,
        dhcp: Dhcp,
        strategy: HttpAuthStrategy,
        prepare: impl FnOnce(&Store),
    ) -> Server {
        let store = Store::open(data).unwrap();
        store.ensure_defaults("master").unwrap();
        prepare(&store);
        let plugins = PluginSet::load(&plugin_roots());
        assert!(plugins.errors.is_empty(), "{:?}", plugins.errors);
        let renderer = Renderer::new(store.clone(), ServerInfo::default());
        let files = Arc::new(FileService::new(
            store.clone(),
            "master",
            strategy,
            Arc::new(plugins),
            renderer,
        ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (stop, shutdown) = watch::channel(false);
        let server = runtime.block_on(DhcpServer::bind(&dhcp)).unwrap();
        let port = server.local_port();
        assert_ne!(port, 0);
        let counters = server.counters();
        let task = runtime.spawn(server.run(
            Arc::clone(&files),
            store.clone(),
            Some(BASE_URL.parse().unwrap()),
            shutdown,
        ));
        Server {
            port,
            store,
            files,
            counters,
            stop,
            task: Some(task),
            runtime,
        }
    }

    /// Stops the server and gives back nothing: every store handle is dropped.
    fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            self.runtime
                .block_on(async { tokio::time::timeout(PATIENCE, task).await })
                .expect("the server stops")
                .unwrap();
        }
    }

    fn client(&self) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        Client {
            socket,
            port: self.port,
        }
    }

    /// Waits (bounded) until identification has a device for this MAC with this IP.
    fn device_with_ip(&self, mac: Mac, want: Option<Ipv4Addr>) -> provisiond::model::Device {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(d) = self.store.device_by_mac(&mac).unwrap() {
                if d.ip == want.map(IpAddr::V4) {
                    return d;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no device {mac} with ip {want:?}: {:?}",
                self.store.device_by_mac(&mac).unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

struct Client {
    socket: UdpSocket,
    port: u16,
}

/// A decoded reply with its raw bytes.
struct Reply {
    msg: Message,
    raw: Vec<u8>,
}

impl Reply {
    fn kind(&self) -> MessageType {
        self.msg.opts().msg_type().expect("message type")
    }

    /// The raw value of an option (read from the bytes, whatever dhcproto makes of it).
    fn option(&self, code: u8) -> Option<Vec<u8>> {
        let area = &self.raw[240..];
        let mut i = 0;
        let mut found: Option<Vec<u8>> = None;
        while i < area.len() {
            match area[i] {
                0 => i += 1,
                255 => break,
                c => {
                    let len = area[i + 1] as usize;
                    if c == code {
                        found
                            .get_or_insert_with(Vec::new)
                            .extend_from_slice(&area[i + 2..i + 2 + len]);
                    }
                    i += 2 + len;
                }
            }
        }
        found
    }

    fn text(&self, code: u8) -> Option<String> {
        self.option(code)
            .map(|v| String::from_utf8(v).expect("text option"))
    }

    /// Option codes in the order they appear.
    fn codes(&self) -> Vec<u8> {
        let area = &self.raw[240..];
        let mut i = 0;
        let mut codes = Vec::new();
        while i < area.len() {
            match area[i] {
                0 => i += 1,
                255 => break,
                c => {
                    codes.push(c);
                    i += 2 + area[i + 1] as usize;
                }
            }
        }
        codes
    }
}

impl Client {
    fn send_raw(&self, bytes: &[u8]) {
        self.socket
            .send_to(bytes, ("127.0.0.1", self.port))
            .unwrap();
    }

    fn send(&self, msg: &Message) {
        let mut buf = Vec::new();
        msg.encode(&mut Encoder::new(&mut buf)).unwrap();
        self.send_raw(&buf);
    }

    /// The next reply (bounded wait).
    fn recv(&self) -> Reply {
        let mut buf = [0u8; 2048];
        let (n, _) = self.socket.recv_from(&mut buf).expect("a reply in time");
        let raw = buf[..n].to_vec();
        let msg = Message::decode(&mut Decoder::new(&raw)).expect("a decodable reply");
        Reply { msg, raw }
    }

    /// Like a real client: retransmits (UDP may drop under load), a bounded number of times.
    fn exchange_retrying(&self, msg: &Message) -> Reply {
        self.socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..8 {
            self.send(msg);
            while let Ok((n, _)) = self.socket.recv_from(&mut buf) {
                let raw = buf[..n].to_vec();
                let reply = Message::decode(&mut Decoder::new(&raw)).expect("a decodable reply");
                if reply.xid() == msg.xid() {
                    self.socket.set_read_timeout(Some(PATIENCE)).unwrap();
                    return Reply { msg: reply, raw };
                }
            }
        }
        panic!("no reply after 8 transmissions");
    }

    fn exchange(&self, msg: &Message) -> Reply {
        self.send(msg);
        let reply = self.recv();
        assert_eq!(reply.msg.xid(), msg.xid(), "reply to another request");
        reply
    }

    /// Sends `msg`, then a probe the server answers: the probe's answer must come first.
    fn assert_silent(&self, msg: &Message) {
        self.send(msg);
        let probe = inform([0x02, 0, 0, 0, 0, 0x99], ip("10.99.0.99"), &[]);
        let reply = self.exchange(&probe);
        assert_eq!(reply.kind(), MessageType::Ack);
    }
}

/// A request from `mac` as relayed by `RELAY`.
fn request(kind: MessageType, mac: [u8; 6], options: Vec<DhcpOption>) -> Message {
    let mut msg = Message::new(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        RELAY,
        &mac,
    );
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    for option in options {
        msg.opts_mut().insert(option);
    }
    msg
}

fn prl(codes: &[u8]) -> DhcpOption {
    DhcpOption::ParameterRequestList(codes.iter().map(|c| OptionCode::from(*c)).collect())
}

fn vendor(class: &[u8]) -> DhcpOption {
    DhcpOption::ClassIdentifier(class.to_vec())
}

fn discover(mac: [u8; 6], extra: Vec<DhcpOption>) -> Message {
    request(MessageType::Discover, mac, extra)
}

fn select(mac: [u8; 6], offer: &Reply, extra: Vec<DhcpOption>) -> Message {
    let mut msg = request(MessageType::Request, mac, extra);
    msg.set_xid(offer.msg.xid());
    let server = offer.option(54).expect("server id");
    msg.opts_mut()
        .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(
            server[0], server[1], server[2], server[3],
        )));
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.msg.yiaddr()));
    msg
}

fn inform(mac: [u8; 6], ciaddr: Ipv4Addr, extra: &[DhcpOption]) -> Message {
    let mut msg = Message::new(
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    msg.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Inform));
    for option in extra {
        msg.opts_mut().insert(option.clone());
    }
    msg
}

/// DISCOVER, OFFER, REQUEST, ACK; returns the ACK.
fn dora(client: &Client, mac: [u8; 6], extra: Vec<DhcpOption>) -> Reply {
    let offer = client.exchange(&discover(mac, extra.clone()));
    assert_eq!(offer.kind(), MessageType::Offer);
    let ack = client.exchange(&select(mac, &offer, extra));
    assert_eq!(ack.kind(), MessageType::Ack, "{:?}", ack.text(56));
    assert_eq!(ack.msg.yiaddr(), offer.msg.yiaddr());
    ack
}

fn u32_option(reply: &Reply, code: u8) -> u32 {
    let v = reply
        .option(code)
        .unwrap_or_else(|| panic!("option {code}"));
    u32::from_be_bytes(v.try_into().unwrap())
}

#[test]
fn dora_gives_a_lease_with_the_pool_options() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![voice_pool()]));
    let client = server.client();
    let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    let mut relay = RelayAgentInformation::default();
    relay.insert(RelayInfo::AgentCircuitId(b"port-7".to_vec()));
    let options = vec![
        prl(&[1, 3, 6, 15, 42]),
        DhcpOption::Hostname("desk-1".into()),
        DhcpOption::RelayAgentInformation(relay),
    ];
    let offer = client.exchange(&discover(mac, options.clone()));
    assert_eq!(offer.kind(), MessageType::Offer);
    let given = offer.msg.yiaddr();
    assert_eq!(given, ip("10.99.0.10"));
    assert!(offer.raw.len() <= 548, "no option 57: at most 548 bytes");
    assert_eq!(offer.msg.giaddr(), RELAY);
    assert_eq!(offer.option(54), Some(vec![127, 0, 0, 1]));
    assert_eq!(offer.option(1), Some(vec![255, 255, 255, 0]));
    assert_eq!(offer.option(3), Some(vec![10, 99, 0, 1]));
    assert_eq!(offer.option(6), Some(vec![10, 99, 0, 2, 10, 99, 0, 3]));
    assert_eq!(offer.text(15).as_deref(), Some("voice.test"));
    assert_eq!(offer.option(42), Some(vec![10, 99, 0, 4]));
    assert_eq!(u32_option(&offer, 51), 3600);
    assert_eq!(u32_option(&offer, 58), 1800);
    assert_eq!(u32_option(&offer, 59), 3150);
    // Option 82 is echoed unchanged, as the last option.
    assert_eq!(offer.option(82), Some(b"\x01\x06port-7".to_vec()));
    assert_eq!(offer.codes().last(), Some(&82));

    let ack = client.exchange(&select(mac, &offer, options));
    assert_eq!(ack.kind(), MessageType::Ack);
    assert_eq!(ack.msg.yiaddr(), given);
    assert_eq!(ack.option(3), Some(vec![10, 99, 0, 1]));
    // The lease was written before the ACK left.
    let lease = server.store.lease(given).unwrap().expect("lease stored");
    assert_eq!(lease.state, LeaseState::Bound);
    assert_eq!(lease.mac, Mac::new(mac));
    assert_eq!(lease.hostname.as_deref(), Some("desk-1"));
    assert_eq!(lease.ends - lease.starts, 3600);
    // Identification saw the ACK: the device exists with its address.
    server.device_with_ip(Mac::new(mac), Some(given));

    // RENEWING: ciaddr, no server id, no requested address; the address is kept.
    let mut renew = Message::new(
        given,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    renew
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Request));
    let renewed = client.exchange(&renew);
    assert_eq!(renewed.kind(), MessageType::Ack);
    assert_eq!(renewed.msg.yiaddr(), given);
    assert_eq!(renewed.msg.ciaddr(), given);

    // A second client gets the next address.
    let other = dora(&client, [0x02, 0, 0, 0, 0, 2], Vec::new());
    assert_eq!(other.msg.yiaddr(), ip("10.99.0.11"));
}

#[test]
fn a_yealink_gets_its_provisioning_url_when_it_asks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![voice_pool()]));
    let client = server.client();
    let mac = [0x80, 0x5e, 0xc0, 0x12, 0x34, 0x56];
    let asks = vec![vendor(b"yealink"), prl(&[1, 3, 66])];
    let ack = dora(&client, mac, asks);
    assert_eq!(ack.text(66).as_deref(), Some("http://10.99.0.5:8667/"));
    let device = server.device_with_ip(Mac::new(mac), Some(ack.msg.yiaddr()));
    assert_eq!(device.vendor.as_deref(), Some("Yealink"));
    assert_eq!(device.plugin.as_deref(), Some("yealink"));

    // Not asked for: not sent.
    let quiet = dora(
        &client,
        [0x80, 0x5e, 0xc0, 0, 0, 1],
        vec![vendor(b"yealink"), prl(&[1, 3])],
    );
    assert_eq!(quiet.option(66), None);
    // A non-phone asking for 66 gets nothing either.
    let pc = dora(&client, [0x02, 0, 0, 0, 0, 9], vec![prl(&[1, 3, 66])]);
    assert_eq!(pc.option(66), None);
    // Polycom's 160 is sent unasked (`always`); 66 only when asked.
    let polycom = dora(
        &client,
        [0x00, 0x04, 0xf2, 0, 0, 1],
        vec![vendor(b"\x00\x00\x36\x3d\x01\x07Polycom"), prl(&[1, 3])],
    );
    assert_eq!(polycom.text(160).as_deref(), Some("http://10.99.0.5:8667/"));
    assert_eq!(polycom.option(66), None);
}

#[test]
fn under_url_key_the_provisioning_url_carries_the_pool_tenant_key() {
    let dir = tempfile::tempdir().unwrap();
    let acme_phone = [0x80, 0x5e, 0xc0, 0x77, 0, 2];
    let prepare = |store: &Store| {
        let mut master = store.tenant("master").unwrap().unwrap();
        master.provisioning_key = Some("MasterKey1".into());
        store.update_tenant(&master).unwrap();
        for (id, key) in [("acme", Some("AcmeKey123")), ("nokey", None)] {
            store
                .create_tenant(&Tenant {
                    id: id.into(),
                    name: id.into(),
                    parent: Some("master".into()),
                    provisioning_key: key.map(str::to_owned),
                    default_config: None,
                    auto_token: None,
                    revision: 0,
                })
                .unwrap();
        }
        let mut device = Device::new("dev-acme", "acme");
        device.mac = Some(Mac::new(acme_phone));
        store.create_device(&device).unwrap();
    };
    let acme = Pool {
        tenant: Some("acme".into()),
        ..pool("10.98.0.0/24", "10.98.0.10", "10.98.0.20")
    };
    let keyless = Pool {
        tenant: Some("nokey".into()),
        ..pool("10.97.0.0/24", "10.97.0.10", "10.97.0.20")
    };
    let server = Server::start_with(
        dir.path(),
        settings(DhcpMode::Server, vec![voice_pool(), acme, keyless]),
        HttpAuthStrategy::UrlKey,
        prepare,
    );
    let client = server.client();
    let asks = |subnet: Option<&str>| {
        let mut options = vec![vendor(b"yealink"), prl(&[1, 3, 66])];
        options.extend(subnet.map(|s| DhcpOption::SubnetSelection(ip(s))));
        options
    };
    // A pool without a tenant: the default tenant's key (where unknown phones are created).
    let unknown = dora(&client, [0x80, 0x5e, 0xc0, 0x77, 0, 1], asks(None));
    assert_eq!(
        unknown.text(66).as_deref(),
        Some("http://10.99.0.5:8667/device/provisioning/MasterKey1/")
    );
    // The key follows the pool, never the MAC a client claims: acme's phone (or anyone who
    // copies its MAC) on the default tenant's network does not learn acme's key.
    let borrowed = dora(&client, acme_phone, asks(None));
    assert_eq!(
        borrowed.text(66).as_deref(),
        Some("http://10.99.0.5:8667/device/provisioning/MasterKey1/")
    );
    // On acme's pool, acme's key.
    let on_acme = dora(
        &client,
        [0x80, 0x5e, 0xc0, 0x77, 0, 3],
        asks(Some("10.98.0.0")),
    );
    assert_eq!(
        on_acme.text(66).as_deref(),
        Some("http://10.99.0.5:8667/device/provisioning/AcmeKey123/")
    );
    // A tenant without a key: no URL would be served, so none is sent; the lease still is.
    let lost = dora(
        &client,
        [0x80, 0x5e, 0xc0, 0x77, 0, 4],
        asks(Some("10.97.0.0")),
    );
    assert_eq!(lost.kind(), MessageType::Ack);
    assert_eq!(lost.option(66), None);
}

#[test]
fn the_pool_base_url_and_the_server_address_fill_the_placeholders() {
    let dir = tempfile::tempdir().unwrap();
    let mut voice = voice_pool();
    voice.base_url = Some("https://prov.example.test/p".parse().unwrap());
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![voice]));
    let client = server.client();
    let ack = dora(
        &client,
        [0x70, 0x7c, 0x69, 0, 0, 1],
        vec![vendor(b"CP-7841-3PCC"), prl(&[1, 66, 159, 160])],
    );
    assert_eq!(
        ack.text(160).as_deref(),
        Some("https://prov.example.test/p/$PSN.xml")
    );
    assert_eq!(ack.text(159).as_deref(), Some("127.0.0.1"));
    assert_eq!(ack.text(66).as_deref(), Some("127.0.0.1"));
}

#[test]
fn phones_only_mode_is_silent_for_a_non_phone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        settings(DhcpMode::PhonesOnly, vec![voice_pool()]),
    );
    let client = server.client();
    let laptop = discover([0x02, 0xaa, 0, 0, 0, 1], vec![vendor(b"MSFT 5.0")]);
    let phone = discover([0x80, 0x5e, 0xc0, 0, 0, 2], vec![vendor(b"yealink")]);
    client.send(&laptop);
    let first = client.exchange(&phone);
    assert_eq!(first.kind(), MessageType::Offer);
    // The phone completes its lease and renews without its vendor class.
    let ack = client.exchange(&select([0x80, 0x5e, 0xc0, 0, 0, 2], &first, vec![]));
    assert_eq!(ack.kind(), MessageType::Ack);
    assert!(server.counters.silent.load(Ordering::Relaxed) >= 1);
    // INFORM from a phone is answered; from the laptop it is not.
    let yealink_inform = inform(
        [0x80, 0x5e, 0xc0, 0, 0, 3],
        ip("10.99.0.50"),
        &[vendor(b"yealink"), prl(&[66])],
    );
    let informed = client.exchange(&yealink_inform);
    assert_eq!(informed.kind(), MessageType::Ack);
    assert_eq!(informed.text(66).as_deref(), Some("http://10.99.0.5:8667/"));
    client.send(&inform([0x02, 0xaa, 0, 0, 0, 1], ip("10.99.0.51"), &[]));
    let next = client.exchange(&yealink_inform);
    assert_eq!(next.msg.xid(), yealink_inform.xid());
    // The laptop never got a lease nor a device.
    assert!(server
        .store
        .leases()
        .unwrap()
        .iter()
        .all(|l| l.mac != Mac::new([0x02, 0xaa, 0, 0, 0, 1])));
}

#[test]
fn a_wrong_requested_address_gets_a_nak() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![voice_pool()]));
    let client = server.client();
    let a = [0x02, 0, 0, 0, 0, 0xa];
    let b = [0x02, 0, 0, 0, 0, 0xb];
    // INIT-REBOOT with an address outside the ranges, and with one of another subnet.
    for wrong in ["10.99.0.200", "192.168.7.7"] {
        let reboot = request(
            MessageType::Request,
            a,
            vec![DhcpOption::RequestedIpAddress(ip(wrong))],
        );
        let nak = client.exchange(&reboot);
        assert_eq!(nak.kind(), MessageType::Nak, "{wrong}");
        assert_eq!(nak.msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(nak.msg.flags().broadcast(), "a relayed NAK is broadcast");
        assert_eq!(nak.option(51), None);
    }
    // SELECTING with the address held by another client.
    let held = dora(&client, a, vec![]);
    let offer_b = client.exchange(&discover(b, vec![]));
    assert_ne!(offer_b.msg.yiaddr(), held.msg.yiaddr());
    let mut steal = select(b, &offer_b, vec![]);
    steal
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(held.msg.yiaddr()));
    assert_eq!(client.exchange(&steal).kind(), MessageType::Nak);
    // Renewing an address the client never had.
    let mut renew = Message::new(
        held.msg.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &b,
    );
    renew
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Request));
    assert_eq!(client.exchange(&renew).kind(), MessageType::Nak);
    // A REQUEST naming another server is not for us: silence.
    let mut elsewhere = select(b, &offer_b, vec![]);
    elsewhere
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(ip("10.99.0.254")));
    client.assert_silent(&elsewhere);
}

#[test]
fn a_released_address_goes_to_another_client() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = pool("10.99.0.0/24", "10.99.0.10", "10.99.0.10");
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![tiny]));
    let client = server.client();
    let a = [0x80, 0x5e, 0xc0, 0, 0, 0xa];
    let b = [0x02, 0, 0, 0, 0, 0xb];
    let held = dora(&client, a, vec![vendor(b"yealink")]);
    assert_eq!(held.msg.yiaddr(), ip("10.99.0.10"));
    server.device_with_ip(Mac::new(a), Some(ip("10.99.0.10")));
    // The pool is exhausted: B is not answered.
    client.assert_silent(&discover(b, vec![]));
    let mut release = Message::new(
        ip("10.99.0.10"),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &a,
    );
    release
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Release));
    release
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(Ipv4Addr::LOCALHOST));
    client.assert_silent(&release);
    assert_eq!(
        server.store.lease(ip("10.99.0.10")).unwrap().unwrap().state,
        LeaseState::Released
    );
    // Identification heard the release: the device lost its address.
    server.device_with_ip(Mac::new(a), None);
    let taken = dora(&client, b, vec![]);
    assert_eq!(taken.msg.yiaddr(), ip("10.99.0.10"));
    let lease = server.store.lease(ip("10.99.0.10")).unwrap().unwrap();
    assert_eq!(lease.mac, Mac::new(b));
    assert_eq!(lease.state, LeaseState::Bound);
}

#[test]
fn a_declined_address_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let two = pool("10.99.0.0/24", "10.99.0.10", "10.99.0.11");
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![two]));
    let client = server.client();
    let a = [0x80, 0x5e, 0xc0, 0, 0, 0xa];
    let held = dora(&client, a, vec![vendor(b"yealink")]);
    let declined = held.msg.yiaddr();
    server.device_with_ip(Mac::new(a), Some(declined));
    let mut decline = request(
        MessageType::Decline,
        a,
        vec![
            DhcpOption::RequestedIpAddress(declined),
            DhcpOption::ServerIdentifier(Ipv4Addr::LOCALHOST),
        ],
    );
    decline.set_giaddr(Ipv4Addr::UNSPECIFIED);
    client.assert_silent(&decline);
    let lease = server.store.lease(declined).unwrap().unwrap();
    assert_eq!(lease.state, LeaseState::Declined);
    assert!(lease.ends > lease.starts);
    // The device gave the address back: it no longer shows it.
    server.device_with_ip(Mac::new(a), None);
    // The decliner gets the other address, then nobody gets the declined one.
    let again = dora(&client, a, vec![]);
    assert_ne!(again.msg.yiaddr(), declined);
    client.assert_silent(&discover([0x02, 0, 0, 0, 0, 0xc], vec![]));
}

#[test]
fn inform_is_answered_with_options_and_no_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![voice_pool()]));
    let client = server.client();
    let msg = inform(
        [0x80, 0x5e, 0xc0, 0, 0, 0x42],
        ip("10.99.0.77"),
        &[vendor(b"yealink"), prl(&[1, 3, 6, 66])],
    );
    let ack = client.exchange(&msg);
    assert_eq!(ack.kind(), MessageType::Ack);
    assert_eq!(ack.msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(ack.msg.ciaddr(), ip("10.99.0.77"));
    assert_eq!(ack.option(51), None);
    assert_eq!(ack.option(1), Some(vec![255, 255, 255, 0]));
    assert_eq!(ack.option(3), Some(vec![10, 99, 0, 1]));
    assert_eq!(ack.text(66).as_deref(), Some("http://10.99.0.5:8667/"));
    assert!(server.store.leases().unwrap().is_empty());
}

#[test]
fn the_pool_comes_from_giaddr_or_option_118_and_reservations_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = pool("10.98.0.0/24", "10.98.0.100", "10.98.0.110");
    data.exclude = vec![ip("10.98.0.100")];
    data.reservations = vec![Reservation {
        mac: "02:00:00:00:00:0e".parse().unwrap(),
        ip: ip("10.98.0.5"),
        hostname: Some("reserved-phone".into()),
    }];
    let server = Server::start(
        dir.path(),
        settings(DhcpMode::Server, vec![voice_pool(), data]),
    );
    let client = server.client();
    // Relayed from 10.98.0.1: the second pool, .100 excluded.
    let mut relayed = discover([0x02, 0, 0, 0, 0, 0xd], vec![]);
    relayed.set_giaddr(ip("10.98.0.1"));
    assert_eq!(client.exchange(&relayed).msg.yiaddr(), ip("10.98.0.101"));
    // Option 118 (subnet selection) wins over the relay address.
    let mut selected = discover(
        [0x02, 0, 0, 0, 0, 0xf],
        vec![DhcpOption::SubnetSelection(ip("10.98.0.0"))],
    );
    selected.set_giaddr(Ipv4Addr::UNSPECIFIED);
    assert_eq!(client.exchange(&selected).msg.yiaddr(), ip("10.98.0.102"));
    // The reservation, with its host name, outside the ranges.
    let mut reserved = discover([0x02, 0, 0, 0, 0, 0xe], vec![prl(&[1, 12])]);
    reserved.set_giaddr(ip("10.98.0.1"));
    let offer = client.exchange(&reserved);
    assert_eq!(offer.msg.yiaddr(), ip("10.98.0.5"));
    assert_eq!(offer.text(12).as_deref(), Some("reserved-phone"));
    // Nobody else may take the reserved address.
    let mut thief = request(
        MessageType::Request,
        [0x02, 0, 0, 0, 0, 0x1],
        vec![DhcpOption::RequestedIpAddress(ip("10.98.0.5"))],
    );
    thief.set_giaddr(ip("10.98.0.1"));
    assert_eq!(client.exchange(&thief).kind(), MessageType::Nak);
    // A relay from an unknown network is not ours.
    let mut stranger = discover([0x02, 0, 0, 0, 0, 0x2], vec![]);
    stranger.set_giaddr(ip("172.31.0.1"));
    client.assert_silent(&stranger);
}

#[test]
fn the_client_identifier_is_the_lease_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![voice_pool()]));
    let client = server.client();
    let id = DhcpOption::ClientIdentifier(b"\x00phone-42".to_vec());
    let first = dora(&client, [0x02, 0, 0, 0, 0, 0x1], vec![id.clone()]);
    // Same identifier, another NIC: same address.
    let offer = client.exchange(&discover([0x02, 0, 0, 0, 0, 0x2], vec![id]));
    assert_eq!(offer.msg.yiaddr(), first.msg.yiaddr());
    // Same NIC, no identifier: another client.
    let offer = client.exchange(&discover([0x02, 0, 0, 0, 0, 0x1], vec![]));
    assert_ne!(offer.msg.yiaddr(), first.msg.yiaddr());
    let lease = server.store.lease(first.msg.yiaddr()).unwrap().unwrap();
    assert_eq!(lease.client_id.as_deref(), Some("0070686f6e652d3432"));
}

#[test]
fn the_maximum_message_size_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let mut voice = voice_pool();
    voice.domain = Some("d".repeat(200));
    voice.base_url = Some(
        format!("http://prov.test/{}", "x".repeat(200))
            .parse()
            .unwrap(),
    );
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![voice]));
    let client = server.client();
    let asks = vec![vendor(b"yealink"), prl(&[1, 3, 66])];
    let big = client.exchange(&discover(
        [0x80, 0x5e, 0xc0, 0, 0, 7],
        [asks.clone(), vec![DhcpOption::MaxMessageSize(1500)]].concat(),
    ));
    assert!(big.option(66).is_some() && big.option(15).is_some());
    let small = client.exchange(&discover([0x80, 0x5e, 0xc0, 0, 0, 7], asks));
    assert!(small.raw.len() <= 548, "{} bytes", small.raw.len());
    // The unrequested domain went first; the requested URL stayed.
    assert_eq!(small.option(15), None);
    assert!(small.option(66).is_some());
    assert!(small.option(51).is_some() && small.option(54).is_some());
}

#[test]
fn a_restart_keeps_every_acknowledged_lease() {
    let dir = tempfile::tempdir().unwrap();
    let four = pool("10.99.0.0/24", "10.99.0.10", "10.99.0.13");
    let dhcp = settings(DhcpMode::Server, vec![four]);
    let macs: Vec<[u8; 6]> = (1..=3).map(|i| [0x02, 0, 0, 0, 0, i]).collect();
    let mut given = Vec::new();
    {
        let server = Server::start(dir.path(), dhcp.clone());
        let client = server.client();
        for mac in &macs {
            given.push(dora(&client, *mac, vec![]).msg.yiaddr());
        }
        server.stop();
    }
    {
        let store = Store::open(dir.path()).unwrap();
        for (mac, ip) in macs.iter().zip(&given) {
            let lease = store.lease(*ip).unwrap().expect("lease kept");
            assert_eq!(lease.mac, Mac::new(*mac));
            assert_eq!(lease.state, LeaseState::Bound);
        }
    }
    let server = Server::start(dir.path(), dhcp);
    let client = server.client();
    // INIT-REBOOT after the restart: confirmed.
    for (mac, ip) in macs.iter().zip(&given) {
        let reboot = request(
            MessageType::Request,
            *mac,
            vec![DhcpOption::RequestedIpAddress(*ip)],
        );
        let ack = client.exchange(&reboot);
        assert_eq!(ack.kind(), MessageType::Ack);
        assert_eq!(ack.msg.yiaddr(), *ip);
    }
    // A newcomer gets the fourth address, none of the kept ones; then the pool is full.
    let newcomer = dora(&client, [0x02, 0, 0, 0, 0, 9], vec![]);
    assert!(!given.contains(&newcomer.msg.yiaddr()));
    client.assert_silent(&discover([0x02, 0, 0, 0, 0, 10], vec![]));
}

#[test]
fn an_expired_lease_is_reported_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut one = pool("10.99.0.0/24", "10.99.0.10", "10.99.0.10");
    one.lease_time = 1;
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![one]));
    let client = server.client();
    let a = [0x80, 0x5e, 0xc0, 0, 0, 0xa];
    let held = dora(&client, a, vec![vendor(b"yealink")]);
    assert_eq!(u32_option(&held, 51), 1);
    server.device_with_ip(Mac::new(a), Some(ip("10.99.0.10")));
    // Bounded wait for the expiry sweep (lease of 1 s, sweep every second).
    let deadline = Instant::now() + PATIENCE;
    while server.store.lease(ip("10.99.0.10")).unwrap().unwrap().state != LeaseState::Expired {
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.device_with_ip(Mac::new(a), None);
    let b = dora(&client, [0x02, 0, 0, 0, 0, 0xb], vec![]);
    assert_eq!(b.msg.yiaddr(), ip("10.99.0.10"));
}

#[test]
fn malformed_packets_are_dropped_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // Mutants that still parse take offers: a pool they cannot exhaust.
    let wide = pool("10.99.0.0/16", "10.99.1.0", "10.99.200.255");
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![wide]));
    let client = server.client();
    let mut valid = Vec::new();
    discover([0x02, 0, 0, 0, 0, 1], vec![vendor(b"yealink")])
        .encode(&mut Encoder::new(&mut valid))
        .unwrap();
    let mut garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![1, 2, 3],
        valid[..100].to_vec(),
        valid[..239].to_vec(),
    ];
    // Wrong cookie, hlen 17, a BOOTREPLY, an option running past the end, overload 9.
    let mut bad = valid.clone();
    bad[236] = 0;
    garbage.push(bad);
    let mut bad = valid.clone();
    bad[2] = 17;
    garbage.push(bad);
    let mut bad = valid.clone();
    bad[0] = 2;
    garbage.push(bad);
    let mut bad = valid[..240].to_vec();
    bad.extend_from_slice(&[53, 1, 1, 60, 250, b'y']);
    garbage.push(bad);
    let mut bad = valid[..240].to_vec();
    bad.extend_from_slice(&[53, 1, 1, 52, 1, 9, 255]);
    garbage.push(bad);
    // Mutations of a valid packet, deterministic (xorshift).
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let mut p = valid.clone();
        let len = 200 + (next() % (p.len() as u64 + 100)) as usize;
        p.resize(len, 0);
        for _ in 0..(next() % 16) {
            let at = (next() % p.len() as u64) as usize;
            p[at] = next() as u8;
        }
        garbage.push(p);
    }
    // Replies to mutants that still parse go to another socket; after each batch a probe
    // from the clean client must be answered (the server is alive and read everything).
    let noise = server.client();
    for (round, batch) in garbage.chunks(40).enumerate() {
        for p in batch {
            noise.send_raw(p);
        }
        let probe = inform([0x02, 0, 0, 0, 0x77, round as u8], ip("10.99.0.99"), &[]);
        let reply = client.exchange_retrying(&probe);
        assert_eq!(reply.kind(), MessageType::Ack);
    }
    let after = client.exchange_retrying(&discover([0x02, 0, 0, 0, 0, 0x78], vec![]));
    assert_eq!(after.kind(), MessageType::Offer);
    assert!(server.counters.malformed.load(Ordering::Relaxed) >= 9);
}

#[test]
fn mode_off_is_never_bound() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let off = settings(DhcpMode::Off, vec![voice_pool()]);
    assert!(runtime.block_on(DhcpServer::bind(&off)).is_err());
}

#[test]
fn flags_round_trip_in_replies() {
    // A client that sets the broadcast bit gets it back (here, off port 67, the reply still
    // comes back to the sender).
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![voice_pool()]));
    let client = server.client();
    let mut msg = discover([0x02, 0, 0, 0, 0, 0x31], vec![]);
    msg.set_flags(Flags::default().set_broadcast());
    let offer = client.exchange(&msg);
    assert!(offer.msg.flags().broadcast());
}

#[test]
fn an_acked_phone_is_in_the_store_before_its_ack_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let wide = pool("10.99.0.0/24", "10.99.0.10", "10.99.0.250");
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![wide]));
    let client = server.client();
    for i in 0..40u8 {
        let mac = [0x80, 0x5e, 0xc0, 0x77, 0, i];
        let ack = dora(&client, mac, vec![vendor(b"yealink"), prl(&[1, 3, 66])]);
        // Read at once, no waiting: the ACK left after the device was written and flushed.
        let device = server
            .store
            .device_by_mac(&Mac::new(mac))
            .unwrap()
            .unwrap_or_else(|| panic!("phone {i}: ACK received, device not in the store"));
        assert_eq!(device.ip, Some(IpAddr::V4(ack.msg.yiaddr())));
        assert_eq!(device.plugin.as_deref(), Some("yealink"));
    }
    let identified = server.counters.ident_events.load(Ordering::Relaxed);
    assert_eq!(identified, 40);
}

#[test]
fn a_flood_of_unknown_macs_is_answered_and_creates_at_most_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let big = pool("10.99.0.0/23", "10.99.0.10", "10.99.1.250");
    let server = Server::start(dir.path(), settings(DhcpMode::Server, vec![big]));
    let (burst, per_second) = (5, 1);
    server
        .files
        .set_autocreate_limits(provisiond::ident::AutocreateLimits::new(
            per_second,
            burst,
            usize::MAX,
        ));
    let started = Instant::now();
    let client = server.client();
    let flood = 300u32;
    for i in 0..flood {
        let b = i.to_be_bytes();
        let mac = [0x02, 0x66, 0, b[1], b[2], b[3]];
        // Every made-up client gets its lease: refusing a device costs the responder a
        // bucket check, never a reply.
        let offer = client.exchange_retrying(&discover(mac, vec![vendor(b"yealink")]));
        assert_eq!(offer.kind(), MessageType::Offer);
        let ack = client.exchange_retrying(&select(mac, &offer, vec![vendor(b"yealink")]));
        assert_eq!(ack.kind(), MessageType::Ack, "client {i}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let created = server.store.devices().unwrap().len() as u64;
    let cap = u64::from(burst) + (elapsed * f64::from(per_second)).ceil() as u64;
    assert!(
        (u64::from(burst)..=cap).contains(&created),
        "{created} devices for a bucket of {burst} + {per_second}/s over {elapsed:.1} s"
    );
    let counters = server.files.autocreate_counters();
    assert_eq!(counters.created.load(Ordering::Relaxed), created);
    assert_eq!(
        counters.refused_rate.load(Ordering::Relaxed),
        u64::from(flood) - created
    );
    assert_eq!(
        server
            .files
            .rejected
            .total(provisiond::ratelimit::Kind::Autocreate),
        u64::from(flood) - created
    );
}
