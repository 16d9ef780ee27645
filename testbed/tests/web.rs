//! The web view in a real browser: Debian's headless Chromium, driven over the DevTools
//! protocol (`tests/web/cdp.py`), against the real relay and agent on the reference scenario.
//! Privileged; run serially (under the shared lock).

use std::{
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed::{
    Scenario, bin_path,
    observe::addr,
    process::Spawned,
    require_root,
    scenario::{NODE_IP, POD_A_IP, POD_B_IP, WORLD_IP},
    skip, traffic,
};

const CDP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web/cdp.py");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the test needs besides root: Chromium and the protocol client's Python module.
fn browser_missing() -> Option<String> {
    let chromium = Command::new("chromium").arg("--version").output();
    if !chromium.is_ok_and(|o| o.status.success()) {
        return Some("no `chromium` (Debian's package; scripts/setup.sh installs it)".into());
    }
    let ws = Command::new("python3")
        .args(["-c", "import websocket"])
        .output();
    if !ws.is_ok_and(|o| o.status.success()) {
        return Some(
            "no Python `websocket-client` (scripts/setup.sh installs it) for the DevTools client"
                .into(),
        );
    }
    None
}

/// A headless Chromium in a namespace (`""`: the test's own), in its own process group so that
/// it and its helper processes are stopped together, by that group's id.
struct Browser {
    child: Child,
    ns: String,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(ns: &str) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut cmd = if ns.is_empty() {
            Command::new("chromium")
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "chromium"]);
            c
        };
        cmd.args([
            "--headless",
            // The test runs as root, where Chromium's sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
        let child = cmd.spawn().expect("starting chromium");
        // Chromium writes the port it took into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not start its DevTools server"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Browser {
            child,
            ns: ns.to_string(),
            port,
            _profile: profile,
        }
    }

    fn cdp(&self, args: &[&str]) -> String {
        let mut cmd = if self.ns.is_empty() {
            Command::new("python3")
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.ns, "python3"]);
            c
        };
        let out = cmd
            .arg(CDP)
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("running the DevTools client");
        assert!(
            out.status.success(),
            "cdp.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn open(&self, url: &str) -> String {
        self.cdp(&["new", url])
    }

    fn eval(&self, tab: &str, expr: &str) -> Value {
        serde_json::from_str(&self.cdp(&["eval", tab, expr])).expect("JSON from cdp.py")
    }

    /// Evaluates [`SNAPSHOT`] until `pred` holds; panics with the last snapshot after `limit`.
    fn wait_for(
        &self,
        tab: &str,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let snap = self.eval(tab, SNAPSHOT);
            if pred(&snap) {
                return snap;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what} within {limit:?}; last seen:\n{snap:#}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group we made for it: Chromium and its renderers, by the group's id.
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's process group.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// What the page shows, as data: the map's boxes and edges, the table's rows, the panels, the
/// path view, and the reachability banner.
const SNAPSHOT: &str = r#"(() => {
  const text = (sel) => [...document.querySelectorAll(sel)].map((e) => e.textContent);
  const banner = document.querySelector('#banner');
  return {
    state: document.body.dataset.state,
    banner: banner.hidden ? null : banner.textContent,
    server: document.querySelector('#server').textContent,
    nodes: [...document.querySelectorAll('#map g.node')].map((g) => g.dataset.id),
    edges: [...document.querySelectorAll('#map g.edge')].map((g) => ({
      from: g.dataset.from, to: g.dataset.to, protocols: g.dataset.protocols.split(' '),
      kind: g.classList.contains('dropped') ? 'dropped' : 'forwarded',
      stroke: getComputedStyle(g.querySelector('path')).stroke,
      label: g.querySelector('text').textContent,
    })),
    rows: [...document.querySelectorAll('#flows tbody tr')].map((tr) => ({
      uuid: tr.dataset.uuid, cells: [...tr.cells].map((c) => c.textContent),
    })),
    drops: text('#drops tbody tr'),
    unanswered: text('#unanswered tbody tr'),
    details: !document.querySelector('#details').hidden,
    hops: [...document.querySelectorAll('#path .hop')].map((h) => ({
      point: h.dataset.point, iface: h.dataset.interface, text: h.textContent,
    })),
    packets: text('#path .packet-title'),
    json: document.querySelector('#json').textContent.length,
  };
})()"#;

fn edge<'a>(snap: &'a Value, from: &str, to: &str, kind: &str) -> Option<&'a Value> {
    snap["edges"]
        .as_array()?
        .iter()
        .find(|e| e["from"] == from && e["to"] == to && e["kind"] == kind)
}

fn has_protocols(e: Option<&Value>, wanted: &[&str]) -> bool {
    e.is_some_and(|e| {
        wanted.iter().all(|w| {
            e["protocols"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x == w))
        })
    })
}

fn start_relay(listen: &str, ui: &str, socket: &Path) -> Spawned {
    let peers = format!("node-1=unix://{}", socket.display());
    let mut c = Command::new(bin_path("flowscope-relay"));
    c.args([
        "--listen-address",
        listen,
        "--ui-listen-address",
        ui,
        "--peers",
        &peers,
        "--peer-check-interval",
        "1s",
    ]);
    Spawned::spawn(c)
}

fn artefact_dir() -> PathBuf {
    // target/<profile>/deps/web-… → target/web-view/
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("web-view");
    std::fs::create_dir_all(&dir).expect("artefact dir");
    dir
}

/// The reference scenario in the browser, through the relay: the map shows pod-a → world
/// (1.0.0.1) with TCP/80 and ICMP in green and the firewall's drop in red, the table lists the
/// flows, the HTTP GET's path shows its four hops with the NAT; the page says when the relay is
/// gone and recovers when it is back. Then the agent's own web view shows the same map.
#[test]
fn the_web_view_shows_the_reference_scenario() {
    const TEST: &str = "the_web_view_shows_the_reference_scenario";
    if !require_root(TEST) {
        return;
    }
    if let Some(why) = browser_missing() {
        skip(TEST, &why);
        return;
    }
    let s = Scenario::build();
    let _http = traffic::http_server(&s.world(), addr(WORLD_IP, 80), "hello from 1.0.0.1\n");
    let _dns = traffic::udp_server(&s.world(), addr(WORLD_IP, 53), true);
    let _sink = traffic::tcp_sink(&s.pod_b(), addr(POD_B_IP, 8080));
    // The agent's web view listens inside the node's namespace (nothing else can reach it).
    let agent = s.start_agent(&["--ui-listen-address", "127.0.0.1:12000", "--tls-disabled"]);
    let (listen, ui) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut relay = start_relay(&listen, &ui, &s.agent_socket());

    // The lab's traffic, and the drop.
    assert!(traffic::ping(&s.pod_a(), WORLD_IP, 2), "ping");
    let get = traffic::http_get(&s.pod_a(), addr(WORLD_IP, 80)).expect("HTTP GET");
    traffic::udp_request(&s.pod_a(), addr(WORLD_IP, 53), b"query").expect("UDP request");
    traffic::tcp_send(&s.pod_a(), addr(POD_B_IP, 8080), b"hi pod-b").expect("pod-a -> pod-b");
    s.iptables(&[
        "-I", "FORWARD", "-d", WORLD_IP, "-p", "udp", "--dport", "9", "-j", "DROP",
    ]);
    traffic::udp_send(&s.pod_a(), addr(WORLD_IP, 9), 1, 16, None).expect("UDP to :9");

    let browser = Browser::start("");
    let tab = browser.open(&format!("http://{ui}/"));
    let pod_a = "pod:default/pod-a";
    let world = format!("world:{WORLD_IP}");
    let snap = browser.wait_for(&tab, "the scenario's map", Duration::from_secs(60), |v| {
        v["state"] == "live"
            && has_protocols(
                edge(v, pod_a, &world, "forwarded"),
                &["TCP/80", "ICMPv4", "UDP/53"],
            )
            && has_protocols(edge(v, pod_a, &world, "dropped"), &["UDP/9"])
            && has_protocols(
                edge(v, pod_a, "pod:default/pod-b", "forwarded"),
                &["TCP/8080"],
            )
            && v["drops"]
                .as_array()
                .is_some_and(|d| !d.is_empty() && d[0] != "no drops")
    });
    println!("relay view: {}", snap["server"]);
    for e in snap["edges"].as_array().unwrap() {
        println!(
            "  edge {} → {} {} {}",
            e["from"], e["to"], e["kind"], e["label"]
        );
    }
    // Drops are red, what went through green (the page's colours, as the browser computed them).
    let dropped = edge(&snap, pod_a, &world, "dropped").unwrap();
    assert_eq!(dropped["stroke"], "rgb(207, 34, 46)", "{dropped}");
    let forwarded = edge(&snap, pod_a, &world, "forwarded").unwrap();
    assert_eq!(forwarded["stroke"], "rgb(26, 127, 55)", "{forwarded}");
    assert!(
        snap["nodes"]
            .as_array()
            .unwrap()
            .contains(&Value::from(world.clone())),
        "{snap:#}"
    );
    assert!(
        snap["drops"][0]
            .as_str()
            .unwrap()
            .contains("NETFILTER_DROP"),
        "drops by reason: {}",
        snap["drops"]
    );
    assert!(
        snap["server"].as_str().unwrap().starts_with("relay"),
        "{}",
        snap["server"]
    );

    // The flow table: the HTTP GET at each point, newest first, and the drop.
    let rows = snap["rows"].as_array().unwrap();
    let cells = |r: &Value| -> Vec<String> {
        r["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    };
    let http_src = format!("default/pod-a:{}", get.local_port);
    let http_dst = format!("{WORLD_IP}:80 (world)");
    let syn = rows
        .iter()
        .find(|r| {
            let c = cells(r);
            c[2] == http_src && c[3] == http_dst && c[5] == "from-endpoint"
        })
        .unwrap_or_else(|| {
            panic!("no row for the GET's first packet ({http_src} -> {http_dst}): {rows:#?}")
        });
    assert!(
        rows.iter()
            .any(|r| cells(r)[6] == "DROPPED" && cells(r)[3] == format!("{WORLD_IP}:9 (world)")),
        "no row for the drop: {rows:#?}"
    );
    let times: Vec<String> = rows.iter().map(|r| cells(r)[0].clone()).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "the table is not newest first: {times:?}"
    );

    // A click on the GET's first packet: details and the path across the node.
    let uuid = syn["uuid"].as_str().unwrap();
    browser.eval(
        &tab,
        &format!("document.querySelector('#flows tr[data-uuid=\"{uuid}\"]').click()"),
    );
    let snap = browser.wait_for(&tab, "the GET's path", Duration::from_secs(10), |v| {
        v["details"] == true && v["hops"].as_array().is_some_and(|h| h.len() >= 4)
    });
    let hops = snap["hops"].as_array().unwrap();
    let hop = |point: &str| {
        hops.iter()
            .find(|h| h["point"] == point)
            .unwrap_or_else(|| panic!("no {point} hop: {hops:#?}"))
    };
    assert_eq!(hop("from-endpoint")["iface"], "lxcf4cd39e34601");
    assert_eq!(hop("to-network")["iface"], "eth0");
    assert_eq!(hop("from-network")["iface"], "eth0");
    assert_eq!(hop("to-endpoint")["iface"], "lxcf4cd39e34601");
    let nat = hop("to-network")["text"].as_str().unwrap();
    assert!(
        nat.contains(&format!("SNAT {POD_A_IP} → {NODE_IP}")),
        "the uplink hop shows no NAT: {nat}"
    );
    // The first packet, request then reply: lxc → eth0 with the time between the hooks.
    assert_eq!(hops[0]["point"], "from-endpoint", "{hops:#?}");
    assert_eq!(hops[1]["point"], "to-network", "{hops:#?}");
    assert!(
        hops[1]["text"].as_str().unwrap().contains("+"),
        "no time between hooks: {}",
        hops[1]["text"]
    );
    assert!(snap["json"].as_u64().unwrap() > 100, "no JSON of the flow");

    let shot = artefact_dir().join("web-view.png");
    browser.cdp(&["shot", &tab, shot.to_str().unwrap(), "1400", "1100"]);
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot"
    );
    println!("screenshot: {}", shot.display());

    // Filters typed as flowctl takes them, parsed on the server: only the drop is left.
    let submit = |words: &str| {
        browser.eval(
            &tab,
            &format!(
                "document.querySelector('#filter').value = {}; \
                 document.querySelector('#filter-form').requestSubmit()",
                serde_json::to_string(words).unwrap()
            ),
        );
    };
    submit("--verdict DROPPED --ip 1.0.0.1");
    let snap = browser.wait_for(&tab, "only the drop", Duration::from_secs(20), |v| {
        let rows = v["rows"].as_array().unwrap();
        v["state"] == "live" && !rows.is_empty() && rows.iter().all(|r| cells(r)[6] == "DROPPED")
    });
    assert!(
        edge(&snap, pod_a, &world, "forwarded").is_none(),
        "{snap:#}"
    );
    // A mistake is reported as flowctl words it.
    submit("--ip 1.0.0.300");
    let error = browser.eval(&tab, "new Promise((ok) => setTimeout(() => ok(document.querySelector('#filter-error').textContent), 2000))");
    assert!(
        error
            .as_str()
            .is_some_and(|e| e.contains("--ip") && e.contains("expected an IP address")),
        "{error}"
    );
    submit("");
    browser.wait_for(&tab, "every flow again", Duration::from_secs(20), |v| {
        has_protocols(edge(v, pod_a, &world, "forwarded"), &["TCP/80", "ICMPv4"])
    });

    // The relay goes away: the page says so; it comes back: the page recovers by itself.
    relay.signal(libc::SIGTERM);
    assert!(
        relay.wait_exit(Duration::from_secs(15)).success(),
        "relay exits on SIGTERM"
    );
    let snap = browser.wait_for(
        &tab,
        "the unreachable message",
        Duration::from_secs(20),
        |v| v["state"] == "unreachable" && !v["banner"].is_null(),
    );
    let banner = snap["banner"].as_str().unwrap();
    assert!(
        banner.contains("Cannot reach the flowscope relay") && banner.contains("Retrying"),
        "{banner}"
    );
    let _relay = start_relay(&listen, &ui, &s.agent_socket());
    browser.wait_for(&tab, "recovery", Duration::from_secs(40), |v| {
        v["state"] == "live"
            && v["banner"].is_null()
            && has_protocols(edge(v, pod_a, &world, "forwarded"), &["TCP/80", "ICMPv4"])
    });

    // The agent's own view, on one node, inside its namespace.
    let node_browser = Browser::start(&s.node());
    let tab = node_browser.open("http://127.0.0.1:12000/");
    let snap = node_browser.wait_for(&tab, "the agent's map", Duration::from_secs(60), |v| {
        v["state"] == "live"
            && has_protocols(edge(v, pod_a, &world, "forwarded"), &["TCP/80", "ICMPv4"])
            && has_protocols(edge(v, pod_a, &world, "dropped"), &["UDP/9"])
    });
    assert!(
        snap["server"].as_str().unwrap().starts_with("agent"),
        "{}",
        snap["server"]
    );
    drop(agent);
}
