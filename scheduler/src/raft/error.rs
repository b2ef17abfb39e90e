//! Errors of the replication core and their one mapping to gRPC codes: not-leader is
//! `UNAVAILABLE` with the leader's id and address in metadata, so a client retries there.

use tonic::Status;

/// Metadata key with the leader's raft id on a not-leader answer.
pub const LEADER_ID_HEADER: &str = "x-ferry-leader-id";
/// Metadata key with the leader's address on a not-leader answer.
pub const LEADER_ADDR_HEADER: &str = "x-ferry-leader-addr";

/// What a proposal, read or membership change can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("this scheduler is not the raft leader; the leader is {}", leader_text(.leader))]
    NotLeader { leader: Option<(u64, String)> },
    #[error("no raft leader is known (an election is under way or a majority is down); retry")]
    NoLeader,
    #[error(
        "timed out after {0:?} waiting for the raft log to apply the request; it may still apply"
    )]
    Timeout(std::time::Duration),
    #[error(
        "the proposal was dropped (leadership changed before it committed); it was not applied"
    )]
    Dropped,
    #[error("the raft node has stopped")]
    Stopped,
    #[error("raft refused the proposal: {0}")]
    Refused(String),
    #[error("a membership change is already in progress; retry when it has applied")]
    ChangeInProgress,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("the leader answered: {0}")]
    Forward(String),
    #[error("raft storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("raft encoding: {0}")]
    Codec(#[from] protobuf::ProtobufError),
    #[error("stored raft data is corrupt: {0}")]
    Corrupt(String),
    #[error("state machine: {0}")]
    StateMachine(String),
    #[error("a snapshot of the state is already being written; at most one is written at a time")]
    SnapshotInProgress,
    #[error(
        "the snapshot being written was abandoned (the state was replaced or the node stopped)"
    )]
    SnapshotCancelled,
    #[error("writing a snapshot: {0}")]
    SnapshotIo(#[from] std::io::Error),
}

fn leader_text(leader: &Option<(u64, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("node {id} at {addr}"),
        None => "not known yet".into(),
    }
}

/// Result with [`RaftError`].
pub type Result<T, E = RaftError> = std::result::Result<T, E>;

impl From<RaftError> for Status {
    fn from(e: RaftError) -> Self {
        let msg = e.to_string();
        match e {
            RaftError::NotLeader { leader } => {
                let mut status = Status::unavailable(msg);
                if let Some((id, addr)) = leader {
                    let md = status.metadata_mut();
                    if let Ok(v) = id.to_string().parse() {
                        md.insert(LEADER_ID_HEADER, v);
                    }
                    if let Ok(v) = addr.parse() {
                        md.insert(LEADER_ADDR_HEADER, v);
                    }
                }
                status
            }
            RaftError::NoLeader | RaftError::Stopped | RaftError::ChangeInProgress => {
                Status::unavailable(msg)
            }
            RaftError::Timeout(_) => Status::deadline_exceeded(msg),
            RaftError::Dropped => Status::aborted(msg),
            RaftError::InvalidArgument(_) => Status::invalid_argument(msg),
            RaftError::Forward(_) => Status::unavailable(msg),
            RaftError::Storage(_)
            | RaftError::Raft(_)
            | RaftError::Codec(_)
            | RaftError::Corrupt(_)
            | RaftError::Refused(_)
            | RaftError::StateMachine(_)
            | RaftError::SnapshotIo(_) => Status::internal(msg),
            RaftError::SnapshotInProgress | RaftError::SnapshotCancelled => {
                Status::unavailable(msg)
            }
        }
    }
}

impl RaftError {
    /// The error a client gets back from a peer's `Status`: not-leader with its address when the
    /// metadata says so.
    pub fn from_status(status: &Status) -> Self {
        let md = status.metadata();
        let id = md
            .get(LEADER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let addr = md
            .get(LEADER_ADDR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match (status.code(), id, addr) {
            (tonic::Code::Unavailable, Some(id), Some(addr)) => RaftError::NotLeader {
                leader: Some((id, addr)),
            },
            _ => RaftError::Forward(status.message().to_string()),
        }
    }
}
