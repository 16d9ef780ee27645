//! `flowctl watch peers`: Hubble's `hubble watch peers`, the Peer service's notifications as
//! they come (the peers an agent knows of, then every change), one line each.

use std::io::{self, Write};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use flowscope_proto::peer::peer_client::PeerClient;
use flowscope_proto::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest};

use super::Context;
use crate::client;
use crate::output::clean;

/// Examples and exit status, shown after `flowctl watch --help`.
pub const AFTER_HELP: &str = "\
Examples:
  The peers the local agent announces, then every change, until Ctrl-C:
    flowctl watch peers
  Those of an agent on another node:
    flowctl watch peers --server tls://node-1.example:4244 --tls-ca-cert-files ca.pem

Each line is TYPE ADDRESS NAME, as `hubble watch peers` prints it:
  PEER_ADDED   10.0.0.2:4244 node-2 (TLS.ServerName: node-2.default.hubble-grpc.cilium.io)

Exit status: 0 when the server ends the stream or on Ctrl-C, 1 error (server unreachable,
no Peer service), 2 usage error.";

/// `flowctl watch` arguments.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// What to watch.
    #[command(subcommand)]
    pub what: WatchCommand,
}

/// What `flowctl watch` follows.
#[derive(Debug, Subcommand)]
pub enum WatchCommand {
    /// The Peer service's notifications: peers added, deleted, updated.
    #[command(visible_alias = "peer")]
    Peers,
}

/// One notification as `hubble watch peers` prints it: `%-12s %s %s%s`.
pub fn peer_line(n: &ChangeNotification) -> String {
    let kind = ChangeNotificationType::try_from(n.r#type)
        .map_or_else(|_| n.r#type.to_string(), |t| t.as_str_name().to_string());
    let tls = n.tls.as_ref().map_or_else(String::new, |tls| {
        format!(" (TLS.ServerName: {})", clean(&tls.server_name))
    });
    format!("{kind:<12} {} {}{tls}", clean(&n.address), clean(&n.name))
}

/// Runs `flowctl watch …`.
pub async fn run(args: &WatchArgs, ctx: &Context) -> anyhow::Result<()> {
    let WatchCommand::Peers = args.what;
    let connect = ctx.connect_options()?;
    let channel = client::connect(&connect).await?;
    let mut peers = PeerClient::new(channel);
    let notify = async { peers.notify(NotifyRequest {}).await.map_err(with_hint) };
    let mut stream = client::within(&connect, "Notify", notify)
        .await?
        .into_inner();
    let mut stdout = io::stdout().lock();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(notification)) => {
                    // Each line as it comes: this is a live view.
                    writeln!(stdout, "{}", peer_line(&notification))
                        .and_then(|()| stdout.flush())
                        .context("writing to stdout")?;
                }
                Ok(None) => return Ok(()),
                Err(status) if status.code() == tonic::Code::Cancelled => return Ok(()),
                Err(status) => {
                    return Err(client::rpc_error(&connect.server, "Notify", &with_hint(status)));
                }
            },
            _ = &mut ctrl_c => return Ok(()),
        }
    }
}

/// A server without the Peer service (the relay serves none) answers Unimplemented: say where
/// the service is.
fn with_hint(status: tonic::Status) -> tonic::Status {
    if status.code() == tonic::Code::Unimplemented {
        tonic::Status::unimplemented(format!(
            "this server has no Peer service ({}): ask an agent, the relay serves none",
            status.message()
        ))
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_proto::peer::Tls;

    #[test]
    fn lines_as_hubble_prints_them() {
        let added = ChangeNotification {
            name: "node-1".into(),
            address: "10.0.0.1:4244".into(),
            r#type: ChangeNotificationType::PeerAdded as i32,
            tls: None,
        };
        assert_eq!(peer_line(&added), "PEER_ADDED   10.0.0.1:4244 node-1");
        let updated = ChangeNotification {
            name: "node-2".into(),
            address: "10.0.0.2:4244".into(),
            r#type: ChangeNotificationType::PeerUpdated as i32,
            tls: Some(Tls {
                server_name: "node-2.default.hubble-grpc.cilium.io".into(),
            }),
        };
        assert_eq!(
            peer_line(&updated),
            "PEER_UPDATED 10.0.0.2:4244 node-2 (TLS.ServerName: node-2.default.hubble-grpc.cilium.io)"
        );
        let odd = ChangeNotification {
            r#type: 9,
            ..Default::default()
        };
        assert_eq!(peer_line(&odd), format!("{:<12}  ", "9"));
    }
}
