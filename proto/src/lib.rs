//! Ferry's wire contracts, generated from `proto/ferry/*/v1/*.proto`.
//!
//! Versioned packages (`ferry.agent.v1`, `ferry.admin.v1`, `ferry.raft.v1`) let agents and CLIs of different
//! releases keep talking; domain types live in `ferry-common` and are converted at the edges.
//! [`tls`] says how a client reaches the services (plain or TLS), shared by agent and CLI.

pub mod tls;

pub mod agent {
    pub mod v1 {
        tonic::include_proto!("ferry.agent.v1");
    }
}

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("ferry.admin.v1");
    }
}

/// Scheduler-to-scheduler replication; raft-rs messages ride inside as bytes.
pub mod raft {
    pub mod v1 {
        tonic::include_proto!("ferry.raft.v1");
    }
}

/// Metadata key carrying the agent id on the Session stream.
pub const AGENT_ID_HEADER: &str = "x-ferry-agent-id";
/// Metadata key carrying the agent credential on the Session stream.
pub const AGENT_CREDENTIAL_HEADER: &str = "x-ferry-agent-credential";
/// Metadata key naming the relay (attempt) a Relay stream joins.
pub const RELAY_ID_HEADER: &str = "x-ferry-relay-id";
/// Metadata key naming the leg (`reader` | `writer`) on a Relay stream.
pub const RELAY_ROLE_HEADER: &str = "x-ferry-relay-role";
/// Metadata key carrying the attempt's fencing token on a Relay stream.
pub const FENCING_TOKEN_HEADER: &str = "x-ferry-fencing-token";
