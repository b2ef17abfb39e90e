//! `--follow`: a live progress line and the attempt's log while an instance runs, then its
//! final statistics.

use crate::client::{Admin, status};
use crate::format::{bytes, thousands};
use ferry_proto::admin::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

/// Follows an instance to its end; returns its final state.
pub async fn follow(admin: &mut Admin, instance_id: &str) -> anyhow::Result<pb::InstanceInfo> {
    let mut stream = admin
        .watch_instance(pb::GetInstanceRequest {
            id: instance_id.to_string(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let print = |line: String| {
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    };
    let mut last: Option<pb::InstanceInfo> = None;
    let mut last_state = String::new();
    let mut last_reason = String::new();
    let mut last_plain = std::time::Instant::now();
    while let Some(ev) = stream.message().await.map_err(status)? {
        match ev.body {
            Some(pb::instance_event::Body::State(info)) => {
                if info.state != last_state || info.waiting_reason != last_reason {
                    let mut line = format!("instance {} is {}", info.id, info.state);
                    if !info.waiting_reason.is_empty() {
                        line.push_str(&format!(": {}", info.waiting_reason));
                    }
                    if let Some(a) = info.attempts.last()
                        && !a.agent_id.is_empty()
                    {
                        line.push_str(&format!(" (attempt {} on {})", a.id, a.agent_id));
                    }
                    print(line);
                    last_state = info.state.clone();
                    last_reason = info.waiting_reason.clone();
                }
                bar.set_message(info.state.clone());
                last = Some(info);
            }
            Some(pb::instance_event::Body::Progress(s)) => {
                let rate = (s.records_read * 1000)
                    .checked_div(s.elapsed_ms)
                    .unwrap_or(0);
                let msg = format!(
                    "read {} records ({}), written {}, {} rec/s, dirty {}, splits {}/{}",
                    thousands(s.records_read),
                    bytes(s.bytes_read),
                    thousands(s.records_written),
                    thousands(rate),
                    thousands(s.dirty_records),
                    s.splits_done,
                    s.splits_total
                );
                if bar.is_hidden() {
                    // Without a terminal, print progress every few seconds instead of a bar.
                    if last_plain.elapsed() >= Duration::from_secs(5) {
                        println!("progress: {msg}");
                        last_plain = std::time::Instant::now();
                    }
                } else {
                    bar.set_message(msg);
                }
            }
            Some(pb::instance_event::Body::Log(l)) => {
                print(format!("  [{}] {}", l.level, l.message));
            }
            None => {}
        }
    }
    bar.finish_and_clear();
    let info = match last {
        Some(i) if !["success", "failed", "killed", "dry_run"].contains(&i.state.as_str()) => admin
            .get_instance(pb::GetInstanceRequest { id: i.id })
            .await
            .map_err(status)?
            .into_inner(),
        Some(i) => i,
        None => anyhow::bail!("the scheduler ended the watch without a state"),
    };
    print_summary(&info);
    Ok(info)
}

/// Prints the final state and statistics of an instance.
pub fn print_summary(info: &pb::InstanceInfo) {
    println!(
        "instance {} finished: {}",
        info.id,
        crate::format::instance_state(&info.state, info.dirty_records)
    );
    if let Some(a) = info.attempts.last() {
        if let Some(s) = &a.stats {
            let secs = s.elapsed_ms as f64 / 1000.0;
            let rate = (s.records_written * 1000)
                .checked_div(s.elapsed_ms)
                .unwrap_or(0);
            println!(
                "  records read {}, written {}, bytes {}, dirty {}, duration {secs:.2}s, {} rec/s",
                thousands(s.records_read),
                thousands(s.records_written),
                bytes(s.bytes_read),
                thousands(s.dirty_records),
                thousands(rate)
            );
        }
        if !a.error.is_empty() {
            println!("  error: {}", a.error);
        }
    }
}
