//! One module per subcommand (jj's layout): each has its clap `Args` struct
//! and a `run` function. What they share — the resolved server and TLS
//! settings, the config file — is the [`Context`].

pub mod completion;
pub mod config;
pub mod ct;
pub mod list;
pub mod nat;
pub mod nodes;
pub mod observe;
pub mod path;
pub mod status;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, Args, Subcommand};

use crate::client::{ConnectOptions, DEFAULT_TIMEOUT, ServerAddr, TlsOptions};
use crate::config::Config;
use crate::filters::UsageError;

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Observe flows: the last ones, the first ones, or live (like `hubble observe`).
    #[command(after_help = observe::AFTER_HELP)]
    Observe(Box<observe::ObserveArgs>),
    /// Check the server's health and show its flow buffer and connected nodes.
    #[command(after_help = status::AFTER_HELP)]
    Status(status::StatusArgs),
    /// List the nodes behind the server (the relay's agents, or the agent itself).
    #[command(after_help = nodes::AFTER_HELP)]
    Nodes(nodes::NodesArgs),
    /// List the namespaces seen in recent flows, or the nodes (like `hubble list`).
    #[command(after_help = list::AFTER_HELP)]
    List(list::ListArgs),
    /// Follow the peers an agent announces (like `hubble watch peers`).
    #[command(after_help = watch::AFTER_HELP)]
    Watch(watch::WatchArgs),
    /// The node's connection tracking table (flowscope's BPF conntrack).
    #[command(after_help = ct::AFTER_HELP)]
    Ct(ct::CtArgs),
    /// The node kernel's NAT translations (MASQUERADE, SNAT, DNAT), over ctnetlink.
    #[command(after_help = nat::AFTER_HELP)]
    Nat(nat::NatArgs),
    /// The hops of a connection's packets across the node, with the time between hooks.
    #[command(after_help = path::AFTER_HELP)]
    Path(path::PathArgs),
    /// View or change flowctl's settings and its config file (like `hubble config`).
    #[command(after_help = config::AFTER_HELP)]
    Config(config::ConfigArgs),
    /// Print a shell completion script.
    #[command(after_help = completion::AFTER_HELP)]
    Completion(completion::CompletionArgs),
}

/// The filters of the node-table views (`ct list`, `nat list`): entries whose tuple matches.
#[derive(Debug, Args)]
pub struct TupleFilterArgs {
    /// Keep entries with this source or destination address or CIDR (repeat: any of them).
    #[arg(long, value_name = "IP", value_parser = crate::filters::parse_ip_or_cidr)]
    pub ip: Vec<String>,
    /// Keep entries with this source or destination port (repeat: any of them).
    #[arg(long, value_name = "PORT", value_parser = crate::filters::parse_port)]
    pub port: Vec<String>,
    /// Keep entries of this protocol (tcp, udp, icmp, icmpv6, sctp).
    #[arg(long, value_name = "PROTO", value_parser = crate::filters::parse_protocol)]
    pub protocol: Vec<String>,
    /// Only this node (through the relay).
    #[arg(long = "node", value_name = "NAME")]
    pub node: Vec<String>,
    /// At most this many entries.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub limit: u32,
}

/// Flags every subcommand accepts: where the server is and how to talk to it.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Server address: unix:///path/to/socket, host:port or tls://host:port.
    /// Default: the config file's, else unix:///var/run/flowscope/agent.sock
    /// when it exists, else localhost:4245 (the relay).
    #[arg(
        long,
        global = true,
        env = "FLOWSCOPE_SERVER",
        value_name = "ADDRESS",
        help_heading = "Server"
    )]
    pub server: Option<String>,

    /// Use TLS (implied by tls://, https:// and the other --tls-* flags).
    #[arg(long, global = true, help_heading = "Server")]
    pub tls: bool,

    /// CA certificates (PEM) for the server's certificate, comma-separated
    /// or repeated [default: the system's roots].
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        value_name = "FILE",
        help_heading = "Server"
    )]
    pub tls_ca_cert_files: Vec<PathBuf>,

    /// Client certificate (PEM) for mutual TLS.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Server",
        requires = "tls_client_key_file"
    )]
    pub tls_client_cert_file: Option<PathBuf>,

    /// Client key (PEM) for mutual TLS.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Server",
        requires = "tls_client_cert_file"
    )]
    pub tls_client_key_file: Option<PathBuf>,

    /// Name to verify the server's certificate against [default: the host].
    #[arg(long, global = true, value_name = "NAME", help_heading = "Server")]
    pub tls_server_name: Option<String>,

    /// How long connecting and each status/nodes request may take [default: 5s].
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_timeout, help_heading = "Server")]
    pub timeout: Option<Duration>,

    /// Config file [default: ~/.config/flowctl/config.yaml].
    #[arg(long, global = true, env = "FLOWCTL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print debug messages (and relay node status events that are only news).
    #[arg(short = 'D', long, global = true)]
    pub debug: bool,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err("expected a positive duration such as 5s, 500ms or 1m".into()),
    }
}

/// What subcommands share.
#[derive(Debug)]
pub struct Context {
    /// The global flags.
    pub global: GlobalArgs,
    /// The config file's defaults.
    pub config: Config,
}

impl Context {
    /// Where and how to connect, flags first, then the config file.
    pub fn connect_options(&self) -> Result<ConnectOptions, UsageError> {
        let g = &self.global;
        let c = &self.config;
        let server = ServerAddr::resolve(g.server.as_deref(), c.server.as_deref())
            .map_err(|e| UsageError(format!("invalid --server: {e}")))?;
        let tls = TlsOptions {
            enabled: g.tls || c.tls.unwrap_or(false),
            ca_files: if g.tls_ca_cert_files.is_empty() {
                c.tls_ca_cert_files.clone().unwrap_or_default()
            } else {
                g.tls_ca_cert_files.clone()
            },
            client_cert: g
                .tls_client_cert_file
                .clone()
                .or_else(|| c.tls_client_cert_file.clone()),
            client_key: g
                .tls_client_key_file
                .clone()
                .or_else(|| c.tls_client_key_file.clone()),
            server_name: g
                .tls_server_name
                .clone()
                .or_else(|| c.tls_server_name.clone()),
        };
        Ok(ConnectOptions {
            server,
            tls,
            timeout: g.timeout.or(c.timeout).unwrap_or(DEFAULT_TIMEOUT),
        })
    }
}

/// Runs `command`; `matches` are the subcommand's (observe replays its
/// filter flags from them, in command-line order).
pub async fn run(command: Command, global: GlobalArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    // Completion needs neither a server nor the config file, so the file is
    // read only for the commands that use it.
    let context = |global: GlobalArgs| -> anyhow::Result<Context> {
        let config = crate::config::load(global.config.as_deref())?;
        Ok(Context { global, config })
    };
    match command {
        Command::Observe(args) => observe::run(&args, matches, &context(global)?).await,
        Command::Status(args) => status::run(&args, &context(global)?).await,
        Command::Nodes(args) => nodes::run(&args, &context(global)?).await,
        Command::List(args) => list::run(&args, &context(global)?).await,
        Command::Watch(args) => watch::run(&args, &context(global)?).await,
        Command::Ct(args) => ct::run(&args, &context(global)?).await,
        Command::Nat(args) => nat::run(&args, &context(global)?).await,
        Command::Path(args) => path::run(&args, &context(global)?).await,
        Command::Completion(args) => completion::run(&args),
        // Reads the file itself: `config set` must be able to repair a file that does not load.
        Command::Config(args) => config::run(&args, global),
    }
}
