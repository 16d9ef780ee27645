//! Prometheus metrics end to end: the real agent in the reference scenario, scraped by a real
//! Prometheus server (Debian's `prometheus`, installed by scripts/setup.sh) that the test starts
//! on loopback inside the node's namespace; its query API must return the series and values the
//! traffic implies. The scrape must pass `promtool check metrics`, and every PromQL expression
//! of the Grafana dashboard must name only series that a live scrape has. Privileged; run
//! serially.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed::{
    Scenario, bin_path,
    process::Spawned,
    require_root,
    scenario::{POD_B_IP, WORLD_IP},
    scrape::{self, Sample},
    traffic,
};

/// Where the agent serves metrics, inside the node namespace.
const METRICS: &str = "127.0.0.1:9965";
/// Where our Prometheus listens, inside the node namespace.
const PROMETHEUS: &str = "127.0.0.1:9090";
const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
const PROMTOOL_BIN: &str = "/usr/bin/promtool";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("address")
}

/// Starts the agent in the node namespace with metrics on loopback, and waits until it is
/// attached and serving metrics.
fn start_agent(s: &Scenario, extra: &[&str]) -> Spawned {
    let mut args = vec![
        "--dump",
        "json",
        "--metrics-listen-address",
        METRICS,
        "--aggregation",
        "none",
    ];
    args.extend_from_slice(extra);
    let agent = s.start_agent(&args);
    scrape::wait_metrics(&s.node(), addr(METRICS), Duration::from_secs(10));
    agent
}

/// Traffic with known outcomes: a datagram to 1.0.0.1:9 before any firewall rule, then a DROP
/// rule and three more (dropped: NETFILTER_DROP, DROP_REASON_UNKNOWN for Hubble), two pings and
/// an HTTP GET to the world, and a TCP connection from pod-a to pod-b.
fn reference_traffic(s: &Scenario) {
    let _http = traffic::http_server(&s.world(), sock(WORLD_IP, 80), "hello\n");
    let _sink = traffic::tcp_sink(&s.pod_b(), sock(POD_B_IP, 8080));
    traffic::udp_send(&s.pod_a(), sock(WORLD_IP, 9), 1, 32, None).expect("udp before the rule");
    s.iptables(&[
        "-I", "FORWARD", "-d", WORLD_IP, "-p", "udp", "--dport", "9", "-j", "DROP",
    ]);
    traffic::udp_send(
        &s.pod_a(),
        sock(WORLD_IP, 9),
        3,
        32,
        Some(Duration::from_millis(10)),
    )
    .expect("udp after the rule");
    assert!(traffic::ping(&s.pod_a(), WORLD_IP, 2), "ping 1.0.0.1");
    // A name resolved through the world's DNS server: the DNS series the dashboard shows.
    let _dns = testbed::dns::DnsServer::start(&s.world(), WORLD_IP, &[s.pod_a()])
        .expect("dnsmasq is missing: run scripts/setup.sh (it installs dnsmasq-base)");
    assert_eq!(
        testbed::dns::resolve(&s.pod_a(), testbed::dns::NAME).len(),
        1,
        "resolve one.one.one.one"
    );
    traffic::http_get(&s.pod_a(), sock(WORLD_IP, 80)).expect("GET http://1.0.0.1");
    traffic::tcp_send(&s.pod_a(), sock(POD_B_IP, 8080), b"hi").expect("pod-a -> pod-b");
}

/// A Prometheus server in the node namespace, scraping the agent every second. Killed (by
/// PID) when dropped; its data lives in the scenario's scratch directory.
struct Prometheus {
    proc: Spawned,
    ns: String,
}

impl Prometheus {
    fn start(s: &Scenario) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS_BIN).exists(),
            "{PROMETHEUS_BIN} is missing: run scripts/setup.sh (it installs Debian's prometheus)"
        );
        let dir = s.dir().join("prometheus");
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: flowscope-agent\n    static_configs:\n      - targets: ['{METRICS}']\n"
            ),
        )
        .expect("prometheus config");
        let args = [
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={PROMETHEUS}"),
            "--log.level=warn".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Spawned::start(&s.node(), Path::new(PROMETHEUS_BIN), &args);
        let p = Prometheus { proc, ns: s.node() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(
            scrape::http_get(&p.ns, addr(PROMETHEUS), "/-/ready", None),
            Ok((200, _))
        ) {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 30 s; stderr:\n{}",
                p.proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// An instant query: each result's labels and value.
    fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let path = format!("/api/v1/query?query={}", percent_encode(q));
        let (status, body) =
            scrape::http_get(&self.ns, addr(PROMETHEUS), &path, None).expect("query prometheus");
        assert_eq!(status, 200, "query {q}: {body}");
        let v: Value = serde_json::from_str(&body).expect("query API answers JSON");
        v["data"]["result"]
            .as_array()
            .expect("a vector result")
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }

    /// Waits until `q` returns exactly one sample whose value satisfies `ok` (new scrapes come
    /// every second); panics with the last answer otherwise.
    fn expect(&self, q: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.query(q);
            if let [(_, v)] = r.as_slice()
                && ok(*v)
            {
                return *v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{q}: expected {what}, prometheus answers {r:?}; prometheus stderr:\n{}",
                    self.proc.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real Prometheus scrapes the agent while the reference traffic runs; its query API returns
/// Hubble's series with the values the traffic implies (three drops after the DROP rule, none
/// before), labelled as `--metrics` asked, and flowscope's own series.
#[test]
fn prometheus_scrapes_the_reference_scenario() {
    if !require_root("prometheus_scrapes_the_reference_scenario") {
        return;
    }
    let s = Scenario::build();
    let mut agent = start_agent(
        &s,
        &[
            "--metrics",
            "flow",
            "--metrics",
            "drop:sourceContext=namespace;destinationContext=identity",
            "--metrics",
            "tcp port-distribution icmp flows-to-world",
        ],
    );
    let prom = Prometheus::start(&s);
    prom.expect(r#"up{job="flowscope-agent"}"#, "the agent up", |v| v == 1.0);
    // Scraped, and no firewall drop yet. (The scenario has other drops: IPv6 neighbour
    // discovery and the like, dropped by the kernel as NOT_SPECIFIED.)
    prom.expect(r#"flowscope_build_info{component="agent"}"#, "1", |v| {
        v == 1.0
    });
    let before = prom.query(r#"flowscope_drops_total{reason="NETFILTER_DROP"}"#);
    assert!(before.is_empty(), "{before:?}");

    reference_traffic(&s);

    // Hubble's label is Hubble's reason: none of them means "dropped by netfilter"
    // (docs/drop-reasons.md). The kernel's reason is in flowscope's series.
    prom.expect(
        r#"hubble_drop_total{reason="DROP_REASON_UNKNOWN",protocol="UDP",source="default",destination="reserved:world"}"#,
        "the 3 datagrams dropped by the rule",
        |v| v == 3.0,
    );
    prom.expect(
        r#"flowscope_drops_total{reason="NETFILTER_DROP",protocol="UDP"}"#,
        "the 3 datagrams, by the kernel's reason",
        |v| v == 3.0,
    );
    prom.expect(
        r#"sum(hubble_drop_total{protocol="UDP"})"#,
        "no other UDP drop",
        |v| v == 3.0,
    );
    prom.expect(
        r#"sum(hubble_flows_processed_total{type="Drop",subtype="",verdict="DROPPED",protocol="UDP"})"#,
        "3 drop flows",
        |v| v == 3.0,
    );
    prom.expect(
        r#"sum(hubble_flows_processed_total{type="Trace",subtype="from-endpoint",verdict="FORWARDED"})"#,
        "forwarded traces",
        |v| v >= 10.0,
    );
    // As in Hubble, only POLICY_DENIED drops count toward the world without `any-drop`: a
    // netfilter drop is not known to be a policy's (see metrics/hubble.rs).
    let to_world_drops = prom.query(r#"hubble_flows_to_world_total{verdict="DROPPED"}"#);
    assert!(to_world_drops.is_empty(), "{to_world_drops:?}");
    prom.expect(
        r#"hubble_flows_to_world_total{protocol="TCP",verdict="FORWARDED"}"#,
        "the GET's requests, not the replies",
        |v| v >= 1.0,
    );
    prom.expect(
        r#"hubble_tcp_flags_total{flag="SYN",family="IPv4"}"#,
        "SYNs",
        |v| v >= 2.0,
    );
    prom.expect(
        r#"hubble_tcp_flags_total{flag="SYN-ACK",family="IPv4"}"#,
        "SYN-ACKs",
        |v| v >= 2.0,
    );
    prom.expect(
        r#"hubble_port_distribution_total{protocol="TCP",port="80"}"#,
        "port 80",
        |v| v >= 1.0,
    );
    prom.expect(
        r#"hubble_port_distribution_total{protocol="TCP",port="8080"}"#,
        "port 8080",
        |v| v >= 1.0,
    );
    prom.expect(
        r#"hubble_icmp_total{family="IPv4",type="EchoRequest"}"#,
        "2 pings, seen at the pod and at the uplink",
        |v| v >= 2.0,
    );
    prom.expect(
        r#"hubble_icmp_total{family="IPv4",type="EchoReply"}"#,
        "replies",
        |v| v >= 2.0,
    );
    let read = prom.expect("flowscope_events_read_total", "events", |v| v >= 20.0);
    // Read through the agent's own read-only mapping of the ring: each event is 104 bytes
    // (monitor-common's FlowEvent) plus an 8-byte record header.
    prom.expect(
        "flowscope_ring_buffer_written_bytes_total",
        "at least 112 bytes per event read",
        |v| v >= read * 112.0,
    );
    for stage in ["kernel_ring", "decode_queue", "history", "export"] {
        prom.expect(
            &format!(r#"flowscope_events_lost_total{{stage="{stage}"}}"#),
            "nothing lost",
            |v| v == 0.0,
        );
    }
    prom.expect(
        r#"hubble_lost_events_total{source="perf_event_ring_buffer"}"#,
        "0",
        |v| v == 0.0,
    );
    for (role, n) in [("endpoint", 2.0), ("uplink", 1.0), ("host", 1.0)] {
        prom.expect(
            &format!(r#"flowscope_attached_interfaces{{role="{role}"}}"#),
            "the scenario's interfaces",
            |v| v == n,
        );
    }
    prom.expect("flowscope_ring_buffer_size_bytes", "4 MiB", |v| {
        v == f64::from(4u32 << 20)
    });
    prom.expect("flowscope_ring_buffer_fill_ratio", "a ratio", |v| {
        (0.0..=1.0).contains(&v)
    });
    prom.expect(
        "flowscope_aggregation_ratio",
        "about 1 without aggregation",
        |v| v > 0.5 && v <= 2.0,
    );

    drop(prom);
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// A scrape of the agent with its default metrics and the export on passes `promtool check
/// metrics`, is also served as OpenMetrics, has the default pod labels the dashboard's "top
/// pods" panels use, and has every series the dashboard's expressions name.
#[test]
fn scrape_passes_promtool_and_covers_the_dashboard() {
    if !require_root("scrape_passes_promtool_and_covers_the_dashboard") {
        return;
    }
    let s = Scenario::build();
    let export = s.dir().join("flows.json");
    let mut agent = start_agent(&s, &["--export-file-path", export.to_str().expect("path")]);
    reference_traffic(&s);
    let wanted = dashboard_metric_names(&dashboard_path());
    // Counters are read when scraped, and the agent reads its ring buffer in batches: wait until
    // the drops, the export and every series the dashboard names show (the TCP exchanges come
    // last in the reference traffic, so their flag counters are the last to appear).
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = scrape::wait_metrics(&s.node(), addr(METRICS), Duration::from_secs(5));
        let samples = scrape::parse(&text);
        let exported: BTreeSet<&str> = samples.iter().map(|s: &Sample| s.name.as_str()).collect();
        let ready = scrape::value(
            &samples,
            "flowscope_drops_total",
            &[("reason", "NETFILTER_DROP")],
        ) == Some(3.0)
            && scrape::value(&samples, "flowscope_export_flows_total", &[]).unwrap_or(0.0) > 0.0
            && wanted.iter().all(|n| exported.contains(n.as_str()));
        if ready || Instant::now() >= deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let samples = scrape::parse(&text);

    // promtool: the format, and Prometheus' naming conventions.
    assert!(
        Path::new(PROMTOOL_BIN).exists(),
        "{PROMTOOL_BIN} is missing: run scripts/setup.sh (Debian's prometheus ships it)"
    );
    let (ok, out) = promtool_check(&text);
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}"
    );

    // The same registry as OpenMetrics, for scrapers that ask for it.
    let (status, om) = scrape::http_get(
        &s.node(),
        addr(METRICS),
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .expect("openmetrics scrape");
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"), "not OpenMetrics:\n{om}");
    assert!(om.contains("# TYPE hubble_drop counter"), "{om}");

    // The default `--metrics` label flows with pods and drops with namespaces.
    assert!(
        scrape::value(
            &samples,
            "hubble_flows_processed_total",
            &[("source_namespace", "default"), ("source_pod", "pod-a")]
        )
        .is_some_and(|v| v > 0.0),
        "no flow series of pod-a:\n{text}"
    );
    assert_eq!(
        scrape::value(
            &samples,
            "hubble_drop_total",
            &[
                ("reason", "DROP_REASON_UNKNOWN"),
                ("protocol", "UDP"),
                ("source_namespace", "default"),
                ("destination_namespace", "")
            ]
        ),
        Some(3.0),
        "{text}"
    );

    // Every series named by the dashboard is exported.
    let exported: BTreeSet<&str> = samples.iter().map(|s: &Sample| s.name.as_str()).collect();
    assert!(
        wanted.len() >= 20,
        "the dashboard names too few series: {wanted:?}"
    );
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard uses series the agent does not export: {missing:?}\nexported: {exported:?}"
    );
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// With an empty `--metrics-listen-address`, nothing listens on the metrics port and the agent
/// still serves.
#[test]
fn metrics_can_be_turned_off() {
    if !require_root("metrics_can_be_turned_off") {
        return;
    }
    let s = Scenario::build();
    let socket = s.agent_socket();
    let ep = s.endpoints_file();
    let mut agent = Spawned::start(
        &s.node(),
        &bin_path("monitor-agent"),
        &[
            "--socket",
            socket.to_str().expect("path"),
            "--endpoints-file",
            ep.to_str().expect("path"),
            "--dump",
            "json",
            "--metrics-listen-address",
            "",
        ],
    );
    agent.wait_ready(Duration::from_secs(30));
    // The default port, and the loopback one the other tests use.
    for a in ["127.0.0.1:9965", "198.51.100.10:9965"] {
        let r = scrape::http_get(&s.node(), addr(a), "/metrics", None);
        let refused = matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
        assert!(refused, "{a}: {r:?}");
    }
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// A `--metrics` typo stops the agent with a message naming it, before anything is loaded.
#[test]
fn bad_metrics_option_is_rejected() {
    let out = Command::new(bin_path("monitor-agent"))
        .args(["--metrics", "drop:sourceContext=namespce"])
        .stdin(Stdio::null())
        .output()
        .expect("run monitor-agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown context \"namespce\""), "{err}");
}

/// Runs `promtool check metrics` on a scrape; (success, what it printed).
fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new(PROMTOOL_BIN)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

/// promtool really checks: a scrape that breaks the conventions fails.
#[test]
fn promtool_rejects_bad_metrics() {
    if !Path::new(PROMTOOL_BIN).exists() {
        testbed::skip(
            "promtool_rejects_bad_metrics",
            &format!("no {PROMTOOL_BIN} (scripts/setup.sh installs it)"),
        );
        return;
    }
    let (ok, out) =
        promtool_check("# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n");
    assert!(!ok, "a counter without _total must fail: {out}");
}

fn dashboard_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/flowscope-dashboard.json")
}

/// Every PromQL expression of a Grafana dashboard: panel targets (also in collapsed rows) and
/// query variables.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let q = match &var["query"] {
            Value::String(s) => s.clone(),
            other => other["query"].as_str().unwrap_or_default().to_owned(),
        };
        // label_values(<selector>, <label>): the selector is the PromQL part.
        let q = match q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
        {
            Some((selector, _label)) => selector.to_owned(),
            None => q,
        };
        out.push(q);
    }
    out
}

fn dashboard_metric_names(path: &Path) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let exprs = dashboard_exprs(&dashboard);
    assert!(!exprs.is_empty(), "no expressions in {}", path.display());
    exprs.iter().flat_map(|e| metric_names(e)).collect()
}

/// PromQL words that are not series names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "inf",
    "nan",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The series names of a PromQL expression: identifiers that are not functions (followed by
/// `(`), keywords, label names (inside `{…}` or a `by (…)` list), strings, durations (`[…]`),
/// numbers or Grafana variables (`$x`, `${x}`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_string = |i: usize| -> usize {
        let q = b[i];
        let mut j = i + 1;
        while j < b.len() && b[j] != q {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        j + 1
    };
    let skip_group = |i: usize, open: u8, close: u8| -> usize {
        let mut depth = 0;
        let mut j = i;
        while j < b.len() {
            match b[j] {
                b'"' | b'\'' | b'`' => {
                    j = skip_string(j);
                    continue;
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        j
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_string(i),
            b'{' => i = skip_group(i, b'{', b'}'),
            b'[' => i = skip_group(i, b'[', b']'),
            b'$' => {
                i += 1;
                if b.get(i) == Some(&b'{') {
                    i = skip_group(i, b'{', b'}');
                } else {
                    while i < b.len() && ident(b[i]) {
                        i += 1;
                    }
                }
            }
            b'0'..=b'9' | b'.' => {
                // Numbers, including 1e3 and 0x1f: letters glued to a digit are not names.
                while i < b.len() && (ident(b[i]) || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut next = i;
                while next < b.len() && b[next].is_ascii_whitespace() {
                    next += 1;
                }
                let call = b.get(next) == Some(&b'(');
                if LABEL_LISTS.contains(&word) {
                    if call {
                        i = skip_group(next, b'(', b')');
                    }
                } else if !call && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                    names.insert(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The extractor finds series names and nothing else (so the dashboard check can fail).
#[test]
fn promql_names_are_extracted() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"sum by (reason, protocol) (rate(hubble_drop_total{instance=~"$instance",reason!="x}"}[$__rate_interval])) / ignoring(a) group_left (b) sum(flowscope_x_total offset 5m) > 0.5 * 1e3"#
        ),
        ["flowscope_x_total", "hubble_drop_total"]
    );
    assert_eq!(
        names(r#"topk(10, sum without(pod) (up)) or vector(0) and on() absent(foo:bar{a="b"})"#),
        ["foo:bar", "up"]
    );
    assert_eq!(
        names("count by (version) (flowscope_build_info)"),
        ["flowscope_build_info"]
    );
}
