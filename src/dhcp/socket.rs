//! UDP sockets of the responder: SO_REUSEADDR, SO_BROADCAST, IP_PKTINFO (which interface and
//! local address a request came in on, and which interface a broadcast reply leaves by), and
//! SO_BINDTODEVICE when `[dhcp] interfaces` is set.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use socket2::{Domain, MaybeUninitSlice, MsgHdr, MsgHdrMut, Protocol, SockAddr, Socket, Type};

const SOL_IP: i32 = libc::SOL_IP;
const IP_PKTINFO: i32 = libc::IP_PKTINFO;
/// `sizeof(struct in_pktinfo)`.
const PKTINFO_LEN: usize = 12;

/// Where a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PktInfo {
    /// Receiving interface index.
    pub ifindex: i32,
    /// Local address of the receiving interface (the reply's source address).
    pub local: Ipv4Addr,
    /// Destination address of the request (255.255.255.255 for broadcasts).
    pub dst: Ipv4Addr,
}

/// Opens a UDP socket on `0.0.0.0:port`, bound to `device` when given.
pub fn open(port: u16, device: Option<&str>) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.set_nonblocking(true)?;
    // Room for a burst of requests (capped by net.core.rmem_max).
    let _ = socket.set_recv_buffer_size(1 << 20);
    let on: std::os::raw::c_int = 1;
    // SAFETY: a valid fd and a pointer to an int of the length given (socket2 has no
    // IP_PKTINFO).
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            SOL_IP,
            IP_PKTINFO,
            &on as *const _ as *const libc::c_void,
            std::mem::size_of::<std::os::raw::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(device) = device {
        socket
            .bind_device(Some(device.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("SO_BINDTODEVICE {device}: {e}")))?;
    }
    socket.bind(&SockAddr::from(SocketAddr::from((
        Ipv4Addr::UNSPECIFIED,
        port,
    ))))?;
    Ok(socket)
}

fn cmsg_align(len: usize) -> usize {
    let a = std::mem::size_of::<usize>();
    (len + a - 1) & !(a - 1)
}

/// `sizeof(struct cmsghdr)` rounded: `size_t cmsg_len; int cmsg_level; int cmsg_type;`.
fn cmsg_header_len() -> usize {
    cmsg_align(std::mem::size_of::<usize>() + 8)
}

/// Reads the IP_PKTINFO control message, if any.
pub fn parse_pktinfo(control: &[u8]) -> Option<PktInfo> {
    let word = std::mem::size_of::<usize>();
    let header = cmsg_header_len();
    let mut at = 0;
    while at + header <= control.len() {
        let len = usize::from_ne_bytes(control[at..at + word].try_into().ok()?);
        let level = i32::from_ne_bytes(control[at + word..at + word + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(control[at + word + 4..at + word + 8].try_into().ok()?);
        if len < header || at + len > control.len() {
            return None;
        }
        if level == SOL_IP && kind == IP_PKTINFO && len >= header + PKTINFO_LEN {
            let data = &control[at + header..at + header + PKTINFO_LEN];
            let ifindex = i32::from_ne_bytes(data[0..4].try_into().ok()?);
            let local = Ipv4Addr::new(data[4], data[5], data[6], data[7]);
            let dst = Ipv4Addr::new(data[8], data[9], data[10], data[11]);
            return Some(PktInfo {
                ifindex,
                local,
                dst,
            });
        }
        at += cmsg_align(len);
    }
    None
}

/// Builds an IP_PKTINFO control message choosing the outgoing interface and source address.
pub fn build_pktinfo(ifindex: i32, source: Ipv4Addr) -> Vec<u8> {
    let word = std::mem::size_of::<usize>();
    let header = cmsg_header_len();
    let mut control = vec![0u8; header + cmsg_align(PKTINFO_LEN)];
    control[..word].copy_from_slice(&(header + PKTINFO_LEN).to_ne_bytes());
    control[word..word + 4].copy_from_slice(&SOL_IP.to_ne_bytes());
    control[word + 4..word + 8].copy_from_slice(&IP_PKTINFO.to_ne_bytes());
    control[header..header + 4].copy_from_slice(&ifindex.to_ne_bytes());
    control[header + 4..header + 8].copy_from_slice(&source.octets());
    control
}

/// One datagram received.
pub struct Received {
    /// Its length in `buf`.
    pub len: usize,
    /// Sender.
    pub src: SocketAddrV4,
    /// Receiving interface and addresses.
    pub info: Option<PktInfo>,
    /// The datagram was longer than the buffer.
    pub truncated: bool,
}

/// `recvmsg` with the IP_PKTINFO control message (non-blocking socket: WouldBlock when empty).
pub fn recv(socket: &Socket, buf: &mut [u8]) -> io::Result<Received> {
    let mut control = [MaybeUninit::<u8>::uninit(); 128];
    let mut addr = SockAddr::from(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    // SAFETY: an initialized byte buffer seen as possibly uninitialized bytes; recvmsg only
    // writes initialized bytes into it.
    let data: &mut [MaybeUninit<u8>] =
        unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    let mut bufs = [MaybeUninitSlice::new(data)];
    let (len, truncated, control_len) = {
        let mut msg = MsgHdrMut::new()
            .with_addr(&mut addr)
            .with_buffers(&mut bufs)
            .with_control(&mut control);
        let len = socket.recvmsg(&mut msg, 0)?;
        (len, msg.flags().is_truncated(), msg.control_len())
    };
    // SAFETY: the kernel initialized the first `control_len` bytes.
    let control: Vec<u8> = control[..control_len.min(control.len())]
        .iter()
        .map(|b| unsafe { b.assume_init() })
        .collect();
    let src = match addr.as_socket() {
        Some(SocketAddr::V4(v4)) => v4,
        _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    };
    Ok(Received {
        len: len.min(buf.len()),
        src,
        info: parse_pktinfo(&control),
        truncated,
    })
}

/// Sends `data` to `dst`, leaving by interface `ifindex` from `source` when given.
pub fn send(
    socket: &Socket,
    data: &[u8],
    dst: SocketAddrV4,
    via: Option<(i32, Ipv4Addr)>,
) -> io::Result<usize> {
    let addr = SockAddr::from(dst);
    let bufs = [io::IoSlice::new(data)];
    let control = via.map(|(ifindex, source)| build_pktinfo(ifindex, source));
    let mut msg = MsgHdr::new().with_addr(&addr).with_buffers(&bufs);
    if let Some(control) = &control {
        msg = msg.with_control(control);
    }
    socket.sendmsg(&msg, 0)
}

/// Sends replies to clients that have no address yet and did not ask for a broadcast
/// (RFC 2131 §4.1): the IP datagram goes straight to the client's hardware address, which
/// needs no ARP entry (the client cannot answer ARP before it has its address). A packet
/// socket: CAP_NET_RAW when opened, nothing afterwards. Protocol 0: it receives nothing.
pub struct LinkSender {
    socket: Socket,
}

impl LinkSender {
    /// Opens the packet socket (fails without CAP_NET_RAW).
    pub fn open() -> io::Result<LinkSender> {
        let socket = Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(0)))?;
        // A full device queue must not stall the engine thread: the caller falls back to UDP.
        socket.set_nonblocking(true)?;
        Ok(LinkSender { socket })
    }

    /// Sends `payload` as UDP `source:67` → `dst:68` in a frame to `mac` by interface
    /// `ifindex`.
    pub fn send(
        &self,
        ifindex: i32,
        mac: [u8; 6],
        source: Ipv4Addr,
        dst: SocketAddrV4,
        payload: &[u8],
    ) -> io::Result<usize> {
        let datagram = ipv4_udp(
            SocketAddrV4::new(source, crate::dhcp::engine::SERVER_PORT),
            dst,
            payload,
        )
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "reply too large"))?;
        // SAFETY: all-zero bytes are a valid sockaddr_ll (plain integers).
        let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
        ll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        ll.sll_ifindex = ifindex;
        ll.sll_halen = 6;
        ll.sll_addr[..6].copy_from_slice(&mac);
        // SAFETY: sockaddr_ll fits in the zeroed sockaddr_storage given, and the length set is
        // sockaddr_ll's.
        let ((), addr) = unsafe {
            SockAddr::try_init(|storage, len| {
                storage.cast::<libc::sockaddr_ll>().write(ll);
                *len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                Ok(())
            })
        }?;
        self.socket.send_to(&datagram, &addr)
    }
}

/// An IPv4 header and a UDP header (both with checksums; a UDP checksum computing to 0 is sent
/// as 0x0000) around `payload`; `None` when it does not fit in one IPv4 datagram.
pub fn ipv4_udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Option<Vec<u8>> {
    let udp_len = u16::try_from(8 + payload.len()).ok()?;
    let total = u16::try_from(20 + usize::from(udp_len)).ok()?;
    let mut packet = Vec::with_capacity(usize::from(total));
    // Version 4, 5 words of header, no TOS, no fragment, TTL 64, protocol UDP.
    packet.extend_from_slice(&[0x45, 0]);
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    packet.extend_from_slice(&src.ip().octets());
    packet.extend_from_slice(&dst.ip().octets());
    let header_sum = checksum(&[&packet[..20]]);
    packet[10..12].copy_from_slice(&header_sum.to_be_bytes());
    let mut udp = Vec::with_capacity(8);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&src.ip().octets());
    pseudo[4..8].copy_from_slice(&dst.ip().octets());
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
    // A computed zero stays 0x0000 ("no checksum", allowed for UDP over IPv4), not RFC 768's
    // 0xffff: busybox udhcpc compares the field with its own sum, which is 0 then, and drops
    // a 0xffff reply; its retransmissions are answered byte for byte the same, so that client
    // would never get its lease. ISC dhcpd's packet path sends 0 too, and every receiver
    // accepts a datagram without checksum.
    let sum = checksum(&[&pseudo, &udp, payload]);
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(&udp);
    packet.extend_from_slice(payload);
    Some(packet)
}

/// The Internet checksum (RFC 1071) of the parts taken as one byte string.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for byte in parts.iter().flat_map(|p| p.iter().copied()) {
        match odd.take() {
            Some(high) => sum += u32::from(u16::from_be_bytes([high, byte])),
            None => odd = Some(byte),
        }
    }
    if let Some(high) = odd {
        sum += u32::from(u16::from_be_bytes([high, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ip_and_udp_checksums_verify() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 213, 0, 1), 67);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 213, 0, 100), 68);
        for payload in [&b"odd"[..], &b"even"[..], &[0u8; 300][..]] {
            let packet = ipv4_udp(src, dst, payload).unwrap();
            assert_eq!(packet.len(), 28 + payload.len());
            // A header with its checksum sums to zero.
            assert_eq!(checksum(&[&packet[..20]]), 0);
            let mut pseudo = [0u8; 12];
            pseudo[..8].copy_from_slice(&packet[12..20]);
            pseudo[9] = 17;
            pseudo[10..12].copy_from_slice(&packet[24..26]);
            assert_eq!(checksum(&[&pseudo, &packet[20..]]), 0);
            assert_eq!(&packet[28..], payload);
        }
        // RFC 1071's example: 0001 f203 f4f5 f6f7 sums to ddf2, sent as its complement.
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            !0xddf2
        );
        assert!(ipv4_udp(src, dst, &vec![0u8; 70_000]).is_none());
    }

    /// The UDP checksum field of a frame from `ipv4_udp`.
    fn udp_checksum_field(packet: &[u8]) -> u16 {
        u16::from_be_bytes([packet[26], packet[27]])
    }

    /// `checksum` over the pseudo-header and the UDP datagram of `packet` with its checksum
    /// field taken as zero: what the sender computes.
    fn computed_udp_checksum(packet: &[u8]) -> u16 {
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&packet[12..20]);
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&packet[24..26]);
        checksum(&[&pseudo, &packet[20..26], &[0, 0], &packet[28..]])
    }

    #[test]
    fn a_udp_checksum_computing_to_zero_is_sent_as_zero() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 213, 0, 1), 67);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 213, 0, 100), 68);
        let mut payload = vec![0u8; 300];
        payload[..3].copy_from_slice(&[2, 1, 6]);
        payload[236..240].copy_from_slice(&[99, 130, 83, 99]);
        // A normal input: a real checksum, which verifies.
        let normal = ipv4_udp(src, dst, &payload).unwrap();
        let sent = udp_checksum_field(&normal);
        assert_ne!(sent, 0);
        assert_eq!(computed_udp_checksum(&normal), sent);
        // Adding the complement of the sum at an even offset (where the xid sits) makes the
        // ones' complement sum all ones: the checksum computes to 0.
        payload[4..6].copy_from_slice(&sent.to_be_bytes());
        let zero = ipv4_udp(src, dst, &payload).unwrap();
        assert_eq!(computed_udp_checksum(&zero), 0);
        assert_eq!(
            udp_checksum_field(&zero),
            0x0000,
            "a computed 0 is sent as 0x0000"
        );
        assert_eq!(&zero[28..], &payload[..]);
        // The IP header is unaffected and still verifies.
        assert_eq!(checksum(&[&zero[..20]]), 0);
    }

    #[test]
    fn pktinfo_round_trips() {
        let control = build_pktinfo(3, Ipv4Addr::new(10, 0, 0, 1));
        let info = parse_pktinfo(&control).unwrap();
        assert_eq!(info.ifindex, 3);
        assert_eq!(info.local, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(parse_pktinfo(&control[..4]), None);
        assert_eq!(parse_pktinfo(&[0xff; 64]), None);
    }

    #[test]
    fn loopback_requests_carry_their_interface() {
        let server = open(0, None).unwrap();
        let port = server.local_addr().unwrap().as_socket().unwrap().port();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"hello", ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 64];
        let mut tries = 0;
        let received = loop {
            tries += 1;
            assert!(tries < 2000, "no datagram on the loopback");
            match recv(&server, &mut buf) {
                Ok(r) => break r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(&buf[..received.len], b"hello");
        let info = received.info.expect("IP_PKTINFO");
        assert_eq!(info.local, Ipv4Addr::LOCALHOST);
        assert_eq!(info.dst, Ipv4Addr::LOCALHOST);
        assert!(info.ifindex > 0);
        send(
            &server,
            b"back",
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, client.local_addr().unwrap().port()),
            Some((info.ifindex, info.local)),
        )
        .unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");
    }
}
