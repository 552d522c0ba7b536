//! UDP sockets of the responder: SO_REUSEADDR, SO_BROADCAST, IP_PKTINFO (which interface and
//! local address a request came in on, and which interface a broadcast reply leaves by), and
//! SO_BINDTODEVICE when `[dhcp] interfaces` is set.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use socket2::{Domain, MaybeUninitSlice, MsgHdr, MsgHdrMut, Protocol, SockAddr, Socket, Type};

/// `SOL_IP` / `IPPROTO_IP`.
const SOL_IP: i32 = 0;
/// `IP_PKTINFO` (Linux).
const IP_PKTINFO: i32 = 8;
/// `sizeof(struct in_pktinfo)`.
const PKTINFO_LEN: usize = 12;

extern "C" {
    // From the C library every Rust program on Linux links; socket2 exposes no IP_PKTINFO.
    fn setsockopt(
        fd: std::os::raw::c_int,
        level: std::os::raw::c_int,
        name: std::os::raw::c_int,
        value: *const std::os::raw::c_void,
        len: u32,
    ) -> std::os::raw::c_int;
}

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
    // SAFETY: a valid fd and a pointer to an int of the length given.
    let rc = unsafe {
        setsockopt(
            socket.as_raw_fd(),
            SOL_IP,
            IP_PKTINFO,
            &on as *const _ as *const std::os::raw::c_void,
            std::mem::size_of::<std::os::raw::c_int>() as u32,
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

#[cfg(test)]
mod tests {
    use super::*;

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
