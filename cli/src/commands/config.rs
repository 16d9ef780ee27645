//! `flowctl config view|get|set|reset`: Hubble's `hubble config`, on flowctl's config file
//! (`crate::config`).
//!
//! `view` and `get` show the settings in effect, each from the first place that sets it: a flag,
//! then the environment (`FLOWSCOPE_SERVER`), then the config file, then the default. `set` and
//! `reset` change the file only. Unlike Hubble, resetting a key removes it from the file rather
//! than writing its default there, so that a default that depends on the machine (the server:
//! the agent's socket when there is one) stays so.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::Context as _;
use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand, ValueEnum as _};
use serde_yaml_ng::{Mapping, Value};

use super::{Context, GlobalArgs};
use crate::config::{self, KEYS};
use crate::filters::UsageError;

/// Examples and exit status, shown after `flowctl config --help`.
pub const AFTER_HELP: &str = "\
Examples:
  Every setting in effect, and where flowctl would connect:
    flowctl config view
  Always talk to the relay, with TLS:
    flowctl config set server tls://relay.example:4245
    flowctl config set tls-ca-cert-files /etc/flowscope/ca.pem
  JSON by default for `observe`:
    flowctl config set output json
  Back to the default server (the local agent's socket, else localhost:4245):
    flowctl config reset server

Keys: color, output, print-node-name, server, time-format, timeout, tls, tls-ca-cert-files,
tls-client-cert-file, tls-client-key-file, tls-server-name. The file is
~/.config/flowctl/config.yaml (or --config, FLOWCTL_CONFIG); set and reset rewrite it
(comments are not kept).

Exit status: 0 success, 1 error (the file cannot be read or written), 2 usage error (unknown
key, bad value).";

/// `flowctl config` arguments.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ConfigAction,
}

/// `flowctl config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print every setting in effect (flags, environment, config file, defaults), as YAML.
    View,
    /// Print one setting in effect (every one without KEY).
    Get {
        /// The setting.
        #[arg(value_parser = PossibleValuesParser::new(KEYS))]
        key: Option<String>,
    },
    /// Write KEY: VALUE into the config file; without VALUE, remove KEY (back to its default).
    Set {
        /// The setting.
        #[arg(value_parser = PossibleValuesParser::new(KEYS))]
        key: String,
        /// Its value (a list: comma-separated).
        value: Option<String>,
    },
    /// Remove KEY from the config file, back to its default (every key without KEY).
    Reset {
        /// The setting.
        #[arg(value_parser = PossibleValuesParser::new(KEYS))]
        key: Option<String>,
    },
}

/// Runs `flowctl config …`. The file is read here, not before: `set` and `reset` must be able
/// to repair a file that does not load.
pub fn run(args: &ConfigArgs, global: GlobalArgs) -> anyhow::Result<()> {
    match &args.action {
        ConfigAction::View | ConfigAction::Get { key: None } => {
            print(&serde_yaml_ng::to_string(&settings(global)?)?)
        }
        ConfigAction::Get { key: Some(key) } => {
            let settings = settings(global)?;
            let value = settings.get(key.as_str()).cloned().unwrap_or(Value::Null);
            print(&serde_yaml_ng::to_string(&value)?)
        }
        ConfigAction::Set { key, value } => {
            let value = match value.as_deref().filter(|v| !v.trim().is_empty()) {
                Some(v) => Some(
                    config::file_value(key, v)
                        .map_err(|e| UsageError(format!("invalid value {v:?} for {key}: {e}")))?,
                ),
                None => None,
            };
            config::edit(&file(&global)?, |keys| match value {
                Some(value) => {
                    keys.insert(key.as_str().into(), value);
                }
                None => {
                    keys.remove(key.as_str());
                }
            })
        }
        ConfigAction::Reset { key } => config::edit(&file(&global)?, |keys| match key {
            Some(key) => {
                keys.remove(key.as_str());
            }
            None => keys.retain(|k, _| !k.as_str().is_some_and(|k| KEYS.contains(&k))),
        }),
    }
}

/// The file `set` and `reset` change.
fn file(global: &GlobalArgs) -> anyhow::Result<std::path::PathBuf> {
    global.config.clone().or_else(config::default_path).context(
        "no config file: neither --config, FLOWCTL_CONFIG, XDG_CONFIG_HOME nor HOME is set",
    )
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

/// Every setting in effect, keyed as in the file, in [`KEYS`] order.
fn settings(global: GlobalArgs) -> anyhow::Result<Mapping> {
    let file = config::load(global.config.as_deref())?;
    let ctx = Context {
        global,
        config: file,
    };
    let connect = ctx.connect_options()?;
    let c = &ctx.config;
    let path = |p: &Option<std::path::PathBuf>| {
        Value::String(
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )
    };
    let name = |v: Option<clap::builder::PossibleValue>| {
        Value::String(v.map(|v| v.get_name().to_string()).unwrap_or_default())
    };
    let mut out = Mapping::new();
    for key in KEYS {
        let value = match *key {
            "color" => name(c.color.unwrap_or_default().to_possible_value()),
            "output" => name(
                c.output
                    .unwrap_or(crate::output::Format::Compact)
                    .to_possible_value(),
            ),
            "print-node-name" => Value::Bool(c.print_node_name.unwrap_or(false)),
            "server" => Value::String(connect.server.to_string()),
            "time-format" => name(c.time_format.unwrap_or_default().to_possible_value()),
            "timeout" => Value::String(duration(connect.timeout)),
            "tls" => Value::Bool(connect.tls.enabled),
            "tls-ca-cert-files" => Value::Sequence(
                connect
                    .tls
                    .ca_files
                    .iter()
                    .map(|f| Value::String(f.display().to_string()))
                    .collect(),
            ),
            "tls-client-cert-file" => path(&connect.tls.client_cert),
            "tls-client-key-file" => path(&connect.tls.client_key),
            "tls-server-name" => Value::String(connect.tls.server_name.clone().unwrap_or_default()),
            other => unreachable!("config key {other} has no setting"),
        };
        out.insert(Value::String(key.to_string()), value);
    }
    Ok(out)
}

/// A duration as Go prints one (`5s`, `1m30s`) when it is whole seconds, else humantime's
/// (`1s 500ms`); both read back.
fn duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        super::status::go_duration(d.as_secs())
    } else {
        humantime::format_duration(d).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back() {
        for d in [
            Duration::from_secs(5),
            Duration::from_secs(90),
            Duration::from_secs(3725),
            Duration::from_millis(1500),
        ] {
            let text = duration(d);
            assert_eq!(humantime::parse_duration(&text).unwrap(), d, "{text}");
        }
        assert_eq!(duration(Duration::from_secs(90)), "1m30s");
    }
}
