//! The relay's web view over its own mutual TLS: the page and the flow stream for a client with
//! a certificate of the CA, nothing for one without; filters typed as flowctl takes them; the
//! cap on open streams.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use flowscope_relay::ServerTlsFiles;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TLS client of the test CA, with a client certificate or without.
fn connector(
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// `GET path` over TLS; the status line and headers, and the body read until `until` appears
/// in it or the server closes (bounded in time).
async fn get(
    tls: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    path: &str,
    until: &str,
) -> std::io::Result<(String, String)> {
    let tcp = TcpStream::connect(addr).await?;
    let mut stream = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&buf);
        if let Some((_, body)) = text.split_once("\r\n\r\n")
            && !until.is_empty()
            && body.contains(until)
        {
            break;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) if buf.is_empty() => return Err(e),
            Ok(Err(_)) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.to_string(), body.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_is_served_with_the_relays_tls() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("relay CA");
    let ca_path = ca.write(dir.path(), "ca");
    let (server_cert, server_key) =
        ca.write_leaf(dir.path(), "server", &["localhost", "127.0.0.1"], false);
    let (client_cert, client_key) = ca.write_leaf(dir.path(), "client", &["browser"], true);

    let agent = FakeAgent::start(
        "node-0",
        AgentOpts {
            history: 10,
            ..Default::default()
        },
    );
    let ui: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut config = test_config(&[agent.peer()]);
    config.server_tls = Some(ServerTlsFiles {
        cert: server_cert,
        key: server_key,
        client_ca: vec![ca_path.clone()],
    });
    config.ui_listen_address = Some(ui.to_string().parse().unwrap());
    let relay = start_relay(config).await;
    wait_connected(&relay, 1).await;

    let good = connector(&ca_path, Some((&client_cert, &client_key)));
    let (head, body) = get(&good, ui, "/", "</html>").await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("<title>flowscope</title>"), "{body}");
    let (head, body) = get(&good, ui, "/app.js", "").await.unwrap();
    assert!(
        head.contains("text/javascript") && body.contains("MAX_EDGES"),
        "{head}"
    );

    // The flows, as Hubble JSON lines with the relay's merge behind them.
    let (head, body) = get(&good, ui, "/api/flows?follow=0&last=5", "")
        .await
        .unwrap();
    assert!(head.contains("application/x-ndjson"), "{head}");
    let flows = body
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("flow").is_some())
        .count();
    assert_eq!(flows, 5, "{body}");
    // A filter flowctl refuses, refused with flowctl's words.
    let (head, body) = get(&good, ui, "/api/flows?filter=--ip%201.2.3.400", "")
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        body.contains("--ip") && body.contains("expected an IP address"),
        "{body}"
    );
    let (head, body) = get(&good, ui, "/api/status", "").await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains(r#""server":"relay""#), "{body}");

    // Without a client certificate of the CA: no page.
    let anonymous = connector(&ca_path, None);
    let refused = get(&anonymous, ui, "/", "</html>").await;
    assert!(
        !refused.as_ref().is_ok_and(|(head, _)| !head.is_empty()),
        "served without a client certificate: {refused:?}"
    );

    // Bounded: MAX_STREAMS following streams, then the next is refused.
    let mut open = Vec::new();
    for _ in 0..flowscope_ui::MAX_STREAMS {
        let tcp = TcpStream::connect(ui).await.unwrap();
        let mut s = good
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        s.write_all(b"GET /api/flows?last=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        s.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        open.push(s);
    }
    let (head, body) = get(&good, ui, "/api/flows?last=1", "").await.unwrap();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(body.contains("too many open views"), "{body}");
    // One closes: a new one is served again.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (head, _) = get(&good, ui, "/api/flows?follow=0&last=1", "")
            .await
            .unwrap();
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no stream freed: {head}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(open);
    relay.stop().await;
}
