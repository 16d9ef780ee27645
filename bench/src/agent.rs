//! The agent under test: the real `monitor-agent` release binary in the scenario's node
//! namespace, in a cgroup of its own, with its per-stage counters (Inspector API) and a gRPC
//! follower that takes every flow (Observer API, `GetFlows` with `follow`).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, anyhow};
use flowscope_proto::{
    flowscope::v1::{AgentStatusRequest, StageCounters, inspector_client::InspectorClient},
    get_flows::{self, Event, LightResponse},
    observer::{GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes},
    wkt::Timestamp,
};
use futures::StreamExt as _;
use prost::Message;
use testbed::{Scenario, bin_path, client, process::Spawned};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

use crate::cgroup::CpuMeter;

/// Time allowed for an agent to load, attach and answer on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest gRPC message a client accepts (a flow is about 1 KiB).
const MAX_MESSAGE: usize = 64 << 20;

/// A running agent. Dropping it kills the agent (by PID) and removes its cgroup.
pub struct Agent {
    // Field order is drop order: the process goes first, then its (now empty) cgroup.
    proc: Spawned,
    cpu: CpuMeter,
    channel: Channel,
}

impl Agent {
    /// Starts `monitor-agent` in the node of `s` with `--aggregation aggregation`, the
    /// scenario's endpoints file, the gateway device, and `extra` options; returns once it
    /// answers on its socket (programs attached).
    pub fn start(
        rt: &Runtime,
        s: &Scenario,
        aggregation: &str,
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        let socket = s.agent_socket();
        let _ = std::fs::remove_file(&socket);
        let endpoints = s.endpoints_file();
        let mut args = vec![
            "--socket",
            socket.to_str().context("socket path")?,
            "--endpoints-file",
            endpoints.to_str().context("endpoints path")?,
            "--node-name",
            "bench-node",
            "--host-device",
            testbed::scenario::HOST_DEV,
            "--aggregation",
            aggregation,
        ];
        args.extend_from_slice(extra);
        let proc = Spawned::start(&s.node(), &bin_path("monitor-agent"), &args);
        let cpu = CpuMeter::attach(proc.pid(), "agent");
        let channel = rt
            .block_on(client::wait_for_socket(&socket, START_TIMEOUT))
            .map_err(|e| anyhow!("{e}; agent stderr:\n{}", proc.stderr()))?;
        Ok(Agent { proc, cpu, channel })
    }

    /// The agent's PID.
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// A channel to the agent's API.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// CPU time used by the agent so far, in µs.
    pub fn cpu_usec(&self) -> u64 {
        self.cpu.usec()
    }

    /// Where the CPU numbers come from.
    pub fn cpu_source(&self) -> &'static str {
        self.cpu.source()
    }

    /// The per-stage counters (`flowscope.v1.Inspector/GetAgentStatus`).
    pub fn counters(&self, rt: &Runtime) -> anyhow::Result<StageCounters> {
        let mut c = InspectorClient::new(self.channel.clone());
        let resp = rt
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    c.get_agent_status(AgentStatusRequest::default()),
                )
                .await
            })
            .context("GetAgentStatus timed out")?
            .context("GetAgentStatus")?
            .into_inner();
        resp.agents
            .into_iter()
            .next()
            .and_then(|a| a.counters)
            .context("GetAgentStatus without counters")
    }

    /// Sends a signal to the agent (SIGSTOP / SIGCONT for the burst benchmark).
    pub fn signal(&self, sig: i32) {
        self.proc.signal(sig);
    }

    /// Stops the agent cleanly (SIGINT: it detaches and removes its socket).
    pub fn stop(mut self) {
        self.proc.stop();
    }

    /// What the agent wrote on stderr.
    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }
}

/// Losses of every stage between two counter readings.
pub fn lost_between(a: &StageCounters, b: &StageCounters) -> u64 {
    (b.lost_kernel_ring - a.lost_kernel_ring)
        + (b.lost_decode_queue - a.lost_decode_queue)
        + (b.lost_history - a.lost_history)
}

/// What a follower reads of one `GetFlowsResponse`.
enum Seen {
    /// A flow, with its `time`.
    Flow(Option<Timestamp>),
    /// LostEvents: this many.
    Lost(u64),
    Other,
}

/// A response type a follower can decode.
trait Read: Message + Default + Send + 'static {
    fn seen(self) -> Seen;
}

impl Read for GetFlowsResponse {
    fn seen(self) -> Seen {
        match self.response_types {
            Some(ResponseTypes::Flow(flow)) => Seen::Flow(flow.time),
            Some(ResponseTypes::LostEvents(e)) => Seen::Lost(e.num_events_lost),
            _ => Seen::Other,
        }
    }
}

/// The light follower reads the proto crate's `LightResponse`: a flow stays encoded (a slice of
/// the receive buffer) and only its `time` is read from it; of LostEvents, the count.
impl Read for LightResponse {
    fn seen(self) -> Seen {
        match self.event {
            Some(Event::Flow(bytes)) => Seen::Flow(get_flows::flow_time(&bytes)),
            Some(Event::LostEvents(e)) => Seen::Lost(e.num_events_lost),
            _ => Seen::Other,
        }
    }
}

/// A gRPC client following every flow (`GetFlows` with `follow`, no filter), counting flows and
/// LostEvents, optionally recording each flow's latency (receive time − flow time). Aborted
/// on drop.
pub struct Follower {
    /// Flows received.
    pub flows: Arc<AtomicU64>,
    /// Events reported lost in LostEvents (any source).
    pub lost: Arc<AtomicU64>,
    /// Latencies in µs while recording is on (None: off).
    latencies: Arc<Mutex<Option<Vec<u32>>>>,
    /// The stream's error, if it ended with one.
    pub error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    /// Starts following on `channel` (an agent or a relay) and waits until the stream is open.
    /// Decodes every flow in full, as a Hubble client does.
    pub fn start(rt: &Runtime, channel: Channel) -> anyhow::Result<Follower> {
        Self::start_reading::<GetFlowsResponse>(rt, channel)
    }

    /// As [`Follower::start`], but reads of each flow only its `time` (the rest is skipped,
    /// not built): a client that costs the machine less, so that benchmarks 3 to 6 measure the
    /// agent or the relay rather than their client (issue 13).
    pub fn start_light(rt: &Runtime, channel: Channel) -> anyhow::Result<Follower> {
        Self::start_reading::<LightResponse>(rt, channel)
    }

    fn start_reading<R: Read>(rt: &Runtime, channel: Channel) -> anyhow::Result<Follower> {
        let flows = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let latencies: Arc<Mutex<Option<Vec<u32>>>> = Arc::default();
        let error: Arc<Mutex<Option<String>>> = Arc::default();
        let req = GetFlowsRequest {
            follow: true,
            ..GetFlowsRequest::default()
        };
        // What the generated client's get_flows does, with `R` as the response type.
        let open = async move {
            let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE);
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unknown(format!("service not ready: {e}")))?;
            grpc.server_streaming(
                tonic::Request::new(req),
                tonic::codegen::http::uri::PathAndQuery::from_static("/observer.Observer/GetFlows"),
                tonic_prost::ProstCodec::<GetFlowsRequest, R>::default(),
            )
            .await
        };
        let mut stream = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), open).await })
            .context("GetFlows timed out")?
            .context("GetFlows")?
            .into_inner();
        let (f, l, lat, err) = (
            flows.clone(),
            lost.clone(),
            latencies.clone(),
            error.clone(),
        );
        let task = rt.spawn(async move {
            while let Some(msg) = stream.next().await {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        *err.lock().expect("error") = Some(e.to_string());
                        return;
                    }
                };
                match msg.seen() {
                    Seen::Flow(time) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        let mut rec = lat.lock().expect("latencies");
                        if let (Some(v), Some(t)) = (rec.as_mut(), time) {
                            let sent = t.as_nanos();
                            let now = SystemTime::now()
                                .duration_since(SystemTime::UNIX_EPOCH)
                                .map_or(0, |d| d.as_nanos() as i64);
                            v.push(((now - sent).max(0) / 1000).min(u32::MAX as i64) as u32);
                        }
                    }
                    Seen::Lost(n) => {
                        l.fetch_add(n, Ordering::Relaxed);
                    }
                    Seen::Other => {}
                }
            }
        });
        Ok(Follower {
            flows,
            lost,
            latencies,
            error,
            task,
        })
    }

    /// Flows received so far.
    pub fn flows(&self) -> u64 {
        self.flows.load(Ordering::Relaxed)
    }

    /// Events reported lost so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Starts recording latencies (clearing earlier ones).
    pub fn record_latency(&self) {
        *self.latencies.lock().expect("latencies") = Some(Vec::with_capacity(1 << 20));
    }

    /// Stops recording and returns the latencies recorded, in µs.
    pub fn take_latencies(&self) -> Vec<u32> {
        self.latencies
            .lock()
            .expect("latencies")
            .take()
            .unwrap_or_default()
    }

    /// The error the stream ended with, if any.
    pub fn error(&self) -> Option<String> {
        self.error.lock().expect("error").clone()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use flowscope_proto::flow::{LostEvent, LostEventSource};

    use super::*;

    fn seen<R: Read>(resp: &GetFlowsResponse) -> (Option<Option<Timestamp>>, Option<u64>) {
        match R::decode(resp.encode_to_vec().as_slice())
            .expect("decodes")
            .seen()
        {
            Seen::Flow(t) => (Some(t), None),
            Seen::Lost(n) => (None, Some(n)),
            Seen::Other => (None, None),
        }
    }

    #[test]
    fn the_light_decode_reads_what_the_full_one_reads() {
        let flow = crate::micro::Fixture::new().response;
        let lost = GetFlowsResponse {
            node_name: "n".into(),
            response_types: Some(ResponseTypes::LostEvents(LostEvent {
                source: LostEventSource::HubbleRingBuffer as i32,
                num_events_lost: 17,
                ..LostEvent::default()
            })),
            ..GetFlowsResponse::default()
        };
        let status = GetFlowsResponse {
            response_types: Some(ResponseTypes::NodeStatus(Default::default())),
            ..GetFlowsResponse::default()
        };
        let (t, _) = seen::<GetFlowsResponse>(&flow);
        assert!(matches!(t, Some(Some(_))), "the fixture's flow has a time");
        for resp in [&flow, &lost, &status] {
            assert_eq!(
                seen::<LightResponse>(resp),
                seen::<GetFlowsResponse>(resp),
                "{resp:?}"
            );
        }
    }
}
