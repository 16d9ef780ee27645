//! The HTTP/1.1 server: the page's files, `/api/flows` (NDJSON, streaming) and `/api/status`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flowscope_proto::EXTENSIONS_HEADER;
use flowscope_proto::flowscope::v1::{GetFlowsExtension, RecordSelection};
use flowscope_proto::observer::observer_client::ObserverClient;
use flowscope_proto::observer::{GetFlowsRequest, ServerStatusRequest};
use flowscope_proto::wkt::Any;
use futures::StreamExt as _;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::{self as h, StatusCode, header};
use tracing::{debug, info, warn};

use crate::{Api, Role, TlsSource, assets};

/// Flow streams open at once, over every browser: more get `503` (each holds a GetFlows
/// follower on the server).
pub const MAX_STREAMS: usize = 32;

/// Lines queued per stream between the server's GetFlows and the browser's connection. A
/// browser that reads slower leaves them queued, and the server's own per-client buffer then
/// drops flows as `LostEvent`s, which reach the page.
pub const STREAM_QUEUE: usize = 256;

/// The most flows a page asks of the history (`last`).
const MAX_LAST: u64 = 5000;

/// How long a status request may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

type Body = BoxBody<Bytes, Infallible>;

struct Shared {
    api: Api,
    role: Role,
    streams: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// Serves the web view on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsSource>,
    api: Api,
    role: Role,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(address = %addr, tls = tls.is_some(), "serving the web view");
    }
    let shared = Arc::new(Shared {
        api,
        role,
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        shutdown: shutdown.clone(),
    });
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: wait a little rather than spin.
                    warn!(error = %err, "web view: accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => connection(TokioIo::new(stream), shared).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls());
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => connection(TokioIo::new(stream), shared).await,
                        Ok(Err(err)) => {
                            debug!(%peer, error = %err, "web view: TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            if let Err(err) = result {
                debug!(%peer, error = %err, "web view: connection ended");
            }
        });
    }
}

async fn connection<I>(io: TokioIo<I>, shared: Arc<Shared>) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = shared.shutdown.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(req, shared).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(io, service);
    tokio::select! {
        result = conn => result,
        // Streams end at shutdown; the connection goes with them.
        _ = shutdown.cancelled() => Ok(()),
    }
}

/// The answer to one request. A boxed future: proving `Send` for the gRPC client's futures
/// inside hyper's generic connection needs the concrete lifetimes this gives.
fn route(
    req: h::Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = h::Response<Body>> + Send>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    Box::pin(async move { answer(&method, &path, &query, &shared).await })
}

async fn answer(method: &h::Method, path: &str, query: &str, shared: &Shared) -> h::Response<Body> {
    if method != h::Method::GET && method != h::Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET");
    }
    match path {
        "/api/flows" => flows(query, shared).await,
        "/api/status" => status(shared).await,
        _ => match assets::find(path) {
            Some((content_type, body)) => response(StatusCode::OK, content_type)
                .body(Full::new(Bytes::from_static(body)).boxed())
                .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response")),
            None => error(StatusCode::NOT_FOUND, "no such page"),
        },
    }
}

/// A response with the headers every answer carries: no caching (the page follows the
/// binary), and nothing loaded from anywhere but this server.
fn response(status: StatusCode, content_type: &str) -> h::response::Builder {
    h::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-content-type-options", "nosniff")
        .header(
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
        )
}

fn json(status: StatusCode, value: &serde_json::Value) -> h::Response<Body> {
    response(status, "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .unwrap_or_else(|_| h::Response::new(Full::new(Bytes::new()).boxed()))
}

fn error(status: StatusCode, message: &str) -> h::Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

fn grpc_error(status: &tonic::Status) -> h::Response<Body> {
    let http = match status.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_GATEWAY,
    };
    json(
        http,
        &serde_json::json!({ "error": status.message(), "code": format!("{:?}", status.code()) }),
    )
}

/// `a=1&b=x%20y` → pairs, `+` and `%XX` decoded.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => match s
                    .get(i + 1..i + 3)
                    .and_then(|x| u8::from_str_radix(x, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// The GetFlows request of `/api/flows?filter=…&last=N&follow=1&unanswered=1`.
fn flows_request(query: &str) -> Result<GetFlowsRequest, String> {
    let mut request = GetFlowsRequest {
        number: 500,
        follow: true,
        ..Default::default()
    };
    for (key, value) in query_pairs(query) {
        match key.as_str() {
            "filter" => {
                let words =
                    flowscope_filter::flags::split_words(&value).map_err(|e| e.to_string())?;
                let (whitelist, blacklist) =
                    flowscope_filter::flags::parse_args(&words).map_err(|e| e.to_string())?;
                request.whitelist = whitelist;
                request.blacklist = blacklist;
            }
            "last" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| format!("last: expected a number, not {value:?}"))?;
                request.number = n.min(MAX_LAST);
            }
            "follow" => request.follow = value != "0",
            "unanswered" if value != "0" => {
                request.extensions = Some(Any::from_msg(&GetFlowsExtension {
                    records: RecordSelection::Unanswered as i32,
                }));
            }
            "unanswered" => {}
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    Ok(request)
}

async fn flows(query: &str, shared: &Shared) -> h::Response<Body> {
    let request = match flows_request(query) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let Ok(permit) = shared.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many open views of this server; close one and retry",
        );
    };
    let mut grpc = tonic::Request::new(request);
    grpc.metadata_mut().insert(
        EXTENSIONS_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut client =
        ObserverClient::new(shared.api.clone()).max_decoding_message_size(16 * 1024 * 1024);
    let mut stream = match client.get_flows(grpc).await {
        Ok(response) => response.into_inner(),
        Err(status) => return grpc_error(&status),
    };
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(STREAM_QUEUE);
    let shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        let _permit = permit;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                // The browser went away: stop pulling, which ends the server's stream.
                _ = tx.closed() => return,
                next = stream.next() => next,
            };
            let line = match next {
                None => return,
                Some(Ok(response)) => match flowscope_proto::json::to_json(&response) {
                    Ok(line) => line,
                    Err(err) => serde_json::json!({ "error": format!("encoding a flow: {err}") })
                        .to_string(),
                },
                Some(Err(status)) => {
                    let line = serde_json::json!({
                        "error": status.message(),
                        "code": format!("{:?}", status.code()),
                    })
                    .to_string();
                    let _ = tx.send(Ok(Frame::data(Bytes::from(line + "\n")))).await;
                    return;
                }
            };
            // Waits while the browser does not read: the server's buffer takes the rest.
            if tx
                .send(Ok(Frame::data(Bytes::from(line + "\n"))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    response(StatusCode::OK, "application/x-ndjson")
        .body(BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

async fn status(shared: &Shared) -> h::Response<Body> {
    let mut client = ObserverClient::new(shared.api.clone());
    let call = client.server_status(ServerStatusRequest::default());
    match tokio::time::timeout(STATUS_TIMEOUT, call).await {
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "the server did not answer in time",
        ),
        Ok(Err(status)) => grpc_error(&status),
        Ok(Ok(response)) => {
            let status = response.into_inner();
            let status = serde_json::to_value(&status).unwrap_or(serde_json::Value::Null);
            json(
                StatusCode::OK,
                &serde_json::json!({ "server": shared.role.as_str(), "status": status }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_pairs("filter=--ip+1.0.0.1%20--port%3D80&last=5&x"),
            [
                ("filter".to_string(), "--ip 1.0.0.1 --port=80".to_string()),
                ("last".to_string(), "5".to_string()),
                ("x".to_string(), String::new()),
            ]
        );
        assert_eq!(
            query_pairs("a=%zz%4"),
            [("a".to_string(), "%zz%4".to_string())]
        );
    }

    #[test]
    fn a_request_from_the_page() {
        let r = flows_request("filter=--ip%201.0.0.1%20--not%20--verdict%20DROPPED&last=99999")
            .unwrap();
        assert_eq!(r.number, MAX_LAST);
        assert!(r.follow);
        assert_eq!(r.whitelist.len(), 2);
        assert_eq!(r.blacklist.len(), 1);
        assert!(r.extensions.is_none());
        let r = flows_request("follow=0&unanswered=1").unwrap();
        assert!(!r.follow);
        assert!(r.extensions.is_some());
        let err = flows_request("filter=--ip%20nope").unwrap_err();
        assert!(err.contains("--ip"), "{err}");
        assert!(flows_request("bogus=1").is_err());
    }
}
