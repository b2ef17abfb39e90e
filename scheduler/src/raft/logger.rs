//! raft-rs logs through `slog`; this drain hands its records to `tracing` (target `raft`), so
//! raft's elections and refusals land in the scheduler's one log with their key-value fields.
//! raft's `info` (elections, term changes, every rejected vote) is chatty: it becomes `debug`,
//! and the node logs what an operator needs (leader changes) itself.

use std::fmt::Write as _;

struct TracingDrain;

/// Collects a record's key-value pairs as `key=value` text.
struct Fields(String);

impl slog::Serializer for Fields {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = write!(self.0, "{key}={val}");
        Ok(())
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        use slog::KV as _;
        let mut fields = Fields(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let msg = record.msg();
        let fields = fields.0;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", %fields, "{msg}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", %fields, "{msg}"),
            slog::Level::Info | slog::Level::Debug => {
                tracing::debug!(target: "raft", %fields, "{msg}")
            }
            slog::Level::Trace => tracing::trace!(target: "raft", %fields, "{msg}"),
        }
        Ok(())
    }
}

/// A logger for one raft node, tagged with its id.
pub fn for_node(id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("raft_id" => id))
}
