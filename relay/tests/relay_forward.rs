//! Flows go through the relay encoded: the client receives, byte for byte,
//! the `flow.Flow` an agent encoded (fields the relay's `.proto` does not
//! know included), merged in time order across agents, and the real types
//! decode them. The agents here send hand-encoded bytes and the client reads
//! raw bytes, so that nothing in the check goes through the relay's own
//! message type.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use flowscope_proto::flow::{Flow, Ip};
use flowscope_proto::observer::get_flows_response::ResponseTypes;
use flowscope_proto::observer::observer_server::{Observer, ObserverServer};
use flowscope_proto::observer::{
    GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse,
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, Node, ServerStatusRequest, ServerStatusResponse,
};
use flowscope_proto::relay::NodeState;
use flowscope_proto::wkt::Timestamp;
use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, http};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tonic_prost::{ProstDecoder, ProstEncoder};

const GET_FLOWS: &str = "/observer.Observer/GetFlows";

// ---------------------------------------------------------------------------
// Codecs that move encoded messages as they are
// ---------------------------------------------------------------------------

#[derive(Default)]
struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put(item);
        Ok(())
    }
}

#[derive(Default)]
struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

/// An agent's GetFlows: decodes the request, sends responses encoded by hand.
#[derive(Default)]
struct AgentCodec;

impl Codec for AgentCodec {
    type Encode = Bytes;
    type Decode = GetFlowsRequest;
    type Encoder = BytesEncoder;
    type Decoder = ProstDecoder<GetFlowsRequest>;
    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// A client's GetFlows: encodes the request, returns each response's bytes.
#[derive(Default)]
struct ClientCodec;

impl Codec for ClientCodec {
    type Encode = GetFlowsRequest;
    type Decode = Bytes;
    type Encoder = ProstEncoder<GetFlowsRequest>;
    type Decoder = BytesDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }
    fn decoder(&mut self) -> BytesDecoder {
        BytesDecoder
    }
}

// ---------------------------------------------------------------------------
// Hand-encoded responses
// ---------------------------------------------------------------------------

/// A flow as a newer agent might encode it: known fields, then one this
/// `.proto` does not have (a decode and re-encode with our types would drop it).
fn flow_bytes(node: &str, seq: u64, time: Timestamp) -> Bytes {
    let flow = Flow {
        time: Some(time),
        uuid: format!("{node}/{seq}"),
        node_name: node.to_string(),
        verdict: 1,
        ip: Some(Ip {
            source: "10.244.0.213".into(),
            destination: "1.0.0.1".into(),
            ip_version: 1,
            ..Default::default()
        }),
        source_names: vec!["x".repeat(200)],
        ..Default::default()
    };
    let mut bytes = flow.encode_to_vec();
    encoding::string::encode(4242, &format!("unknown to us, flow {seq}"), &mut bytes);
    Bytes::from(bytes)
}

/// A GetFlowsResponse, encoded by hand; `with_time: false` leaves out the
/// response's `time` (the relay then sorts on the flow's own time).
fn response_bytes(node: &str, flow: &Bytes, time: Timestamp, with_time: bool) -> Bytes {
    let mut out = Vec::new();
    encoding::bytes::encode(1, flow, &mut out);
    encoding::string::encode(1000, &node.to_string(), &mut out);
    if with_time {
        encoding::message::encode(1001, &time, &mut out);
    }
    Bytes::from(out)
}

/// The top-level fields of an encoded GetFlowsResponse that the test reads:
/// (field 1 bytes, field 2 present, node_name, time).
struct Parsed {
    flow: Option<Bytes>,
    node_status: Option<Bytes>,
    node_name: String,
    time: Option<Timestamp>,
}

fn parse(mut msg: Bytes) -> Parsed {
    let mut parsed = Parsed {
        flow: None,
        node_status: None,
        node_name: String::new(),
        time: None,
    };
    let ctx = DecodeContext::default();
    while msg.has_remaining() {
        let (tag, wire_type) = encoding::decode_key(&mut msg).unwrap();
        match tag {
            1 | 2 => {
                assert_eq!(wire_type, WireType::LengthDelimited);
                let mut bytes = Bytes::new();
                encoding::bytes::merge(wire_type, &mut bytes, &mut msg, ctx.clone()).unwrap();
                if tag == 1 {
                    assert!(parsed.flow.is_none(), "field 1 once");
                    parsed.flow = Some(bytes);
                } else {
                    parsed.node_status = Some(bytes);
                }
            }
            1000 => {
                encoding::string::merge(wire_type, &mut parsed.node_name, &mut msg, ctx.clone())
                    .unwrap()
            }
            1001 => encoding::message::merge(
                wire_type,
                parsed.time.get_or_insert_with(Timestamp::default),
                &mut msg,
                ctx.clone(),
            )
            .unwrap(),
            _ => encoding::skip_field(wire_type, tag, &mut msg, ctx.clone()).unwrap(),
        }
    }
    parsed
}

// ---------------------------------------------------------------------------
// An agent sending hand-encoded flows
// ---------------------------------------------------------------------------

/// Answers ServerStatus and GetNodes (the relay's probes); GetFlows is
/// served by [`RawAgent`].
#[derive(Clone)]
struct Probes {
    name: String,
}

#[tonic::async_trait]
impl Observer for Probes {
    type GetFlowsStream = ReceiverStream<Result<GetFlowsResponse, Status>>;
    async fn get_flows(
        &self,
        _: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        Err(Status::internal("served by RawAgent"))
    }
    type GetAgentEventsStream = ReceiverStream<Result<GetAgentEventsResponse, Status>>;
    async fn get_agent_events(
        &self,
        _: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented("no"))
    }
    type GetDebugEventsStream = ReceiverStream<Result<GetDebugEventsResponse, Status>>;
    async fn get_debug_events(
        &self,
        _: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Ok(Response::new(GetNodesResponse {
            nodes: vec![Node {
                name: self.name.clone(),
                state: NodeState::NodeConnected as i32,
                ..Default::default()
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
            version: "raw-agent".into(),
            ..Default::default()
        }))
    }
}

/// GetFlows answers with `responses` (already encoded), whatever the request.
#[derive(Clone)]
struct RawAgent {
    responses: Arc<Vec<Bytes>>,
    probes: ObserverServer<Probes>,
}

impl tonic::server::NamedService for RawAgent {
    const NAME: &'static str = "observer.Observer";
}

impl tower::Service<http::Request<tonic::body::Body>> for RawAgent {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != GET_FLOWS {
            return self.probes.call(req);
        }
        let responses = self.responses.clone();
        Box::pin(async move {
            let method = tower::service_fn(move |_: Request<GetFlowsRequest>| {
                let items: Vec<Result<Bytes, Status>> = responses.iter().cloned().map(Ok).collect();
                async move { Ok::<_, Status>(Response::new(tokio_stream::iter(items))) }
            });
            Ok(tonic::server::Grpc::new(AgentCodec)
                .server_streaming(method, req)
                .await)
        })
    }
}

/// Serves `responses` on 127.0.0.1 until `stop` fires.
async fn raw_agent(name: &str, responses: Vec<Bytes>, stop: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let agent = RawAgent {
        responses: Arc::new(responses),
        probes: ObserverServer::new(Probes {
            name: name.to_string(),
        }),
    };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(agent)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned()),
    );
    addr
}

async fn raw_get_flows(addr: SocketAddr, request: GetFlowsRequest) -> Vec<Bytes> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut stream = grpc
        .server_streaming(
            Request::new(request),
            http::uri::PathAndQuery::from_static(GET_FLOWS),
            ClientCodec,
        )
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    tokio::time::timeout(LONG, async {
        while let Some(msg) = stream.message().await.unwrap() {
            out.push(msg);
        }
    })
    .await
    .expect("stream ends in time");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_receive_the_agents_flow_bytes_unchanged_and_in_time_order() {
    init_tracing();
    let stop = CancellationToken::new();
    let base = Timestamp::now().as_nanos() - 10_000_000_000;
    // node-a's flows at 0, 10, 20 ... ms; node-b's at 5, 15, ... ms, and
    // node-b leaves out the response's `time`: the relay sorts on the flow's.
    let mut sent: BTreeMap<String, (String, Bytes, i64)> = BTreeMap::new();
    let mut peers = Vec::new();
    for (node, offset, with_time) in [("node-a", 0, true), ("node-b", 5_000_000, false)] {
        let mut responses = Vec::new();
        for seq in 0..150u64 {
            let t = base + offset + seq as i64 * 10_000_000;
            let time = Timestamp::from_nanos(t);
            let flow = flow_bytes(node, seq, time);
            responses.push(response_bytes(node, &flow, time, with_time));
            sent.insert(format!("{node}/{seq}"), (node.to_string(), flow, t));
        }
        let addr = raw_agent(node, responses, stop.clone()).await;
        peers.push(format!("{node}={addr}"));
    }
    let relay = start_relay(test_config(&peers)).await;
    wait_connected(&relay, 2).await;

    let request = GetFlowsRequest {
        number: 150,
        ..Default::default()
    };
    let raw = raw_get_flows(relay.addr, request.clone()).await;
    let parsed: Vec<Parsed> = raw.iter().cloned().map(parse).collect();
    assert!(parsed[0].node_status.is_some(), "NODE_CONNECTED first");
    let mut times = Vec::new();
    let mut seen = 0;
    for msg in &parsed {
        let Some(bytes) = &msg.flow else { continue };
        let flow = Flow::decode(bytes.clone()).expect("a Flow");
        let (node, sent_bytes, t) = &sent[&flow.uuid];
        assert_eq!(
            bytes, sent_bytes,
            "flow {} forwarded byte for byte",
            flow.uuid
        );
        assert_eq!(&msg.node_name, node);
        // The relay forwards the response's time as the agent sent it (or not).
        match node.as_str() {
            "node-a" => assert_eq!(msg.time.map(|t| t.as_nanos()), Some(*t)),
            _ => assert_eq!(msg.time, None),
        }
        times.push(*t);
        seen += 1;
    }
    assert_eq!(seen, 300, "every flow of both agents");
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "flows out of order across agents"
    );

    // Stock clients decode the same stream with the real types: the Flow the
    // agent encoded (its unknown field aside, which the real types skip).
    let mut client = client(relay.addr).await;
    let mut stream = client.get_flows(request).await.unwrap().into_inner();
    let mut decoded = 0;
    tokio::time::timeout(LONG, async {
        while let Some(resp) = stream.message().await.expect("decodes") {
            if let Some(ResponseTypes::Flow(flow)) = resp.response_types {
                let (node, bytes, _) = &sent[&flow.uuid];
                assert_eq!(flow, Flow::decode(bytes.clone()).unwrap());
                assert_eq!(&resp.node_name, node);
                decoded += 1;
            }
        }
    })
    .await
    .expect("stream ends in time");
    assert_eq!(decoded, 300);

    relay.stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_of_fake_agents_arrives_as_the_agents_encoded_it() {
    init_tracing();
    // The usual fake agents (prost-encoded flows, 50 each in the history): what a
    // client decodes through the relay equals what it decodes from the agent.
    let agents: Vec<FakeAgent> = (0..3)
        .map(|i| {
            FakeAgent::start(
                &format!("node-{i}"),
                AgentOpts {
                    history: 50,
                    history_offset: Duration::from_millis(3 * i as u64),
                    payload: 64,
                    ..Default::default()
                },
            )
        })
        .collect();
    let peers: Vec<String> = agents.iter().map(FakeAgent::peer).collect();
    let relay = start_relay(test_config(&peers)).await;
    wait_connected(&relay, 3).await;
    let request = GetFlowsRequest {
        number: 50,
        ..Default::default()
    };
    let mut direct: BTreeMap<String, Bytes> = BTreeMap::new();
    for agent in &agents {
        for msg in raw_get_flows(agent.addr(), request.clone()).await {
            if let Some(bytes) = parse(msg).flow {
                let uuid = Flow::decode(bytes.clone()).unwrap().uuid;
                direct.insert(uuid, bytes);
            }
        }
    }
    assert_eq!(direct.len(), 150);
    let mut times = Vec::new();
    for msg in raw_get_flows(relay.addr, request).await {
        let parsed = parse(msg);
        if let Some(bytes) = parsed.flow {
            let flow = Flow::decode(bytes.clone()).unwrap();
            assert_eq!(direct[&flow.uuid], bytes);
            times.push(parsed.time.unwrap().as_nanos());
        }
    }
    assert_eq!(times.len(), 150);
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "flows out of order");
    relay.stop().await;
}
