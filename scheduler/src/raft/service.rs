//! The raft gRPC service peers (and `ferry cluster`) talk to, on the scheduler's address.
//!
//! Raft traffic is checked against the cluster token when one is set; without it the service
//! relies on the listener's TLS (with client certificates) to keep strangers out, since a forged
//! raft message could change the cluster's state.

use super::error::{RaftError, Result};
use super::handle::{ClusterStatus, RaftHandle};
use super::node::NodeMsg;
use super::transport::RAFT_TOKEN_HEADER;
use ferry_proto::raft::v1::change_membership_request::Change;
use ferry_proto::raft::v1::raft_service_server::{RaftService, RaftServiceServer};
use ferry_proto::raft::v1::{
    ChangeMembershipRequest, ChangeMembershipResponse, ForwardRequest, ForwardResponse, Member,
    MessageBatch, SnapshotAck, SnapshotChunk, StatusRequest, StatusResponse, StepAck,
};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

/// Serves one node's raft service.
pub struct RaftApi {
    handle: RaftHandle,
}

impl RaftHandle {
    /// The gRPC service for this node, to add to the scheduler's server.
    pub fn service(&self) -> RaftServiceServer<RaftApi> {
        RaftServiceServer::new(RaftApi {
            handle: self.clone(),
        })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
    }
}

impl From<ClusterStatus> for StatusResponse {
    fn from(s: ClusterStatus) -> Self {
        let (leader_id, leader_addr) = s.leader.unwrap_or((0, String::new()));
        StatusResponse {
            id: s.id,
            role: s.role,
            leader_id,
            leader_addr,
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            first_index: s.first_index,
            last_index: s.last_index,
            snapshot_index: s.snapshot_index,
            members: s
                .members
                .into_iter()
                .map(|m| Member {
                    id: m.id,
                    addr: m.addr,
                    voter: m.voter,
                    matched: m.matched,
                    next_index: m.next_index,
                    lag: m.lag,
                    progress: m.progress,
                    recently_active: m.recently_active,
                })
                .collect(),
        }
    }
}

/// Compares without stopping at the first difference, so timing tells nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether two comma-separated token lists have one in common. Each side may hold several keys
/// during a master key rotation (see `SecretBox::cluster_tokens`): one shared key is enough.
pub(crate) fn shares_a_token(given: &str, expected: &str) -> bool {
    given.split(',').any(|g| {
        expected
            .split(',')
            .any(|e| !e.is_empty() && constant_time_eq(g.as_bytes(), e.as_bytes()))
    })
}

impl RaftApi {
    fn check_token<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(expected) = self.handle.transport.token() else {
            return Ok(());
        };
        let given = req
            .metadata()
            .get(RAFT_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok());
        if given.is_some_and(|g| shares_a_token(g, expected)) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "raft peer did not present this cluster's token; every scheduler of a cluster needs the same master key (FERRY_MASTER_KEY or --master-key-file)",
            ))
        }
    }

    /// Decodes peer messages addressed to this node that the filter lets through.
    fn decode(&self, from: u64, raw: &[Vec<u8>]) -> Vec<Message> {
        let me = self.handle.id;
        if !self.handle.transport.allows(from, me) {
            return Vec::new();
        }
        raw.iter()
            .filter_map(|b| match Message::parse_from_bytes(b) {
                Ok(m) if m.to == me => Some(m),
                Ok(m) => {
                    debug!(raft_id = me, peer = from, to = m.to, "raft message for another node dropped");
                    None
                }
                Err(e) => {
                    warn!(raft_id = me, peer = from, error = %e, "undecodable raft message dropped");
                    None
                }
            })
            .collect()
    }

    async fn receive_snapshot(&self, mut stream: Streaming<SnapshotChunk>) -> Result<(), Status> {
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let msgs = self.decode(first.from, std::slice::from_ref(&first.message));
        let Some(msg) = msgs.into_iter().next() else {
            return Err(Status::unavailable(
                "snapshot refused (not for this node or cut off)",
            ));
        };
        if msg.get_msg_type() != MessageType::MsgSnapshot {
            return Err(Status::invalid_argument(
                "the first chunk is not a MsgSnapshot",
            ));
        }
        self.handle.transport.learn(first.from, &first.from_addr);
        let index = msg.get_snapshot().get_metadata().index;
        let mut writer = self.handle.snaps.writer(index).map_err(Status::from)?;
        let mut complete = false;
        while let Some(chunk) = stream.message().await? {
            if chunk.last {
                if chunk.total_bytes != writer.bytes_written() {
                    return Err(Status::data_loss(format!(
                        "snapshot {index}: {} bytes announced, {} received",
                        chunk.total_bytes,
                        writer.bytes_written()
                    )));
                }
                complete = true;
                break;
            }
            writer.write_chunk(&chunk.data).map_err(Status::from)?;
        }
        if !complete {
            return Err(Status::data_loss(format!(
                "snapshot {index} stream ended early"
            )));
        }
        let bytes = writer.finish().map_err(Status::from)?;
        // The snapshot must be on disk before raft is told about it: after a crash the node
        // restores from it.
        self.handle
            .db
            .flush_async()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        info!(
            raft_id = self.handle.id,
            peer = first.from,
            index,
            bytes,
            "snapshot received"
        );
        self.handle
            .inbox
            .send(NodeMsg::Raft(vec![msg]))
            .await
            .map_err(|_| Status::unavailable(RaftError::Stopped.to_string()))
    }
}

#[tonic::async_trait]
impl RaftService for RaftApi {
    async fn step(
        &self,
        request: Request<Streaming<MessageBatch>>,
    ) -> Result<Response<StepAck>, Status> {
        self.check_token(&request)?;
        let mut stream = request.into_inner();
        let mut learned = false;
        loop {
            // End with the node, so a server shutting down gracefully is not held by peers' streams.
            let batch = tokio::select! {
                _ = self.handle.stop.cancelled() => break,
                b = stream.message() => match b? {
                    Some(b) => b,
                    None => break,
                },
            };
            if !learned {
                self.handle.transport.learn(batch.from, &batch.from_addr);
                learned = true;
            }
            let msgs = self.decode(batch.from, &batch.messages);
            if msgs.is_empty() {
                continue;
            }
            if self.handle.inbox.send(NodeMsg::Raft(msgs)).await.is_err() {
                return Err(Status::unavailable(RaftError::Stopped.to_string()));
            }
        }
        Ok(Response::new(StepAck {}))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        self.check_token(&request)?;
        self.receive_snapshot(request.into_inner()).await?;
        Ok(Response::new(SnapshotAck {}))
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        self.check_token(&request)?;
        let applied = self
            .handle
            .propose_applied(request.into_inner().command)
            .await?;
        Ok(Response::new(ForwardResponse {
            result: applied.result,
            index: applied.index,
        }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.check_token(&request)?;
        Ok(Response::new(self.handle.status().await?.into()))
    }

    async fn change_membership(
        &self,
        request: Request<ChangeMembershipRequest>,
    ) -> Result<Response<ChangeMembershipResponse>, Status> {
        self.check_token(&request)?;
        let req = request.into_inner();
        let index = match Change::try_from(req.change) {
            Ok(Change::AddVoter) => self.handle.add_voter(req.node_id, &req.addr).await?,
            Ok(Change::RemoveVoter) => self.handle.remove_voter(req.node_id).await?,
            _ => {
                return Err(Status::invalid_argument(
                    "membership change must be ADD_VOTER or REMOVE_VOTER",
                ));
            }
        };
        Ok(Response::new(ChangeMembershipResponse { index }))
    }
}
