//! monitor-agent: flowscope's per-node agent.
//!
//! It owns the kernel side (loading the programs of `monitor-ebpf`, attaching them to the
//! node's interfaces as they come and go) and turns the kernel's events into flows. It must not
//! depend on the relay or the CLI; both talk to it only through the API in `proto`.
//!
//! - [`datapath`]: load, configure, attach/detach, read counters and conntrack;
//! - [`ifaces`]: which interfaces to observe, and rtnetlink notifications;
//! - [`reader`]: the ring-buffer reader thread;
//! - [`event`]: decoded kernel events; [`flows`]: events to Hubble flows;
//! - [`endpoints`]: pod metadata and identities; [`store`]: the flow history;
//! - [`service`]: the gRPC API (Observer, Inspector, health, reflection);
//! - [`metrics`]: Prometheus metrics (Hubble's and our own); [`export`]: flows to files;
//! - [`kernel`], [`btf`]: facts about the running kernel;
//! - [`agent`]: the main loop tying them together.

pub mod agent;
pub mod btf;
pub mod datapath;
pub mod endpoints;
pub mod event;
pub mod export;
pub mod flows;
pub mod ifaces;
pub mod kernel;
pub mod metrics;
#[cfg(test)]
mod min_kernel;
pub mod nat;
pub mod reader;
pub mod service;
pub mod store;
pub mod unanswered;
