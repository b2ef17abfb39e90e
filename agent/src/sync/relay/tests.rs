//! Both legs in one process, joined by channels that stand in for the scheduler's relay (with a
//! cut when asked): exact counts, no commit without every row, and a reader held back by a
//! writer that does not take rows.

use super::*;
use crate::sync::plugin::{JobLog, Shared};
use std::sync::atomic::Ordering;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

fn shared() -> Arc<Shared> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    Arc::new(Shared::new(JobLog::new(tx), CancellationToken::new(), 0))
}

/// Two links joined like the scheduler joins them; the reader's direction breaks after `cut`
/// row frames when asked.
fn pair(cut: Option<u64>) -> (Link, Link) {
    let (r_tx, mut r_rx) = mpsc::channel::<pb::RelayFrame>(OUTBOUND_FRAMES);
    let (w_tx, mut w_rx) = mpsc::channel::<pb::RelayFrame>(OUTBOUND_FRAMES);
    let (to_w, to_w_rx) = mpsc::channel(2);
    let (to_r, to_r_rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut rows = 0;
        while let Some(f) = r_rx.recv().await {
            if matches!(f.body, Some(pb::relay_frame::Body::Rows(_))) {
                rows += 1;
                if cut.is_some_and(|c| rows > c) {
                    let _ = to_w
                        .send(Err("the reader leg on agent r (group a) dropped off the relay: connection reset".to_string()))
                        .await;
                    return;
                }
            }
            if to_w.send(Ok(f)).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(f) = w_rx.recv().await {
            if to_r.send(Ok(f)).await.is_err() {
                return;
            }
        }
    });
    (
        Link {
            tx: r_tx,
            rx: Box::pin(ReceiverStream::new(to_r_rx)),
        },
        Link {
            tx: w_tx,
            rx: Box::pin(ReceiverStream::new(to_w_rx)),
        },
    )
}

fn leg(writer: bool) -> LegInfo {
    LegInfo {
        relay_id: "att-test".into(),
        writer,
        peer: if writer {
            "agent r (group a)".into()
        } else {
            "agent w (group b)".into()
        },
    }
}

fn job(rows_per_channel: u64, db: &std::path::Path) -> JobSpec {
    let text = serde_json::json!({"job": {
        "setting": {"speed": {"channel": 2}},
        "content": [{
            "reader": {"name": "streamreader", "parameter": {
                "column": [{"value": 7, "type": "long"}, {"value": "héllo", "type": "string"},
                           {"value": "2026-11-24 10:00:00", "type": "date"}],
                "sliceRecordCount": rows_per_channel}},
            "writer": {"name": "sqlitewriter", "parameter": {
                "path": db.display().to_string(), "table": "t", "column": ["a", "b", "c"],
                "preSql": ["CREATE TABLE IF NOT EXISTS t (a INTEGER, b TEXT, c TEXT)", "DELETE FROM t"]}}
        }]}})
    .to_string();
    match JobSpec::parse(&text) {
        Ok(j) => j,
        Err(e) => panic!("test job: {e}"),
    }
}

/// Runs both legs, joined by [`pair`], to their ends.
async fn both(
    reader: JobSpec,
    writer: JobSpec,
    cut: Option<u64>,
) -> (Result<Summary>, Result<Summary>) {
    let (r, w) = pair(cut);
    let (rl, wl) = (leg(false), leg(true));
    tokio::join!(
        run_leg(&reader, "att-test", &rl, r, shared()),
        run_leg(&writer, "att-test", &wl, w, shared())
    )
}

fn count(db: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_crosses_and_the_writer_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let job = job(5000, &db);
    let (r, w) = both(job.reader_half(), job.writer_half(), None).await;
    let r = r.expect("reader leg");
    let w = w.expect("writer leg");
    assert_eq!(r.records_read, 10_000);
    assert_eq!(w.records_read, 10_000);
    assert_eq!(w.records_written, 10_000);
    assert_eq!(count(&db), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_relay_commits_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let job = job(50_000, &db);
    let (r, w) = both(job.reader_half(), job.writer_half(), Some(3)).await;
    let err = w.expect_err("the writer leg must fail").to_string();
    assert!(err.contains("dropped off the relay"), "{err}");
    assert!(r.is_err(), "the reader leg cannot finish either");
    // preSql ran (the table exists), the rows sent before the cut were rolled back.
    assert_eq!(count(&db), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_fails_aborts_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let good = job(1000, &db);
    // The reader leg's source cannot be read: a SQLite file that is not there.
    let text = serde_json::json!({"job": {"content": [{
        "reader": {"name": "sqlitereader", "parameter": {
            "path": dir.path().join("missing.db").display().to_string(), "table": "nope", "column": ["a"]}},
        "writer": {"name": "streamwriter", "parameter": {}}
    }]}})
    .to_string();
    let bad = JobSpec::parse(&text).expect("job");
    let (r, w) = both(bad.reader_half(), good.writer_half(), None).await;
    assert!(r.is_err());
    let err = w.expect_err("the writer leg must fail").to_string();
    assert!(err.contains("gave up"), "{err}");
    // The source was never ready, so the target was never touched (no preSql ran).
    assert!(!db.exists() || count(&db) <= 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_takes_nothing_holds_the_reader_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let job = job(1_000_000, &db);
    let (r, mut w) = pair(None);
    let reader_shared = shared();
    let reader = tokio::spawn({
        let shared = reader_shared.clone();
        let half = job.reader_half();
        async move { run_leg(&half, "a4", &leg(false), r, shared).await }
    });
    // Play the writer leg by hand: say the target is ready, then read nothing.
    use tokio_stream::StreamExt;
    while let Some(Ok(f)) = w.rx.next().await {
        if matches!(f.body, Some(pb::relay_frame::Body::SourceReady(_))) {
            break;
        }
    }
    w.tx.send(frame(pb::relay_frame::Body::TargetReady(
        pb::TargetReady::default(),
    )))
    .await
    .expect("send");
    // Wait until the reader has filled everything between it and the stalled writer.
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = reader_shared.counters.records_read.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    // Frames are ~1 MiB, but these rows are small: what is held is the engine's queue, the
    // relay's few frames and the batches being encoded, far from the 2,000,000 rows.
    assert!(last < 200_000, "the reader read {last} rows with no writer");
    assert!(!reader.is_finished());
    reader.abort();
}
