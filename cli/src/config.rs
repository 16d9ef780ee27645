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

use crate::client::ServerAddr;
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

/// The keys of the config file, sorted as `config view` prints them.
pub const KEYS: &[&str] = &[
    "color",
    "output",
    "print-node-name",
    "server",
    "time-format",
    "timeout",
    "tls",
    "tls-ca-cert-files",
    "tls-client-cert-file",
    "tls-client-key-file",
    "tls-server-name",
];

/// `value` for `key` as `config set` writes it into the file: typed (a bool, a list), with a
/// canonical spelling, and checked as the file's reader and the flags check it. `key` must be
/// one of [`KEYS`].
pub fn file_value(key: &str, value: &str) -> Result<serde_yaml_ng::Value, String> {
    use clap::ValueEnum as _;
    use serde_yaml_ng::Value;

    let value = value.trim();
    let text = |s: &str| Value::String(s.to_string());
    let name = |v: Option<clap::builder::PossibleValue>| v.map(|v| text(v.get_name()));
    match key {
        "server" => {
            ServerAddr::parse(value)?;
            Ok(text(value))
        }
        "timeout" => match humantime::parse_duration(value) {
            Ok(d) if !d.is_zero() => Ok(text(value)),
            _ => Err("expected a positive duration such as 5s, 500ms or 1m30s".into()),
        },
        "tls" | "print-node-name" => parse_bool(value).map(Value::Bool),
        "tls-ca-cert-files" => {
            // Hubble's list syntax: comma-separated, optionally in brackets.
            let inner = value.strip_prefix('[').unwrap_or(value);
            let inner = inner.strip_suffix(']').unwrap_or(inner);
            Ok(Value::Sequence(
                inner
                    .split(',')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .map(text)
                    .collect(),
            ))
        }
        "tls-client-cert-file" | "tls-client-key-file" | "tls-server-name" => Ok(text(value)),
        "output" => Format::from_str(value, false)
            .ok()
            .and_then(|f| name(f.to_possible_value()))
            .ok_or_else(|| "expected compact, dict, table, json, jsonpb or monitor".into()),
        "time-format" => TimeFormat::from_str(value, true)
            .ok()
            .and_then(|f| name(f.to_possible_value()))
            .ok_or_else(|| {
                let names: Vec<String> = TimeFormat::value_variants()
                    .iter()
                    .filter_map(|f| f.to_possible_value())
                    .map(|v| v.get_name().to_string())
                    .collect();
                format!("expected one of {}", names.join(", "))
            }),
        "color" => ColorWhen::from_str(value, false)
            .ok()
            .and_then(|c| name(c.to_possible_value()))
            .ok_or_else(|| "expected auto, always or never".into()),
        other => Err(format!("unknown key {other:?}")),
    }
}

/// Go's `strconv.ParseBool` (what `hubble config set` accepts for a bool).
fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Rewrites the config file at `path` with `edit` applied to its keys, creating the file (and
/// its directory) when missing. The result must be a valid config, or nothing is written.
/// Comments are not kept (the file is written anew from its keys, as `hubble config set`
/// does).
pub fn edit(path: &Path, edit: impl FnOnce(&mut serde_yaml_ng::Mapping)) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(e).with_context(|| format!("reading the config file {}", path.display()));
        }
    };
    let mut keys: serde_yaml_ng::Mapping = serde_yaml_ng::from_str::<Option<_>>(&text)
        .with_context(|| format!("the config file {} is not a YAML mapping", path.display()))?
        .unwrap_or_default();
    edit(&mut keys);
    let new_text = if keys.is_empty() {
        String::new()
    } else {
        serde_yaml_ng::to_string(&keys)?
    };
    parse(&new_text).with_context(|| {
        format!(
            "not written: the config file {} would not be valid",
            path.display()
        )
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the config directory {}", dir.display()))?;
    }
    // Written next to it and renamed over it: a reader never sees half a file.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, &new_text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing the config file {}", path.display()))
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
    fn file_values_are_typed_and_checked() {
        use serde_yaml_ng::Value;
        let ok = |key: &str, value: &str| file_value(key, value).unwrap();
        assert_eq!(
            ok("server", "relay:4245"),
            Value::String("relay:4245".into())
        );
        assert_eq!(ok("tls", "True"), Value::Bool(true));
        assert_eq!(ok("print-node-name", "0"), Value::Bool(false));
        assert_eq!(
            ok("tls-ca-cert-files", "[/a.pem, /b.pem]"),
            serde_yaml_ng::from_str::<Value>("[/a.pem, /b.pem]").unwrap()
        );
        assert_eq!(
            ok("time-format", "rfc3339"),
            Value::String("RFC3339".into())
        );
        assert_eq!(ok("output", "jsonpb"), Value::String("jsonpb".into()));
        assert_eq!(ok("timeout", "1m30s"), Value::String("1m30s".into()));
        for (key, bad, why) in [
            ("server", "localhost", "expected unix:///path/to/socket"),
            ("timeout", "0s", "expected a positive duration"),
            ("tls", "yes", "expected true or false"),
            ("output", "xml", "expected compact, dict"),
            ("time-format", "iso", "expected one of StampMilli"),
            ("color", "blue", "expected auto, always or never"),
        ] {
            let err = file_value(key, bad).unwrap_err();
            assert!(err.contains(why), "{key} {bad}: {err}");
        }
        // Every key has a value form.
        for key in KEYS {
            assert!(
                !file_value(key, "x").is_err_and(|e| e.starts_with("unknown key")),
                "{key}"
            );
        }
    }

    #[test]
    fn edit_keeps_other_keys_and_refuses_an_invalid_result() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("new/dir/config.yaml");
        edit(&file, |keys| {
            keys.insert("server".into(), "relay:4245".into());
        })
        .unwrap();
        edit(&file, |keys| {
            keys.insert("tls".into(), true.into());
        })
        .unwrap();
        let config = load(Some(&file)).unwrap();
        assert_eq!(config.server.as_deref(), Some("relay:4245"));
        assert_eq!(config.tls, Some(true));
        let err = edit(&file, |keys| {
            keys.insert("output".into(), "xml".into());
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("not written"), "{err:#}");
        assert_eq!(load(Some(&file)).unwrap(), config, "unchanged");
        edit(&file, |keys| keys.clear()).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "");
        assert_eq!(load(Some(&file)).unwrap(), Config::default());
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
