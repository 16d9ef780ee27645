//! monitor-agent: flowscope's per-node agent.
//!
//! It must not depend on the relay or the CLI; both talk to it only through the API in `proto`.
//!
//! # Layout: the pipeline's order
//!
//! 1. [`kernel`]: load and attach the programs, follow interfaces, read the ring buffer;
//! 2. [`decode`]: a ring record becomes an `Event`, then a `FlowRecord`: the event with shared
//!    handles to its enrichment from [`endpoints`] (pods, identities), NAT and DNS names. The
//!    Hubble `flow.Flow` is built from it only where a consumer needs one. Unanswered
//!    connections are found here too;
//! 3. after decode, each flow goes to the hooks, in this order: [`history`] (what GetFlows
//!    serves), [`metrics`] (Prometheus), [`export`] (files);
//! 4. [`service`]: the gRPC API (Observer, Inspector, Peer, health) over the history.
//!
//! [`agent`] ties them together: its `Sink` is the one place an event passes through all stages,
//! and its `Shutdown` (`agent/shutdown.rs`) the one place that stops them, in order: watchers,
//! detach, drain the reader, close the exporters, stop serving.

pub mod agent;
pub mod decode;
pub mod endpoints;
pub mod export;
pub mod history;
pub mod kernel;
pub mod metrics;
pub mod service;
