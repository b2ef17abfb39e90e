//! Snapshots of a sled tree exactly as of one moment, written while its writer goes on writing.
//!
//! sled has no point-in-time read: an iterator sees the writes made while it runs. Stopping the
//! applier for the whole iteration is what made a snapshot of a large state stall every
//! replica for seconds, so the state machine's one writer keeps copies of what it overwrites
//! instead (copy-on-write pre-images). [`CopyOnWrite::begin`] fixes the moment (the applier
//! calls it between two applies); from then on, before each write, [`CopyOnWrite::before_write`]
//! records the value each key had at that moment ("absent" included) unless it is recorded
//! already or the snapshot's iterator has passed the key. The iterator resolves each key it
//! reads against those records under the same lock that moves its cursor, so a write racing the
//! read of its key is either recorded before the cursor reaches the key (the record wins) or
//! lands behind the cursor (the value read was the one at the moment). Keys deleted since the
//! moment are written from their records when the iterator passes their place, so the output
//! stays in key order. The records only ever hold keys written during the snapshot and ahead
//! of its cursor, and they leave as the cursor passes them.

use super::error::{RaftError, Result};
use super::{SnapshotSource, StateMachineError};
use sled::IVec;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

/// The copy-on-write side of one tree's snapshots: the state machine holds one per snapshotted
/// tree and calls [`CopyOnWrite::before_write`] before every write to it.
pub struct CopyOnWrite {
    tree: sled::Tree,
    active: Arc<Mutex<Option<Arc<Capture>>>>,
}

/// What one snapshot in progress shares with the writer.
#[derive(Default)]
struct Capture {
    state: Mutex<CaptureState>,
}

#[derive(Default)]
struct CaptureState {
    cursor: Cursor,
    /// The value at the snapshot's moment (`None`: absent) of keys written since, all ahead of
    /// the cursor.
    pre: BTreeMap<IVec, Option<IVec>>,
    /// Most records held at once, for the log.
    peak: usize,
    cancelled: bool,
}

/// How far the snapshot's iterator got.
#[derive(Default)]
enum Cursor {
    #[default]
    Start,
    /// Every key up to and including this one is written (or known absent at the moment).
    At(IVec),
    /// The snapshot is complete (or abandoned): writes are no longer recorded.
    End,
}

impl Cursor {
    fn passed(&self, key: &[u8]) -> bool {
        match self {
            Cursor::Start => false,
            Cursor::At(c) => key <= c.as_ref(),
            Cursor::End => true,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CopyOnWrite {
    pub fn new(tree: sled::Tree) -> Self {
        Self {
            tree,
            active: Arc::new(Mutex::new(None)),
        }
    }

    /// Records, for a snapshot in progress, what `keys` hold now, before the caller writes
    /// (inserts or removes) them. Must be called by the tree's one writer before every write.
    pub fn before_write<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> std::result::Result<(), sled::Error> {
        let Some(capture) = lock(&self.active).clone() else {
            return Ok(());
        };
        let mut state = lock(&capture.state);
        if state.cancelled {
            return Ok(());
        }
        for key in keys {
            // A key the writer has not touched since the snapshot's moment holds its value at
            // that moment: the first write records it, later ones find it recorded.
            if state.cursor.passed(key) || state.pre.contains_key(key) {
                continue;
            }
            let before = self.tree.get(key)?;
            state.pre.insert(IVec::from(key), before);
        }
        state.peak = state.peak.max(state.pre.len());
        Ok(())
    }

    /// Fixes the tree as it is now for a snapshot labelled `index`; the records the snapshot
    /// writes leave out keys for which `skip` is true. Call it from the writer, between writes.
    /// One snapshot at a time: refused while another is being written.
    pub fn begin(&self, index: u64, skip: fn(&[u8]) -> bool) -> Result<TreeSnapshot> {
        let mut active = lock(&self.active);
        if active.is_some() {
            return Err(RaftError::SnapshotInProgress);
        }
        let capture = Arc::new(Capture::default());
        *active = Some(capture.clone());
        Ok(TreeSnapshot {
            tree: self.tree.clone(),
            capture,
            slot: self.active.clone(),
            index,
            skip,
        })
    }

    /// Abandons the snapshot in progress (the tree is about to be replaced): its writing fails
    /// with [`RaftError::SnapshotCancelled`] and writes are no longer recorded.
    pub fn cancel(&self) {
        if let Some(capture) = lock(&self.active).take() {
            let mut state = lock(&capture.state);
            state.cancelled = true;
            state.cursor = Cursor::End;
            state.pre.clear();
        }
    }

    /// How many pre-images the snapshot in progress holds (0 without one).
    pub fn recorded(&self) -> usize {
        lock(&self.active)
            .as_ref()
            .map_or(0, |c| lock(&c.state).pre.len())
    }
}

/// A snapshot of a tree as of [`CopyOnWrite::begin`]; written by [`TreeSnapshot::write`], on
/// any thread. Dropping it ends the recording of pre-images.
pub struct TreeSnapshot {
    tree: sled::Tree,
    capture: Arc<Capture>,
    slot: Arc<Mutex<Option<Arc<Capture>>>>,
    index: u64,
    skip: fn(&[u8]) -> bool,
}

impl TreeSnapshot {
    /// Writes every record as of the snapshot's moment, in key order, as `(u32 key length, key,
    /// u32 value length, value)`; returns the most pre-images held at once.
    pub fn write(&self, out: &mut dyn Write) -> Result<usize> {
        let mut ready: Vec<(IVec, IVec)> = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item?;
            {
                let mut state = lock(&self.capture.state);
                if state.cancelled {
                    return Err(RaftError::SnapshotCancelled);
                }
                // Recorded keys before this one that the iterator did not return were deleted
                // since the moment: their place in the order is here.
                let rest = state.pre.split_off(&key);
                let gone = std::mem::replace(&mut state.pre, rest);
                ready.extend(gone.into_iter().filter_map(|(k, v)| Some((k, v?))));
                let at_moment = match state.pre.remove(&key) {
                    Some(recorded) => recorded,
                    None => Some(value),
                };
                ready.extend(at_moment.map(|v| (key.clone(), v)));
                state.cursor = Cursor::At(key);
            }
            self.emit(&mut ready, out)?;
        }
        let peak = {
            let mut state = lock(&self.capture.state);
            if state.cancelled {
                return Err(RaftError::SnapshotCancelled);
            }
            state.cursor = Cursor::End;
            let gone = std::mem::take(&mut state.pre);
            ready.extend(gone.into_iter().filter_map(|(k, v)| Some((k, v?))));
            state.peak
        };
        self.emit(&mut ready, out)?;
        Ok(peak)
    }

    /// Writes the records in `ready` (outside the lock: the writer must not wait on I/O).
    fn emit(&self, ready: &mut Vec<(IVec, IVec)>, out: &mut dyn Write) -> Result<()> {
        let mut record = Vec::new();
        for (k, v) in ready.drain(..) {
            if (self.skip)(&k) {
                continue;
            }
            record.clear();
            record.extend_from_slice(&(k.len() as u32).to_be_bytes());
            record.extend_from_slice(&k);
            record.extend_from_slice(&(v.len() as u32).to_be_bytes());
            record.extend_from_slice(&v);
            out.write_all(&record)?;
        }
        Ok(())
    }
}

impl Drop for TreeSnapshot {
    fn drop(&mut self) {
        {
            let mut state = lock(&self.capture.state);
            state.cursor = Cursor::End;
            state.pre.clear();
        }
        let mut slot = lock(&self.slot);
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.capture)) {
            *slot = None;
        }
    }
}

impl SnapshotSource for TreeSnapshot {
    fn index(&self) -> u64 {
        self.index
    }

    fn write_to(
        self: Box<Self>,
        out: &mut dyn Write,
    ) -> std::result::Result<(), StateMachineError> {
        let peak = self.write(out)?;
        tracing::debug!(
            index = self.index,
            pre_images = peak,
            "tree snapshot written"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
