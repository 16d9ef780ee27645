//! The `--otlp-*` options, one definition for the agent and the relay (both flatten
//! [`OtlpArgs`] into their command line): same names, same environment variables, same
//! meaning.

use std::{path::PathBuf, time::Duration};

use flowscope_filter::lists::{FilterList, flatten, parse_filter_list};

use crate::config::{self, ConfigError, OtlpOptions};

/// The OTLP exporter's command-line options.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct OtlpArgs {
    /// Export flows (as log records) and metrics over OTLP/gRPC to this receiver (an
    /// OpenTelemetry Collector, Grafana Alloy): http://host:4317 (plain text), https://host:4317
    /// or host:4317 (TLS). Default: $OTEL_EXPORTER_OTLP_ENDPOINT; unset: no OTLP export.
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// gRPC metadata sent with every OTLP request: key=value,key2=value2 (values
    /// percent-decoded). Default: $OTEL_EXPORTER_OTLP_HEADERS.
    #[arg(
        long,
        value_name = "LIST",
        env = "OTEL_EXPORTER_OTLP_HEADERS",
        hide_env_values = true
    )]
    pub otlp_headers: Option<String>,
    /// Plain text to an endpoint given without a scheme (or with https://).
    #[arg(long)]
    pub otlp_insecure: bool,
    /// CA certificates (PEM) the OTLP receiver's certificate must chain to (default: the
    /// system's). Default: $OTEL_EXPORTER_OTLP_CERTIFICATE.
    #[arg(long, value_name = "FILE", env = "OTEL_EXPORTER_OTLP_CERTIFICATE")]
    pub otlp_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS with the OTLP receiver.
    #[arg(
        long,
        value_name = "FILE",
        env = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"
    )]
    pub otlp_client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", env = "OTEL_EXPORTER_OTLP_CLIENT_KEY")]
    pub otlp_client_key_file: Option<PathBuf>,
    /// Longest time one OTLP request may take.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub otlp_timeout: Duration,
    /// Most flows (log records) in one OTLP request.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_BATCH_SIZE)]
    pub otlp_batch_size: usize,
    /// Longest time a flow waits for its OTLP batch to fill.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub otlp_batch_interval: Duration,
    /// Flows waiting to be sent over OTLP, at most; past this they are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_QUEUE)]
    pub otlp_queue_size: usize,
    /// Push the metrics over OTLP this often (0s: only flows).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub otlp_metrics_interval: Duration,
    /// Send over OTLP only flows matching one of these JSON FlowFilters (as --export-allowlist).
    #[arg(long, value_name = "JSON", value_parser = parse_filter_list)]
    pub otlp_allowlist: Vec<FilterList>,
    /// Never send over OTLP flows matching one of these JSON FlowFilters.
    #[arg(long, value_name = "JSON", value_parser = parse_filter_list)]
    pub otlp_denylist: Vec<FilterList>,
    /// Keep only these fields of each flow sent over OTLP, in the body and the attributes (as
    /// --export-fieldmask).
    #[arg(long, value_name = "PATHS")]
    pub otlp_field_mask: Vec<String>,
}

impl OtlpArgs {
    /// The exporter's options (`service_name`: `flowscope-agent`, `flowscope-relay`), `None`
    /// without an endpoint; an error when other `--otlp-…` options are given without one, or
    /// the headers are not `key=value` pairs.
    pub fn options(&self, service_name: &str) -> Result<Option<OtlpOptions>, ConfigError> {
        let Some(endpoint) = self.otlp_endpoint.clone().filter(|e| !e.trim().is_empty()) else {
            let used = !self.otlp_allowlist.is_empty()
                || !self.otlp_denylist.is_empty()
                || !self.otlp_field_mask.is_empty();
            if used {
                return Err(ConfigError::NoEndpoint);
            }
            return Ok(None);
        };
        let headers = match &self.otlp_headers {
            Some(h) => config::parse_key_values(h).map_err(ConfigError::Header)?,
            None => Vec::new(),
        };
        Ok(Some(OtlpOptions {
            insecure: self.otlp_insecure,
            headers,
            ca_file: self.otlp_ca_file.clone(),
            client_cert_file: self.otlp_client_cert_file.clone(),
            client_key_file: self.otlp_client_key_file.clone(),
            timeout: self.otlp_timeout,
            batch_size: self.otlp_batch_size,
            batch_interval: self.otlp_batch_interval,
            queue_size: self.otlp_queue_size,
            allowlist: flatten(&self.otlp_allowlist),
            denylist: flatten(&self.otlp_denylist),
            field_mask: self
                .otlp_field_mask
                .iter()
                .flat_map(|m| flowscope_proto::fieldmask::parse_paths(m))
                .collect(),
            metrics_interval: self.otlp_metrics_interval,
            service_name: service_name.to_owned(),
            ..OtlpOptions::new(endpoint)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        otlp: OtlpArgs,
    }

    #[test]
    fn options_from_flags() {
        let cli = Cli::try_parse_from([
            "x",
            "--otlp-endpoint",
            "http://collector:4317",
            "--otlp-headers",
            "x-scope-orgid=t1",
            "--otlp-allowlist",
            r#"{"verdict":["DROPPED"]}"#,
            "--otlp-field-mask",
            "time,verdict node_name",
            "--otlp-batch-interval",
            "200ms",
        ])
        .unwrap();
        let o = cli.otlp.options("flowscope-relay").unwrap().unwrap();
        assert_eq!(o.endpoint, "http://collector:4317");
        assert_eq!(o.service_name, "flowscope-relay");
        assert_eq!(o.headers, vec![("x-scope-orgid".into(), "t1".into())]);
        assert_eq!(o.allowlist.len(), 1);
        assert_eq!(o.field_mask, ["time", "verdict", "node_name"]);
        assert_eq!(o.batch_interval, Duration::from_millis(200));
        assert_eq!(o.queue_size, config::DEFAULT_QUEUE);
    }

    #[test]
    fn options_need_an_endpoint() {
        // The environment may hold OTEL_EXPORTER_OTLP_ENDPOINT: build the args by hand.
        let none = OtlpArgs::default();
        assert!(none.options("s").unwrap().is_none());
        let filters_alone = OtlpArgs {
            otlp_field_mask: vec!["time".into()],
            ..OtlpArgs::default()
        };
        assert!(matches!(
            filters_alone.options("s"),
            Err(ConfigError::NoEndpoint)
        ));
        let bad_headers = OtlpArgs {
            otlp_endpoint: Some("http://c:4317".into()),
            otlp_headers: Some("novalue".into()),
            ..OtlpArgs::default()
        };
        assert!(matches!(
            bad_headers.options("s"),
            Err(ConfigError::Header(_))
        ));
    }
}
