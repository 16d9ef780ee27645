//! Namespaces and links beyond the reference scenario: a namespace of a test's own (a relay
//! host, say) and veth links between namespaces, each with an address on both ends.
//!
//! Names follow the scenario's scheme (`fs<pid>-…`), so a namespace left by a killed run is
//! removed by the next [`crate::Scenario::build`].

use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns::{run, try_run};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace of the test's own, with only `lo` up; removed (with its links) on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `fs<pid>-<role><n>`.
    pub fn create(role: &str) -> Netns {
        let name = format!(
            "fs{}-{role}{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run("", &["ip", "netns", "add", &name]);
        let ns = Netns { name };
        run(&ns.name, &["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (for `ip netns exec`, [`crate::netns::in_netns`], …).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = try_run("", &["ip", "netns", "del", &self.name]);
    }
}

/// One end of a veth link: its namespace, interface name and address with prefix length.
pub struct End<'a> {
    /// Namespace name.
    pub ns: &'a str,
    /// Interface name inside it.
    pub ifname: &'a str,
    /// `address/prefix`, e.g. `203.0.113.1/30`.
    pub cidr: &'a str,
}

/// Links two namespaces with a veth pair, addresses both ends and brings them up. The link goes
/// away with either namespace.
pub fn link(a: &End<'_>, b: &End<'_>) {
    run(
        a.ns,
        &[
            "ip", "link", "add", a.ifname, "type", "veth", "peer", "name", b.ifname, "netns", b.ns,
        ],
    );
    for end in [a, b] {
        run(end.ns, &["ip", "addr", "add", end.cidr, "dev", end.ifname]);
        run(end.ns, &["ip", "link", "set", end.ifname, "up"]);
    }
}
