//! Hostile agent messages, as bounded generated-input tests: random bytes decoded as the
//! session's `AgentMessage`, and well-formed messages with huge or nonsensical fields fed
//! through the scheduler's handling code (a real store, no network). Properties: decoding
//! never panics, handling never panics and answers with a typed error or a stale-report
//! warning, and a report about an attempt the agent does not own changes nothing.

use ferry_proto::agent::v1 as pb;
use ferry_scheduler::agent_service::on_message;
use ferry_scheduler::clock::ManualClock;
use ferry_scheduler::context::{Config, Context};
use ferry_scheduler::hub::Hub;
use ferry_scheduler::secrets::SecretBox;
use ferry_scheduler::state::Store;
use proptest::prelude::*;
use prost::Message;
use std::sync::Arc;

fn config() -> ProptestConfig {
    let cases = std::env::var("FERRY_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn context(dir: &std::path::Path) -> Arc<Context> {
    let store = Arc::new(Store::open(dir).expect("store"));
    let secrets = SecretBox::load_or_create(dir).expect("secrets");
    let clock = ManualClock::new(0);
    Arc::new(Context {
        store,
        hub: Hub::new(clock.clone()),
        secrets,
        config: Config::new(dir.to_path_buf(), "http://test".into()),
        clock,
    })
}

/// Text up to `max` bytes, sometimes all of one character (the cheapest way to be huge).
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,16}",
        (
            0..max,
            prop::sample::select(vec!['a', '\u{1F600}', '\0', '\n'])
        )
            .prop_map(|(n, c)| std::iter::repeat_n(c, n / c.len_utf8().max(1)).collect()),
    ]
}

fn stats() -> impl Strategy<Value = Option<pb::SyncStats>> {
    prop::option::of(
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(a, b, c, d)| {
            pb::SyncStats {
                records_read: a,
                bytes_read: b,
                records_written: c,
                bytes_written: d,
                dirty_records: a ^ b,
                elapsed_ms: c ^ d,
                splits_done: b,
                splits_total: a,
            }
        }),
    )
}

fn body() -> impl Strategy<Value = pb::agent_message::Body> {
    use pb::agent_message::Body;
    prop_oneof![
        (
            any::<u32>(),
            any::<f64>(),
            prop::collection::vec(text(64), 0..2000)
        )
            .prop_map(|(free_slots, load1, running_attempts)| Body::Heartbeat(
                pb::Heartbeat {
                    free_slots,
                    running: free_slots,
                    load1,
                    running_attempts,
                }
            )),
        (text(1 << 16), any::<u64>()).prop_map(|(attempt_id, fencing_token)| {
            Body::Started(pb::AttemptStarted {
                attempt_id,
                fencing_token,
            })
        }),
        (text(64), any::<u64>(), stats()).prop_map(|(attempt_id, fencing_token, stats)| {
            Body::Progress(pb::AttemptProgress {
                attempt_id,
                fencing_token,
                stats,
            })
        }),
        (
            text(64),
            any::<u64>(),
            prop::collection::vec((any::<u64>(), any::<i64>(), text(16), text(1 << 20)), 0..8)
        )
            .prop_map(
                |(attempt_id, fencing_token, lines)| Body::Log(pb::AttemptLog {
                    attempt_id,
                    fencing_token,
                    lines: lines
                        .into_iter()
                        .map(|(index, ts_ms, level, message)| pb::LogLine {
                            index,
                            ts_ms,
                            level,
                            message,
                        })
                        .collect(),
                })
            ),
        (text(64), any::<u64>(), any::<i32>(), stats(), text(1 << 20)).prop_map(
            |(attempt_id, fencing_token, status, stats, error)| Body::Finished(
                pb::AttemptFinished {
                    attempt_id,
                    fencing_token,
                    status,
                    stats,
                    error,
                }
            )
        ),
        (
            text(64),
            any::<bool>(),
            any::<u64>(),
            text(64),
            text(1 << 16),
            proptest::collection::vec((text(300), text(300), any::<bool>()), 0..50)
        )
            .prop_map(
                |(request_id, reachable, latency_ms, error_kind, message, cols)| {
                    Body::Connectivity(pb::ConnectivityResult {
                        request_id,
                        reachable,
                        latency_ms,
                        error_kind,
                        message,
                        columns: cols
                            .into_iter()
                            .map(|(name, r#type, flag)| pb::TableColumn {
                                name,
                                r#type,
                                nullable: flag,
                                primary_key: !flag,
                            })
                            .collect(),
                    })
                }
            ),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Random bytes are refused by the decoder with an error, never a panic; whatever decodes
    /// encodes back to no more bytes than it came from (no field grew on the way).
    #[test]
    fn random_bytes_decode_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        match pb::AgentMessage::decode(bytes.as_slice()) {
            Ok(m) => prop_assert!(m.encoded_len() <= bytes.len()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Well-formed reports with huge fields about attempts this agent does not own are handled
    /// without a panic and store nothing: no attempt and no log line appears.
    #[test]
    fn hostile_reports_change_nothing(bodies in prop::collection::vec(body(), 1..6)) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let ctx = context(dir.path());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for b in bodies {
            let ids: Vec<String> = match &b {
                pb::agent_message::Body::Log(l) => vec![l.attempt_id.clone()],
                pb::agent_message::Body::Finished(f) => vec![f.attempt_id.clone()],
                pb::agent_message::Body::Started(s) => vec![s.attempt_id.clone()],
                _ => Vec::new(),
            };
            // Round trip through the wire form first, as a session would see it.
            let wire = pb::AgentMessage { seq: 1, body: Some(b) }.encode_to_vec();
            let decoded = pb::AgentMessage::decode(wire.as_slice())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let Some(body) = decoded.body else { continue };
            if let Err(e) = rt.block_on(on_message(&ctx, "agt-hostile", body)) {
                prop_assert!(!e.to_string().is_empty());
            }
            for id in ids {
                prop_assert!(ctx.store.attempt(&id).ok().flatten().is_none());
                prop_assert!(ctx.store.logs(&id).map(|l| l.is_empty()).unwrap_or(true));
            }
        }
    }
}
