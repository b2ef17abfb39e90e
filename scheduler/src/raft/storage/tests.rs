//! The raft-rs storage contract (after its own `MemStorage` tests), on sled, plus reopening.

use super::*;
use raft::Error as RaftErr;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("cmd-{index}").into_bytes().into(),
        ..Default::default()
    }
}

/// Storage holding entries 3..=5 (terms 3..=5) after a snapshot at index 3 term 3, like
/// raft-rs's tests.
fn storage_3_to_5(dir: &std::path::Path) -> anyhow::Result<(sled::Db, SledStorage)> {
    let db = sled::Config::new().path(dir).open()?;
    let mut s = SledStorage::open(&db)?;
    let mut meta = SnapshotMetadata {
        index: 2,
        term: 2,
        ..Default::default()
    };
    meta.mut_conf_state().voters = vec![1, 2, 3];
    s.apply_snapshot(meta)?;
    s.append(&[entry(3, 3), entry(4, 4), entry(5, 5)])?;
    Ok((db, s))
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

#[test]
fn new_storage_is_empty_and_uninitialized() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new().path(dir.path()).open()?;
    let s = SledStorage::open(&db)?;
    assert!(!s.is_initialized());
    assert_eq!(s.first_index()?, 1);
    assert_eq!(s.last_index()?, 0);
    assert_eq!(s.term(0)?, 0);
    assert!(!s.initial_state()?.initialized());
    Ok(())
}

#[test]
fn term_answers_within_the_log_and_errs_outside() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_db, s) = storage_3_to_5(dir.path())?;
    assert!(matches!(
        s.term(1),
        Err(RaftErr::Store(StorageError::Compacted))
    ));
    assert_eq!(s.term(2)?, 2, "the truncated entry's term is kept");
    assert_eq!(s.term(3)?, 3);
    assert_eq!(s.term(5)?, 5);
    assert!(matches!(
        s.term(6),
        Err(RaftErr::Store(StorageError::Unavailable))
    ));
    Ok(())
}

#[test]
fn entries_respect_bounds_and_size_limit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_db, s) = storage_3_to_5(dir.path())?;
    assert!(matches!(
        s.entries(2, 4, None, ctx()),
        Err(RaftErr::Store(StorageError::Compacted))
    ));
    assert!(
        s.entries(3, 7, None, ctx()).is_err(),
        "beyond the last index"
    );
    let all = s.entries(3, 6, None, ctx())?;
    assert_eq!(
        all.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(all[1], entry(4, 4));
    let one = u64::from(entry(3, 3).compute_size());
    assert_eq!(
        s.entries(3, 6, Some(0), ctx())?.len(),
        1,
        "at least one entry"
    );
    assert_eq!(s.entries(3, 6, Some(one * 2), ctx())?.len(), 2);
    assert_eq!(s.entries(3, 6, Some(one * 3), ctx())?.len(), 3);
    assert!(s.entries(4, 4, None, ctx())?.is_empty());
    Ok(())
}

#[test]
fn first_and_last_index_follow_appends_and_compaction() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_db, mut s) = storage_3_to_5(dir.path())?;
    assert_eq!((s.first_index()?, s.last_index()?), (3, 5));
    s.append(&[entry(6, 5)])?;
    assert_eq!(s.last_index()?, 6);
    s.compact(5)?;
    assert_eq!((s.first_index()?, s.last_index()?), (5, 6));
    assert_eq!(s.term(4)?, 4, "term of the last compacted entry is kept");
    assert!(matches!(
        s.term(3),
        Err(RaftErr::Store(StorageError::Compacted))
    ));
    assert!(matches!(
        s.entries(4, 6, None, ctx()),
        Err(RaftErr::Store(StorageError::Compacted))
    ));
    s.compact(2)?;
    assert_eq!(
        s.first_index()?,
        5,
        "compacting below the first index does nothing"
    );
    assert!(
        s.compact(9).is_err(),
        "cannot compact beyond the last index"
    );
    Ok(())
}

#[test]
fn append_truncates_a_conflicting_suffix_and_refuses_gaps() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_db, mut s) = storage_3_to_5(dir.path())?;
    // Overwrite from 4 with a new term: 5 goes.
    s.append(&[entry(4, 6)])?;
    assert_eq!(s.last_index()?, 4);
    assert_eq!(s.term(4)?, 6);
    assert!(matches!(
        s.term(5),
        Err(RaftErr::Store(StorageError::Unavailable))
    ));
    // Replace everything from the first index and extend.
    s.append(&[entry(3, 3), entry(4, 7), entry(5, 7), entry(6, 7)])?;
    assert_eq!(s.last_index()?, 6);
    assert_eq!(s.term(5)?, 7);
    assert!(s.append(&[entry(9, 7)]).is_err(), "gap");
    assert!(
        s.append(&[entry(2, 2)]).is_err(),
        "overwrites the compacted part"
    );
    Ok(())
}

#[test]
fn snapshot_metadata_and_applying_a_snapshot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_db, mut s) = storage_3_to_5(dir.path())?;
    // The stored snapshot (from storage_3_to_5) is at 2.
    assert_eq!(s.snapshot(0, 2)?.get_metadata().index, 2);
    assert!(matches!(
        s.snapshot(4, 2),
        Err(RaftErr::Store(StorageError::SnapshotTemporarilyUnavailable))
    ));
    assert!(
        s.take_snapshot_wanted(),
        "asking for a newer one raises the flag"
    );
    assert!(!s.take_snapshot_wanted());

    let mut meta = SnapshotMetadata {
        index: 8,
        term: 6,
        ..Default::default()
    };
    meta.mut_conf_state().voters = vec![1, 2];
    s.apply_snapshot(meta.clone())?;
    assert_eq!((s.first_index()?, s.last_index()?), (9, 8));
    assert_eq!(s.term(8)?, 6);
    assert_eq!(s.hard_state().commit, 8);
    assert_eq!(s.conf_state().voters, vec![1, 2]);
    assert_eq!(s.snapshot(8, 2)?.get_metadata().index, 8);
    // A peer the snapshot's configuration does not list needs a newer snapshot.
    assert!(matches!(
        s.snapshot(0, 3),
        Err(RaftErr::Store(StorageError::SnapshotTemporarilyUnavailable))
    ));
    assert!(s.take_snapshot_wanted());
    // An older snapshot than the log's start is refused.
    meta.index = 4;
    assert!(s.apply_snapshot(meta).is_err());
    Ok(())
}

#[test]
fn everything_survives_a_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let (db, mut s) = storage_3_to_5(dir.path())?;
        let hs = HardState {
            term: 5,
            vote: 2,
            commit: 4,
            ..Default::default()
        };
        s.set_hard_state(hs)?;
        s.compact(4)?;
        s.set_conf_state(
            ConfState {
                voters: vec![1, 2, 3, 4],
                ..Default::default()
            },
            5,
        )?;
        db.flush()?;
    }
    // sled lets go of its lock shortly after the last handle drops (its flusher thread).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match sled::Config::new().path(dir.path()).open() {
            Ok(db) => break db,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => return Err(e.into()),
        }
    };
    let s = SledStorage::open(&db)?;
    assert_eq!((s.first_index()?, s.last_index()?), (4, 5));
    assert_eq!(s.term(3)?, 3);
    assert_eq!(s.entry(5)?, entry(5, 5));
    let state = s.initial_state()?;
    assert_eq!(
        (
            state.hard_state.term,
            state.hard_state.vote,
            state.hard_state.commit
        ),
        (5, 2, 4)
    );
    assert_eq!(state.conf_state.voters, vec![1, 2, 3, 4]);
    assert_eq!(s.conf_index(), 5);
    assert_eq!(s.snapshot_metadata().index, 2);
    Ok(())
}
