//! State machine snapshots stored as files, one per snapshot index, in the node's snapshot
//! folder, so a snapshot of hundreds of MB is written, streamed to a peer (in 1 MiB chunks)
//! and read back for a restore a piece at a time, never whole in memory.
//!
//! They used to be 1 MiB chunks in the same sled `Db` as the log. Writing a ~250 MB snapshot
//! through sled went through its page cache and log buffers, which took a scheduler's memory
//! up by about 450 MB for the snapshot's duration (the scheduling benchmark's peak RSS), and
//! each raft flush also wrote the chunks stored since the one before. A file is written
//! through the OS page cache, outside the process.
//!
//! A snapshot is written to `<index>.part`, synced, then renamed to `<index>.snap` and the
//! folder synced: it counts only once renamed, so a crash half way leaves a `.part` that the
//! next writer of that index replaces. Snapshots a node kept in sled before (older versions)
//! are moved into files when the store opens.

use super::error::{RaftError, Result};
use sled::IVec;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The sled tree older versions kept snapshots in, as chunks keyed by (index, chunk number).
const SNAPSHOT_TREE: &str = "raft_snapshot";
/// Chunk number of an old stored snapshot's end marker, whose value is its total size.
const END: u64 = u64::MAX;
/// Size of one streamed chunk.
pub const CHUNK_SIZE: usize = 1 << 20;

fn chunk_key(index: u64, chunk: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&index.to_be_bytes());
    k[8..].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// Removes a file, which may not exist.
fn remove_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The snapshots of one node: the one it made or received last, and one being received.
#[derive(Clone)]
pub struct SnapshotStore {
    dir: Arc<PathBuf>,
}

impl SnapshotStore {
    /// Opens the snapshot folder `dir` (created if missing), moving into it any snapshot an
    /// older version kept in `db`.
    pub fn open(db: &sled::Db, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let store = Self {
            dir: Arc::new(dir.to_path_buf()),
        };
        store.move_from_sled(db)?;
        Ok(store)
    }

    fn move_from_sled(&self, db: &sled::Db) -> Result<()> {
        if !db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == SNAPSHOT_TREE.as_bytes())
        {
            return Ok(());
        }
        let tree = db.open_tree(SNAPSHOT_TREE)?;
        let mut complete = Vec::new();
        for item in tree.iter() {
            let (k, _) = item?;
            if k.len() == 16 && k[8..] == END.to_be_bytes() {
                let mut index = [0u8; 8];
                index.copy_from_slice(&k[..8]);
                complete.push(u64::from_be_bytes(index));
            }
        }
        for index in complete {
            let mut w = self.writer(index)?;
            for chunk in tree
                .range(chunk_key(index, 0)..chunk_key(index, END))
                .values()
            {
                w.write_chunk(&chunk?)?;
            }
            let bytes = w.finish()?;
            tracing::info!(
                index,
                bytes,
                "snapshot moved from the log's store into a file"
            );
        }
        db.drop_tree(SNAPSHOT_TREE)?;
        db.flush()?;
        Ok(())
    }

    fn path(&self, index: u64) -> PathBuf {
        self.dir.join(format!("{index:020}.snap"))
    }

    fn part(&self, index: u64) -> PathBuf {
        self.dir.join(format!("{index:020}.part"))
    }

    /// A writer for the snapshot at `index`, replacing any partial or earlier copy of it.
    pub fn writer(&self, index: u64) -> Result<ChunkWriter> {
        self.remove(index)?;
        let part = self.part(index);
        Ok(ChunkWriter {
            file: BufWriter::with_capacity(CHUNK_SIZE, File::create(&part)?),
            part,
            path: self.path(index),
            dir: self.dir.clone(),
            total: 0,
        })
    }

    /// The total size of the snapshot at `index`, if it is complete.
    pub fn complete_size(&self, index: u64) -> Result<Option<u64>> {
        match std::fs::metadata(self.path(index)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the complete snapshot at `index` back as one byte stream.
    pub fn reader(&self, index: u64) -> Result<ChunkReader> {
        match File::open(self.path(index)) {
            Ok(f) => Ok(ChunkReader {
                inner: BufReader::with_capacity(CHUNK_SIZE, f),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(RaftError::Corrupt(format!(
                "snapshot at index {index} is missing or incomplete"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The snapshot at `index` in chunks of [`CHUNK_SIZE`], in order (one error when it cannot
    /// be read).
    pub fn chunks(&self, index: u64) -> impl Iterator<Item = Result<IVec>> + Send + 'static {
        let mut file = Some(self.reader(index));
        std::iter::from_fn(move || {
            let mut reader = match file.take()? {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            let mut chunk = Vec::with_capacity(CHUNK_SIZE);
            match (&mut reader.inner)
                .take(CHUNK_SIZE as u64)
                .read_to_end(&mut chunk)
            {
                Ok(0) => None,
                Ok(_) => {
                    file = Some(Ok(reader));
                    Some(Ok(IVec::from(chunk)))
                }
                Err(e) => Some(Err(e.into())),
            }
        })
    }

    /// Removes every snapshot older than `index` (made or received before it).
    pub fn remove_below(&self, index: u64) -> Result<()> {
        let mut removed = false;
        for entry in std::fs::read_dir(self.dir.as_ref())? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".snap").or_else(|| n.strip_suffix(".part")))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if n < index {
                remove_file(&entry.path())?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn remove(&self, index: u64) -> Result<()> {
        remove_file(&self.part(index))?;
        remove_file(&self.path(index))?;
        Ok(())
    }
}

/// Writes a snapshot; [`ChunkWriter::finish`] makes it complete.
pub struct ChunkWriter {
    file: BufWriter<File>,
    part: PathBuf,
    path: PathBuf,
    dir: Arc<PathBuf>,
    total: u64,
}

impl ChunkWriter {
    /// Stores a chunk exactly as received (the receiving side of a transfer).
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<()> {
        self.file.write_all(data)?;
        self.total += data.len() as u64;
        Ok(())
    }

    /// Makes the snapshot durable and complete; returns its size in bytes.
    pub fn finish(self) -> Result<u64> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| RaftError::SnapshotIo(e.into_error()))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.part, &self.path)?;
        sync_dir(&self.dir)?;
        Ok(self.total)
    }

    pub fn bytes_written(&self) -> u64 {
        self.total
    }
}

impl io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.file.write(data)?;
        self.total += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Reads a stored snapshot.
pub struct ChunkReader {
    inner: BufReader<File>,
}

impl io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.inner.read(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn snapshot_round_trips_across_chunks_and_old_ones_are_removed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new().path(dir.path().join("db")).open()?;
        let store = SnapshotStore::open(&db, &dir.path().join("snapshots"))?;
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

    /// A node upgraded from a version that kept snapshots in sled finds its complete snapshot
    /// in a file (an incomplete one is dropped), and the old tree is gone.
    #[test]
    fn snapshots_kept_in_sled_move_into_files() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new().path(dir.path().join("db")).open()?;
        let old = db.open_tree(SNAPSHOT_TREE)?;
        let data: Vec<u8> = (0..(CHUNK_SIZE + 77)).map(|i| (i % 253) as u8).collect();
        let (first, second) = data.split_at(CHUNK_SIZE);
        old.insert(chunk_key(12, 0), first)?;
        old.insert(chunk_key(12, 1), second)?;
        old.insert(chunk_key(12, END), &(data.len() as u64).to_be_bytes())?;
        // Being received when the node stopped: no end marker.
        old.insert(chunk_key(15, 0), &b"partial"[..])?;
        drop(old);
        let store = SnapshotStore::open(&db, &dir.path().join("snapshots"))?;
        assert_eq!(store.complete_size(12)?, Some(data.len() as u64));
        let mut back = Vec::new();
        store.reader(12)?.read_to_end(&mut back)?;
        assert_eq!(back, data);
        let streamed: Vec<IVec> = store.chunks(12).collect::<Result<_>>()?;
        assert_eq!(streamed.len(), 2);
        assert_eq!(store.complete_size(15)?, None);
        assert!(
            !db.tree_names()
                .iter()
                .any(|n| n.as_ref() == SNAPSHOT_TREE.as_bytes())
        );
        // Opening again finds nothing more to move.
        SnapshotStore::open(&db, &dir.path().join("snapshots"))?;
        assert_eq!(store.complete_size(12)?, Some(data.len() as u64));
        Ok(())
    }

    /// A snapshot cut off before `finish` does not count, and its next writer replaces it.
    #[test]
    fn an_unfinished_snapshot_does_not_count() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new().path(dir.path().join("db")).open()?;
        let store = SnapshotStore::open(&db, &dir.path().join("snapshots"))?;
        let mut w = store.writer(3)?;
        w.write_all(b"half")?;
        w.flush()?;
        drop(w);
        assert_eq!(store.complete_size(3)?, None);
        assert!(store.reader(3).is_err());
        let mut w = store.writer(3)?;
        w.write_all(b"whole")?;
        assert_eq!(w.finish()?, 5);
        let mut back = Vec::new();
        store.reader(3)?.read_to_end(&mut back)?;
        assert_eq!(back, b"whole");
        Ok(())
    }
}
