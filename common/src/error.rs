//! One error type for everything a user can get wrong in a job file, a data source definition, a
//! schedule, its parameters or its dependencies; each message names the place (a JSON path, a
//! field, a node) and what to do about it.

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
    #[error(
        "unknown parameter {name} in the job; known: {known}; define others as name=expression, \
         e.g. dt=$[yyyymmdd-1]"
    )]
    UnknownParameter { name: String, known: String },
    #[error("invalid parameter {what}: {message}")]
    InvalidParameter { what: String, message: String },
    #[error("invalid bizdate \"{0}\": expected yyyymmdd or yyyy-mm-dd")]
    InvalidBizdate(String),
    #[error(
        "invalid cron expression \"{expr}\": {message}; write `30 2 * * *` (minute hour \
         day-of-month month day-of-week, 0 or 7 = Sunday) or `00 30 02 * * ?` (with seconds first, \
         day-of-week 1 = Sunday .. 7 = Saturday)"
    )]
    InvalidCron { expr: String, message: String },
    #[error(
        "unknown time zone \"{0}\": use an IANA name such as Asia/Shanghai, Europe/Berlin or UTC"
    )]
    UnknownTimeZone(String),
    #[error("node \"{0}\" is defined twice")]
    DuplicateNode(String),
    #[error(
        "node \"{node}\" depends on \"{upstream}\", which is not a submitted node; submit \"{upstream}\" first or remove the dependency"
    )]
    UnknownUpstream { node: String, upstream: String },
    #[error(
        "node \"{node}\" is scheduled but depends on \"{upstream}\", which runs only by hand and so would block it forever; schedule \"{upstream}\" or remove the dependency"
    )]
    ManualUpstream { node: String, upstream: String },
    #[error(
        "dependency cycle {0}: an arrow points from a node to one that depends on it; remove one of these dependencies (use a dependency on the previous cycle if that is what is meant)"
    )]
    DependencyCycle(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
