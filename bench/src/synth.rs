//! Synthetic agents for the relay benchmark: in-process tonic servers on 127.0.0.1 that speak
//! the Observer API and stream flows at a given rate.
//!
//! Each following `GetFlows` gets flows made from a realistic template (the flow the real
//! agent builds for pod-a's SYN to 1.0.0.1, about 0.5 KiB on the wire), each with its own
//! uuid, source port and `time` set when it is generated: receive time minus `time` at the
//! client is then the latency the relay adds (plus the generator's and the client's queues).
//! The schedule is absolute; a relay that cannot keep up back-pressures the generator, which
//! then forgets debts older than 100 ms (the achieved rate shows it).
//!
//! The flows are sent pre-encoded ([`FrameTemplate`]): the template's constant fields are
//! encoded once per agent, and each flow writes only `time`, `uuid` and `l4` (small encodes of
//! stack values) around them. Cloning the template and letting tonic prost-encode a whole
//! `GetFlowsResponse` per flow made the generators, not the relay, the limit of benchmark 5
//! (issue 13, docs/benchmarks.md). GetFlows is served through the proto crate's
//! `StreamingRoute`, as the agent and the relay do; the bytes are those prost would write for
//! the same flow (tested below).

use std::{
    net::SocketAddr,
    ops::Range,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use flowscope_proto::{
    flow::{Flow, Layer4, layer4},
    get_flows,
    observer::{
        GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest,
        GetDebugEventsResponse, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
        GetNamespacesResponse, GetNodesRequest, GetNodesResponse, Node, ServerStatusRequest,
        ServerStatusResponse,
        observer_server::{Observer, ObserverServer},
    },
    relay::NodeState,
    route::StreamingRoute,
    wkt::Timestamp,
};
use futures::{Stream, StreamExt as _};
use prost::{
    Message,
    bytes::{Buf, BufMut, Bytes, BytesMut},
    encoding::{self, DecodeContext, WireType},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Responses buffered per stream before the generator waits for the relay.
const STREAM_BUFFER: usize = 1024;
/// Frames are written into chunks of this size (one allocation per chunk, not per flow).
const CHUNK: usize = 64 << 10;

/// Field numbers of `flow.Flow` (flow/flow.proto) that change per flow. The response around the
/// flow is written by the proto crate's `get_flows`.
mod tag {
    pub const FLOW_TIME: u32 = flowscope_proto::get_flows::FLOW_TIME_FIELD;
    pub const FLOW_L4: u32 = 6;
    pub const FLOW_UUID: u32 = 34;
}

/// `uuid` of flow `n`: a version-4 layout with `n` (48 bits) as its last group.
const UUID_PREFIX: &[u8; 24] = b"00000000-0000-4000-8000-";
const UUID_LEN: usize = 36;

/// An encoded `observer.GetFlowsResponse`. Encode-only: what the synthetic agents send.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame(pub Bytes);

impl Message for Frame {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Never decoded (tonic's codec needs the trait for both directions).
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// One part of the template flow's encoding, in prost's order.
#[derive(Clone, Debug)]
enum Part {
    /// Bytes of `FrameTemplate::constant`: fields that never change.
    Constant(Range<usize>),
    Time,
    L4,
    Uuid,
}

/// The template flow of one agent, encoded around the fields that change per flow.
#[derive(Clone, Debug)]
pub struct FrameTemplate {
    /// The template's encoding with time, l4 and uuid set (they are skipped: see `parts`).
    constant: Bytes,
    parts: Vec<Part>,
    /// The template's `l4` (TCP: its source port changes per flow; no heap inside), if any.
    l4: Option<Layer4>,
    /// `node_name` of the response.
    node_name: String,
}

impl FrameTemplate {
    /// `template` as agent `name` sends it (`node_name` set to `name`).
    pub fn new(template: &Flow, name: &str) -> FrameTemplate {
        let mut f = template.clone();
        f.node_name = name.to_owned();
        // Present, so that they are found at prost's position for them.
        f.time = Some(Timestamp::default());
        f.uuid = "-".into();
        let l4 = f.l4.clone();
        let constant = Bytes::from(f.encode_to_vec());
        let mut parts = Vec::new();
        let mut rest: &[u8] = &constant;
        let mut run_start = 0;
        while !rest.is_empty() {
            let start = constant.len() - rest.len();
            let (field, wire) = encoding::decode_key(&mut rest).expect("prost's own encoding");
            encoding::skip_field(wire, field, &mut rest, DecodeContext::default())
                .expect("prost's own encoding");
            let end = constant.len() - rest.len();
            let part = match field {
                tag::FLOW_TIME => Part::Time,
                tag::FLOW_L4 => Part::L4,
                tag::FLOW_UUID => Part::Uuid,
                _ => continue,
            };
            if run_start < start {
                parts.push(Part::Constant(run_start..start));
            }
            parts.push(part);
            run_start = end;
        }
        if run_start < constant.len() {
            parts.push(Part::Constant(run_start..constant.len()));
        }
        FrameTemplate {
            constant,
            parts,
            l4,
            node_name: f.node_name,
        }
    }

    /// Writes the response carrying flow `n`, generated at `time`, into `out`.
    pub fn write(&self, n: u64, time: &Timestamp, out: &mut BytesMut) {
        // Only used when the template has an `l4` (else there is no `Part::L4`).
        let mut l4 = self.l4.clone().unwrap_or_default();
        if let Some(layer4::Protocol::Tcp(tcp)) = l4.protocol.as_mut() {
            tcp.source_port = source_port(n);
        }
        let mut uuid = [0u8; UUID_LEN];
        uuid[..UUID_PREFIX.len()].copy_from_slice(UUID_PREFIX);
        let id = n & 0xffff_ffff_ffff;
        for (i, b) in uuid[UUID_PREFIX.len()..].iter_mut().enumerate() {
            *b = b"0123456789abcdef"[((id >> (4 * (11 - i))) & 0xf) as usize];
        }
        let uuid_len = encoding::key_len(tag::FLOW_UUID)
            + encoding::encoded_len_varint(UUID_LEN as u64)
            + UUID_LEN;
        let flow_len: usize = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Constant(r) => r.len(),
                Part::Time => encoding::message::encoded_len(tag::FLOW_TIME, time),
                Part::L4 => encoding::message::encoded_len(tag::FLOW_L4, &l4),
                Part::Uuid => uuid_len,
            })
            .sum();
        let total = get_flows::flow_response_len(flow_len, &self.node_name, Some(time));
        if out.capacity() - out.len() < total {
            out.reserve(total.max(CHUNK));
        }
        get_flows::put_flow_head(flow_len, out);
        for p in &self.parts {
            match p {
                Part::Constant(r) => out.put_slice(&self.constant[r.clone()]),
                Part::Time => encoding::message::encode(tag::FLOW_TIME, time, out),
                Part::L4 => encoding::message::encode(tag::FLOW_L4, &l4, out),
                Part::Uuid => {
                    encoding::encode_key(tag::FLOW_UUID, WireType::LengthDelimited, out);
                    encoding::encode_varint(UUID_LEN as u64, out);
                    out.put_slice(&uuid);
                }
            }
        }
        get_flows::put_tail(&self.node_name, Some(time), out);
    }

    /// The response carrying flow `n`, generated at `time`.
    pub fn frame(&self, n: u64, time: &Timestamp, chunk: &mut BytesMut) -> Frame {
        self.write(n, time, chunk);
        Frame(chunk.split().freeze())
    }
}

/// The TCP source port of flow `n`.
fn source_port(n: u64) -> u32 {
    10_000 + (n % 50_000) as u32
}

#[derive(Clone)]
struct Synth {
    name: Arc<str>,
    /// Flows per second per following stream.
    rate: f64,
    template: Arc<FrameTemplate>,
    sent: Arc<AtomicU64>,
    started: Instant,
    cancel: CancellationToken,
}

impl Synth {
    async fn generate(self, tx: mpsc::Sender<Result<Frame, Status>>) {
        let start = Instant::now();
        let mut produced = 0u64;
        let debt_max = (self.rate / 10.0) as u64;
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut chunk = BytesMut::new();
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tx.closed() => return,
                _ = tick.tick() => {}
            }
            let due = (start.elapsed().as_secs_f64() * self.rate) as u64;
            if due > produced + debt_max {
                produced = due - debt_max;
            }
            while produced < due {
                let frame = self.template.frame(produced, &Timestamp::now(), &mut chunk);
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
                produced += 1;
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// GetFlows, answered with encoded frames.
    fn get_flows_encoded(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<ReceiverStream<Result<Frame, Status>>>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        if request.get_ref().follow {
            tokio::spawn(self.clone().generate(tx));
        }
        // Without follow the stream ends at once: no history, the benchmark only follows.
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl Observer for Synth {
    type GetFlowsStream = BoxStream<GetFlowsResponse>;
    type GetAgentEventsStream = BoxStream<GetAgentEventsResponse>;
    type GetDebugEventsStream = BoxStream<GetDebugEventsResponse>;

    /// Not reached through the server (the route serves GetFlows); the same flows, decoded.
    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let frames = self.get_flows_encoded(request)?.into_inner();
        Ok(Response::new(Box::pin(frames.map(|f| {
            f.and_then(|f| {
                GetFlowsResponse::decode(f.0).map_err(|e| Status::internal(e.to_string()))
            })
        }))))
    }

    async fn get_agent_events(
        &self,
        _: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::empty())))
    }

    async fn get_debug_events(
        &self,
        _: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::empty())))
    }

    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Ok(Response::new(GetNodesResponse {
            nodes: vec![Node {
                name: self.name.to_string(),
                version: "synthetic".into(),
                state: NodeState::NodeConnected as i32,
                uptime_ns: self.started.elapsed().as_nanos() as u64,
                max_flows: 4095,
                seen_flows: self.sent.load(Ordering::Relaxed),
                ..Node::default()
            }],
        }))
    }

    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse::default()))
    }

    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(ServerStatusResponse {
            max_flows: 4095,
            seen_flows: self.sent.load(Ordering::Relaxed),
            uptime_ns: self.started.elapsed().as_nanos() as u64,
            version: "flowscope-bench synthetic agent".into(),
            flows_rate: self.rate,
            ..ServerStatusResponse::default()
        }))
    }
}

/// One synthetic agent. Stops (streams end, server aborted) on drop.
pub struct SynthAgent {
    /// Its name (the node name of its flows).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    sent: Arc<AtomicU64>,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl SynthAgent {
    /// Starts an agent named `name` on 127.0.0.1 (a free port) that streams `rate` flows per
    /// second to each follower. Call from within the runtime.
    pub async fn start(name: &str, rate: f64, template: &Flow) -> anyhow::Result<SynthAgent> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sent = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let svc = Synth {
            name: name.into(),
            rate,
            template: Arc::new(FrameTemplate::new(template, name)),
            sent: sent.clone(),
            started: Instant::now(),
            cancel: cancel.clone(),
        };
        let route = StreamingRoute::new(
            "/observer.Observer/GetFlows",
            ObserverServer::new(svc.clone()),
            Arc::new(move |request| svc.get_flows_encoded(request)),
        );
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(route)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await;
        });
        Ok(SynthAgent {
            name: name.into(),
            addr,
            sent,
            cancel,
            server,
        })
    }

    /// Flows generated so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for SynthAgent {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.server.abort();
    }
}

#[cfg(test)]
mod tests {
    use flowscope_proto::{flow::Layer4, observer::get_flows_response::ResponseTypes};

    use super::*;

    /// What the generator made before it sent pre-encoded frames: the template, cloned, with
    /// the flow's time, node name, uuid and source port.
    fn cloned_response(template: &Flow, name: &str, n: u64, time: Timestamp) -> GetFlowsResponse {
        let mut f = template.clone();
        f.time = Some(time);
        f.node_name = name.to_string();
        f.uuid = format!("00000000-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff);
        if let Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(tcp)),
        }) = f.l4.as_mut()
        {
            tcp.source_port = 10_000 + (n % 50_000) as u32;
        }
        GetFlowsResponse {
            node_name: f.node_name.clone(),
            time: f.time,
            response_types: Some(ResponseTypes::Flow(f)),
        }
    }

    #[test]
    fn a_frame_decodes_as_the_flow_the_cloning_generator_made() {
        let template = crate::micro::Fixture::new().flow;
        assert!(
            matches!(
                template.l4.as_ref().and_then(|l4| l4.protocol.as_ref()),
                Some(layer4::Protocol::Tcp(_))
            ),
            "the template is a TCP flow (its source port varies)"
        );
        let t = FrameTemplate::new(&template, "node-7");
        let mut chunk = BytesMut::new();
        let mut seen = std::collections::HashSet::new();
        // Source ports on both sides of a varint's 2/3-byte boundary (16384), uuids up to
        // their 48-bit wrap, times with small and large nanos.
        for (i, n) in [
            0u64,
            1,
            6_383,
            6_384,
            49_999,
            50_000,
            0xffff_ffff_ffff,
            1 << 48,
        ]
        .into_iter()
        .enumerate()
        {
            let time = Timestamp {
                seconds: 1_700_000_000 + i as i64,
                nanos: [0, 1, 999_999_999][i % 3],
            };
            let frame = t.frame(n, &time, &mut chunk);
            let want = cloned_response(&template, "node-7", n, time);
            let got = GetFlowsResponse::decode(frame.0.clone()).expect("a GetFlowsResponse");
            assert_eq!(got, want, "flow {n}");
            assert_eq!(frame.0, want.encode_to_vec(), "flow {n}: prost's bytes");
            seen.insert(frame.0);
        }
        assert_eq!(seen.len(), 8, "every flow differs (time, uuid, port)");
    }

    #[test]
    fn a_flow_without_l4_gets_none() {
        let template = Flow {
            node_name: "ignored".into(),
            ..Flow::default()
        };
        let t = FrameTemplate::new(&template, "n");
        let time = Timestamp {
            seconds: 5,
            nanos: 6,
        };
        let frame = t.frame(3, &time, &mut BytesMut::new());
        let want = cloned_response(&template, "n", 3, time);
        assert_eq!(
            GetFlowsResponse::decode(frame.0.clone()).expect("decodes"),
            want
        );
        assert_eq!(frame.0, want.encode_to_vec());
    }
}
