//! raft-rs's [`Storage`] over sled: the log, hard state, conf state and snapshot metadata, in trees of the `sled::Db` the state machine also lives in, so one flush
//! makes both durable.
//!
//! Writes here are not durable until the node flushes the `Db` (once per `Ready`, before sending
//! the messages that depend on them): sled acknowledges writes before they reach the disk.
//! Log values are the entry's term (8 bytes, big-endian) followed by the encoded entry, so
//! [`Storage::term`], which raft calls on every append, reads 8 bytes instead of decoding.

use super::error::{RaftError, Result};
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use std::sync::atomic::{AtomicBool, Ordering};

const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";

const HARD_STATE: &[u8] = b"hard_state";
const CONF_STATE: &[u8] = b"conf_state";
/// The log index of the entry that produced the stored conf state.
const CONF_INDEX: &[u8] = b"conf_index";
const SNAPSHOT: &[u8] = b"snapshot";
/// Index and term of the last entry removed by compaction (or covered by the snapshot).
const TRUNCATED: &[u8] = b"truncated";

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn be_u64(bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| RaftError::Corrupt("a stored u64 is shorter than 8 bytes".into()))?;
    Ok(u64::from_be_bytes(arr))
}

fn store_err(e: impl std::error::Error + Send + Sync + 'static) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

/// The raft log and raft metadata of one node.
pub struct SledStorage {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    hard_state: HardState,
    conf_state: ConfState,
    conf_index: u64,
    snapshot: SnapshotMetadata,
    truncated: (u64, u64),
    last_index: u64,
    /// Set when raft asked for a snapshot newer than the stored one; the node asks the applier.
    snapshot_wanted: AtomicBool,
}

impl SledStorage {
    /// Opens the raft trees in `db`, reading back what an earlier run stored.
    pub fn open(db: &sled::Db) -> Result<Self> {
        let log = db.open_tree(LOG_TREE)?;
        let meta = db.open_tree(META_TREE)?;
        let hard_state = match meta.get(HARD_STATE)? {
            Some(b) => HardState::parse_from_bytes(&b)?,
            None => HardState::default(),
        };
        let conf_state = match meta.get(CONF_STATE)? {
            Some(b) => ConfState::parse_from_bytes(&b)?,
            None => ConfState::default(),
        };
        let conf_index = match meta.get(CONF_INDEX)? {
            Some(b) => be_u64(&b)?,
            None => 0,
        };
        let snapshot = match meta.get(SNAPSHOT)? {
            Some(b) => SnapshotMetadata::parse_from_bytes(&b)?,
            None => SnapshotMetadata::default(),
        };
        let truncated = match meta.get(TRUNCATED)? {
            Some(b) if b.len() == 16 => (be_u64(&b[..8])?, be_u64(&b[8..])?),
            Some(_) => return Err(RaftError::Corrupt("truncated state is not 16 bytes".into())),
            None => (snapshot.index, snapshot.term),
        };
        let last_index = match log.last()? {
            Some((k, _)) => be_u64(&k)?,
            None => truncated.0,
        };
        Ok(Self {
            db: db.clone(),
            log,
            meta,
            hard_state,
            conf_state,
            conf_index,
            snapshot,
            truncated,
            last_index,
            snapshot_wanted: AtomicBool::new(false),
        })
    }

    /// The `Db` holding these trees (and the state machine's).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// True once the node has a configuration: bootstrapped with voters or given a snapshot.
    pub fn is_initialized(&self) -> bool {
        !self.conf_state.voters.is_empty() || self.snapshot.index > 0 || self.last_index > 0
    }

    /// Sets the first configuration of a new cluster: every initial node starts with the same
    /// voters as a snapshot at index 1, term 1 (as raft-rs's examples do), and an empty log
    /// after it. The first configuration is in no log entry, so a node added later could not
    /// learn it from entries: with the log starting at 2, the leader must send it a snapshot,
    /// which carries the configuration. (With the configuration at index 0, a joining node
    /// replayed the log from 1, saw only its own addition, believed itself the only voter and
    /// elected itself.)
    pub fn bootstrap(&mut self, voters: impl IntoIterator<Item = u64>) -> Result<()> {
        let mut meta = SnapshotMetadata {
            index: 1,
            term: 1,
            ..Default::default()
        };
        meta.set_conf_state(ConfState {
            voters: voters.into_iter().collect(),
            ..Default::default()
        });
        self.apply_snapshot(meta)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The index of the entry that produced the stored conf state (0 when bootstrapped).
    pub fn conf_index(&self) -> u64 {
        self.conf_index
    }

    pub fn snapshot_metadata(&self) -> &SnapshotMetadata {
        &self.snapshot
    }

    pub fn set_hard_state(&mut self, hs: HardState) -> Result<()> {
        self.meta.insert(HARD_STATE, hs.write_to_bytes()?)?;
        self.hard_state = hs;
        Ok(())
    }

    /// Records a newer commit index (from a `LightReady`).
    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.set_hard_state(hs)
    }

    pub fn set_conf_state(&mut self, cs: ConfState, index: u64) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.insert(CONF_STATE, cs.write_to_bytes()?);
        batch.insert(CONF_INDEX, &index_key(index));
        self.meta.apply_batch(batch)?;
        self.conf_state = cs;
        self.conf_index = index;
        Ok(())
    }

    /// Appends `entries`, first removing any stored entries from `entries[0].index` on: raft only
    /// overwrites a suffix that conflicts with the leader's log.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        if first.index <= self.truncated.0 {
            return Err(RaftError::Corrupt(format!(
                "append at index {} would overwrite compacted entries (compacted up to {})",
                first.index, self.truncated.0
            )));
        }
        if first.index > self.last_index + 1 {
            return Err(RaftError::Corrupt(format!(
                "append at index {} leaves a gap after last index {}",
                first.index, self.last_index
            )));
        }
        let mut batch = sled::Batch::default();
        for stale in last.index + 1..=self.last_index {
            batch.remove(&index_key(stale));
        }
        for e in entries {
            let mut value = Vec::with_capacity(8 + e.compute_size() as usize);
            value.extend_from_slice(&e.term.to_be_bytes());
            e.write_to_vec(&mut value)?;
            batch.insert(&index_key(e.index), value);
        }
        self.log.apply_batch(batch)?;
        self.last_index = last.index;
        Ok(())
    }

    /// Discards the entries before `compact_index`, which a snapshot covers. Compacting at or below
    /// the first index does nothing.
    pub fn compact(&mut self, compact_index: u64) -> Result<()> {
        if compact_index <= self.first() {
            return Ok(());
        }
        if compact_index > self.last_index + 1 {
            return Err(RaftError::Corrupt(format!(
                "cannot compact to {compact_index}: last index is {}",
                self.last_index
            )));
        }
        let new_truncated = compact_index - 1;
        let term = self.term(new_truncated).map_err(RaftError::Raft)?;
        let mut batch = sled::Batch::default();
        for k in self.log.range(..index_key(compact_index)).keys() {
            batch.remove(k?);
        }
        self.set_truncated(new_truncated, term)?;
        self.log.apply_batch(batch)?;
        Ok(())
    }

    fn set_truncated(&mut self, index: u64, term: u64) -> Result<()> {
        let mut v = index_key(index).to_vec();
        v.extend_from_slice(&index_key(term));
        self.meta.insert(TRUNCATED, v)?;
        self.truncated = (index, term);
        Ok(())
    }

    /// Records that a snapshot of the state machine at `meta.index` is stored (its data is in
    /// [`super::snapshot::SnapshotStore`]); the log is compacted separately.
    pub fn set_snapshot(&mut self, meta: SnapshotMetadata) -> Result<()> {
        self.meta.insert(SNAPSHOT, meta.write_to_bytes()?)?;
        self.snapshot = meta;
        self.snapshot_wanted.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Replaces the log by a snapshot received from the leader: every entry goes, the snapshot's
    /// index and term become the truncation point, its conf state the configuration.
    pub fn apply_snapshot(&mut self, mut meta: SnapshotMetadata) -> Result<()> {
        if meta.index < self.first() {
            return Err(RaftError::Raft(raft::Error::Store(
                StorageError::SnapshotOutOfDate,
            )));
        }
        let mut batch = sled::Batch::default();
        for k in self.log.iter().keys() {
            batch.remove(k?);
        }
        self.log.apply_batch(batch)?;
        self.last_index = meta.index;
        self.set_truncated(meta.index, meta.term)?;
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        self.set_hard_state(hs)?;
        self.set_conf_state(meta.take_conf_state(), meta.index)?;
        let mut stored = SnapshotMetadata {
            index: meta.index,
            term: meta.term,
            ..Default::default()
        };
        stored.set_conf_state(self.conf_state.clone());
        self.set_snapshot(stored)
    }

    /// Takes (and clears) the flag raft set by asking for a snapshot newer than the stored one.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.swap(false, Ordering::Relaxed)
    }

    fn first(&self) -> u64 {
        self.truncated.0 + 1
    }

    fn read_entry(&self, index: u64) -> raft::Result<Entry> {
        let value = self
            .log
            .get(index_key(index))
            .map_err(store_err)?
            .ok_or(raft::Error::Store(StorageError::Unavailable))?;
        let body = value
            .get(8..)
            .ok_or(raft::Error::Store(StorageError::Unavailable))?;
        Entry::parse_from_bytes(body).map_err(raft::Error::CodecError)
    }
}

impl Storage for SledStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into();
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        for item in self.log.range(index_key(low)..index_key(high)) {
            let (_, v) = item.map_err(store_err)?;
            let body = v
                .get(8..)
                .ok_or(raft::Error::Store(StorageError::Unavailable))?;
            let e = Entry::parse_from_bytes(body).map_err(raft::Error::CodecError)?;
            size += u64::from(e.compute_size());
            // At least one entry, even when it alone exceeds the limit.
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(e);
        }
        if out.len() as u64 != (high - low) && max_size.is_none() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let v = self
            .log
            .get(index_key(idx))
            .map_err(store_err)?
            .ok_or(raft::Error::Store(StorageError::Unavailable))?;
        be_u64(&v).map_err(|_| raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    /// The stored snapshot's metadata; its data is streamed from the snapshot store by the
    /// transport, never carried in the raft message.
    /// A snapshot made before `to` joined does not list it, and `to` would refuse it: a newer one
    /// is asked for then too.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let cs = self.snapshot.get_conf_state();
        let lists_peer = cs.voters.contains(&to) || cs.learners.contains(&to);
        if self.snapshot.index == 0 || self.snapshot.index < request_index || !lists_peer {
            self.snapshot_wanted.store(true, Ordering::Relaxed);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut s = Snapshot::default();
        s.set_metadata(self.snapshot.clone());
        Ok(s)
    }
}

impl SledStorage {
    /// One stored entry, for tests and diagnostics.
    pub fn entry(&self, index: u64) -> raft::Result<Entry> {
        self.read_entry(index)
    }
}

#[cfg(test)]
mod tests;
