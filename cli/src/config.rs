//! The optional config file: defaults for the server, TLS and output, so
//! that a user who always talks to the same relay does not repeat flags.
//!
//! It lives at `$XDG_CONFIG_HOME/flowctl/config.yaml` (or
//! `~/.config/flowctl/config.yaml`); `--config FILE` or `FLOWCTL_CONFIG`
//! name another. Keys are the flags' long names:
//!
//! ```yaml
//! server: tls://relay.example:4245
//! timeout: 10s
//! tls-ca-cert-files: [/etc/flowscope/ca.pem]
//! tls-server-name: relay.flowscope.example
//! output: compact          # observe's default -o
//! time-format: RFC3339
//! color: auto
//! print-node-name: true
//! ```
//!
//! Command-line flags and environment variables win over the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

use crate::output::{Format, TimeFormat};

/// `--color`: when to color compact and dict output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorWhen {
    /// Only when stdout is a terminal (and `NO_COLOR` is not set).
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The config file's contents; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Default `--server`.
    pub server: Option<String>,
    /// Default `--timeout` (`5s`, `1m`).
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Default `--tls`.
    pub tls: Option<bool>,
    /// Default `--tls-ca-cert-files`.
    pub tls_ca_cert_files: Option<Vec<PathBuf>>,
    /// Default `--tls-client-cert-file`.
    pub tls_client_cert_file: Option<PathBuf>,
    /// Default `--tls-client-key-file`.
    pub tls_client_key_file: Option<PathBuf>,
    /// Default `--tls-server-name`.
    pub tls_server_name: Option<String>,
    /// Default `observe -o`.
    pub output: Option<Format>,
    /// Default `--time-format`.
    pub time_format: Option<TimeFormat>,
    /// Default `--color`.
    pub color: Option<ColorWhen>,
    /// Default `--print-node-name`.
    pub print_node_name: Option<bool>,
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| {
        humantime::parse_duration(&t).map_err(|e| {
            serde::de::Error::custom(format!("timeout {t:?}: {e} (expected e.g. 5s, 1m30s)"))
        })
    })
    .transpose()
}

/// Where the config file is looked for when none is named.
pub fn default_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("flowctl").join("config.yaml"))
}

/// Loads `explicit` (which must exist) or the default file (which may not).
pub fn load(explicit: Option<&Path>) -> anyhow::Result<Config> {
    let (path, must_exist) = match explicit {
        Some(path) => (path.to_path_buf(), true),
        None => match default_path() {
            Some(path) => (path, false),
            None => return Ok(Config::default()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            return Ok(Config::default());
        }
        Err(e) => {
            return Err(e).with_context(|| format!("reading the config file {}", path.display()));
        }
    };
    parse(&text).with_context(|| format!("in the config file {}", path.display()))
}

/// Parses the file's text; an empty file (or only comments) is no config.
pub fn parse(text: &str) -> anyhow::Result<Config> {
    let config: Option<Config> = serde_yaml_ng::from_str(text)?;
    Ok(config.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let config = parse(
            "server: tls://relay:4245\ntimeout: 10s\ntls: true\ntls-ca-cert-files: [/ca.pem]\n\
             tls-client-cert-file: /c.pem\ntls-client-key-file: /k.pem\ntls-server-name: relay.example\n\
             output: json\ntime-format: RFC3339\ncolor: never\nprint-node-name: true\n",
        )
        .unwrap();
        assert_eq!(
            config,
            Config {
                server: Some("tls://relay:4245".into()),
                timeout: Some(Duration::from_secs(10)),
                tls: Some(true),
                tls_ca_cert_files: Some(vec!["/ca.pem".into()]),
                tls_client_cert_file: Some("/c.pem".into()),
                tls_client_key_file: Some("/k.pem".into()),
                tls_server_name: Some("relay.example".into()),
                output: Some(Format::Json),
                time_format: Some(TimeFormat::Rfc3339),
                color: Some(ColorWhen::Never),
                print_node_name: Some(true),
            }
        );
    }

    #[test]
    fn empty_file_is_no_config() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# nothing yet\n").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = format!("{:#}", parse("sever: x:1\n").unwrap_err());
        assert!(err.contains("unknown field `sever`"), "{err}");
        let err = format!("{:#}", parse("timeout: soon\n").unwrap_err());
        assert!(err.contains("expected e.g. 5s"), "{err}");
        let err = format!("{:#}", parse("output: xml\n").unwrap_err());
        assert!(err.contains("unknown variant `xml`"), "{err}");
    }

    #[test]
    fn missing_default_file_is_fine_but_missing_explicit_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let err = format!("{:#}", load(Some(&missing)).unwrap_err());
        assert!(err.contains("nope.yaml"), "{err}");
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "server: unix:///tmp/x.sock\n").unwrap();
        assert_eq!(
            load(Some(&file)).unwrap().server.as_deref(),
            Some("unix:///tmp/x.sock")
        );
    }
}
