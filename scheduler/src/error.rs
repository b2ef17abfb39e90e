//! The scheduler's error type and its one mapping to gRPC status codes.

use tonic::Status;

/// Errors of the scheduler's catalog, state machine and services.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} \"{name}\" not found; {hint}")]
    NotFound {
        what: &'static str,
        name: String,
        hint: &'static str,
    },
    #[error("{what} \"{name}\" already exists")]
    AlreadyExists { what: &'static str, name: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Job(#[from] ferry_common::Error),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("stored record cannot be decoded: {0}")]
    Codec(#[from] serde_json::Error),
    #[error("secret store: {0}")]
    Secrets(String),
    /// A command the replicated state refused, as its proposer receives it (possibly from
    /// another scheduler): the original error's code and message.
    #[error(transparent)]
    Raft(crate::raft::RaftError),
    #[error("{message}")]
    Refused { code: RefusalCode, message: String },
}

/// The gRPC code of a refused command, carried through the raft log to its proposer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    FailedPrecondition,
    Unavailable,
    Internal,
}

impl Error {
    /// The code this error is refused with (see [`RefusalCode`]).
    pub fn refusal_code(&self) -> RefusalCode {
        match self {
            Error::NotFound { .. } => RefusalCode::NotFound,
            Error::AlreadyExists { .. } => RefusalCode::AlreadyExists,
            Error::InvalidArgument(_) | Error::Job(_) => RefusalCode::InvalidArgument,
            Error::Unauthenticated(_) => RefusalCode::Unauthenticated,
            Error::PermissionDenied(_) => RefusalCode::PermissionDenied,
            Error::FailedPrecondition(_) => RefusalCode::FailedPrecondition,
            Error::Unavailable(_) => RefusalCode::Unavailable,
            Error::Storage(_) | Error::Codec(_) | Error::Secrets(_) | Error::Raft(_) => {
                RefusalCode::Internal
            }
            Error::Refused { code, .. } => *code,
        }
    }
}

impl From<crate::raft::RaftError> for Error {
    fn from(e: crate::raft::RaftError) -> Self {
        Error::Raft(e)
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::NotFound { .. } => Status::not_found(msg),
            Error::AlreadyExists { .. } => Status::already_exists(msg),
            Error::InvalidArgument(_) | Error::Job(_) => Status::invalid_argument(msg),
            Error::Unauthenticated(_) => Status::unauthenticated(msg),
            Error::PermissionDenied(_) => Status::permission_denied(msg),
            Error::FailedPrecondition(_) => Status::failed_precondition(msg),
            Error::Unavailable(_) => Status::unavailable(msg),
            Error::Storage(_) | Error::Codec(_) | Error::Secrets(_) => Status::internal(msg),
            // Not-leader keeps the leader's address in the metadata, so a client retries there.
            Error::Raft(e) => Status::from(e),
            Error::Refused { code, .. } => match code {
                RefusalCode::NotFound => Status::not_found(msg),
                RefusalCode::AlreadyExists => Status::already_exists(msg),
                RefusalCode::InvalidArgument => Status::invalid_argument(msg),
                RefusalCode::Unauthenticated => Status::unauthenticated(msg),
                RefusalCode::PermissionDenied => Status::permission_denied(msg),
                RefusalCode::FailedPrecondition => Status::failed_precondition(msg),
                RefusalCode::Unavailable => Status::unavailable(msg),
                RefusalCode::Internal => Status::internal(msg),
            },
        }
    }
}
