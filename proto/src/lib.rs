//! flowscope's gRPC API.
//!
//! Owns the `.proto` files (in `proto/proto/`) and the Rust code generated
//! from them at build time (protox + tonic-prost-build, no system `protoc`):
//!
//! - [`flow`], [`observer`], [`relay`], [`peer`]: Hubble's API, wire-compatible
//!   with Cilium's (same packages, names and numbers), so stock Hubble
//!   clients talk to our agent and relay;
//! - [`flowscope::v1`]: our own `Inspector` service (conntrack, NAT, agent
//!   status) and the `FlowExtension` we put in `Flow.extensions`;
//! - [`drop_reason`]: the kernel's drop reasons in Hubble's `DropReason` words;
//! - [`fieldmask`]: field masks on `flow.Flow`, validated as Hubble validates them;
//! - [`get_flows`]: a `GetFlowsResponse` around an already-encoded flow (writer and light
//!   reader, the field numbers named once), for the agent, the relay and the benchmarks;
//! - [`route`]: one server-streaming method served by a hand-written handler (GetFlows with
//!   [`get_flows`]'s messages);
//! - [`json`]: Hubble's JSON (protojson with proto field names) through
//!   serde impls on every generated type;
//! - [`FILE_DESCRIPTOR_SET`] for gRPC server reflection.
//!
//! Every service has a client (`observer::observer_client::ObserverClient`)
//! and a server (`observer::observer_server::ObserverServer`). This crate
//! enables only tonic's `codegen` feature; binaries enable `transport`.
//!
//! Must not depend on anything of the agent (aya, the ABI crate): the relay
//! and the CLI use it alone.

pub mod drop_reason;
pub mod fieldmask;
pub mod get_flows;
pub mod json;
pub mod names;
pub mod route;
pub mod wkt;

mod helpers;

/// Hubble's flow types (package `flow`).
#[allow(
    clippy::all,
    clippy::pedantic,
    deprecated,
    missing_docs,
    rustdoc::all,
    reason = "generated code; `deprecated` fields are Hubble's and we still fill them"
)]
pub mod flow {
    tonic::include_proto!("flow");
    // protojson serde impls (pbjson-build, patched in build.rs).
    include!(concat!(env!("OUT_DIR"), "/flow.serde.rs"));
}

/// Hubble's Observer service (package `observer`).
#[allow(
    clippy::all,
    clippy::pedantic,
    deprecated,
    missing_docs,
    rustdoc::all,
    reason = "generated code"
)]
pub mod observer {
    tonic::include_proto!("observer");
    // protojson serde impls (pbjson-build, patched in build.rs).
    include!(concat!(env!("OUT_DIR"), "/observer.serde.rs"));
}

/// Hubble Relay's node status messages (package `relay`).
#[allow(
    clippy::all,
    clippy::pedantic,
    deprecated,
    missing_docs,
    rustdoc::all,
    reason = "generated code"
)]
pub mod relay {
    tonic::include_proto!("relay");
    // protojson serde impls (pbjson-build, patched in build.rs).
    include!(concat!(env!("OUT_DIR"), "/relay.serde.rs"));
}

/// Hubble's peer discovery service (package `peer`).
#[allow(
    clippy::all,
    clippy::pedantic,
    deprecated,
    missing_docs,
    rustdoc::all,
    reason = "generated code"
)]
pub mod peer {
    tonic::include_proto!("peer");
    // protojson serde impls (pbjson-build, patched in build.rs).
    include!(concat!(env!("OUT_DIR"), "/peer.serde.rs"));
}

/// flowscope's own packages.
pub mod flowscope {
    /// Package `flowscope.v1`: the `Inspector` service and flow extensions.
    #[allow(
        clippy::all,
        clippy::pedantic,
        deprecated,
        missing_docs,
        rustdoc::all,
        reason = "generated code"
    )]
    pub mod v1 {
        tonic::include_proto!("flowscope.v1");
        // protojson serde impls (pbjson-build, patched in build.rs).
        include!(concat!(env!("OUT_DIR"), "/flowscope.v1.serde.rs"));
    }
}

/// The encoded `FileDescriptorSet` of all our `.proto` files and their
/// imports (the well-known types), with source info. Register it with
/// `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`
/// for both the v1 and v1alpha reflection services.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("flowscope_descriptor");

/// The gRPC health service name the stock `hubble status` checks before it
/// calls ServerStatus.
pub const HUBBLE_HEALTH_SERVICE: &str = "hubble.server.Observer";

/// Response header naming the agent's version (Hubble's convention).
pub const SERVER_VERSION_HEADER: &str = "hubble-server-version";

/// Response header naming the relay's version (Hubble's convention).
pub const RELAY_VERSION_HEADER: &str = "hubble-relay-version";

/// Request header with which a flowscope client asks for `Flow.extensions`
/// (`flowscope.v1.FlowExtension`). Without it servers leave the field empty:
/// a stock Hubble client cannot print an Any of a type it does not know.
pub const EXTENSIONS_HEADER: &str = "flowscope-extensions";
