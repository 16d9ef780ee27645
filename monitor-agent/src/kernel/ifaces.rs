//! Which interfaces to observe, and noticing when they come and go.
//!
//! Interfaces are listed with `if_nameindex(3)` (netlink under the hood, so always the agent's
//! own network namespace, unlike `/sys/class/net`, which shows the namespace sysfs was mounted
//! in). The uplink is the interface of the default route, read from `/proc/net/route` and
//! `/proc/net/ipv6_route` (per-namespace files). Changes are noticed through an rtnetlink
//! socket subscribed to link and route notifications; any notification triggers a rescan.

use std::{
    collections::BTreeMap,
    ffi::CStr,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use monitor_common::role;

/// What an interface is to us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A pod's veth (host side).
    Endpoint,
    /// The node's uplink.
    Uplink,
    /// The host gateway device (e.g. `cilium_host`).
    Host,
}

impl Role {
    /// The datapath's number for the role.
    pub fn raw(self) -> u8 {
        match self {
            Role::Endpoint => role::ENDPOINT,
            Role::Uplink => role::UPLINK,
            Role::Host => role::HOST,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Endpoint => "endpoint",
            Role::Uplink => "uplink",
            Role::Host => "host",
        }
    }
}

/// How to choose the interfaces.
#[derive(Clone, Debug)]
pub struct Selector {
    /// Glob patterns (`*`, `?`) for endpoint veths, e.g. `lxc*`.
    pub endpoint_patterns: Vec<String>,
    /// Uplink names; empty = the default-route interface(s).
    pub uplinks: Vec<String>,
    /// The host gateway device, if any.
    pub host_device: Option<String>,
}

/// Lists the interfaces of this network namespace: ifindex -> name.
pub fn list_links() -> io::Result<BTreeMap<u32, String>> {
    // SAFETY: if_nameindex returns a malloc'd array terminated by a zero entry, freed below.
    unsafe {
        let head = libc::if_nameindex();
        if head.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut out = BTreeMap::new();
        let mut p = head;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            out.insert((*p).if_index, name);
            p = p.add(1);
        }
        libc::if_freenameindex(head);
        Ok(out)
    }
}

/// Every address configured on this namespace's interfaces (the node's own addresses, which
/// flows show as the `host` identity), loopback excluded.
pub fn local_addresses() -> io::Result<Vec<std::net::IpAddr>> {
    let mut out = addresses(|_| true)?;
    out.retain(|ip| !ip.is_loopback());
    out.sort();
    out.dedup();
    Ok(out)
}

/// The addresses of one interface, in the order the kernel lists them.
pub fn interface_addresses(name: &str) -> io::Result<Vec<std::net::IpAddr>> {
    addresses(|n| n == name.as_bytes())
}

/// The addresses of the interfaces whose name `keep` accepts.
fn addresses(keep: impl Fn(&[u8]) -> bool) -> io::Result<Vec<std::net::IpAddr>> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a linked list that we walk read-only and free with freeifaddrs.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut p = head;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            let named = !(*p).ifa_name.is_null() && keep(CStr::from_ptr((*p).ifa_name).to_bytes());
            if !a.is_null() && named {
                match (*a).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push(std::net::IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.push(std::net::IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    Ok(out)
}

/// Names of the interfaces that carry a default route (IPv4 or IPv6).
pub fn default_route_interfaces() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        // Iface Destination Gateway Flags RefCnt Use Metric Mask …
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 7
                && f[1] == "00000000"
                && f[7] == "00000000"
                && !out.contains(&f[0].to_owned())
            {
                out.push(f[0].to_owned());
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/ipv6_route") {
        // dst dst_len src src_len nexthop metric refcnt use flags iface
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 10
                && f[0].chars().all(|c| c == '0')
                && f[1] == "00"
                && f[9] != "lo"
                && !out.contains(&f[9].to_owned())
            {
                out.push(f[9].to_owned());
            }
        }
    }
    out
}

/// `*` matches any run of characters, `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn rec(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => rec(&p[1..], n) || (!n.is_empty() && rec(p, &n[1..])),
            (Some(b'?'), Some(_)) => rec(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => rec(&p[1..], &n[1..]),
            _ => false,
        }
    }
    rec(pattern.as_bytes(), name.as_bytes())
}

/// The interfaces to observe now, with their roles: ifindex -> (name, role).
pub fn desired(
    sel: &Selector,
    links: &BTreeMap<u32, String>,
    defaults: &[String],
) -> BTreeMap<u32, (String, Role)> {
    let uplinks: &[String] = if sel.uplinks.is_empty() {
        defaults
    } else {
        &sel.uplinks
    };
    let mut out = BTreeMap::new();
    for (&ifindex, name) in links {
        let role = if uplinks.iter().any(|u| u == name) {
            Role::Uplink
        } else if sel.host_device.as_deref() == Some(name.as_str()) {
            Role::Host
        } else if sel.endpoint_patterns.iter().any(|p| glob_match(p, name)) {
            Role::Endpoint
        } else {
            continue;
        };
        out.insert(ifindex, (name.clone(), role));
    }
    out
}

/// Checks that every interface named explicitly exists (a typo must not go unnoticed).
pub fn check_named(sel: &Selector, links: &BTreeMap<u32, String>) -> Result<(), String> {
    let names: Vec<&String> = links.values().collect();
    for n in sel.uplinks.iter().chain(sel.host_device.iter()) {
        if !names.contains(&n) {
            return Err(n.clone());
        }
    }
    Ok(())
}

// rtnetlink multicast groups (linux/rtnetlink.h, legacy bitmask form).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

/// An rtnetlink socket that wakes up when links or routes change.
pub struct LinkWatcher {
    fd: OwnedFd,
}

impl LinkWatcher {
    /// Subscribes to link and route notifications of this network namespace.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2)/bind(2) calls with valid arguments; the fd is owned below.
        unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            addr.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
            let rc = libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            );
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(LinkWatcher { fd })
        }
    }

    /// Waits up to `timeout` for a notification; returns true if something changed. Drains all
    /// pending notifications (the caller rescans everything anyway). A socket overrun (ENOBUFS)
    /// also counts as a change: notifications were lost, so a rescan is due.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if n <= 0 {
            return false;
        }
        let mut buf = [0u8; 16 * 1024];
        let mut changed = false;
        loop {
            // SAFETY: buf is valid for its length.
            let r =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if r > 0 {
                changed = true;
                continue;
            }
            if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                changed = true;
                continue;
            }
            return changed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("lxc*", "lxcf4cd39e34601"));
        assert!(glob_match("lxc*", "lxc"));
        assert!(!glob_match("lxc*", "eth0"));
        assert!(glob_match("veth?", "veth0"));
        assert!(!glob_match("veth?", "veth10"));
        assert!(glob_match("*", "anything"));
    }

    #[test]
    fn classifies_roles() {
        let links: BTreeMap<u32, String> = [
            (1, "lo"),
            (2, "eth0"),
            (3, "lxc1234"),
            (4, "cilium_host"),
            (5, "docker0"),
        ]
        .into_iter()
        .map(|(i, n)| (i, n.to_owned()))
        .collect();
        let sel = Selector {
            endpoint_patterns: vec!["lxc*".into(), "veth*".into()],
            uplinks: vec![],
            host_device: Some("cilium_host".into()),
        };
        let d = desired(&sel, &links, &["eth0".to_owned()]);
        assert_eq!(d[&2], ("eth0".to_owned(), Role::Uplink));
        assert_eq!(d[&3], ("lxc1234".to_owned(), Role::Endpoint));
        assert_eq!(d[&4], ("cilium_host".to_owned(), Role::Host));
        assert!(!d.contains_key(&1) && !d.contains_key(&5));
    }

    #[test]
    fn named_interfaces_must_exist() {
        let links: BTreeMap<u32, String> = [(2, "eth0".to_owned())].into_iter().collect();
        let sel = Selector {
            endpoint_patterns: vec![],
            uplinks: vec!["eth9".into()],
            host_device: None,
        };
        assert_eq!(check_named(&sel, &links), Err("eth9".to_owned()));
    }

    #[test]
    fn local_addresses_exclude_loopback() {
        let addrs = local_addresses().expect("getifaddrs");
        assert!(addrs.iter().all(|a| !a.is_loopback()));
    }

    #[test]
    fn lists_this_namespace() {
        let links = list_links().expect("if_nameindex");
        assert!(links.values().any(|n| n == "lo"));
    }
}
