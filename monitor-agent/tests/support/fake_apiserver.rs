//! A stand-in for a Kubernetes API server, for tests: no real API server can run on the machines
//! that run flowscope's tests, so this one speaks the part of the API's protocol that list-watch
//! clients use, over real HTTP/1.1 on 127.0.0.1:
//!
//! - `GET /api/v1/<plural>` and `/api/v1/namespaces/<ns>/<plural>` (and `/apis/<group>/<version>/…`):
//!   a `<Kind>List` with `metadata.resourceVersion`, paginated with `limit` and `continue`,
//!   filtered by `fieldSelector` (`a.b=c`, comma-separated) and `labelSelector` (`k=v`, `k`);
//!   items without `kind`/`apiVersion`, as the real server sends them;
//! - the same with `watch=true&resourceVersion=N`: a chunked stream of
//!   `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{…}}` lines, replaying the
//!   events after `N` from its event log, then the live ones, ended after `timeoutSeconds`; a
//!   version older than the log (compacted) gets the real server's `410 Expired` error event.
//!
//! One resource-version counter for all kinds, like etcd's. The test drives it: objects are
//! applied and deleted (events sent to open watches), changed silently (as if the events were
//! lost), the log compacted, open watches expired with a 410 or cut mid-line, the whole server
//! made unreachable. Every request is recorded for assertions.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the fake"
)]

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Frame},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc};

type Body = BoxBody<Bytes, std::io::Error>;

/// What a watch stream is sent.
enum Out {
    Line(String),
    /// Half a line, then the connection is cut (a proxy or the server dying mid-stream).
    Cut,
    /// The server ends the watch (after an error event).
    End,
}

/// One kind of object.
#[derive(Default)]
struct Kind {
    /// `PodList`, … (the kind is the list kind without `List`).
    list_kind: String,
    api_version: String,
    /// Current objects, by `namespace/name`.
    objects: BTreeMap<String, Value>,
    /// Events after `compacted`, in order: (version, type, object).
    log: Vec<(u64, &'static str, Value)>,
    /// Watches from a version at or below this one are too old (410).
    compacted: u64,
    watchers: Vec<(Selector, mpsc::UnboundedSender<Out>)>,
}

#[derive(Default)]
struct Inner {
    version: u64,
    /// By collection key: `v1/pods`, `discovery.k8s.io/v1/endpointslices`.
    kinds: HashMap<String, Kind>,
    down: bool,
    requests: Vec<String>,
}

/// The fake server; stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `namespace/name` of an object.
fn key_of(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().expect("every object has a name")
    )
}

/// A collection key from an API version and a plural: `v1/pods`.
fn collection(api_version: &str, plural: &str) -> String {
    format!("{api_version}/{plural}")
}

/// Equality-based field and label selectors, enough for list-watch clients.
#[derive(Clone, Debug, Default)]
struct Selector {
    namespace: Option<String>,
    fields: Vec<(String, String)>,
    labels: Vec<(String, Option<String>)>,
}

impl Selector {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && obj["metadata"]["namespace"].as_str() != Some(ns.as_str())
        {
            return false;
        }
        let fields_ok = self.fields.iter().all(|(path, want)| {
            let mut v = obj;
            for part in path.split('.') {
                v = &v[part];
            }
            v.as_str().unwrap_or("") == want
        });
        let labels = &obj["metadata"]["labels"];
        let labels_ok = self.labels.iter().all(|(k, want)| match want {
            Some(w) => labels[k].as_str() == Some(w.as_str()),
            None => !labels[k].is_null(),
        });
        fields_ok && labels_ok
    }
}

impl FakeApiServer {
    /// Starts a server on 127.0.0.1 with no kinds.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            version: 100,
            ..Inner::default()
        }));
        let state = inner.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if lock(&state).down {
                    // An API server that is down: the connection closes at once.
                    drop(stream);
                    continue;
                }
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApiServer { addr, inner, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Loads a `<Kind>List` (a fixture, JSON as the API server returns it) as the initial state
    /// of that kind, under `plural` (`pods`): each item gets a resource version of its own.
    pub fn load_list(&self, plural: &str, list: &Value) {
        let mut inner = lock(&self.inner);
        let api_version = list["apiVersion"].as_str().unwrap().to_owned();
        let list_kind = list["kind"].as_str().unwrap().to_owned();
        let item_kind = list_kind.trim_end_matches("List").to_owned();
        let mut objects = BTreeMap::new();
        for item in list["items"].as_array().unwrap() {
            inner.version += 1;
            let mut obj = item.clone();
            obj["apiVersion"] = json!(api_version);
            obj["kind"] = json!(item_kind);
            obj["metadata"]["resourceVersion"] = json!(inner.version.to_string());
            objects.insert(key_of(&obj), obj);
        }
        let version = inner.version;
        let kind = inner
            .kinds
            .entry(collection(&api_version, plural))
            .or_default();
        kind.list_kind = list_kind;
        kind.api_version = api_version;
        kind.objects = objects;
        kind.compacted = version;
        kind.log.clear();
    }

    /// Adds or replaces an object (`ADDED` or `MODIFIED` to the watches); returns its version.
    pub fn apply(&self, plural: &str, obj: Value) -> u64 {
        self.change(plural, obj, false)
    }

    /// Deletes an object by `namespace/name` (`DELETED` with its last state).
    pub fn delete(&self, plural: &str, api_version: &str, key: &str) -> u64 {
        let mut inner = lock(&self.inner);
        inner.version += 1;
        let version = inner.version;
        let kind = inner
            .kinds
            .get_mut(&collection(api_version, plural))
            .expect("a loaded kind");
        let mut obj = kind.objects.remove(key).expect("an existing object");
        obj["metadata"]["resourceVersion"] = json!(version.to_string());
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!("2026-11-26T12:00:00Z");
        }
        emit(kind, version, "DELETED", obj);
        version
    }

    /// Adds or replaces an object as if its event were lost: no event now, none to replay.
    pub fn apply_silently(&self, plural: &str, obj: Value) -> u64 {
        self.change(plural, obj, true)
    }

    /// Deletes an object as if its event were lost.
    pub fn delete_silently(&self, plural: &str, api_version: &str, key: &str) {
        let mut inner = lock(&self.inner);
        inner.version += 1;
        let version = inner.version;
        let kind = inner
            .kinds
            .get_mut(&collection(api_version, plural))
            .unwrap();
        kind.objects.remove(key).expect("an existing object");
        kind.compacted = version;
        kind.log.clear();
    }

    fn change(&self, plural: &str, mut obj: Value, silent: bool) -> u64 {
        let mut inner = lock(&self.inner);
        inner.version += 1;
        let version = inner.version;
        let api_version = obj["apiVersion"].as_str().expect("apiVersion").to_owned();
        let kind = inner
            .kinds
            .get_mut(&collection(&api_version, plural))
            .expect("a loaded kind");
        obj["metadata"]["resourceVersion"] = json!(version.to_string());
        let key = key_of(&obj);
        let ty = if kind.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        kind.objects.insert(key, obj.clone());
        if silent {
            // Lost: a watch resuming from before it would miss it, so the log cannot serve
            // that range any more (as after etcd compaction).
            kind.compacted = version;
            kind.log.clear();
        } else {
            emit(kind, version, ty, obj);
        }
        version
    }

    /// Sends a BOOKMARK at the current version to the open watches of a kind; returns it.
    pub fn bookmark(&self, plural: &str, api_version: &str) -> u64 {
        let mut inner = lock(&self.inner);
        let version = inner.version;
        let kind = inner
            .kinds
            .get_mut(&collection(api_version, plural))
            .unwrap();
        let line = json!({"type": "BOOKMARK", "object": {
            "kind": kind.list_kind.trim_end_matches("List"), "apiVersion": api_version,
            "metadata": {"resourceVersion": version.to_string()}}})
        .to_string();
        kind.watchers
            .retain(|(_, tx)| tx.send(Out::Line(line.clone())).is_ok());
        version
    }

    /// Forgets the event log of a kind (etcd compaction) and ends its open watches with the
    /// `410 Expired` error event the real server sends when a watcher falls behind.
    pub fn expire_watches(&self, plural: &str, api_version: &str) {
        let mut inner = lock(&self.inner);
        let version = inner.version;
        let kind = inner
            .kinds
            .get_mut(&collection(api_version, plural))
            .unwrap();
        kind.compacted = version;
        kind.log.clear();
        let line = gone(version, version).to_string();
        for (_, tx) in kind.watchers.drain(..) {
            let _ = tx.send(Out::Line(line.clone()));
            let _ = tx.send(Out::End);
        }
    }

    /// Cuts the open watches of a kind in the middle of a line (the log is kept: a client
    /// resuming from its last version gets what it missed).
    pub fn cut_watches(&self, plural: &str, api_version: &str) {
        let mut inner = lock(&self.inner);
        let kind = inner
            .kinds
            .get_mut(&collection(api_version, plural))
            .unwrap();
        for (_, tx) in kind.watchers.drain(..) {
            let _ = tx.send(Out::Cut);
        }
    }

    /// Makes the server unreachable (connections closed at once, open watches cut) or
    /// reachable again.
    pub fn set_down(&self, down: bool) {
        let mut inner = lock(&self.inner);
        inner.down = down;
        if down {
            for kind in inner.kinds.values_mut() {
                for (_, tx) in kind.watches_drain() {
                    let _ = tx.send(Out::Cut);
                }
            }
        }
    }

    /// Open watches of a kind.
    pub fn watchers(&self, plural: &str, api_version: &str) -> usize {
        let mut inner = lock(&self.inner);
        inner
            .kinds
            .get_mut(&collection(api_version, plural))
            .map_or(0, |k| {
                k.watchers.retain(|(_, tx)| !tx.is_closed());
                k.watchers.len()
            })
    }

    /// Every request so far, as `path?query` (decoded).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.inner).requests.clone()
    }

    /// The current resource version.
    pub fn version(&self) -> u64 {
        lock(&self.inner).version
    }
}

impl Kind {
    fn watches_drain(&mut self) -> Vec<(Selector, mpsc::UnboundedSender<Out>)> {
        self.watchers.drain(..).collect()
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Logs an event and sends it to the watches it matches.
fn emit(kind: &mut Kind, version: u64, ty: &'static str, obj: Value) {
    let line = json!({"type": ty, "object": obj}).to_string();
    kind.watchers
        .retain(|(sel, tx)| !sel.matches(&obj) || tx.send(Out::Line(line.clone())).is_ok());
    kind.log.push((version, ty, obj));
}

/// The real server's answer to a watch from a compacted version.
fn gone(asked: u64, oldest: u64) -> Value {
    json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {asked} ({oldest})"),
        "reason": "Expired", "code": 410}})
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    json_response(code, &body)
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

/// Splits `/api/v1/namespaces/ns/pods` into (`v1/pods`, Some(`ns`)).
fn route(path: &str) -> Option<(String, Option<String>)> {
    let (version, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("v1".to_owned(), rest)
    } else {
        let rest = path.strip_prefix("/apis/")?;
        let mut parts = rest.splitn(3, '/');
        let (group, version, rest) = (parts.next()?, parts.next()?, parts.next()?);
        (format!("{group}/{version}"), rest)
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        [plural] => Some((collection(&version, plural), None)),
        ["namespaces", ns, plural] => Some((collection(&version, plural), Some((*ns).to_owned()))),
        _ => None,
    }
}

fn handle(state: &Arc<Mutex<Inner>>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    let mut shown: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    shown.sort();
    let mut inner = lock(state);
    inner.requests.push(format!("{path}?{}", shown.join("&")));
    let Some((key, namespace)) = route(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let version = inner.version;
    let Some(kind) = inner.kinds.get_mut(&key) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let mut sel = Selector {
        namespace,
        ..Selector::default()
    };
    for f in query
        .get("fieldSelector")
        .into_iter()
        .flat_map(|s| s.split(','))
    {
        if let Some((k, v)) = f.split_once('=') {
            sel.fields
                .push((k.trim_end_matches('=').to_owned(), v.to_owned()));
        }
    }
    for l in query
        .get("labelSelector")
        .into_iter()
        .flat_map(|s| s.split(','))
    {
        match l.split_once('=') {
            Some((k, v)) => sel
                .labels
                .push((k.trim_end_matches('=').to_owned(), Some(v.to_owned()))),
            None if !l.is_empty() => sel.labels.push((l.to_owned(), None)),
            None => {}
        }
    }

    if query.get("watch").map(String::as_str) == Some("true") {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(version);
        let timeout: u64 = query
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800);
        let (tx, rx) = mpsc::unbounded_channel();
        if from < kind.compacted {
            let _ = tx.send(Out::Line(gone(from, kind.compacted).to_string()));
            let _ = tx.send(Out::End);
        } else {
            for (v, ty, obj) in &kind.log {
                if *v > from && sel.matches(obj) {
                    let line = json!({"type": ty, "object": obj}).to_string();
                    let _ = tx.send(Out::Line(line));
                }
            }
            kind.watchers.push((sel, tx));
        }
        return watch_response(rx, Duration::from_secs(timeout));
    }

    // A list, paginated: `continue` is the offset of the next item.
    let items: Vec<Value> = kind
        .objects
        .values()
        .filter(|o| sel.matches(o))
        .map(|o| {
            let mut o = o.clone();
            let m = o.as_object_mut().unwrap();
            m.remove("kind");
            m.remove("apiVersion");
            o
        })
        .collect();
    let start: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let end = start.saturating_add(limit).min(items.len());
    let mut metadata = json!({"resourceVersion": version.to_string()});
    if end < items.len() {
        metadata["continue"] = json!(end.to_string());
        metadata["remainingItemCount"] = json!(items.len() - end);
    }
    let body = json!({
        "kind": kind.list_kind, "apiVersion": kind.api_version,
        "metadata": metadata, "items": &items[start.min(end)..end],
    });
    json_response(StatusCode::OK, &body)
}

fn watch_response(rx: mpsc::UnboundedReceiver<Out>, timeout: Duration) -> Response<Body> {
    /// Where a watch stream is: following, cutting (half a line sent), or over.
    enum At {
        Following,
        Cutting,
        Over,
    }
    let stream = futures::stream::unfold((rx, At::Following), |(mut rx, at)| async move {
        match at {
            At::Over => None,
            // Then an error: hyper aborts the connection without the final chunk, which the
            // client sees as an unexpected end of stream.
            At::Cutting => Some((
                Err(std::io::Error::other("connection cut by the test")),
                (rx, At::Over),
            )),
            At::Following => match rx.recv().await? {
                Out::Line(l) => Some((Ok(Frame::data(Bytes::from(l + "\n"))), (rx, At::Following))),
                Out::End => None,
                Out::Cut => Some((
                    Ok(Frame::data(Bytes::from_static(
                        b"{\"type\":\"MODIFIED\",\"obj",
                    ))),
                    (rx, At::Cutting),
                )),
            },
        }
    });
    // The server ends every watch after timeoutSeconds.
    let stream = futures::StreamExt::take_until(stream, tokio::time::sleep(timeout));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

/// Percent-decoding of a query component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
