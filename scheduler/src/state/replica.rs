//! The store as raft's state machine: how commands and their outcomes travel through the log,
//! and how the whole state becomes a snapshot and back.
//!
//! Commands are JSON (the same serde types the store keeps), deflated when larger than
//! [`COMPRESS_OVER`] bytes: log batches from agents are most of the log's volume and compress
//! several times over, which is that much less to write, replicate and snapshot. The first byte
//! says which: `J` plain, `Z` deflated. A refused command's result carries a code and message
//! rather than the error value, because the proposer may be on another node: the gRPC code the
//! caller sees is the same wherever it proposed.

use super::command::{Applied, Command};
use super::{APPLIED, Store};
use crate::error::{Error, RefusalCode, Result};
use crate::raft::{Committed, Prepared, SnapshotSource, StateMachine, StateMachineError};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// Commands larger than this are deflated in the log.
const COMPRESS_OVER: usize = 1024;
const PLAIN: u8 = b'J';
const DEFLATED: u8 = b'Z';
/// The largest command a log entry may decode to (a log batch is at most 256 KiB of text).
const MAX_DECODED: u64 = 64 << 20;

pub fn encode_command(cmd: &Command) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(cmd)?;
    if json.len() <= COMPRESS_OVER {
        let mut out = Vec::with_capacity(json.len() + 1);
        out.push(PLAIN);
        out.extend_from_slice(&json);
        return Ok(out);
    }
    let mut enc = flate2::write::DeflateEncoder::new(vec![DEFLATED], flate2::Compression::fast());
    enc.write_all(&json)
        .and_then(|()| enc.finish())
        .map_err(|e| Error::InvalidArgument(format!("cannot compress a command: {e}")))
}

pub fn decode_command(data: &[u8]) -> Result<Command> {
    match data.split_first() {
        Some((&PLAIN, json)) => Ok(serde_json::from_slice(json)?),
        Some((&DEFLATED, z)) => {
            let mut json = Vec::new();
            flate2::read::DeflateDecoder::new(z)
                .take(MAX_DECODED)
                .read_to_end(&mut json)
                .map_err(|e| {
                    Error::InvalidArgument(format!("a log entry does not inflate: {e}"))
                })?;
            Ok(serde_json::from_slice(&json)?)
        }
        _ => Err(Error::InvalidArgument(
            "a log entry is not a Ferry command (unknown header byte)".into(),
        )),
    }
}

/// A command's result as the proposer receives it.
#[derive(Serialize, Deserialize)]
enum Outcome {
    Applied(Applied),
    Refused { code: RefusalCode, message: String },
}

pub(super) fn encode_outcome(outcome: Result<Applied>) -> Result<Vec<u8>> {
    let o = match outcome {
        Ok(a) => Outcome::Applied(a),
        Err(e) => Outcome::Refused {
            code: e.refusal_code(),
            message: e.to_string(),
        },
    };
    Ok(serde_json::to_vec(&o)?)
}

pub(super) fn decode_outcome(bytes: &[u8]) -> Result<Applied> {
    if bytes.is_empty() {
        // Only entries raft writes itself have no result; a command always has one.
        return Err(Error::Unavailable(
            "the command was applied without a result; check its effect before retrying".into(),
        ));
    }
    match serde_json::from_slice(bytes)? {
        Outcome::Applied(a) => Ok(a),
        Outcome::Refused { code, message } => Err(Error::Refused { code, message }),
    }
}

impl StateMachine for Store {
    fn apply(&self, entries: &mut [Committed<'_>]) -> Result<Vec<Vec<u8>>, StateMachineError> {
        let entries = entries.iter_mut().map(|e| {
            // What `prepare` decoded; anything else is decoded here.
            let decoded = e
                .prepared
                .take()
                .and_then(|p| p.downcast::<Result<Command>>().ok())
                .map(|d| *d);
            (e.index, e.data, decoded)
        });
        Ok(self.apply_decoded(entries)?)
    }

    /// Decodes the command: JSON parsing (and inflating) is a tenth of what a generated day
    /// costs the applier, and the applier is the one thread every command waits for.
    fn prepare(&self, data: &[u8]) -> Option<Prepared> {
        Some(Box::new(decode_command(data)))
    }

    fn applied_index(&self) -> u64 {
        Store::applied_index(self)
    }

    /// Every record, as `(u32 key length, key, u32 value length, value)` in key order, as of
    /// this call: applies made while it is written do not show (copy-on-write pre-images).
    fn begin_snapshot(&self) -> Result<Box<dyn SnapshotSource>, StateMachineError> {
        let index = Store::applied_index(self);
        Ok(Box::new(self.cow.begin(index, |_| false)?))
    }

    /// Replaces every record. The applied index goes first and comes back last, so a crash in
    /// between leaves a store at index 0 that the node restores again on its next start; a
    /// restore that fails part way (a torn snapshot, a read error) leaves it at index 0 in memory
    /// too, rather than claiming the index of records it no longer holds.
    fn restore(&self, index: u64, data: &mut dyn Read) -> Result<(), StateMachineError> {
        self.cow.cancel();
        self.applied.store(0, std::sync::atomic::Ordering::SeqCst);
        self.tree.remove(APPLIED)?;
        self.tree.clear()?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0usize;
        while let Some(k) = read_chunk(data, true)? {
            let v = read_chunk(data, false)?.ok_or("snapshot ends inside a record")?;
            if k == APPLIED.as_bytes() {
                continue;
            }
            in_batch += k.len() + v.len();
            batch.insert(k, v);
            if in_batch > 8 << 20 {
                self.tree.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        batch.insert(APPLIED.as_bytes(), serde_json::to_vec(&index)?);
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        self.applied
            .store(index, std::sync::atomic::Ordering::SeqCst);
        self.tasks_changed();
        self.day_lists().clear();
        self.queue_mirror().clear();
        // A snapshot from an older scheduler has older indexes.
        self.ensure_layout()?;
        Ok(())
    }
}

/// One length-prefixed chunk; `None` at a clean end when `may_end`.
fn read_chunk(data: &mut dyn Read, may_end: bool) -> Result<Option<Vec<u8>>, StateMachineError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = data.read(&mut len[got..])?;
        if n == 0 {
            if got == 0 && may_end {
                return Ok(None);
            }
            return Err("snapshot is truncated".into());
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    let mut buf = vec![0u8; len];
    data.read_exact(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_survive_the_log_plain_and_deflated() -> Result<()> {
        let small = Command::RemoveDataSource {
            name: "ws/orders".into(),
        };
        let bytes = encode_command(&small)?;
        assert_eq!(bytes[0], PLAIN);
        assert_eq!(decode_command(&bytes)?, small);

        let lines: Vec<_> = (0..200)
            .map(|i| super::super::model::LogRecord {
                index: i,
                ts_ms: 1_700_000_000_000 + i as i64,
                level: "INFO".into(),
                message: format!("row {i} copied"),
            })
            .collect();
        let big = Command::AppendLogs {
            attempt_id: "a1".into(),
            agent_id: "agent".into(),
            fencing_token: 7,
            lines,
        };
        let bytes = encode_command(&big)?;
        assert_eq!(bytes[0], DEFLATED);
        assert!(bytes.len() < serde_json::to_vec(&big)?.len() / 2);
        assert_eq!(decode_command(&bytes)?, big);
        Ok(())
    }

    #[test]
    fn garbage_in_the_log_is_a_refusal_not_a_panic() {
        for data in [&b"x"[..], b"J{", b"Z\x00\x01\x02", b"Jnull"] {
            assert!(decode_command(data).is_err());
        }
    }

    /// The regression case of `tests/replica_model.rs`'s snapshot property, kept here so it does
    /// not depend on that test's generator.
    #[test]
    fn a_torn_snapshot_leaves_the_store_at_index_0() -> Result<(), StateMachineError> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let cmd = encode_command(&Command::CreateWorkspace {
            name: "ws1".into(),
            at_ms: 1,
        })?;
        store.apply_entries(&[(1, cmd.as_slice())])?;
        let mut snapshot = Vec::new();
        assert_eq!(StateMachine::snapshot(&store, &mut snapshot)?, 1);

        let torn = &snapshot[..snapshot.len() - 1];
        assert!(StateMachine::restore(&store, 1, &mut &torn[..]).is_err());
        assert_eq!(store.applied_index(), 0, "no records, so no index");

        StateMachine::restore(&store, 1, &mut snapshot.as_slice())?;
        assert_eq!(store.applied_index(), 1);
        assert!(store.workspace("ws1")?.is_some());
        Ok(())
    }

    #[test]
    fn a_refusal_keeps_its_code_across_nodes() -> Result<()> {
        let e = Error::AlreadyExists {
            what: "group",
            name: "g1".into(),
        };
        let bytes = encode_outcome(Err(e))?;
        match decode_outcome(&bytes) {
            Err(Error::Refused { code, message }) => {
                assert_eq!(code, RefusalCode::AlreadyExists);
                assert!(message.contains("g1"));
            }
            other => panic!("unexpected {other:?}"),
        }
        Ok(())
    }
}
