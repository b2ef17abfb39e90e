//! The dispatch queue held in memory, in dispatch order.
//!
//! The leader's dispatcher reads the whole queue every round, and in a burst (thousands of
//! instances ready at once) decoding and sorting its `q/` index each time took a quarter of
//! the dispatcher's time. The stored index stays the truth, written in the apply batch like
//! every index; this is a copy of it that the applier keeps in step after each batch it
//! stores, read from the index the first time it is asked for and forgotten on a restore.
//! It is loaded under its lock, so a batch stored meanwhile is either in what the load reads
//! or applied after it (an update sets or removes by id, so seeing it twice is harmless).

use super::model::{Instance, InstanceState, Queued};
use super::{INSTANCE, Store, WAITING};
use crate::error::Result;
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

/// Dispatch order: priority (highest first), then the time it became ready, then the id.
type Place = (Reverse<i32>, i64, String);

fn place(q: &Queued) -> Place {
    (Reverse(q.priority), q.ready_ms, q.id.clone())
}

#[derive(Default)]
struct Held {
    order: BTreeSet<Place>,
    entries: HashMap<String, Queued>,
}

impl Held {
    fn set(&mut self, id: &str, queued: Option<Queued>) {
        if let Some(was) = self.entries.remove(id) {
            self.order.remove(&place(&was));
        }
        if let Some(q) = queued {
            self.order.insert(place(&q));
            self.entries.insert(q.id.clone(), q);
        }
    }
}

/// The queue, once read.
#[derive(Default)]
pub(super) struct QueueMirror {
    held: Option<Held>,
}

impl QueueMirror {
    pub(super) fn clear(&mut self) {
        self.held = None;
    }
}

impl Store {
    pub(super) fn queue_mirror(&self) -> std::sync::MutexGuard<'_, QueueMirror> {
        // A panic while holding it can leave it half updated: read it again.
        self.queue.lock().unwrap_or_else(|p| {
            let mut g = p.into_inner();
            g.clear();
            g
        })
    }

    /// Brings the held queue up to a stored batch's `q/` entries. Nothing here may fail the
    /// stored batch: an entry that cannot be read drops the copy (read again when next asked).
    pub(super) fn queue_stored(&self, changes: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        if changes.is_empty() {
            return;
        }
        let mut mirror = self.queue_mirror();
        let Some(held) = mirror.held.as_mut() else {
            return;
        };
        for (k, v) in changes {
            let id = String::from_utf8_lossy(&k[WAITING.len()..]).into_owned();
            match v.as_deref().map(serde_json::from_slice::<Queued>) {
                None => held.set(&id, None),
                Some(Ok(q)) => held.set(&id, Some(q)),
                Some(Err(e)) => {
                    tracing::warn!(instance = %id, error = %e, "unreadable dispatch queue entry; the queue is read again");
                    mirror.clear();
                    return;
                }
            }
        }
    }

    /// The queue as the `q/` index holds it; an entry written before queue entries carried
    /// their fields is read from its instance.
    fn read_queue(&self) -> Result<Held> {
        let mut held = Held::default();
        for item in self.tree.scan_prefix(WAITING.as_bytes()) {
            let (k, v) = item?;
            let id = String::from_utf8_lossy(&k[WAITING.len()..]).into_owned();
            match serde_json::from_slice::<Queued>(&v) {
                Ok(q) => held.set(&id, Some(q)),
                Err(_) => {
                    let inst: Option<Instance> = self.get(&super::key(INSTANCE, &id))?;
                    if let Some(i) = inst
                        && i.state == InstanceState::WaitingResources
                    {
                        held.set(&id, Some(Queued::of(&i)));
                    }
                }
            }
        }
        Ok(held)
    }

    /// Instances waiting for resources in dispatch order (priority, highest first, then the
    /// time they became ready), without decoding the instances.
    pub fn waiting_queue(&self) -> Result<Vec<Queued>> {
        let mut mirror = self.queue_mirror();
        if mirror.held.is_none() {
            mirror.held = Some(self.read_queue()?);
        }
        let Some(held) = mirror.held.as_ref() else {
            return Ok(Vec::new());
        };
        Ok(held
            .order
            .iter()
            .filter_map(|(_, _, id)| held.entries.get(id).cloned())
            .collect())
    }
}
