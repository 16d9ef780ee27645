//! Flow export to files, end to end: the real agent in the reference scenario writes Hubble
//! ExportEvent lines; rotation keeps the configured number of files, filters and the field mask
//! apply, and a full disk or an unwritable path is reported and counted while the agent keeps
//! serving. Privileged; run serially.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use flowscope_proto::observer::{ServerStatusRequest, observer_client::ObserverClient};
use serde_json::Value;
use testbed::{
    Scenario, client, netns,
    process::Spawned,
    require_root,
    scenario::{POD_A_IP, WORLD_IP},
    scrape, traffic,
};

const METRICS: &str = "127.0.0.1:9965";

fn sock(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("address")
}

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

    s.start_agent(&args)
}

/// One agent metric (summed over the series matching `labels`), 0 when absent.
fn metric(s: &Scenario, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = scrape::wait_metrics(&s.node(), sock("127.0.0.1", 9965), Duration::from_secs(5));
    scrape::value(&scrape::parse(&text), name, labels).unwrap_or(0.0)
}

/// Waits until `cond` holds on the agent's metrics (bounded).
fn wait_metrics(
    s: &Scenario,
    what: &str,
    cond: impl Fn(&dyn Fn(&str, &[(&str, &str)]) -> f64) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if cond(&|n, l| metric(s, n, l)) {
            return;
        }
        if Instant::now() >= deadline {
            let text =
                scrape::wait_metrics(&s.node(), sock("127.0.0.1", 9965), Duration::from_secs(5));
            let ours: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("flowscope_e"))
                .collect();
            panic!("{what}: not reached in 20 s; {ours:#?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn read_lines(text: &str, origin: &Path) -> Vec<Value> {
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {l:?}", origin.display()))
        })
        .collect()
}

fn gunzip(path: &Path) -> String {
    let out = Command::new("gzip")
        .args(["-dc"])
        .arg(path)
        .output()
        .expect("gzip -dc");
    assert!(out.status.success(), "{}: not gzip", path.display());
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The agent is asked (by its config file, as a deployment would) to export only pod-a's
/// non-ICMP flows, only some fields, to 10 KiB files with 2 gzipped backups: after enough
/// traffic there are exactly the current file and 2 backups, each within the size, every line an
/// ExportEvent with only the masked fields, of pod-a, never ICMP, never pod-b.
#[test]
fn export_rotates_filters_and_masks() {
    if !require_root("export_rotates_filters_and_masks") {
        return;
    }
    let s = Scenario::build();
    let dir = s.dir().join("export");
    let path = dir.join("flows.json");
    let config = s.dir().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "export-file-path: {}\n\
             export-file-max-size-mb: 0.01\n\
             export-file-max-backups: 2\n\
             export-file-compress: true\n\
             export-allowlist: ['{{\"source_pod\":[\"default/pod-a\"]}}']\n\
             export-denylist: ['{{\"protocol\":[\"icmp\"]}}']\n\
             export-fieldmask: [time, verdict, source.pod_name, source.namespace, IP, l4]\n",
            path.display()
        ),
    )
    .expect("config file");
    let mut agent = start_agent(&s, &["--config", config.to_str().expect("path")]);
    let _udp = traffic::udp_server(&s.world(), sock(WORLD_IP, 5000), false);
    let _udp_b = traffic::udp_server(&s.world(), sock(WORLD_IP, 5001), false);
    assert!(traffic::ping(&s.pod_a(), WORLD_IP, 2), "ping");
    traffic::udp_send(&s.pod_b(), sock(WORLD_IP, 5001), 50, 16, None).expect("pod-b udp");
    // About 250 bytes per masked line and two lines per datagram: some 15 files of 10 KiB.
    traffic::udp_send(
        &s.pod_a(),
        sock(WORLD_IP, 5000),
        300,
        16,
        Some(Duration::from_millis(1)),
    )
    .expect("pod-a udp");
    wait_metrics(&s, "rotations", |m| {
        m("flowscope_export_rotations_total", &[]) >= 5.0
    });
    assert_eq!(
        metric(&s, "flowscope_events_lost_total", &[("stage", "export")]),
        0.0
    );
    assert_eq!(metric(&s, "flowscope_export_errors_total", &[]), 0.0);
    // A clean stop writes what is queued.
    assert!(agent.stop().success(), "{}", agent.stderr());

    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("export dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(files.len(), 3, "the file and 2 backups: {names:?}");
    let max = (0.01 * 1_048_576.0) as usize;
    let mut lines = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        let text = if name == "flows.json" {
            std::fs::read_to_string(f).expect("export file")
        } else {
            assert!(
                name.starts_with("flows-") && name.ends_with(".json.gz"),
                "backup name: {name}"
            );
            gunzip(f)
        };
        assert!(text.len() <= max, "{name}: {} bytes > {max}", text.len());
        lines.extend(read_lines(&text, f));
    }
    assert!(lines.len() >= 40, "{} lines", lines.len());
    let mut to_5000 = 0;
    for l in &lines {
        assert_eq!(l["node_name"], "node-1", "{l}");
        assert!(l["time"].is_string(), "{l}");
        let f = &l["flow"];
        let mut keys: Vec<&str> = f
            .as_object()
            .expect("flow")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        for k in &keys {
            assert!(
                ["IP", "l4", "source", "time", "verdict"].contains(k),
                "unmasked {k}: {l}"
            );
        }
        assert_eq!(
            f["source"],
            serde_json::json!({"namespace": "default", "pod_name": "pod-a"}),
            "{l}"
        );
        assert!(f["l4"].get("ICMPv4").is_none(), "ICMP is denied: {l}");
        if f["l4"]["UDP"]["destination_port"] == 5001 {
            panic!("pod-b's flow exported: {l}");
        }
        if f["IP"]["source"] == POD_A_IP && f["l4"]["UDP"]["destination_port"] == 5000 {
            to_5000 += 1;
        }
    }
    // The newest lines survive: the last datagrams' flows are in the current file.
    assert!(to_5000 >= 20, "{to_5000} flows of pod-a to :5000");
}

/// Unmounts a tmpfs when dropped, also when the test fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Asks the agent's API for its status: it answers while the export is failing.
fn api_answers(s: &Scenario) -> u64 {
    let socket = s.agent_socket();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ch = client::wait_for_socket(&socket, Duration::from_secs(10))
            .await
            .expect("the API answers");
        let status = ObserverClient::new(ch)
            .server_status(ServerStatusRequest {})
            .await
            .expect("ServerStatus")
            .into_inner();
        status.seen_flows
    })
}

/// The export file is on a 256 KiB filesystem that fills up: the failures are logged and
/// counted (errors, and flows lost at the export stage), the file holds only complete lines,
/// and the agent keeps serving its API and metrics and stops cleanly.
#[test]
fn full_disk_is_counted_and_the_agent_keeps_serving() {
    if !require_root("full_disk_is_counted_and_the_agent_keeps_serving") {
        return;
    }
    let s = Scenario::build();
    let small = s.dir().join("small");
    std::fs::create_dir_all(&small).expect("mount point");
    netns::run(
        "",
        &[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=256k",
            "tmpfs",
            small.to_str().expect("path"),
        ],
    );
    let _mount = Mount(small.clone());
    let path = small.join("flows.json");
    let mut agent = start_agent(
        &s,
        &[
            "--export-file-path",
            path.to_str().expect("path"),
            "--export-file-max-size-mb",
            "0",
        ],
    );
    let _udp = traffic::udp_server(&s.world(), sock(WORLD_IP, 5000), false);
    // About 1 KiB per line and two lines per datagram: far more than 256 KiB.
    traffic::udp_send(&s.pod_a(), sock(WORLD_IP, 5000), 600, 16, None).expect("udp");
    wait_metrics(&s, "export errors and losses", |m| {
        m("flowscope_export_errors_total", &[]) >= 1.0
            && m("flowscope_events_lost_total", &[("stage", "export")]) >= 1.0
            && m("flowscope_export_flows_total", &[]) >= 1.0
    });
    assert!(api_answers(&s) > 0, "the API serves flows");
    // More traffic still flows through the pipeline to the history.
    let before = api_answers(&s);
    traffic::udp_send(&s.pod_a(), sock(WORLD_IP, 5000), 20, 16, None).expect("udp");
    let deadline = Instant::now() + Duration::from_secs(10);
    while api_answers(&s) < before + 20 {
        assert!(Instant::now() < deadline, "the pipeline stopped");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(agent.stop().success(), "{}", agent.stderr());
    let err = agent.stderr();
    assert!(
        err.contains("flow export") && err.contains("No space left on device"),
        "the failure is reported:\n{err}"
    );
    let text = std::fs::read_to_string(&path).expect("export file");
    assert!(!text.is_empty());
    let lines = read_lines(&text, &path);
    assert!(
        text.ends_with('\n') && lines.iter().all(|l| l["flow"].is_object()),
        "only complete lines"
    );
}

/// The export path cannot be created (its parent is a file): the agent starts anyway, reports
/// and counts the failure, and serves.
#[test]
fn unwritable_export_path_is_reported_and_the_agent_serves() {
    if !require_root("unwritable_export_path_is_reported_and_the_agent_serves") {
        return;
    }
    let s = Scenario::build();
    let blocker = s.dir().join("not-a-dir");
    std::fs::write(&blocker, "").expect("blocker file");
    let path = blocker.join("flows.json");
    let mut agent = start_agent(&s, &["--export-file-path", path.to_str().expect("path")]);
    assert!(traffic::ping(&s.pod_a(), WORLD_IP, 2), "ping");
    wait_metrics(&s, "export errors", |m| {
        m("flowscope_export_errors_total", &[]) >= 1.0
            && m("flowscope_events_lost_total", &[("stage", "export")]) >= 1.0
    });
    assert_eq!(metric(&s, "flowscope_export_flows_total", &[]), 0.0);
    assert!(api_answers(&s) > 0, "the API serves flows");
    assert!(agent.stop().success(), "{}", agent.stderr());
    let err = agent.stderr();
    assert!(
        err.contains("flow export: opening failed"),
        "the failure is reported:\n{err}"
    );
}
