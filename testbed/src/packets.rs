//! Traffic that plain std sockets do not make: UDP over IPv6 behind extension headers, and SCTP.
//!
//! The test kernel may have no SCTP stack (`CONFIG_IP_SCTP` unset), so SCTP packets are built by
//! hand and carried by raw sockets (`IPPROTO_SCTP`): a client sends an INIT, a responder answers
//! it with an INIT-ACK, which is what the node's conntrack (and NAT) need to see a two-way
//! association. Every socket has a receive timeout; the responder stops when dropped.

use std::{
    io,
    mem::size_of,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::netns::{in_netns, spawn_in_netns};

const IO_TIMEOUT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(20);

/// IANA protocol number of SCTP.
pub const IPPROTO_SCTP: i32 = 132;

/// An IPv6 extension header a socket can ask the kernel to add.
#[derive(Clone, Copy, Debug)]
pub enum Ipv6Ext {
    /// Hop-by-hop options (`IPV6_HOPOPTS`), right after the IPv6 header.
    HopByHop,
    /// Destination options (`IPV6_DSTOPTS`), right before the upper layer (after a fragment
    /// header when the datagram is fragmented).
    DestOpts,
}

fn setsockopt(fd: i32, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    // SAFETY: a valid socket and a buffer that outlives the call, with its true length.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends one UDP datagram of `size` bytes from namespace `ns` to the IPv6 address `dst`, with
/// the extension headers `exts` (a datagram larger than the MTU also gets a fragment header),
/// and waits for the echo; returns the local port and the echoed length. Needs CAP_NET_RAW for
/// the options (the tests run as root).
pub fn udp6_with_ext(
    ns: &str,
    dst: SocketAddr,
    exts: &'static [Ipv6Ext],
    size: usize,
) -> io::Result<(u16, usize)> {
    in_netns(ns, move || {
        let sock = UdpSocket::bind("[::]:0")?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        // One PadN option filling the 8-byte header; the kernel writes the next-header byte.
        let opts: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
        for ext in exts {
            let name = match ext {
                Ipv6Ext::HopByHop => libc::IPV6_HOPOPTS,
                Ipv6Ext::DestOpts => libc::IPV6_DSTOPTS,
            };
            setsockopt(sock.as_raw_fd(), libc::IPPROTO_IPV6, name, &opts)?;
        }
        sock.connect(dst)?;
        sock.send(&vec![0x6au8; size])?;
        let mut buf = vec![0u8; size + 1];
        let n = sock.recv(&mut buf)?;
        Ok((sock.local_addr()?.port(), n))
    })
}

/// CRC-32C (Castagnoli), as SCTP's checksum (RFC 9260, appendix A).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP packet: common header (ports, verification tag, checksum) and one chunk.
fn sctp_packet(sport: u16, dport: u16, vtag: u32, chunk: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + chunk.len());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&vtag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(chunk);
    // The checksum goes in as the CRC's little-endian bytes (RFC 9260, appendix A).
    let crc = crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

/// An INIT or INIT-ACK chunk (same fixed part), with `params` appended.
fn init_chunk(kind: u8, init_tag: u32, params: &[u8]) -> Vec<u8> {
    let len = 20 + params.len();
    let mut c = vec![kind, 0];
    c.extend_from_slice(&(len as u16).to_be_bytes());
    c.extend_from_slice(&init_tag.to_be_bytes());
    c.extend_from_slice(&65_535u32.to_be_bytes()); // advertised receiver window
    c.extend_from_slice(&1u16.to_be_bytes()); // outbound streams
    c.extend_from_slice(&1u16.to_be_bytes()); // inbound streams
    c.extend_from_slice(&init_tag.to_be_bytes()); // initial TSN
    c.extend_from_slice(params);
    c
}

const CHUNK_INIT: u8 = 1;
const CHUNK_INIT_ACK: u8 = 2;

/// What an SCTP packet says: (source port, destination port, verification tag, first chunk's
/// type, its initiate tag when it is an INIT or INIT-ACK).
fn parse_sctp(p: &[u8]) -> Option<(u16, u16, u32, u8, u32)> {
    if p.len() < 16 {
        return None;
    }
    let sport = u16::from_be_bytes([p[0], p[1]]);
    let dport = u16::from_be_bytes([p[2], p[3]]);
    let vtag = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
    let kind = p[12];
    let tag = p
        .get(16..20)
        .map(|t| u32::from_be_bytes([t[0], t[1], t[2], t[3]]))
        .unwrap_or(0);
    Some((sport, dport, vtag, kind, tag))
}

/// A raw `IPPROTO_SCTP` socket of `family` with a short receive timeout.
fn raw_sctp(ip: IpAddr, timeout: Duration) -> io::Result<OwnedFd> {
    let family = if ip.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket creation; the result is checked.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, IPPROTO_SCTP) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` is a plain struct, read as bytes for its exact size.
    let tv_bytes = unsafe {
        std::slice::from_raw_parts((&raw const tv).cast::<u8>(), size_of::<libc::timeval>())
    };
    setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        tv_bytes,
    )?;
    Ok(fd)
}

/// A socket address as the kernel wants it, and its length.
fn sockaddr(ip: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match ip {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Binds a raw socket to a local address: what it sends then comes from that address (else
/// from the address of the outgoing interface).
fn bind(fd: &OwnedFd, ip: IpAddr) -> io::Result<()> {
    let (ss, len) = sockaddr(ip);
    // SAFETY: a valid socket and an address of the given length.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const ss).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn send_to(fd: &OwnedFd, buf: &[u8], ip: IpAddr) -> io::Result<()> {
    let (ss, len) = sockaddr(ip);
    // SAFETY: a valid socket, buffer and address of the given lengths.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            0,
            (&raw const ss).cast(),
            len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one packet: (its SCTP bytes, the sender). IPv4 raw sockets return the IP header
/// too, which is skipped; IPv6 ones return only the payload.
fn recv_from(fd: &OwnedFd) -> io::Result<(Vec<u8>, IpAddr)> {
    let mut buf = vec![0u8; 2048];
    // SAFETY: as in `sockaddr`.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: a valid socket, a buffer and an address of the given lengths.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&raw mut ss).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    let from = match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const ss).cast()) };
            let ihl = buf.first().map_or(20, |b| usize::from(b & 0x0f) * 4);
            buf.drain(..ihl.min(buf.len()));
            IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes())
        }
        _ => {
            // SAFETY: the kernel wrote a sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const ss).cast()) };
            IpAddr::from(sin6.sin6_addr.s6_addr)
        }
    };
    Ok((buf, from))
}

/// An SCTP responder on a raw socket: answers every INIT to `port` with an INIT-ACK.
pub struct SctpResponder {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// INITs answered.
    pub served: Arc<AtomicU64>,
}

impl Drop for SctpResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Starts a responder in namespace `ns` for SCTP of `local`'s family, to port `local.port()`.
pub fn sctp_responder(ns: &str, local: SocketAddr) -> SctpResponder {
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let (s, c) = (stop.clone(), served.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = spawn_in_netns(ns, move || {
        let fd = raw_sctp(local.ip(), POLL).expect("raw SCTP socket");
        bind(&fd, local.ip()).expect("binding the SCTP responder");
        let _ = ready_tx.send(());
        while !s.load(Ordering::Relaxed) {
            let Ok((p, from)) = recv_from(&fd) else {
                continue;
            };
            let Some((sport, dport, _, kind, init_tag)) = parse_sctp(&p) else {
                continue;
            };
            if kind != CHUNK_INIT || dport != local.port() {
                continue;
            }
            // A state cookie parameter (type 7), as an INIT-ACK must carry one.
            let cookie = [0, 7, 0, 8, 0xc0, 0x0c, 0x1e, 0x5a];
            let ack = sctp_packet(
                dport,
                sport,
                init_tag,
                &init_chunk(CHUNK_INIT_ACK, 0x5c7b_0002, &cookie),
            );
            if send_to(&fd, &ack, from).is_ok() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    ready_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("SCTP responder ready");
    SctpResponder {
        stop,
        handle: Some(handle),
        served,
    }
}

/// From namespace `ns`, sends an SCTP INIT from port `sport` to `dst` and waits for the
/// INIT-ACK of that association (same ports, our tag); errors if none comes within 3 s.
pub fn sctp_init(ns: &str, sport: u16, dst: SocketAddr) -> io::Result<()> {
    in_netns(ns, move || {
        let fd = raw_sctp(dst.ip(), POLL)?;
        let tag = 0x5c7b_0001;
        let init = sctp_packet(sport, dst.port(), 0, &init_chunk(CHUNK_INIT, tag, &[]));
        send_to(&fd, &init, dst.ip())?;
        let deadline = Instant::now() + IO_TIMEOUT;
        while Instant::now() < deadline {
            let Ok((p, _)) = recv_from(&fd) else {
                continue;
            };
            if let Some((s, d, vtag, CHUNK_INIT_ACK, _)) = parse_sctp(&p)
                && (s, d, vtag) == (dst.port(), sport, tag)
            {
                return Ok(());
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no SCTP INIT-ACK from {dst} within {IO_TIMEOUT:?}"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn sctp_packet_round_trip() {
        let p = sctp_packet(5000, 7002, 0, &init_chunk(CHUNK_INIT, 42, &[]));
        assert_eq!(p.len(), 12 + 20);
        assert_eq!(parse_sctp(&p), Some((5000, 7002, 0, CHUNK_INIT, 42)));
        let mut zeroed = p.clone();
        zeroed[8..12].fill(0);
        assert_eq!(p[8..12], crc32c(&zeroed).to_le_bytes());
    }
}
