//! Ferry's scheduler.
//!
//! # Layout
//! - [`clock`]: the injected clock every time-based decision reads.
//! - [`state`]: the durable state machine over sled; every change is a [`state::command::Command`].
//! - [`cluster`]: the raft node under the store, leadership (who acts), `ferry cluster`.
//! - [`raft`]: replication of that state machine across schedulers (raft-rs over sled and gRPC).
//! - [`hub`]: what is known only while running: open agent sessions, heartbeats, watchers.
//! - [`agent_service`]: the agent-facing gRPC service (Register, Session).
//! - [`admin`]: the admin gRPC service behind the CLI; [`convert`] maps records to its messages.
//! - [`auth`]: API tokens, users, roles per workspace: who may do what.
//! - [`dispatch`]: hands waiting instances to agents and enforces attempt leases.
//! - [`relay`]: joins the two legs of a two-group sync (reader in one private network, writer
//!   in another) with bounded buffers.
//! - [`generate`]: instances from schedules (nightly, generate-now), manual runs, backfills;
//!   the leader's ticks.
//! - [`plan`]: pure instance planning: a day's instances of every node and their edges.
//! - [`secrets`]: seals secrets at rest under a master key (rotation, inline job passwords).
//! - [`console`]: the web console's pages, embedded in the binary and served beside gRPC.
//! - [`server`]: wires it all on one listener: `server::run(listener, config, shutdown)`.

pub mod admin;
pub mod agent_service;
pub mod alerts;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod console;
pub mod context;
pub mod convert;
pub mod dispatch;
pub mod error;
pub mod generate;
pub mod hub;
pub mod metrics;
pub mod plan;
pub mod raft;
pub mod relay;
pub mod rest;
pub mod secrets;
pub mod server;
pub mod state;

pub use context::{Config, ServerTls};
pub use error::{Error, Result};
