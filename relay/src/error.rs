//! Errors, one enum per boundary: starting the relay ([`RelayError`]),
//! loading TLS material ([`TlsError`]), parsing addresses ([`AddressError`])
//! and answering a gRPC call ([`ObserverError`], which becomes a
//! `tonic::Status` with a real code).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use flowscope_filter::FilterError;

/// Why the relay could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A listening socket could not be bound.
    #[error("binding {what} on {addr}")]
    Bind {
        /// Which listener (`gRPC`, `metrics`, `web view`).
        what: &'static str,
        /// The address we tried.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The reflection service could not be built from our descriptors.
    #[error("building the reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server")]
    Serve(#[source] tonic::transport::Error),
    /// The Kubernetes client for `--peer-pods` could not be configured.
    #[error("Kubernetes client for --peer-pods")]
    Kubernetes {
        /// What kube-rs said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The OTLP exporter's options are not usable (endpoint, TLS files, filters, field mask).
    #[error("starting the OTLP exporter")]
    Otlp(#[from] flowscope_otlp::OtlpError),
    /// The OTLP exporter's own GetFlows across the agents could not be opened.
    #[error("opening the OTLP exporter's flow stream")]
    OtlpFlows(#[source] ObserverError),
    /// A background task panicked.
    #[error("relay task {task} failed")]
    Task {
        /// Which task.
        task: &'static str,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Why a certificate, key or CA bundle could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed as PEM.
    #[error("reading {kind} from {}", path.display())]
    Read {
        /// What the file should hold (`certificate`, `private key`, `CA bundle`).
        kind: &'static str,
        /// The file.
        path: PathBuf,
        /// The parse or I/O error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A file holds no usable item.
    #[error("{} holds no {kind}", path.display())]
    Empty {
        /// What was expected.
        kind: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the material (key not matching the certificate, bad CA, ...).
    #[error("building the TLS {side} configuration")]
    Config {
        /// `server` or `client`.
        side: &'static str,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built from the CA bundle.
    #[error("building the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// TLS towards agents without a CA to verify them with.
    #[error("TLS towards agents needs at least one CA file (--tls-ca-cert-files)")]
    MissingCa,
    /// A client certificate without its key, or the reverse.
    #[error("a client certificate needs both --tls-client-cert-file and --tls-client-key-file")]
    HalfClientCert,
    /// The TLS server name is not a valid DNS name or IP address.
    #[error("invalid TLS server name {name:?}")]
    ServerName {
        /// The name given.
        name: String,
    },
}

/// Why a peer, DNS or listen address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not `host:port`, `unix:///path` or `name=...` of those.
    #[error("invalid address {value:?}: {reason}")]
    Invalid {
        /// The text given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why an Observer call on the relay failed. Converted once into a
/// `tonic::Status` with the matching code.
#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    /// A FlowFilter of the request does not compile.
    #[error("invalid filter: {0}")]
    InvalidFilter(#[from] FilterError),
    /// A path of the field mask names no field of `flow.Flow` (the agents' message, word for
    /// word: a client sees the same error through the relay as from an agent).
    #[error(transparent)]
    InvalidFieldMask(#[from] flowscope_proto::fieldmask::InvalidPath),
    /// The request itself is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The relay is shutting down.
    #[error("relay is shutting down")]
    ShuttingDown,
    /// The call is not implemented by the relay (as in Hubble Relay).
    #[error("{0} is not implemented by the relay")]
    Unimplemented(&'static str),
}

impl From<ObserverError> for tonic::Status {
    fn from(err: ObserverError) -> Self {
        let message = err.to_string();
        match err {
            ObserverError::InvalidFilter(_)
            | ObserverError::InvalidFieldMask(_)
            | ObserverError::InvalidRequest(_) => tonic::Status::invalid_argument(message),
            ObserverError::ShuttingDown => tonic::Status::unavailable(message),
            ObserverError::Unimplemented(_) => tonic::Status::unimplemented(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_real() {
        let bad = FilterError::Unsupported { field: "source_ip" };
        let status = tonic::Status::from(ObserverError::InvalidFilter(bad));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("source_ip"),
            "{}",
            status.message()
        );
        assert_eq!(
            tonic::Status::from(ObserverError::ShuttingDown).code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            tonic::Status::from(ObserverError::Unimplemented("GetAgentEvents")).code(),
            tonic::Code::Unimplemented
        );
    }
}
