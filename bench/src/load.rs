//! Traffic: a paced UDP flood with many flows (std sockets and `sendmmsg`), and iperf3.
//!
//! The flood runs on a thread inside pod-a's namespace and sends to a UDP socket in the world
//! that never reads: once its receive buffer is full the world drops what arrives, which is the
//! cheapest way to absorb a flood (no ICMP port-unreachable replies, no reader thread). The
//! node forwards and masquerades every packet, so at aggregation `none` each packet is two
//! events: `from-endpoint` on pod-a's veth and `to-network` on the uplink.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use testbed::{netns, process::Spawned};

/// Datagrams per `sendmmsg` call.
const BATCH: usize = 32;

/// A UDP socket in `ns` bound to `addr` that nobody reads (receive buffer as small as the
/// kernel allows): it absorbs a flood by dropping it.
pub fn udp_sink(ns: &str, addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let sock = netns::in_netns(ns, move || UdpSocket::bind(addr)).context("binding the sink")?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a valid fd and a c_int option value.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(sock)
}

/// Raises the soft limit on open files to the hard limit (a flood with many flows holds one
/// socket per flow).
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// A paced UDP flood from one namespace to one address, spread over `flows` sockets (one
/// source port, hence one conntrack entry and one Hubble flow key, each). Stops on drop.
pub struct Flood {
    stop: Arc<AtomicBool>,
    rate: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Flood {
    /// Starts sending `pps` datagrams per second of `payload` bytes from `flows` sockets in
    /// `ns` to `dst`. A rate of 0 pauses the flood.
    pub fn start(
        ns: &str,
        dst: SocketAddr,
        flows: usize,
        payload: usize,
        pps: u64,
    ) -> anyhow::Result<Flood> {
        raise_fd_limit();
        let (stop, rate) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(pps)),
        );
        let (sent, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (s, r, n, e) = (stop.clone(), rate.clone(), sent.clone(), errors.clone());
        let handle = netns::spawn_in_netns(ns, move || {
            let mut socks = Vec::with_capacity(flows);
            for _ in 0..flows.max(1) {
                match UdpSocket::bind("0.0.0.0:0").and_then(|u| u.connect(dst).map(|()| u)) {
                    Ok(u) => socks.push(u),
                    Err(err) => {
                        let _ = ready_tx.send(Err(format!("socket {}: {err}", socks.len())));
                        return;
                    }
                }
            }
            let _ = ready_tx.send(Ok(()));
            send_loop(&socks, payload, &s, &r, &n, &e);
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("starting the flood: {e}"),
            Err(_) => bail!("starting the flood: no answer from the sender thread"),
        }
        Ok(Flood {
            stop,
            rate,
            sent,
            errors,
            handle: Some(handle),
        })
    }

    /// Changes the rate (datagrams per second).
    pub fn set_rate(&self, pps: u64) {
        self.rate.store(pps, Ordering::Relaxed);
    }

    /// Datagrams sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Failed `sendmmsg` calls so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Sends at the current rate until `stop`. The schedule is absolute (datagrams due since the
/// last rate change), so short sleeps do not lower the rate; a sender that falls more than
/// 100 ms behind forgets the debt instead of bursting to catch up.
fn send_loop(
    socks: &[UdpSocket],
    payload: usize,
    stop: &AtomicBool,
    rate: &AtomicU64,
    sent: &AtomicU64,
    errors: &AtomicU64,
) {
    let buf = vec![0x5au8; payload.max(1)];
    let mut iov = [libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    }];
    // SAFETY: mmsghdr is plain data; zero is a valid "no address, no control" header.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_iov = iov.as_mut_ptr();
        m.msg_hdr.msg_iovlen = 1;
    }
    let (mut base_t, mut base_n, mut cur) = (Instant::now(), 0u64, rate.load(Ordering::Relaxed));
    let mut total = 0u64;
    let mut next_sock = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let r = rate.load(Ordering::Relaxed);
        if r != cur {
            (base_t, base_n, cur) = (Instant::now(), total, r);
        }
        if r == 0 {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let due = base_n + (base_t.elapsed().as_secs_f64() * r as f64) as u64;
        if due <= total {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        if due - total > r / 10 {
            (base_t, base_n) = (Instant::now(), total);
            continue;
        }
        let n = ((due - total) as usize).min(BATCH);
        let fd = socks[next_sock].as_raw_fd();
        next_sock = (next_sock + 1) % socks.len();
        // SAFETY: `msgs[..n]` point at `iov`, which points at `buf`; all outlive the call.
        let k = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        if k > 0 {
            total += k as u64;
            sent.store(total, Ordering::Relaxed);
        } else {
            errors.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// An iperf3 server in `ns`, bound to `addr`; killed (by PID) on drop.
pub struct IperfServer {
    _proc: Spawned,
    port: u16,
}

impl IperfServer {
    /// Starts `iperf3 -s` and waits until it listens.
    pub fn start(ns: &str, ip: &str, port: u16) -> anyhow::Result<IperfServer> {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            ns,
            "iperf3",
            "-s",
            "--forceflush",
            "-B",
            ip,
            "-p",
        ])
        .arg(port.to_string());
        let proc = Spawned::spawn(cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !proc.raw_lines().iter().any(|l| l.contains("listening")) {
            if Instant::now() > deadline {
                bail!("iperf3 server did not start: {}", proc.stderr());
            }
            crate::sleep(Duration::from_millis(20))?;
        }
        Ok(IperfServer { _proc: proc, port })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// What one iperf3 test measured.
#[derive(Clone, Copy, Debug)]
pub struct IperfResult {
    /// TCP: bits per second received. UDP: datagrams per second received.
    pub rate: f64,
    /// UDP: fraction of datagrams lost (0 for TCP).
    pub loss: f64,
}

/// Runs an iperf3 client in `ns` against `ip:port` for `secs` seconds (after `omit` seconds of
/// warm-up that are not counted). `udp_len`: a UDP test with datagrams of that size at
/// unlimited rate; None: one TCP stream.
pub fn iperf_client(
    ns: &str,
    ip: &str,
    port: u16,
    secs: u32,
    omit: u32,
    udp_len: Option<u32>,
) -> anyhow::Result<IperfResult> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "iperf3", "-J", "-c", ip, "-p"])
        .arg(port.to_string())
        .args(["-t", &secs.to_string(), "-O", &omit.to_string()]);
    if let Some(len) = udp_len {
        cmd.args(["-u", "-b", "0", "-l", &len.to_string()]);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().context("spawning iperf3")?;
    let pid = child.id() as i32;
    // Bounded: an iperf3 that hangs is killed (by PID) after its duration plus a margin.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let limit = Duration::from_secs(u64::from(secs + omit) + 15);
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.context("waiting for iperf3")?,
        Err(_) => {
            // SAFETY: killing our own child by PID.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            bail!("iperf3 did not finish within {limit:?}");
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 output is not JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    let end = &v["end"];
    if udp_len.is_some() {
        let s = &end["sum"];
        let packets = s["packets"]
            .as_f64()
            .context("iperf3: no end.sum.packets")?;
        let lost = s["lost_packets"].as_f64().unwrap_or(0.0);
        let seconds = s["seconds"]
            .as_f64()
            .filter(|s| *s > 0.0)
            .unwrap_or(secs as f64);
        Ok(IperfResult {
            rate: (packets - lost) / seconds,
            loss: if packets > 0.0 { lost / packets } else { 0.0 },
        })
    } else {
        Ok(IperfResult {
            rate: end["sum_received"]["bits_per_second"]
                .as_f64()
                .context("iperf3: no end.sum_received.bits_per_second")?,
            loss: 0.0,
        })
    }
}
