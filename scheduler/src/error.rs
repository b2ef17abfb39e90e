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
        }
    }
}
