//! State machine snapshots stored in sled as 1 MiB chunks keyed by (snapshot index, chunk
//! number), so a snapshot of hundreds of MB is written, streamed to a peer and read back for a
//! restore one chunk at a time, never whole in memory, and lives in the same `Db` (and the same
//! flush) as the log. A snapshot counts only once its end marker is written.

use super::error::{RaftError, Result};
use sled::IVec;
use std::io;

const SNAPSHOT_TREE: &str = "raft_snapshot";
/// Chunk number of the end marker, whose value is the snapshot's total size.
const END: u64 = u64::MAX;
/// Size of one stored (and streamed) chunk.
pub const CHUNK_SIZE: usize = 1 << 20;

fn chunk_key(index: u64, chunk: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&index.to_be_bytes());
    k[8..].copy_from_slice(&chunk.to_be_bytes());
    k
}

fn io_err(e: sled::Error) -> io::Error {
    io::Error::other(e)
}

/// The snapshots of one node: the one it made or received last, and one being received.
#[derive(Clone)]
pub struct SnapshotStore {
    tree: sled::Tree,
}

impl SnapshotStore {
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(Self {
            tree: db.open_tree(SNAPSHOT_TREE)?,
        })
    }

    /// A writer for the snapshot at `index`, replacing any partial or earlier copy of it.
    pub fn writer(&self, index: u64) -> Result<ChunkWriter> {
        self.remove(index)?;
        Ok(ChunkWriter {
            tree: self.tree.clone(),
            index,
            chunk: 0,
            buf: Vec::with_capacity(CHUNK_SIZE),
            total: 0,
        })
    }

    /// The total size of the snapshot at `index`, if it is complete.
    pub fn complete_size(&self, index: u64) -> Result<Option<u64>> {
        match self.tree.get(chunk_key(index, END))? {
            Some(v) => {
                let arr: [u8; 8] = v.as_ref().try_into().map_err(|_| {
                    RaftError::Corrupt(format!("snapshot {index} end marker is not 8 bytes"))
                })?;
                Ok(Some(u64::from_be_bytes(arr)))
            }
            None => Ok(None),
        }
    }

    /// Reads the complete snapshot at `index` back as one byte stream.
    pub fn reader(&self, index: u64) -> Result<ChunkReader> {
        if self.complete_size(index)?.is_none() {
            return Err(RaftError::Corrupt(format!(
                "snapshot at index {index} is missing or incomplete"
            )));
        }
        Ok(ChunkReader {
            chunks: Box::new(self.chunks(index)),
            current: IVec::default(),
            pos: 0,
        })
    }

    /// The data chunks of the snapshot at `index`, in order.
    pub fn chunks(&self, index: u64) -> impl Iterator<Item = Result<IVec>> + Send + 'static {
        self.tree
            .range(chunk_key(index, 0)..chunk_key(index, END))
            .values()
            .map(|v| v.map_err(RaftError::from))
    }

    /// Removes every snapshot older than `index` (made or received before it).
    pub fn remove_below(&self, index: u64) -> Result<()> {
        let mut batch = sled::Batch::default();
        for k in self.tree.range(..chunk_key(index, 0)).keys() {
            batch.remove(k?);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    fn remove(&self, index: u64) -> Result<()> {
        let mut batch = sled::Batch::default();
        for k in self
            .tree
            .range(chunk_key(index, 0)..=chunk_key(index, END))
            .keys()
        {
            batch.remove(k?);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

/// Writes a snapshot as chunks; [`ChunkWriter::finish`] marks it complete.
pub struct ChunkWriter {
    tree: sled::Tree,
    index: u64,
    chunk: u64,
    buf: Vec<u8>,
    total: u64,
}

impl ChunkWriter {
    fn store_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_SIZE));
        self.tree
            .insert(chunk_key(self.index, self.chunk), data)
            .map_err(io_err)?;
        self.chunk += 1;
        Ok(())
    }

    /// Stores a chunk exactly as received (the receiving side of a transfer).
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<()> {
        self.total += data.len() as u64;
        self.tree.insert(chunk_key(self.index, self.chunk), data)?;
        self.chunk += 1;
        Ok(())
    }

    /// Stores what is buffered and the end marker; returns the snapshot's size in bytes.
    pub fn finish(mut self) -> Result<u64> {
        self.store_chunk()
            .map_err(|e| RaftError::Corrupt(format!("writing a snapshot chunk: {e}")))?;
        self.tree
            .insert(chunk_key(self.index, END), &self.total.to_be_bytes())?;
        Ok(self.total)
    }

    pub fn bytes_written(&self) -> u64 {
        self.total
    }
}

impl io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK_SIZE - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.total += n as u64;
        if self.buf.len() >= CHUNK_SIZE {
            self.store_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads a stored snapshot chunk by chunk.
pub struct ChunkReader {
    chunks: Box<dyn Iterator<Item = Result<IVec>> + Send>,
    current: IVec,
    pos: usize,
}

impl io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.current.len() {
            match self.chunks.next() {
                Some(Ok(c)) => {
                    self.current = c;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(io::Error::other(e.to_string())),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn snapshot_round_trips_across_chunks_and_old_ones_are_removed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new().path(dir.path()).open()?;
        let store = SnapshotStore::open(&db)?;
        let data: Vec<u8> = (0..(CHUNK_SIZE * 2 + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut w = store.writer(7)?;
        w.write_all(&data)?;
        assert_eq!(store.complete_size(7)?, None, "not complete before finish");
        assert_eq!(w.finish()?, data.len() as u64);
        assert_eq!(store.chunks(7).count(), 3);
        let mut back = Vec::new();
        store.reader(7)?.read_to_end(&mut back)?;
        assert_eq!(back, data);

        let mut w = store.writer(9)?;
        w.write_all(b"newer")?;
        w.finish()?;
        store.remove_below(9)?;
        assert!(store.reader(7).is_err());
        let mut back = Vec::new();
        store.reader(9)?.read_to_end(&mut back)?;
        assert_eq!(back, b"newer");
        Ok(())
    }
}
