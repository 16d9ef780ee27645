//! The `flowscope-relay` command line, turned into a [`RelayConfig`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::config::{
    Backoff, ClientTlsFiles, DnsTarget, ListenAddress, PeerSpec, RelayConfig, ServerTlsFiles,
};

/// flowscope-relay: one Observer endpoint for a whole cluster. Dials every
/// agent, merges their flows in time order, reports unavailable nodes.
#[derive(Debug, Parser)]
#[command(name = "flowscope-relay", version, about, long_about = None)]
pub struct Cli {
    /// gRPC listen address: `:port` (every interface) or `ip:port`.
    #[arg(long, default_value = ":4245", env = "FLOWSCOPE_RELAY_LISTEN_ADDRESS")]
    pub listen_address: ListenAddress,

    /// Agents: `[name=]host:port` or `[name=]unix:///path`, comma-separated
    /// or repeated.
    #[arg(long, value_delimiter = ',', env = "FLOWSCOPE_RELAY_PEERS")]
    pub peers: Vec<PeerSpec>,

    /// DNS names listing the agents (e.g. a headless Service:
    /// `flowscope-agent.kube-system.svc.cluster.local:4244`), resolved again
    /// every --dns-refresh-interval.
    #[arg(long, value_delimiter = ',', env = "FLOWSCOPE_RELAY_PEER_DNS")]
    pub peer_dns: Vec<DnsTarget>,

    /// How often --peer-dns names are resolved again.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub dns_refresh_interval: Duration,

    /// Agents as pods, from the Kubernetes API: their label selector (e.g.
    /// `app.kubernetes.io/name=flowscope-agent`). Needs list and watch on pods.
    #[arg(long, value_name = "SELECTOR", env = "FLOWSCOPE_RELAY_PEER_PODS")]
    pub peer_pods: Option<String>,

    /// Hubble Peer services listing the agents (`host:port` or `unix:///path`): an agent's
    /// (`peer.Peer` on its API) or Cilium's `hubble-peer`. Nodes it adds and deletes are
    /// followed. Dialed like the agents (--tls applies).
    #[arg(
        long,
        value_delimiter = ',',
        env = "FLOWSCOPE_RELAY_PEER_SERVICE",
        value_name = "ADDR"
    )]
    pub peer_service: Vec<crate::config::PeerTarget>,

    /// Namespace of the --peer-pods pods (default: the relay's own).
    #[arg(
        long,
        value_name = "NAMESPACE",
        requires = "peer_pods",
        env = "FLOWSCOPE_RELAY_PEER_PODS_NAMESPACE"
    )]
    pub peer_pods_namespace: Option<String>,

    /// Port of the --peer-pods agents: a number or a container port's name.
    #[arg(
        long,
        value_name = "PORT",
        default_value = "grpc",
        env = "FLOWSCOPE_RELAY_PEER_PODS_PORT"
    )]
    pub peer_pods_port: crate::kubernetes::PortRef,

    /// Kubeconfig for --peer-pods (default: $KUBECONFIG or ~/.kube/config if present, else
    /// the pod's service account).
    #[arg(long, value_name = "FILE", requires = "peer_pods")]
    pub kubeconfig: Option<std::path::PathBuf>,

    /// Maximum number of flows held in the sort window of a request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub sort_buffer_len_max: u32,

    /// Longest time a flow waits in the sort window (latency added in follow mode).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub sort_buffer_drain_timeout: Duration,

    /// Identical node errors within this window are reported once, naming every node.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub error_aggregation_window: Duration,

    /// Responses buffered per client; a following client further behind
    /// loses flows and gets a LostEvent with the count.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub client_buffer_len: u32,

    /// Messages buffered per agent between its stream and the merger of one request.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub node_buffer_len: u32,

    /// How often a connected agent is checked (ServerStatus).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub peer_check_interval: Duration,

    /// Timeout of a connection (TCP and TLS) to an agent.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub dial_timeout: Duration,

    /// Timeout of a unary call to an agent; also how long a history merge
    /// waits for an agent that stops sending before it lets the others go on.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// First delay before reconnecting to an unavailable agent (doubles
    /// each failure, with jitter).
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub backoff_initial: Duration,

    /// Longest delay between reconnection attempts.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub backoff_max: Duration,

    /// TLS certificate (PEM chain) of the relay's listener.
    #[arg(long, requires = "tls_server_key_file")]
    pub tls_server_cert_file: Option<PathBuf>,

    /// TLS private key (PEM) of the relay's listener.
    #[arg(long, requires = "tls_server_cert_file")]
    pub tls_server_key_file: Option<PathBuf>,

    /// CA bundles (PEM) whose client certificates the listener requires (mTLS).
    #[arg(long, value_delimiter = ',', requires = "tls_server_cert_file")]
    pub tls_client_ca_files: Vec<PathBuf>,

    /// Use TLS towards agents.
    #[arg(long)]
    pub tls: bool,

    /// CA bundles (PEM) the agents' certificates must chain to.
    #[arg(long, value_delimiter = ',', requires = "tls")]
    pub tls_ca_cert_files: Vec<PathBuf>,

    /// Client certificate (PEM chain) presented to agents (mTLS).
    #[arg(long, requires_all = ["tls", "tls_client_key_file"])]
    pub tls_client_cert_file: Option<PathBuf>,

    /// Client private key (PEM) presented to agents.
    #[arg(long, requires_all = ["tls", "tls_client_cert_file"])]
    pub tls_client_key_file: Option<PathBuf>,

    /// Name expected in every agent's certificate (default: the peer's host,
    /// or the DNS name for discovered peers).
    #[arg(long, requires = "tls")]
    pub tls_server_name: Option<String>,

    /// How often certificate files are checked for changes.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,

    /// Prometheus metrics listen address (`:9966`); off when not given.
    #[arg(long, env = "FLOWSCOPE_RELAY_METRICS_LISTEN_ADDRESS")]
    pub metrics_listen_address: Option<ListenAddress>,

    /// Serve the web view (service map, flows, paths) on this address (`:12000`, Hubble UI's
    /// port); off when not given. Same TLS as the gRPC listener.
    #[arg(long, env = "FLOWSCOPE_RELAY_UI_LISTEN_ADDRESS")]
    pub ui_listen_address: Option<flowscope_ui::ListenAddress>,

    /// The relay's name in the node status and lost events it sends
    /// (default: the host name).
    #[arg(long)]
    pub name: Option<String>,

    /// The OTLP exporter's options (`--otlp-*`, the agent's too): the cluster's flows as
    /// OpenTelemetry log records, the relay's metrics as OpenTelemetry metrics.
    #[command(flatten)]
    pub otlp: flowscope_otlp::OtlpArgs,
}

impl Cli {
    /// The relay configuration these options describe; an error when the `--otlp-…` options
    /// do not make sense together.
    pub fn into_config(self) -> Result<RelayConfig, flowscope_otlp::ConfigError> {
        let defaults = RelayConfig::default();
        let otlp = self.otlp.options(crate::export::SERVICE_NAME)?;
        let server_tls = match (self.tls_server_cert_file, self.tls_server_key_file) {
            (Some(cert), Some(key)) => Some(ServerTlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca_files,
            }),
            _ => None,
        };
        let client_tls = self.tls.then_some(ClientTlsFiles {
            ca: self.tls_ca_cert_files,
            cert: self.tls_client_cert_file,
            key: self.tls_client_key_file,
            server_name: self.tls_server_name,
        });
        Ok(RelayConfig {
            listen_address: self.listen_address,
            peers: self.peers,
            peer_dns: self.peer_dns,
            dns_refresh_interval: self.dns_refresh_interval,
            peer_pods: self
                .peer_pods
                .map(|selector| crate::kubernetes::PodDiscovery {
                    selector,
                    namespace: self.peer_pods_namespace,
                    port: self.peer_pods_port,
                    kubeconfig: self.kubeconfig,
                }),
            peer_service: self.peer_service,
            sort_buffer_len_max: self.sort_buffer_len_max as usize,
            sort_buffer_drain_timeout: self.sort_buffer_drain_timeout,
            status_aggregation_window: self.error_aggregation_window,
            client_buffer_len: self.client_buffer_len as usize,
            node_buffer_len: self.node_buffer_len as usize,
            peer_check_interval: self.peer_check_interval,
            dial_timeout: self.dial_timeout,
            request_timeout: self.request_timeout,
            backoff: Backoff {
                initial: self.backoff_initial,
                max: self.backoff_max.max(self.backoff_initial),
            },
            server_tls,
            client_tls,
            tls_reload_interval: self.tls_reload_interval,
            metrics_listen_address: self.metrics_listen_address,
            ui_listen_address: self.ui_listen_address,
            name: self.name.unwrap_or_else(host_name),
            otlp,
            ..defaults
        })
    }
}

/// The machine's host name, or `flowscope-relay`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "flowscope-relay".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_hubble() {
        let config = Cli::try_parse_from(["flowscope-relay"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(config.listen_address.to_string(), ":4245");
        assert_eq!(config.sort_buffer_len_max, 100);
        assert_eq!(config.sort_buffer_drain_timeout, Duration::from_secs(1));
        assert!(config.server_tls.is_none() && config.client_tls.is_none());
        assert!(config.metrics_listen_address.is_none());
        assert!(!config.name.is_empty());
    }

    #[test]
    fn otlp_options_are_the_agent_s() {
        let config = Cli::try_parse_from([
            "flowscope-relay",
            "--otlp-endpoint",
            "http://collector:4317",
            "--otlp-allowlist",
            r#"{"verdict":["DROPPED"]}"#,
            "--otlp-batch-size",
            "64",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        let otlp = config.otlp.expect("OTLP on");
        assert_eq!(otlp.endpoint, "http://collector:4317");
        assert_eq!(otlp.service_name, "flowscope-relay");
        assert_eq!(otlp.batch_size, 64);
        assert_eq!(otlp.allowlist.len(), 1);
    }

    #[test]
    fn peers_and_tls() {
        let config = Cli::try_parse_from([
            "flowscope-relay",
            "--peers",
            "a=10.0.0.1:4244,10.0.0.2:4244",
            "--peers",
            "unix:///run/agent.sock",
            "--peer-dns",
            "agents.kube-system.svc:4244",
            "--tls",
            "--tls-ca-cert-files",
            "/ca.pem",
            "--tls-client-cert-file",
            "/c.pem",
            "--tls-client-key-file",
            "/k.pem",
            "--tls-server-cert-file",
            "/s.pem",
            "--tls-server-key-file",
            "/sk.pem",
            "--tls-client-ca-files",
            "/cca.pem",
            "--metrics-listen-address",
            ":9966",
            "--sort-buffer-drain-timeout",
            "250ms",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(config.peers.len(), 3);
        assert_eq!(config.peers[0].name.as_deref(), Some("a"));
        assert_eq!(config.peer_dns.len(), 1);
        let client = config.client_tls.unwrap();
        assert_eq!(client.ca, vec![PathBuf::from("/ca.pem")]);
        assert_eq!(client.cert, Some(PathBuf::from("/c.pem")));
        let server = config.server_tls.unwrap();
        assert_eq!(server.client_ca, vec![PathBuf::from("/cca.pem")]);
        assert_eq!(config.metrics_listen_address.unwrap().addr.port(), 9966);
        assert_eq!(config.sort_buffer_drain_timeout, Duration::from_millis(250));
    }

    #[test]
    fn client_cert_needs_tls_and_key() {
        assert!(
            Cli::try_parse_from(["flowscope-relay", "--tls-client-cert-file", "/c.pem"]).is_err()
        );
        assert!(Cli::try_parse_from(["flowscope-relay", "--peers", "nonsense"]).is_err());
        assert!(Cli::try_parse_from(["flowscope-relay", "--sort-buffer-len-max", "0"]).is_err());
    }
}
