//! Servers and clients on std sockets, each on a thread inside a namespace. Every loop is
//! bounded by a stop flag and socket timeouts; servers stop when dropped.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::{in_netns, run, spawn_in_netns};

const IO_TIMEOUT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(20);

/// A server thread; stops (and is joined) on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// Requests (TCP connections or UDP datagrams) served.
    pub served: Arc<AtomicU64>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn start(ns: &str, body: impl FnOnce(Arc<AtomicBool>, Arc<AtomicU64>) + Send + 'static) -> Server {
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let (s, c) = (stop.clone(), served.clone());
    let handle = spawn_in_netns(ns, move || body(s, c));
    Server {
        stop,
        handle: Some(handle),
        served,
    }
}

/// A minimal HTTP/1.0 server: `GET /` (or any request whose target is `/`) gets `200 OK` and a
/// fixed body; any other path `404 Not Found`.
pub fn http_server(ns: &str, addr: SocketAddr, body: &'static str) -> Server {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = start(ns, move |stop, served| {
        let listener = TcpListener::bind(addr).expect("bind http server");
        listener.set_nonblocking(true).expect("nonblocking");
        let _ = ready_tx.send(());
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
                    let mut buf = [0u8; 2048];
                    let n = conn.read(&mut buf).unwrap_or(0);
                    let target = std::str::from_utf8(&buf[..n])
                        .ok()
                        .and_then(|r| r.split(' ').nth(1))
                        .unwrap_or("/");
                    let (status, body) = if target == "/" {
                        ("200 OK", body)
                    } else {
                        ("404 Not Found", "not found")
                    };
                    let resp = format!(
                        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes());
                    served.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    });
    ready_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("http server ready");
    server
}

/// A UDP server: echoes each datagram when `echo`, else only counts it.
pub fn udp_server(ns: &str, addr: SocketAddr, echo: bool) -> Server {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = start(ns, move |stop, served| {
        let sock = UdpSocket::bind(addr).expect("bind udp server");
        sock.set_read_timeout(Some(POLL)).expect("timeout");
        let _ = ready_tx.send(());
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                served.fetch_add(1, Ordering::Relaxed);
                if echo {
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
        }
    });
    ready_rx.recv_timeout(IO_TIMEOUT).expect("udp server ready");
    server
}

/// A TCP server that accepts connections and reads until the peer closes.
pub fn tcp_sink(ns: &str, addr: SocketAddr) -> Server {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = start(ns, move |stop, served| {
        let listener = TcpListener::bind(addr).expect("bind tcp sink");
        listener.set_nonblocking(true).expect("nonblocking");
        let _ = ready_tx.send(());
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
                    let mut buf = [0u8; 4096];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                    served.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    });
    ready_rx.recv_timeout(IO_TIMEOUT).expect("tcp sink ready");
    server
}

/// What a client saw.
#[derive(Debug)]
pub struct Exchange {
    /// The client's local port.
    pub local_port: u16,
    /// Bytes received.
    pub received: Vec<u8>,
}

/// `GET /` from namespace `ns`; returns the local port and the whole response.
pub fn http_get(ns: &str, addr: SocketAddr) -> std::io::Result<Exchange> {
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        let local_port = s.local_addr()?.port();
        s.write_all(format!("GET / HTTP/1.0\r\nHost: {}\r\n\r\n", addr.ip()).as_bytes())?;
        let mut received = Vec::new();
        s.read_to_end(&mut received)?;
        Ok(Exchange {
            local_port,
            received,
        })
    })
}

/// `GET path` with a `Host` header from namespace `ns`, as an HTTP client that resolved `host`
/// to `addr` sends it; returns the local port and the whole response.
pub fn http_request(
    ns: &str,
    addr: SocketAddr,
    host: &'static str,
    path: &'static str,
) -> std::io::Result<Exchange> {
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        let local_port = s.local_addr()?.port();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: testbed\r\nAccept: */*\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )?;
        let mut received = Vec::new();
        s.read_to_end(&mut received)?;
        Ok(Exchange {
            local_port,
            received,
        })
    })
}

/// Opens a TCP connection, sends `payload`, closes.
pub fn tcp_send(ns: &str, addr: SocketAddr, payload: &'static [u8]) -> std::io::Result<u16> {
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        let port = s.local_addr()?.port();
        s.write_all(payload)?;
        s.shutdown(std::net::Shutdown::Write)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        Ok(port)
    })
}

/// Sends `count` datagrams of `size` bytes from one socket; returns its local port. When
/// `pace` is set, sleeps that long between datagrams.
pub fn udp_send(
    ns: &str,
    addr: SocketAddr,
    count: usize,
    size: usize,
    pace: Option<Duration>,
) -> std::io::Result<u16> {
    in_netns(ns, move || {
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .expect("addr");
        let sock = UdpSocket::bind(bind)?;
        sock.connect(addr)?;
        let buf = vec![0x5au8; size];
        for _ in 0..count {
            sock.send(&buf)?;
            if let Some(p) = pace {
                std::thread::sleep(p);
            }
        }
        Ok(sock.local_addr()?.port())
    })
}

/// One UDP request and its reply.
pub fn udp_request(
    ns: &str,
    addr: SocketAddr,
    payload: &'static [u8],
) -> std::io::Result<Exchange> {
    in_netns(ns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        sock.connect(addr)?;
        sock.send(payload)?;
        let mut buf = [0u8; 2048];
        let n = sock.recv(&mut buf)?;
        Ok(Exchange {
            local_port: sock.local_addr()?.port(),
            received: buf[..n].to_vec(),
        })
    })
}

/// `ping -c count` from `ns` (iputils, installed by scripts/setup.sh); true if all replies came.
pub fn ping(ns: &str, dst: &str, count: u32) -> bool {
    let c = count.to_string();
    let out = crate::netns::try_run(
        ns,
        &["ping", "-n", "-q", "-c", &c, "-i", "0.2", "-W", "2", dst],
    );
    out.status.success()
}

/// Adds a route or address etc.: convenience re-export for tests.
pub fn exec(ns: &str, args: &[&str]) {
    run(ns, args);
}
