//! One error type for everything a user can get wrong in a job file or a data source definition;
//! each message names the place (a JSON path, a field) and what to do about it.

/// Errors of validation and resolution in `ferry-common`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    MalformedJson {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid job at {path}: {message}")]
    InvalidJob { path: String, message: String },
    #[error("unknown {role} plugin \"{name}\" at {path}; known {role} plugins: {known}")]
    UnknownPlugin {
        role: &'static str,
        name: String,
        path: String,
        known: String,
    },
    #[error("plugin \"{name}\" at {path} is not supported by this release yet")]
    UnsupportedPlugin { name: String, path: String },
    #[error("data source \"{0}\" not found; see `ferry datasource list`")]
    DataSourceNotFound(String),
    #[error(
        "data source \"{name}\" is of type {actual}, but {path} needs a {expected} data source"
    )]
    DataSourceKindMismatch {
        name: String,
        actual: String,
        expected: String,
        path: String,
    },
    #[error("invalid data source: {0}")]
    InvalidDataSource(String),
    #[error("unknown parameter {name} in the job; known: {known}")]
    UnknownParameter { name: String, known: String },
    #[error("invalid bizdate \"{0}\": expected yyyymmdd or yyyy-mm-dd")]
    InvalidBizdate(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
