//! A real DNS server for the scenario's world, and pods that resolve names with the system's
//! resolver.
//!
//! The server is dnsmasq (Debian's `dnsmasq-base`, installed by `scripts/setup.sh`: the binary
//! without a system service), started with its own options only (`--conf-file=/dev/null`): it
//! listens on the world's address, answers `one.one.one.one` with 1.0.0.1 (TTL 300) and
//! `nx.example` with NXDOMAIN, and forwards nothing. A pod resolves with glibc (`getent ahostsv4`), through
//! `ip netns exec`, which puts `/etc/netns/<namespace>/resolv.conf` in the place of
//! `/etc/resolv.conf`: that file names the world's server and is removed with the guard.

use std::{net::IpAddr, path::PathBuf, process::Command};

use crate::{netns::try_run, process::Spawned};

/// The name the world's DNS server answers, and its address.
pub const NAME: &str = "one.one.one.one";
/// A name the server says does not exist (NXDOMAIN).
pub const NX_NAME: &str = "nx.example";

/// The DNS server and the resolver configuration of the pods that use it; stops the server and
/// removes the configuration when dropped.
pub struct DnsServer {
    server: Spawned,
    resolv_dirs: Vec<PathBuf>,
}

impl DnsServer {
    /// Starts dnsmasq in `world` on `listen` port 53, and points `pods` (and the world's own
    /// resolver) at it. `None` when
    /// dnsmasq is not installed (the caller skips, or fails under CI).
    pub fn start(world: &str, listen: &str, pods: &[String]) -> Option<DnsServer> {
        let program = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())?;
        let listen_arg = format!("--listen-address={listen}");
        let answer = format!("--address=/{NAME}/{}", crate::scenario::WORLD_IP);
        let nx = format!("--address=/{NX_NAME}/");
        let server = Spawned::start(
            world,
            &program,
            &[
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &listen_arg,
                "--port=53",
                &answer,
                &nx,
                // Answers from --address carry TTL 0 unless told: give them a real one.
                "--local-ttl=300",
                "--pid-file",
                "--user=root",
                "--log-facility=-",
                "--log-queries",
            ],
        );
        let mut resolv_dirs = Vec::new();
        // The world too: the readiness probe below resolves there.
        for pod in pods.iter().map(String::as_str).chain([world]) {
            let dir = PathBuf::from("/etc/netns").join(pod);
            std::fs::create_dir_all(&dir).expect("/etc/netns/<pod>");
            std::fs::write(
                dir.join("resolv.conf"),
                format!("nameserver {listen}\noptions timeout:2 attempts:2\n"),
            )
            .expect("resolv.conf");
            resolv_dirs.push(dir);
        }
        let dns = DnsServer {
            server,
            resolv_dirs,
        };
        // Ready when it answers.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let probe = try_run(world, &["getent", "ahostsv4", NAME]);
            if probe.status.success() {
                return Some(dns);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("dnsmasq did not answer: {}", dns.server.stderr());
    }

    /// What the server logged (queries and answers).
    pub fn log(&self) -> String {
        self.server.stderr()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.server.stop();
        for dir in &self.resolv_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Resolves `name` in namespace `ns` with glibc's resolver (`getent ahostsv4`: A queries only);
/// the addresses, none when the name does not resolve.
pub fn resolve(ns: &str, name: &str) -> Vec<IpAddr> {
    let out = Command::new("timeout")
        .args(["10", "ip", "netns", "exec", ns, "getent", "ahostsv4", name])
        .output()
        .expect("getent");
    let mut ips: Vec<IpAddr> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    ips.dedup();
    ips
}
