//! The exporter's configuration: where to send, how (TLS, headers, timeout), what (filters,
//! field mask), how much at once (batches, queue), and the resource describing the sender (an
//! agent or the relay).
//! Flags win over OpenTelemetry's standard environment variables (clap reads
//! `OTEL_EXPORTER_OTLP_*` for the flags that have one; `OTEL_RESOURCE_ATTRIBUTES` and
//! `OTEL_SERVICE_NAME` are read here).

use std::{path::PathBuf, time::Duration};

use flowscope_proto::flow::FlowFilter;

/// Flows waiting for the sender; past this, flows are counted as dropped (`queue_full`).
pub const DEFAULT_QUEUE: usize = 8192;
/// Log records per export request, at most.
pub const DEFAULT_BATCH_SIZE: usize = 512;
/// A batch is sent at the latest this long after its first flow.
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// One export request may take this long (connecting included).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Metrics are pushed this often.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(30);

/// What to export over OTLP/gRPC, and where.
#[derive(Clone, Debug)]
pub struct OtlpOptions {
    /// The receiver: `http://host:4317` (plain text), `https://host:4317` (TLS) or `host:4317`
    /// (TLS unless `insecure`).
    pub endpoint: String,
    /// Plain text even without an `http://` scheme.
    pub insecure: bool,
    /// gRPC metadata sent with every request (an API key, a tenant: `X-Scope-OrgID`).
    pub headers: Vec<(String, String)>,
    /// CA certificates (PEM) the receiver's certificate must chain to; without it, the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's key.
    pub client_key_file: Option<PathBuf>,
    /// Longest time one export request may take.
    pub timeout: Duration,
    /// Log records per request, at most.
    pub batch_size: usize,
    /// Longest time a flow waits for its batch to fill.
    pub batch_interval: Duration,
    /// Flows waiting for the sender, at most.
    pub queue_size: usize,
    /// Export only flows matching one of these (empty: all).
    pub allowlist: Vec<FlowFilter>,
    /// Never export flows matching one of these.
    pub denylist: Vec<FlowFilter>,
    /// Fields of `Flow` kept in the body and the attributes (empty: all Hubble fields).
    pub field_mask: Vec<String>,
    /// How often the Hubble metrics are pushed (zero: never).
    pub metrics_interval: Duration,
    /// `service.name` of the resource (`flowscope-agent`, `flowscope-relay`).
    pub service_name: String,
}

impl OtlpOptions {
    /// Defaults for everything but the endpoint.
    pub fn new(endpoint: impl Into<String>) -> Self {
        OtlpOptions {
            endpoint: endpoint.into(),
            insecure: false,
            headers: Vec::new(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            timeout: DEFAULT_TIMEOUT,
            batch_size: DEFAULT_BATCH_SIZE,
            batch_interval: DEFAULT_BATCH_INTERVAL,
            queue_size: DEFAULT_QUEUE,
            allowlist: Vec::new(),
            denylist: Vec::new(),
            field_mask: Vec::new(),
            metrics_interval: DEFAULT_METRICS_INTERVAL,
            service_name: "flowscope-agent".into(),
        }
    }
}

/// The URL tonic connects to, and whether it uses TLS.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The endpoint is not a URL or `host:port`.
    #[error("--otlp-endpoint {endpoint:?}: {why}")]
    Endpoint {
        /// What was given.
        endpoint: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A header is not `key=value`.
    #[error("--otlp-headers: {0:?} is not key=value")]
    Header(String),
    /// A header name or value cannot be gRPC metadata.
    #[error("--otlp-headers: {0:?} cannot be sent as gRPC metadata")]
    Metadata(String),
    /// `OTEL_RESOURCE_ATTRIBUTES` has an entry that is not `key=value`.
    #[error("OTEL_RESOURCE_ATTRIBUTES: {0:?} is not key=value")]
    ResourceAttribute(String),
    /// A TLS file cannot be read.
    #[error("reading {path}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An `--otlp-…` option without an endpoint to send to.
    #[error("the --otlp-… options need --otlp-endpoint")]
    NoEndpoint,
    /// Only one of the client certificate and key was given.
    #[error("--otlp-client-cert-file and --otlp-client-key-file go together")]
    ClientIdentity,
    /// tonic refused the endpoint or its TLS settings.
    #[error("--otlp-endpoint")]
    Transport(#[source] tonic::transport::Error),
}

/// Where to connect: OTLP's rules for gRPC endpoints (a scheme decides; without one, TLS unless
/// `insecure`). A path is not allowed: OTLP/gRPC has fixed service paths.
pub fn target(endpoint: &str, insecure: bool) -> Result<Target, ConfigError> {
    let bad = |why| ConfigError::Endpoint {
        endpoint: endpoint.to_owned(),
        why,
    };
    let e = endpoint.trim();
    let (tls, rest) = if let Some(r) = e.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = e.strip_prefix("https://") {
        (!insecure, r)
    } else if e.contains("://") {
        return Err(bad("the scheme must be http or https"));
    } else {
        (!insecure, e)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(bad("no host"));
    }
    if rest.contains('/') {
        return Err(bad(
            "OTLP/gRPC takes no path (http://host:4317); a /v1/logs path is OTLP/HTTP's",
        ));
    }
    let url = format!("{}://{rest}", if tls { "https" } else { "http" });
    url.parse::<tonic::codegen::http::Uri>()
        .map_err(|_| bad("not a host:port"))?;
    Ok(Target { url, tls })
}

/// Parses OpenTelemetry's `key1=value1,key2=value2` lists (`OTEL_EXPORTER_OTLP_HEADERS`,
/// `OTEL_RESOURCE_ATTRIBUTES`): values are percent-decoded, blanks around entries ignored.
pub fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((percent_decode(k.trim()), percent_decode(v.trim())))
            }
            _ => Err(kv.to_owned()),
        })
        .collect()
}

/// `%2C` -> `,`; a `%` not followed by two hex digits is kept as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The resource attributes: ours, then `OTEL_RESOURCE_ATTRIBUTES` (which wins, as the
/// specification has user-given attributes win over detected ones), then `OTEL_SERVICE_NAME`.
/// `k8s.node.name` only when every flow comes from one node (an agent's).
pub fn resource_attributes(
    service_name: &str,
    origin: crate::Origin<'_>,
    env_attributes: Option<&str>,
    env_service_name: Option<&str>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut attrs: Vec<(String, String)> = vec![
        ("service.name".into(), service_name.into()),
        ("service.namespace".into(), "flowscope".into()),
        ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("service.instance.id".into(), origin.instance.into()),
        ("host.name".into(), origin.instance.into()),
    ];
    if let Some(node) = origin.node {
        attrs.push(("k8s.node.name".into(), node.into()));
    }
    let mut set = |k: String, v: String| match attrs.iter_mut().find(|(key, _)| *key == k) {
        Some(slot) => slot.1 = v,
        None => attrs.push((k, v)),
    };
    if let Some(env) = env_attributes {
        for (k, v) in parse_key_values(env).map_err(ConfigError::ResourceAttribute)? {
            set(k, v);
        }
    }
    if let Some(name) = env_service_name.filter(|n| !n.trim().is_empty()) {
        set("service.name".into(), name.trim().into());
    }
    Ok(attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_otlp_rules() {
        let t = |e, i| target(e, i).map(|t| (t.url, t.tls));
        assert_eq!(
            t("http://collector:4317", false).unwrap(),
            ("http://collector:4317".into(), false)
        );
        assert_eq!(
            t("https://collector:4317/", false).unwrap(),
            ("https://collector:4317".into(), true)
        );
        assert_eq!(
            t("collector:4317", false).unwrap(),
            ("https://collector:4317".into(), true)
        );
        assert_eq!(
            t("collector:4317", true).unwrap(),
            ("http://collector:4317".into(), false)
        );
        assert_eq!(
            t("[::1]:4317", true).unwrap(),
            ("http://[::1]:4317".into(), false)
        );
        assert!(t("http://collector:4318/v1/logs", false).is_err());
        assert!(t("grpc://collector:4317", false).is_err());
        assert!(t("", false).is_err());
    }

    #[test]
    fn key_value_lists() {
        assert_eq!(
            parse_key_values(" api-key = s3cr%3Dt , X-Scope-OrgID=tenant-1,").unwrap(),
            vec![
                ("api-key".to_owned(), "s3cr=t".to_owned()),
                ("X-Scope-OrgID".to_owned(), "tenant-1".to_owned())
            ]
        );
        assert_eq!(parse_key_values("").unwrap(), vec![]);
        assert!(parse_key_values("novalue").is_err());
        assert!(parse_key_values("=v").is_err());
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a%2Cb%zz"), "a,b%zz");
    }

    #[test]
    fn resource_attributes_merge_with_the_environment() {
        let node = crate::Origin {
            instance: "node-1",
            node: Some("node-1"),
        };
        let a = resource_attributes(
            "flowscope-agent",
            node,
            Some("deployment.environment.name=prod,host.name=h1,k8s.cluster.name=c1"),
            None,
        )
        .unwrap();
        let get = |k: &str| a.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("service.name"), Some("flowscope-agent"));
        assert_eq!(get("k8s.node.name"), Some("node-1"));
        assert_eq!(get("host.name"), Some("h1"), "the environment wins");
        assert_eq!(get("k8s.cluster.name"), Some("c1"));
        assert_eq!(get("deployment.environment.name"), Some("prod"));
        let b = resource_attributes("flowscope-agent", node, Some("service.name=x"), Some("y"))
            .unwrap();
        assert_eq!(
            b[0],
            ("service.name".into(), "y".into()),
            "OTEL_SERVICE_NAME wins"
        );
        assert!(resource_attributes("s", node, Some("oops"), None).is_err());
        let relay = crate::Origin {
            instance: "relay-0",
            node: None,
        };
        let r = resource_attributes("flowscope-relay", relay, None, None).unwrap();
        let get = |k: &str| r.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("service.name"), Some("flowscope-relay"));
        assert_eq!(get("service.instance.id"), Some("relay-0"));
        assert_eq!(
            get("k8s.node.name"),
            None,
            "the relay's flows span nodes: each record names its own"
        );
    }
}
