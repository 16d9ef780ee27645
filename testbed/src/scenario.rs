//! The reference scenario of `docs/reference-scenario.md`, in four network namespaces.
//!
//! ```text
//!  pod-a (10.244.0.213/32, fd00:10:244::213)   pod-b (10.244.0.77/32, fd00:10:244::77)
//!        eth0 ── lxcf4cd39e34601 ┐                 eth0 ── lxc2b8e1f0a9c77 ┐
//!                                node: fs_host 10.244.0.201/32 (gateway, veth with fs_net),
//!                                ip_forward, MASQUERADE -s 10.244.0.0/24 -o eth0
//!                                eth0 198.51.100.10/24 ── eth0 198.51.100.1/24  world
//!                                                                  lo 1.0.0.1/32
//! ```

use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns::{run, try_run};

/// pod-a's address.
pub const POD_A_IP: &str = "10.244.0.213";
/// pod-b's address.
pub const POD_B_IP: &str = "10.244.0.77";
/// pod-a's IPv6 address.
pub const POD_A_IP6: &str = "fd00:10:244::213";
/// pod-b's IPv6 address.
pub const POD_B_IP6: &str = "fd00:10:244::77";
/// The pods' gateway, held by the node's gateway device.
pub const GATEWAY_IP: &str = "10.244.0.201";
/// The node's uplink address (the masquerade source).
pub const NODE_IP: &str = "198.51.100.10";
/// The world's router address.
pub const ROUTER_IP: &str = "198.51.100.1";
/// "The internet": 1.0.0.1 on the world's loopback.
pub const WORLD_IP: &str = "1.0.0.1";
/// pod-a's veth, node side (the name from the seed lab).
pub const LXC_A: &str = "lxcf4cd39e34601";
/// pod-b's veth, node side.
pub const LXC_B: &str = "lxc2b8e1f0a9c77";
/// The node's gateway device (cilium_host in the lab).
pub const HOST_DEV: &str = "fs_host";
/// The node's uplink.
pub const UPLINK: &str = "eth0";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The endpoints file of the scenario: what a CNI or Kubernetes would know about the pods.
pub const ENDPOINTS_YAML: &str = "\
endpoints:
  - namespace: default
    pod: pod-a
    id: 762
    ips: [10.244.0.213, \"fd00:10:244::213\"]
    labels: {app: web}
    workload: {name: web, kind: Deployment}
  - namespace: default
    pod: pod-b
    id: 1204
    ips: [10.244.0.77, \"fd00:10:244::77\"]
    labels: {app: db}
";

/// The built scenario; dropping it removes every namespace (and so every link) it made, and its
/// scratch directory.
pub struct Scenario {
    prefix: String,
    dir: std::path::PathBuf,
}

impl Scenario {
    /// Builds the topology. Panics (after cleaning up) if any step fails.
    pub fn build() -> Scenario {
        remove_stale();
        let prefix = format!(
            "fs{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let s = Scenario { prefix, dir };
        s.setup();
        s
    }

    /// A scratch directory removed with the scenario (sockets, files).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Where an agent of this scenario should put its socket.
    pub fn agent_socket(&self) -> std::path::PathBuf {
        self.dir.join("agent.sock")
    }

    /// Starts the real agent in the node namespace with the scenario's defaults (its socket,
    /// endpoints file, node name `node-1`, gateway device) followed by `extra` (later flags win,
    /// so `extra` can override any default), and waits until it answers a health check: it is
    /// then attached and serving. Panics with the agent's stderr if it does not come up.
    pub fn start_agent(&self, extra: &[&str]) -> crate::process::Spawned {
        let socket = self.agent_socket();
        let endpoints = self.endpoints_file();
        let mut args = vec![
            "--socket",
            socket.to_str().expect("utf-8 path"),
            "--endpoints-file",
            endpoints.to_str().expect("utf-8 path"),
            "--node-name",
            "node-1",
            "--host-device",
            HOST_DEV,
        ];
        args.extend_from_slice(extra);
        let agent =
            crate::process::Spawned::start(&self.node(), &crate::bin_path("monitor-agent"), &args);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        if let Err(e) = rt.block_on(crate::client::wait_for_socket(
            &socket,
            std::time::Duration::from_secs(30),
        )) {
            panic!("{e}; agent stderr:\n{}", agent.stderr());
        }
        agent
    }

    /// Writes [`ENDPOINTS_YAML`] into the scratch directory and returns its path.
    pub fn endpoints_file(&self) -> std::path::PathBuf {
        let p = self.dir.join("endpoints.yaml");
        std::fs::write(&p, ENDPOINTS_YAML).expect("writing endpoints file");
        p
    }

    /// The node namespace's name.
    pub fn node(&self) -> String {
        format!("{}-node", self.prefix)
    }
    /// pod-a's namespace.
    pub fn pod_a(&self) -> String {
        format!("{}-pod-a", self.prefix)
    }
    /// pod-b's namespace.
    pub fn pod_b(&self) -> String {
        format!("{}-pod-b", self.prefix)
    }
    /// The world's namespace.
    pub fn world(&self) -> String {
        format!("{}-world", self.prefix)
    }

    fn all(&self) -> [String; 4] {
        [self.node(), self.pod_a(), self.pod_b(), self.world()]
    }

    /// Runs a command in the node namespace.
    pub fn node_exec(&self, args: &[&str]) -> std::process::Output {
        run(&self.node(), args)
    }

    /// Adds an iptables rule in the node (`-I FORWARD …`); returns a closure-free handle: call
    /// [`Scenario::iptables_delete`] with the same arguments to remove it.
    pub fn iptables(&self, args: &[&str]) {
        let mut a = vec!["iptables"];
        a.extend_from_slice(args);
        run(&self.node(), &a);
    }

    fn setup(&self) {
        let (node, a, b, world) = (self.node(), self.pod_a(), self.pod_b(), self.world());
        for ns in self.all() {
            run("", &["ip", "netns", "add", &ns]);
            run(&ns, &["ip", "link", "set", "lo", "up"]);
            // No duplicate address detection: addresses are usable at once.
            run(&ns, &["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"]);
            run(
                &ns,
                &["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"],
            );
        }
        // Uplink: node eth0 <-> world eth0.
        run(
            &node,
            &[
                "ip", "link", "add", UPLINK, "type", "veth", "peer", "name", "eth0", "netns",
                &world,
            ],
        );
        run(
            &node,
            &["ip", "addr", "add", &format!("{NODE_IP}/24"), "dev", UPLINK],
        );
        run(&node, &["ip", "link", "set", UPLINK, "up"]);
        run(
            &world,
            &[
                "ip",
                "addr",
                "add",
                &format!("{ROUTER_IP}/24"),
                "dev",
                "eth0",
            ],
        );
        run(&world, &["ip", "link", "set", "eth0", "up"]);
        run(
            &world,
            &["ip", "addr", "add", &format!("{WORLD_IP}/32"), "dev", "lo"],
        );
        run(&node, &["ip", "route", "add", "default", "via", ROUTER_IP]);
        // Gateway device holding the pods' gateway address (a veth pair, like cilium_host/cilium_net).
        run(
            &node,
            &[
                "ip", "link", "add", HOST_DEV, "type", "veth", "peer", "name", "fs_net",
            ],
        );
        run(
            &node,
            &[
                "ip",
                "addr",
                "add",
                &format!("{GATEWAY_IP}/32"),
                "dev",
                HOST_DEV,
            ],
        );
        run(&node, &["ip", "link", "set", HOST_DEV, "up"]);
        run(&node, &["ip", "link", "set", "fs_net", "up"]);
        // Pods.
        for (pod, lxc, ip4, ip6) in [
            (&a, LXC_A, POD_A_IP, POD_A_IP6),
            (&b, LXC_B, POD_B_IP, POD_B_IP6),
        ] {
            run(
                &node,
                &[
                    "ip", "link", "add", lxc, "type", "veth", "peer", "name", "eth0", "netns", pod,
                ],
            );
            run(&node, &["ip", "link", "set", lxc, "up"]);
            run(
                &node,
                &["ip", "addr", "add", "fe80::1/64", "dev", lxc, "nodad"],
            );
            run(
                &node,
                &["ip", "route", "add", &format!("{ip4}/32"), "dev", lxc],
            );
            run(
                &node,
                &[
                    "ip",
                    "-6",
                    "route",
                    "add",
                    &format!("{ip6}/128"),
                    "dev",
                    lxc,
                ],
            );
            run(
                pod,
                &["ip", "addr", "add", &format!("{ip4}/32"), "dev", "eth0"],
            );
            run(
                pod,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{ip6}/128"),
                    "dev",
                    "eth0",
                    "nodad",
                ],
            );
            run(pod, &["ip", "link", "set", "eth0", "up"]);
            run(
                pod,
                &[
                    "ip", "route", "add", GATEWAY_IP, "dev", "eth0", "scope", "link",
                ],
            );
            run(pod, &["ip", "route", "add", "default", "via", GATEWAY_IP]);
            run(
                pod,
                &[
                    "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
                ],
            );
        }
        run(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        run(&node, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        self.iptables(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "10.244.0.0/24",
            "-o",
            UPLINK,
            "-j",
            "MASQUERADE",
        ]);
    }

    /// Removes the MASQUERADE rule (the world can then no longer answer the pods).
    pub fn remove_masquerade(&self) {
        self.iptables(&[
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-s",
            "10.244.0.0/24",
            "-o",
            UPLINK,
            "-j",
            "MASQUERADE",
        ]);
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        for ns in self.all() {
            let _ = try_run("", &["ip", "netns", "del", &ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes namespaces left by test runs that were killed before they could clean up.
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("fs").and_then(|r| r.split('-').next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = try_run("", &["ip", "netns", "del", &name]);
        }
    }
}
