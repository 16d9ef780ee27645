//! Stage 2, decode and enrich: a kernel record becomes a Hubble flow.
//!
//! - [`event`]: the ring's records, decoded (no allocation, no enrichment);
//! - [`flows`]: an event plus endpoints ([`crate::endpoints`]) and NAT to a `flow.Flow`;
//! - [`record`]: what the history keeps of a flow, and the one place its facts are worked out;
//! - [`nat`]: the kernel conntrack's translations, joined to our hops;
//! - [`unanswered`]: connections that never got a reply, found by walking our conntrack;
//! - [`l7`]: captured DNS and HTTP payloads to Hubble's L7 flows; [`fqdn`]: the names DNS
//!   answers gave to addresses, for `source_names` / `destination_names`.

pub mod event;
pub mod flows;
pub mod fqdn;
pub mod l7;
pub mod nat;
pub mod record;
pub mod unanswered;
