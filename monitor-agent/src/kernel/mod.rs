//! Stage 1, the kernel side: load the programs of `monitor-ebpf`, attach them to the node's
//! interfaces as they come and go, and read their ring buffer.
//!
//! - [`datapath`]: load, configure, attach/detach, read counters and conntrack;
//! - [`filter`]: `--kernel-filter`, compiled for the programs;
//! - [`ifaces`]: which interfaces to observe, and rtnetlink notifications;
//! - [`reader`]: the ring-buffer reader thread (records, not flows: decoding is [`crate::decode`]);
//! - [`facts`], [`btf`]: facts about the running kernel (offsets, drop reasons, clocks).

pub mod btf;
pub mod datapath;
pub mod facts;
pub mod filter;
pub mod ifaces;
#[cfg(test)]
mod min_kernel;
pub mod reader;
