//! The sync engine against the real PostgreSQL and MariaDB on 127.0.0.1 (started by
//! `scripts/services.sh`): type round trips for every reader x writer pair, splitPk, error
//! limits, idempotent reruns, and DataX's own job templates.

mod connectivity;
mod exact;
mod files;
mod idempotent;
mod injection;
mod matrix;
mod roundtrip;
mod splits;

mod support;
mod templates;
mod tls;
