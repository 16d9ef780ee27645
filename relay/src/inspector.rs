//! `flowscope.v1.Inspector` through the relay: `flowctl ct list --node …`, `nat list` and agent
//! status for the whole cluster. Each call goes to every connected agent (or the ones named in
//! the request's `node_name`), in parallel, bounded by the request timeout; the answers are
//! concatenated, and nodes that did not answer are listed as unavailable.

use std::{future::Future, time::Duration};

use flowscope_proto::flowscope::v1::{
    AgentStatusRequest, AgentStatusResponse, ListConntrackRequest, ListConntrackResponse,
    ListNatRequest, ListNatResponse, inspector_client::InspectorClient,
    inspector_server::Inspector,
};
use futures::future::join_all;
use tonic::{Request, Response, Status, transport::Channel};

use crate::peer::{MAX_MESSAGE, PeerState};
use crate::pool::PeerPool;

/// The relay's Inspector.
#[derive(Clone)]
pub struct RelayInspector {
    pool: PeerPool,
    timeout: Duration,
}

impl RelayInspector {
    /// An Inspector over `pool`'s agents; each agent gets `timeout` to answer.
    pub fn new(pool: PeerPool, timeout: Duration) -> Self {
        RelayInspector { pool, timeout }
    }

    /// Calls `f` on every selected agent. Returns the answers and the nodes that did not
    /// answer (unavailable, failed or too slow).
    async fn fan_out<T, F, Fut>(
        &self,
        nodes: &[String],
        f: F,
    ) -> Result<(Vec<T>, Vec<String>), Status>
    where
        F: Fn(InspectorClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut unavailable = Vec::new();
        let mut calls = Vec::new();
        for peer in self.pool.peers() {
            let status = peer.status();
            if !nodes.is_empty() && !nodes.contains(&status.name) {
                continue;
            }
            if status.state != PeerState::Connected {
                unavailable.push(status.name);
                continue;
            }
            let client =
                InspectorClient::new(peer.channel()).max_decoding_message_size(MAX_MESSAGE);
            let call = tokio::time::timeout(self.timeout, f(client));
            calls.push(async move { (status.name, call.await) });
        }
        let mut answers = Vec::new();
        for (name, result) in join_all(calls).await {
            match result {
                Ok(Ok(resp)) => answers.push(resp.into_inner()),
                // A bad request is the client's error, the same on every node: say it once.
                Ok(Err(s)) if s.code() == tonic::Code::InvalidArgument => return Err(s),
                _ => unavailable.push(name),
            }
        }
        if !nodes.is_empty() {
            for n in nodes {
                if !self.pool.peers().iter().any(|p| p.status().name == *n) {
                    return Err(Status::not_found(format!(
                        "no node named {n:?} behind this relay"
                    )));
                }
            }
        }
        Ok((answers, unavailable))
    }
}

/// The nodes' lists one after the other, cut at `limit` (0: no limit); truncated if any node's
/// list was, or the cut removed something.
fn concat<E>(lists: impl Iterator<Item = (Vec<E>, bool)>, limit: u32) -> (Vec<E>, bool) {
    let mut truncated = false;
    let mut all = Vec::new();
    for (entries, t) in lists {
        truncated |= t;
        all.extend(entries);
    }
    if limit > 0 && all.len() > limit as usize {
        all.truncate(limit as usize);
        truncated = true;
    }
    (all, truncated)
}

#[tonic::async_trait]
impl Inspector for RelayInspector {
    async fn list_conntrack(
        &self,
        request: Request<ListConntrackRequest>,
    ) -> Result<Response<ListConntrackResponse>, Status> {
        let req = request.into_inner();
        let nodes = req.node_name.clone();
        let per_node = ListConntrackRequest {
            node_name: Vec::new(),
            ..req.clone()
        };
        let (answers, unavailable_nodes) = self
            .fan_out(&nodes, |mut c| {
                let r = per_node.clone();
                async move { c.list_conntrack(r).await }
            })
            .await?;
        let (entries, truncated) = concat(
            answers.into_iter().map(|a| (a.entries, a.truncated)),
            req.limit,
        );
        Ok(Response::new(ListConntrackResponse {
            entries,
            truncated,
            unavailable_nodes,
        }))
    }

    async fn list_nat(
        &self,
        request: Request<ListNatRequest>,
    ) -> Result<Response<ListNatResponse>, Status> {
        let req = request.into_inner();
        let nodes = req.node_name.clone();
        let per_node = ListNatRequest {
            node_name: Vec::new(),
            ..req.clone()
        };
        let (answers, unavailable_nodes) = self
            .fan_out(&nodes, |mut c| {
                let r = per_node.clone();
                async move { c.list_nat(r).await }
            })
            .await?;
        let (entries, truncated) = concat(
            answers.into_iter().map(|a| (a.entries, a.truncated)),
            req.limit,
        );
        Ok(Response::new(ListNatResponse {
            entries,
            truncated,
            unavailable_nodes,
        }))
    }

    async fn get_agent_status(
        &self,
        request: Request<AgentStatusRequest>,
    ) -> Result<Response<AgentStatusResponse>, Status> {
        let nodes = request.into_inner().node_name;
        let (answers, unavailable_nodes) = self
            .fan_out(&nodes, |mut c| async move {
                c.get_agent_status(AgentStatusRequest::default()).await
            })
            .await?;
        let agents = answers.into_iter().flat_map(|a| a.agents).collect();
        Ok(Response::new(AgentStatusResponse {
            agents,
            unavailable_nodes,
        }))
    }
}
