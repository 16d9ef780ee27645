//! Discovery of unknown veth peers: which addresses the node routes to each endpoint interface.
//!
//! A CNI that gives each pod a veth installs a host route per pod address on the node
//! (`10.244.0.213 dev lxcf4cd39e34601 scope link`, `fd00:10:244::213 dev lxc… metric 1024`):
//! that route is how the node delivers to the pod, so it is the most reliable place to learn the
//! pod's addresses without asking the CNI or Kubernetes. We dump the routing tables (all of them,
//! IPv4 and IPv6) and keep unicast /32 and /128 routes whose output interface is one of the
//! endpoint interfaces the agent observes. Neighbour entries are not used: they add link-local
//! and stale addresses, and a pod the node can reach always has a route.
//!
//! # What an unknown pod looks like
//!
//! One [`Endpoint`] per interface: ID = the host-side ifindex, `ifname` = its name, no namespace
//! or pod name, labels `["reserved:unmanaged"]` and so identity 3 (`unmanaged`). That is
//! Cilium's identity for "a pod Cilium does not manage", and Hubble clients print it by name
//! (`10.244.0.99:80 (unmanaged)`), which is what such a pod is to us. A per-interface identity
//! (a label naming the veth) was rejected: its number would mean nothing on another node and
//! would change every time the pod is recreated, while the interface and endpoint ID already
//! tell unmanaged pods apart in a flow. The registry folds a discovered endpoint into a named pod
//! that shares an address or the veth, so discovery never hides what a real source says.
//!
//! # Why raw rtnetlink through `libc`
//!
//! The agent already speaks rtnetlink through `libc` ([`crate::ifaces`]); one dump request and a
//! parser for `rtmsg` and two attributes is about a hundred lines, where `netlink-packet-route`
//! and `netlink-sys` would add two crates whose APIs change with every release. The dump reads
//! the calling thread's network namespace, which must be the agent's.

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::{Endpoint, reserved};

/// An unmanaged endpoint: what discovery makes for interface `ifindex`/`ifname` and the
/// addresses routed to it (sorted and deduplicated here).
pub fn unmanaged(ifindex: u32, ifname: &str, mut ips: Vec<IpAddr>) -> Endpoint {
    ips.sort_unstable();
    ips.dedup();
    Endpoint {
        id: ifindex,
        identity: reserved::UNMANAGED,
        labels: reserved::labels(reserved::UNMANAGED)
            .iter()
            .map(|l| (*l).to_owned())
            .collect(),
        ips,
        ifname: Some(ifname.to_owned()),
        ..Endpoint::default()
    }
}

/// Endpoints for the addresses routed to the given endpoint interfaces (`(ifindex, name)`), one
/// per interface that has at least one host route, sorted by ifindex. Reads the current
/// network namespace's routing tables over rtnetlink.
pub fn discover(endpoint_ifaces: &[(u32, String)]) -> io::Result<Vec<Endpoint>> {
    if endpoint_ifaces.is_empty() {
        return Ok(Vec::new());
    }
    let names: BTreeMap<u32, &str> = endpoint_ifaces
        .iter()
        .map(|(i, n)| (*i, n.as_str()))
        .collect();
    let mut by_if: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
    for route in host_routes()? {
        if names.contains_key(&route.ifindex) {
            by_if.entry(route.ifindex).or_default().push(route.addr);
        }
    }
    Ok(by_if
        .into_iter()
        .map(|(ifindex, ips)| unmanaged(ifindex, names[&ifindex], ips))
        .collect())
}

/// A unicast host route (/32 or /128): `addr dev ifindex`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostRoute {
    /// The destination address.
    pub addr: IpAddr,
    /// The output interface.
    pub ifindex: u32,
}

/// Every unicast /32 and /128 route with an output interface, from all routing tables of the
/// current network namespace, IPv4 then IPv6.
pub fn host_routes() -> io::Result<Vec<HostRoute>> {
    let sock = NetlinkSocket::open()?;
    let mut out = Vec::new();
    for (seq, family) in [(1, libc::AF_INET), (2, libc::AF_INET6)] {
        match sock.dump_routes(seq, family as u8, &mut out) {
            Ok(()) => {}
            // A kernel built without IPv6 has no IPv6 routes to dump.
            Err(e) if family == libc::AF_INET6 && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

// From linux/netlink.h and linux/rtnetlink.h (stable kernel ABI).
const NLMSG_HDRLEN: usize = 16;
const RTMSG_LEN: usize = 12;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTN_UNICAST: u8 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

struct NetlinkSocket {
    fd: OwnedFd,
}

impl NetlinkSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Never hang on a kernel that does not answer: 5 s is far more than any dump takes.
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: tv is a valid timeval for the length given.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NetlinkSocket { fd })
    }

    /// Sends an RTM_GETROUTE dump request for `family` and collects host routes until DONE.
    fn dump_routes(&self, seq: u32, family: u8, out: &mut Vec<HostRoute>) -> io::Result<()> {
        let mut req = Vec::with_capacity(NLMSG_HDRLEN + RTMSG_LEN);
        req.extend_from_slice(&((NLMSG_HDRLEN + RTMSG_LEN) as u32).to_ne_bytes());
        req.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend_from_slice(&seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes()); // port id: let the kernel assign ours
        // struct rtmsg: family, then zeros (any table, protocol, scope, type; no flags).
        req.push(family);
        req.extend_from_slice(&[0u8; RTMSG_LEN - 1]);

        // SAFETY: a zeroed sockaddr_nl is valid; nl_pid 0 addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: req and kernel are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }

        // A dump datagram is at most a few pages (32 KiB on 4 KiB-page kernels); 256 KiB also
        // covers 64 KiB-page machines.
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if parse_dump(&buf[..n as usize], seq, out)? {
                return Ok(());
            }
        }
    }
}

/// Parses one datagram of a route dump; returns true when it holds the final DONE message.
fn parse_dump(mut data: &[u8], seq: u32, out: &mut Vec<HostRoute>) -> io::Result<bool> {
    let u16_at = |b: &[u8], o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    while data.len() >= NLMSG_HDRLEN {
        let len = u32_at(data, 0) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed netlink message (length {len})"),
            ));
        }
        let (msg, rest) = (&data[..len], &data[align4(len).min(data.len())..]);
        data = rest;
        let kind = u16_at(msg, 4);
        if u32_at(msg, 8) != seq {
            continue; // not an answer to this request
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                // struct nlmsgerr: a negative errno, then the request's header.
                let code = if msg.len() >= NLMSG_HDRLEN + 4 {
                    i32::from_ne_bytes(
                        msg[NLMSG_HDRLEN..NLMSG_HDRLEN + 4]
                            .try_into()
                            .unwrap_or_default(),
                    )
                } else {
                    -libc::EIO
                };
                if code == 0 {
                    continue; // an acknowledgement
                }
                return Err(io::Error::from_raw_os_error(-code));
            }
            RTM_NEWROUTE => {
                if let Some(r) = parse_route(&msg[NLMSG_HDRLEN..]) {
                    out.push(r);
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// A host route from an `rtmsg` and its attributes, if the message is one.
fn parse_route(body: &[u8]) -> Option<HostRoute> {
    if body.len() < RTMSG_LEN {
        return None;
    }
    let (family, dst_len, rtype) = (body[0], body[1], body[7]);
    let full = match i32::from(family) {
        libc::AF_INET => 32,
        libc::AF_INET6 => 128,
        _ => return None,
    };
    if dst_len != full || rtype != RTN_UNICAST {
        return None;
    }
    let (mut dst, mut oif) = (None, None);
    let mut attrs = &body[align4(RTMSG_LEN)..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff; // without NLA_F_* flags
        if len < 4 || len > attrs.len() {
            break;
        }
        let payload = &attrs[4..len];
        match (kind, payload.len()) {
            (RTA_DST, 4) => {
                dst = Some(IpAddr::V4(Ipv4Addr::new(
                    payload[0], payload[1], payload[2], payload[3],
                )))
            }
            (RTA_DST, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(payload);
                dst = Some(IpAddr::V6(Ipv6Addr::from(a)));
            }
            (RTA_OIF, 4) => {
                oif = Some(u32::from_ne_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]))
            }
            _ => {}
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    Some(HostRoute {
        addr: dst?,
        ifindex: oif?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::testutil::{in_fresh_netns, ip_cmd, privileged};

    fn rta(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    fn route_msg(seq: u32, family: u8, dst_len: u8, rtype: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![family, dst_len, 0, 0, 254, 3, 253, rtype, 0, 0, 0, 0];
        for a in attrs {
            body.extend_from_slice(a);
        }
        let mut m = ((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&RTM_NEWROUTE.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&body);
        m
    }

    fn done(seq: u32) -> Vec<u8> {
        let mut m = 20u32.to_ne_bytes().to_vec();
        m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&[0u8; 8]);
        m
    }

    #[test]
    fn parses_host_routes_only() {
        let v4 = libc::AF_INET as u8;
        let v6 = libc::AF_INET6 as u8;
        let mut dgram = Vec::new();
        // 10.244.0.213/32 dev 7: kept.
        dgram.extend(route_msg(
            5,
            v4,
            32,
            RTN_UNICAST,
            &[
                rta(RTA_DST, &[10, 244, 0, 213]),
                rta(RTA_OIF, &7u32.to_ne_bytes()),
            ],
        ));
        // 10.244.0.0/24 dev 7: a subnet route, skipped.
        dgram.extend(route_msg(
            5,
            v4,
            24,
            RTN_UNICAST,
            &[
                rta(RTA_DST, &[10, 244, 0, 0]),
                rta(RTA_OIF, &7u32.to_ne_bytes()),
            ],
        ));
        // A local route (type 2): skipped.
        dgram.extend(route_msg(
            5,
            v4,
            32,
            2,
            &[
                rta(RTA_DST, &[10, 244, 0, 201]),
                rta(RTA_OIF, &3u32.to_ne_bytes()),
            ],
        ));
        // An answer to another request: skipped.
        dgram.extend(route_msg(
            4,
            v4,
            32,
            RTN_UNICAST,
            &[
                rta(RTA_DST, &[10, 9, 9, 9]),
                rta(RTA_OIF, &7u32.to_ne_bytes()),
            ],
        ));
        // fd00:10:244::213/128 dev 7, with an unknown attribute in between: kept.
        let a6: Ipv6Addr = "fd00:10:244::213".parse().unwrap();
        dgram.extend(route_msg(
            5,
            v6,
            128,
            RTN_UNICAST,
            &[
                rta(RTA_DST, &a6.octets()),
                rta(15, &254u32.to_ne_bytes()),
                rta(RTA_OIF, &7u32.to_ne_bytes()),
            ],
        ));
        let mut out = Vec::new();
        assert!(!parse_dump(&dgram, 5, &mut out).unwrap());
        assert!(parse_dump(&done(5), 5, &mut out).unwrap());
        assert_eq!(
            out,
            [
                HostRoute {
                    addr: "10.244.0.213".parse().unwrap(),
                    ifindex: 7
                },
                HostRoute {
                    addr: IpAddr::V6(a6),
                    ifindex: 7
                },
            ]
        );
        // A truncated message is an error, not a panic.
        assert!(parse_dump(&dgram[..10 + NLMSG_HDRLEN], 5, &mut out).is_err());
    }

    #[test]
    fn reads_this_namespace() {
        // Unprivileged: dumping routes needs no capability.
        host_routes().expect("route dump");
        assert!(discover(&[]).unwrap().is_empty());
    }

    #[test]
    fn discovers_pods_behind_veths() {
        if !privileged("discovers_pods_behind_veths") {
            return;
        }
        let found = in_fresh_netns(|| {
            for args in [
                "link add lxca type veth peer name poda",
                "link add lxcb type veth peer name podb",
                "link add other type veth peer name otherpeer",
                "link set lxca up",
                "link set poda up",
                "link set lxcb up",
                "link set podb up",
                "link set other up",
                "link set otherpeer up",
                "route add 10.244.0.213/32 dev lxca",
                "-6 route add fd00:10:244::213/128 dev lxca",
                "route add 10.244.0.0/24 dev lxca",
                "route add 10.244.0.99/32 dev other",
                "route add 10.244.0.77/32 dev lxcb table 100",
            ] {
                ip_cmd(args);
            }
            let links = crate::kernel::ifaces::list_links().expect("links");
            let idx = |name: &str| *links.iter().find(|(_, n)| *n == name).expect(name).0;
            let ifaces = vec![
                (idx("lxca"), "lxca".to_owned()),
                (idx("lxcb"), "lxcb".to_owned()),
                (idx("poda"), "poda".to_owned()), // no route to it: no endpoint
            ];
            (
                discover(&ifaces).expect("discover"),
                idx("lxca"),
                idx("lxcb"),
            )
        });
        let (eps, a, b) = found;
        assert_eq!(eps.len(), 2, "{eps:#?}");
        let pod_a = &eps[0];
        assert_eq!((pod_a.id, pod_a.ifname.as_deref()), (a, Some("lxca")));
        assert_eq!(
            pod_a.ips,
            [
                "10.244.0.213".parse::<IpAddr>().unwrap(),
                "fd00:10:244::213".parse().unwrap()
            ]
        );
        assert_eq!(pod_a.identity, reserved::UNMANAGED);
        assert_eq!(pod_a.labels, ["reserved:unmanaged"]);
        assert!(pod_a.pod_name.is_empty() && pod_a.namespace.is_empty());
        // A route in another table counts too.
        assert_eq!(
            (eps[1].id, eps[1].ips.as_slice()),
            (b, &["10.244.0.77".parse::<IpAddr>().unwrap()][..])
        );
    }
}
