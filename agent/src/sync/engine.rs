//! The pipeline that binds one reader to one writer: splits, channels of row batches,
//! backpressure, cancellation and the end-of-run error limits. It knows plugins only through
//! [`super::plugin`] and gets them from [`super::registry`]. Every worker is a task on the
//! runtime; blocking connectors reach the blocking pool through the plugin adapters.

use super::plugin::{
    Batch, ReadSplit, Reader, Result, RowSink, Shared, Summary, SyncError, Writer,
};
use super::registry;
use super::throttle::{SystemClock, Throttle};
use ferry_common::job::{JobSpec, Setting};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The throttle a job's `speed` settings ask for.
pub fn throttle_for(job: &JobSpec) -> Throttle {
    Throttle::new(
        job.setting.speed.record,
        job.setting.speed.byte,
        Arc::new(SystemClock::default()),
    )
}

/// Runs `job` to the end. `attempt` names temporary files so two attempts never share one.
pub async fn run(job: &JobSpec, attempt: &str, shared: Arc<Shared>) -> Result<Summary> {
    let reader: Arc<dyn Reader> = Arc::from(
        registry::build_reader(&job.reader)
            .ok_or_else(|| SyncError::Internal("this agent has no such reader plugin".into()))?,
    );
    let writer: Arc<dyn Writer> = Arc::from(
        registry::build_writer(&job.writer, attempt)
            .ok_or_else(|| SyncError::Internal("this agent has no such writer plugin".into()))?,
    );
    run_plugins(reader, writer, &job.setting, shared).await
}

/// Runs `reader` into `writer` with the job's settings: the engine itself, for any plugins.
pub async fn run_plugins(
    reader: Arc<dyn Reader>,
    writer: Arc<dyn Writer>,
    setting: &Setting,
    shared: Arc<Shared>,
) -> Result<Summary> {
    let started = Instant::now();
    let channels = setting.speed.channel.unwrap_or(1).clamp(1, 64) as usize;
    if setting.speed.record.is_some() || setting.speed.byte.is_some() {
        shared.log.info(format!(
            "speed limit: {} records/s, {} bytes/s across all channels",
            setting.speed.record.map_or("no".into(), |v| v.to_string()),
            setting.speed.byte.map_or("no".into(), |v| v.to_string())
        ));
    }
    shared.log.info(format!(
        "sync {} -> {} with {channels} channel(s)",
        reader.name(),
        writer.name()
    ));

    // The source is checked (split) before the writer runs preSql, so a missing source never
    // costs the target its rows.
    let splits = reader.splits(channels, &shared.log).await?;
    shared.log.info(format!(
        "reader cut the source into {} split(s)",
        splits.len()
    ));
    shared
        .counters
        .splits_total
        .store(splits.len() as u64, Ordering::Relaxed);
    if let Some(path) = setting.dirty.as_ref().and_then(|d| d.path.as_deref()) {
        shared.open_dirty_file(path)?;
    }
    writer.prepare(&shared.log).await?;

    let result = pump(splits, channels, writer.clone(), shared.clone()).await;
    shared.close_dirty_file();
    let result = match result {
        Ok(()) => writer.finish(&shared.log).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        writer.abort(&shared.log).await;
        return Err(e);
    }

    let summary = shared
        .counters
        .summary(started.elapsed().as_millis() as u64);
    if let Some(limit) = setting.error_limit.percentage
        && summary.records_read > 0
    {
        let percent = summary.dirty_records as f64 * 100.0 / summary.records_read as f64;
        // DataX writes the percentage as a fraction (0.02 = 2%); so does Ferry.
        if percent > limit * 100.0 {
            return Err(SyncError::DirtyPercentage {
                percent,
                total: summary.records_read,
                limit,
            });
        }
    }
    Ok(summary)
}

/// Moves every split through the channel into the writer; the first error stops everything.
async fn pump(
    splits: Vec<Box<dyn ReadSplit>>,
    channels: usize,
    writer: Arc<dyn Writer>,
    shared: Arc<Shared>,
) -> Result<()> {
    let target = Arc::new(writer.target_info());
    let readers = channels.min(splits.len()).max(1);
    let writers = channels.min(writer.parallelism()).max(1);
    // A few batches in flight per channel let readers and writers overlap their waits.
    let (tx, rx) = flume::bounded::<Batch>(channels * 4);
    let queue = Arc::new(Mutex::new(VecDeque::from(splits)));
    let mut handles = Vec::new();
    for _ in 0..readers {
        let (tx, queue, shared, target) =
            (tx.clone(), queue.clone(), shared.clone(), target.clone());
        handles.push(tokio::spawn(async move {
            let result = async {
                loop {
                    let split = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let Some(split) = split else { return Ok(()) };
                    let what = split.describe();
                    let mut sink = RowSink::new(tx.clone(), shared.clone());
                    split.run(&mut sink, &target).await?;
                    sink.flush().await?;
                    let done = shared.counters.splits_done.fetch_add(1, Ordering::Relaxed) + 1;
                    shared.log.info(format!(
                        "split {done}/{} done: {what}",
                        shared.counters.splits_total.load(Ordering::Relaxed)
                    ));
                }
            }
            .await;
            if result.is_err() {
                shared.cancel.cancel();
            }
            result
        }));
    }
    drop(tx);
    for index in 0..writers {
        let (rx, writer, shared) = (rx.clone(), writer.clone(), shared.clone());
        handles.push(tokio::spawn(async move {
            let result = async {
                let mut ch = writer.open(index).await?;
                while let Ok(batch) = rx.recv_async().await {
                    shared.check_cancel()?;
                    match batch {
                        Batch::Rows(rows) => ch.write(rows, &shared).await?,
                        Batch::Raw(raw) => ch.write_raw(raw, &shared).await?,
                    }
                }
                shared.check_cancel()?;
                ch.commit(&shared).await
            }
            .await;
            if result.is_err() {
                shared.cancel.cancel();
            }
            result
        }));
    }
    drop(rx);
    let mut first: Option<SyncError> = None;
    for h in handles {
        let r = h
            .await
            .map_err(|e| SyncError::Internal(format!("worker panicked: {e}")))
            .and_then(|r| r);
        if let Err(e) = r {
            // The error that caused the stop beats the "stopped" errors it caused elsewhere.
            let replace = match (&first, &e) {
                (None, _) => true,
                (Some(SyncError::Killed(_)), e) => !matches!(e, SyncError::Killed(_)),
                _ => false,
            };
            if replace {
                first = Some(e);
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
