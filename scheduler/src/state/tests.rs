use super::*;
use crate::error::Error;
use command::Reporter;
use model::{AttemptState, InstanceState, Stats, Transition};

/// A task version with defaults, for tests.
pub(crate) fn version(task: &str, job: &str) -> TaskVersion {
    TaskVersion {
        task: task.into(),
        group: "rg".into(),
        job_text: job.into(),
        ..Default::default()
    }
}

fn submit(task: &str, job: &str, id: &str, at_ms: i64) -> Command {
    Command::SubmitTask {
        version: version(task, job),
        submit_id: id.into(),
        first_day: None,
        at_ms,
    }
}

/// A manual instance `id` of task `t`, due at once.
fn manual(id: &str) -> Instance {
    Instance {
        id: id.into(),
        task: "t".into(),
        version: 1,
        group: "rg".into(),
        bizdate: "20261124".into(),
        cyctime: "20261125000000".into(),
        history: vec![Transition {
            at_ms: 0,
            state: InstanceState::WaitingUpstream,
            reason: "run by test".into(),
        }],
        ..Default::default()
    }
}

/// Opens the store again in the same process. sled's background flusher can hold the
/// directory's lock for a moment after the previous handle is dropped (a new process never
/// sees that), so poll with a deadline.
fn reopen(dir: &std::path::Path) -> Result<Store> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir) {
            Ok(s) => return Ok(s),
            Err(e) if std::time::Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

async fn setup(store: &Store) -> Result<()> {
    store
        .propose(Command::CreateGroup {
            name: "rg".into(),
            token_hash: "h".into(),
            workspaces: vec![],
            at_ms: 1,
        })
        .await?;
    store.propose(submit("t", "{}", "s1", 2)).await?;
    store
        .propose(Command::RunTask {
            instance: manual("i1"),
            at_ms: 3,
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn state_survives_reopen() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    {
        let store = Store::open(dir.path())?;
        setup(&store).await?;
        let v = store.propose(submit("t", "{\"v\":2}", "s2", 4)).await?;
        assert_eq!(v, Applied::TaskVersion(2));
        // A retried submit (same id) does not make a third version.
        let again = store.propose(submit("t", "{\"v\":2}", "s2", 5)).await?;
        assert_eq!(again, Applied::TaskVersion(2));
    }
    let store = reopen(dir.path())?;
    assert_eq!(store.groups()?.len(), 1);
    assert_eq!(store.task("t")?.map(|t| t.version), Some(2));
    assert_eq!(
        store.task_version("t", 1)?.map(|v| v.job_text).as_deref(),
        Some("{}")
    );
    assert_eq!(
        store.instance("i1")?.map(|i| i.state),
        Some(InstanceState::WaitingResources)
    );
    assert_eq!(store.waiting_instances()?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn duplicate_group_is_refused() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let store = Store::open(dir.path())?;
    setup(&store).await?;
    let again = store
        .propose(Command::CreateGroup {
            name: "rg".into(),
            token_hash: "x".into(),
            workspaces: vec![],
            at_ms: 9,
        })
        .await;
    assert!(matches!(
        again,
        Err(Error::Refused {
            code: crate::error::RefusalCode::AlreadyExists,
            ..
        })
    ));
    Ok(())
}

#[tokio::test]
async fn fencing_rejects_stale_reports() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let store = Store::open(dir.path())?;
    setup(&store).await?;
    let Applied::Dispatched { fencing_token } = store
        .propose(Command::DispatchAttempt {
            id: "a1".into(),
            instance_id: "i1".into(),
            agent_id: "ag".into(),
            at_ms: 5,
        })
        .await?
    else {
        panic!("expected a dispatch")
    };
    // A second dispatch of the same instance changes nothing.
    let again = store
        .propose(Command::DispatchAttempt {
            id: "a2".into(),
            instance_id: "i1".into(),
            agent_id: "ag".into(),
            at_ms: 6,
        })
        .await?;
    assert!(matches!(again, Applied::Stale(_)));
    assert!(store.attempt("a2")?.is_none());

    assert!(store.waiting_instances()?.is_empty());
    assert_eq!(store.running_per_agent()?.get("ag"), Some(&1));

    let stale = store
        .propose(Command::FinishAttempt {
            id: "a1".into(),
            by: Reporter::Agent("ag".into()),
            fencing_token: fencing_token + 7,
            state: AttemptState::Succeeded,
            stats: Stats::default(),
            error: String::new(),
            at_ms: 7,
        })
        .await?;
    assert!(matches!(stale, Applied::Stale(_)));
    assert_eq!(
        store.instance("i1")?.map(|i| i.state),
        Some(InstanceState::Dispatched)
    );

    let done = store
        .propose(Command::FinishAttempt {
            id: "a1".into(),
            by: Reporter::Agent("ag".into()),
            fencing_token,
            state: AttemptState::Succeeded,
            stats: Stats {
                records_written: 10,
                ..Stats::default()
            },
            error: String::new(),
            at_ms: 8,
        })
        .await?;
    assert!(matches!(done, Applied::Changed { .. }), "{done:?}");
    assert_eq!(
        store.instance("i1")?.map(|i| i.state),
        Some(InstanceState::Success)
    );
    assert!(store.live_attempts()?.is_empty());
    // A resent finish after success changes nothing.
    let resent = store
        .propose(Command::FinishAttempt {
            id: "a1".into(),
            by: Reporter::Agent("ag".into()),
            fencing_token,
            state: AttemptState::Failed,
            stats: Stats::default(),
            error: "late".into(),
            at_ms: 9,
        })
        .await?;
    assert!(matches!(resent, Applied::Stale(_)));
    assert_eq!(
        store.attempt("a1")?.map(|a| a.stats.records_written),
        Some(10)
    );
    Ok(())
}

#[tokio::test]
async fn logs_are_idempotent_by_index() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let store = Store::open(dir.path())?;
    setup(&store).await?;
    let Applied::Dispatched { fencing_token } = store
        .propose(Command::DispatchAttempt {
            id: "a1".into(),
            instance_id: "i1".into(),
            agent_id: "ag".into(),
            at_ms: 5,
        })
        .await?
    else {
        panic!("expected a dispatch")
    };
    let line = |i: u64| LogRecord {
        index: i,
        ts_ms: 0,
        level: "info".into(),
        message: format!("line {i}"),
    };
    for _ in 0..2 {
        store
            .propose(Command::AppendLogs {
                attempt_id: "a1".into(),
                agent_id: "ag".into(),
                fencing_token,
                lines: vec![line(0), line(1), line(2)],
            })
            .await?;
    }
    let logs = store.logs("a1")?;
    assert_eq!(logs.len(), 3);
    assert_eq!(logs[2].message, "line 2");
    Ok(())
}

async fn dispatch(store: &Store, attempt: &str, agent: &str) -> Result<u64> {
    match store
        .propose(Command::DispatchAttempt {
            id: attempt.into(),
            instance_id: "i1".into(),
            agent_id: agent.into(),
            at_ms: 5,
        })
        .await?
    {
        Applied::Dispatched { fencing_token } => Ok(fencing_token),
        other => Err(Error::InvalidArgument(format!(
            "expected a dispatch, got {other:?}"
        ))),
    }
}

fn finish(id: &str, by: Reporter, token: u64, state: AttemptState, at_ms: i64) -> Command {
    Command::FinishAttempt {
        id: id.into(),
        by,
        fencing_token: token,
        state,
        stats: Stats {
            records_written: 500,
            ..Stats::default()
        },
        error: String::new(),
        at_ms,
    }
}

/// Fencing tokens are a counter anyone can guess; what makes a report count is that it comes
/// from the agent that holds the attempt.
#[tokio::test]
async fn reports_from_another_agent_are_refused() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let store = Store::open(dir.path())?;
    setup(&store).await?;
    let token = dispatch(&store, "a1", "ag").await?;
    let forged = [
        Command::AttemptStarted {
            id: "a1".into(),
            agent_id: "evil".into(),
            fencing_token: token,
            at_ms: 6,
        },
        Command::AppendLogs {
            attempt_id: "a1".into(),
            agent_id: "evil".into(),
            fencing_token: token,
            lines: vec![LogRecord {
                index: 0,
                ts_ms: 0,
                level: "info".into(),
                message: "forged".into(),
            }],
        },
        finish(
            "a1",
            Reporter::Agent("evil".into()),
            token,
            AttemptState::Succeeded,
            7,
        ),
    ];
    for cmd in forged {
        assert!(matches!(store.propose(cmd).await?, Applied::Stale(_)));
    }
    assert!(store.logs("a1")?.is_empty());
    assert_eq!(
        store.instance("i1")?.map(|i| i.state),
        Some(InstanceState::Dispatched)
    );
    assert_eq!(
        store.attempt("a1")?.map(|a| a.state),
        Some(AttemptState::Dispatched)
    );
    Ok(())
}

/// A sync that committed while the scheduler had given up on it (lease) is a success: calling it
/// failed would invite a rerun that doubles the rows.
#[tokio::test]
async fn late_success_stands_when_nothing_ran_since() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let store = Store::open(dir.path())?;
    setup(&store).await?;
    let token = dispatch(&store, "a1", "ag").await?;
    store
        .propose(finish(
            "a1",
            Reporter::Scheduler,
            token,
            AttemptState::Failed,
            8,
        ))
        .await?;
    assert_eq!(
        store.instance("i1")?.map(|i| i.state),
        Some(InstanceState::Failed)
    );
    let late = store
        .propose(finish(
            "a1",
            Reporter::Agent("ag".into()),
            token,
            AttemptState::Succeeded,
            9,
        ))
        .await?;
    assert!(matches!(late, Applied::Changed { .. }), "{late:?}");
    assert_eq!(
        store.instance("i1")?.map(|i| i.state),
        Some(InstanceState::Success)
    );
    let a = store.attempt("a1")?;
    assert_eq!(a.as_ref().map(|a| a.state), Some(AttemptState::Succeeded));
    assert!(a.is_some_and(|a| a.late_report.contains("stands")));
    // The same result again (the spool's replay) is a harmless duplicate.
    let again = store
        .propose(finish(
            "a1",
            Reporter::Agent("ag".into()),
            token,
            AttemptState::Succeeded,
            10,
        ))
        .await?;
    assert!(matches!(again, Applied::Stale(_)));
    Ok(())
}

/// A late result never overrides a newer attempt, nor a user's kill; it is kept for the
/// operator to see.
#[tokio::test]
async fn late_result_never_overrides_a_newer_attempt() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let store = Store::open(dir.path())?;
    setup(&store).await?;
    let token = dispatch(&store, "a1", "ag").await?;
    store
        .propose(finish(
            "a1",
            Reporter::Agent("ag".into()),
            token,
            AttemptState::Killed,
            8,
        ))
        .await?;
    let late = store
        .propose(finish(
            "a1",
            Reporter::Agent("ag".into()),
            token,
            AttemptState::Succeeded,
            9,
        ))
        .await?;
    assert!(matches!(late, Applied::Stale(_)));
    assert_eq!(
        store.instance("i1")?.map(|i| i.state),
        Some(InstanceState::Killed)
    );
    assert!(
        store
            .attempt("a1")?
            .is_some_and(|a| a.late_report.contains("reported succeeded"))
    );
    Ok(())
}

#[tokio::test]
async fn revoking_an_agent_fails_its_attempts() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let store = Store::open(dir.path())?;
    setup(&store).await?;
    store
        .propose(Command::RegisterAgent {
            id: "ag".into(),
            group: "rg".into(),
            credential_hash: "h".into(),
            host: Default::default(),
            at_ms: 4,
        })
        .await?;
    let token = dispatch(&store, "a1", "ag").await?;
    store
        .propose(Command::RevokeAgent {
            id: "ag".into(),
            reason: "test".into(),
            at_ms: 6,
        })
        .await?;
    assert!(store.agent("ag")?.is_some_and(|a| a.is_revoked()));
    assert_eq!(
        store.instance("i1")?.map(|i| i.state),
        Some(InstanceState::Failed)
    );
    assert!(store.live_attempts()?.is_empty());
    // A revoked agent's reports count for nothing.
    let late = store
        .propose(finish(
            "a1",
            Reporter::Agent("ag".into()),
            token,
            AttemptState::Succeeded,
            9,
        ))
        .await?;
    assert!(matches!(late, Applied::Stale(_)));
    assert_eq!(
        store.instance("i1")?.map(|i| i.state),
        Some(InstanceState::Failed)
    );
    Ok(())
}

/// An attempt its agent never started (the start was lost with a session or a leader) ends
/// without spending a retry, and its instance is queued again; once the agent reports it
/// started, only its result can end it.
#[tokio::test]
async fn an_undelivered_attempt_queues_its_instance_again() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let store = Store::open(dir.path())?;
    setup(&store).await?;
    let dispatch = |id: &str, at_ms: i64| Command::DispatchAttempt {
        id: id.into(),
        instance_id: "i1".into(),
        agent_id: "ag".into(),
        at_ms,
    };
    let Applied::Dispatched { fencing_token } = store.propose(dispatch("a1", 5)).await? else {
        panic!("expected a dispatch")
    };
    let undelivered = |id: &str, agent: &str, token: u64| Command::Undelivered {
        id: id.into(),
        agent_id: agent.into(),
        fencing_token: token,
        reason: "never reached".into(),
        at_ms: 6,
    };
    // Only the holder, with its token, can say so.
    for wrong in [
        undelivered("a1", "other", fencing_token),
        undelivered("a1", "ag", fencing_token + 1),
    ] {
        assert!(matches!(store.propose(wrong).await?, Applied::Stale(_)));
    }
    let applied = store
        .propose(undelivered("a1", "ag", fencing_token))
        .await?;
    assert!(matches!(applied, Applied::Changed { .. }), "{applied:?}");
    let inst = store
        .instance("i1")?
        .ok_or_else(|| Error::InvalidArgument("instance i1 vanished".into()))?;
    assert_eq!(inst.state, InstanceState::WaitingResources);
    assert_eq!(inst.retries_left, 0, "no retry spent");
    assert_eq!(store.waiting_instances()?.len(), 1);
    assert!(store.live_attempts()?.is_empty());
    assert_eq!(
        store.attempt("a1")?.map(|a| a.state),
        Some(AttemptState::Failed)
    );
    // Said twice (a resent hello), nothing more happens.
    assert!(matches!(
        store
            .propose(undelivered("a1", "ag", fencing_token))
            .await?,
        Applied::Stale(_)
    ));

    // The next attempt starts: from then on it ran, and "undelivered" is refused.
    let Applied::Dispatched { fencing_token } = store.propose(dispatch("a2", 7)).await? else {
        panic!("expected a second dispatch")
    };
    store
        .propose(Command::AttemptStarted {
            id: "a2".into(),
            agent_id: "ag".into(),
            fencing_token,
            at_ms: 8,
        })
        .await?;
    assert!(matches!(
        store
            .propose(undelivered("a2", "ag", fencing_token))
            .await?,
        Applied::Stale(_)
    ));
    assert_eq!(
        store.instance("i1")?.map(|i| i.state),
        Some(InstanceState::Running)
    );
    Ok(())
}

/// A retried dispatch of an attempt id that exists never overwrites that attempt, even when
/// it names another waiting instance.
#[tokio::test]
async fn a_dispatch_never_overwrites_an_attempt() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let store = Store::open(dir.path())?;
    setup(&store).await?;
    store
        .propose(Command::DispatchAttempt {
            id: "a1".into(),
            instance_id: "i1".into(),
            agent_id: "ag".into(),
            at_ms: 5,
        })
        .await?;
    store
        .propose(Command::RunTask {
            instance: Instance {
                bizdate: "20990101".into(),
                ..manual("i2")
            },
            at_ms: 6,
        })
        .await?;
    let reused = store
        .propose(Command::DispatchAttempt {
            id: "a1".into(),
            instance_id: "i2".into(),
            agent_id: "other".into(),
            at_ms: 6,
        })
        .await?;
    assert!(matches!(reused, Applied::Stale(_)), "{reused:?}");
    assert_eq!(
        store.attempt("a1")?.map(|a| a.instance_id),
        Some("i1".to_string())
    );
    Ok(())
}

/// What an agent reports is bounded by the scheduler itself: a huge line is cut, an attempt's
/// log stops at its budget with one line saying so, resent lines count once, and a huge error
/// is cut.
#[tokio::test]
async fn reports_are_bounded_whatever_the_agent_sends() -> Result<()> {
    use model::{MAX_LOG_BYTES_PER_ATTEMPT, MAX_LOG_LINE_BYTES};
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let store = Store::open(dir.path())?;
    setup(&store).await?;
    let Applied::Dispatched { fencing_token } = store
        .propose(Command::DispatchAttempt {
            id: "a1".into(),
            instance_id: "i1".into(),
            agent_id: "ag".into(),
            at_ms: 5,
        })
        .await?
    else {
        panic!("expected a dispatch")
    };
    // 64 KiB lines, 50 to a report: about what a 4 MiB gRPC message can carry.
    let big = "é".repeat(32 << 10);
    let lines = |from: u64, n: u64| Command::AppendLogs {
        attempt_id: "a1".into(),
        agent_id: "ag".into(),
        fencing_token,
        lines: (from..from + n)
            .map(|i| LogRecord {
                index: i,
                ts_ms: 0,
                level: "x".repeat(1000),
                message: big.clone(),
            })
            .collect(),
    };
    // Each line is cut to 16 KiB; 64 MiB of budget holds a few thousand of them.
    let per_line = (MAX_LOG_LINE_BYTES + 64) as u64;
    let fits = MAX_LOG_BYTES_PER_ATTEMPT / per_line;
    let mut sent = 0;
    while sent < fits + 50 {
        store.propose(lines(sent, 50)).await?;
        sent += 50;
    }
    // Resending the first batch changes nothing.
    store.propose(lines(0, 50)).await?;
    let logs = store.logs("a1")?;
    assert!(
        logs.iter()
            .all(|l| l.message.len() <= MAX_LOG_LINE_BYTES && l.level.len() <= 16)
    );
    assert!(logs.len() as u64 > fits, "{} lines stored", logs.len());
    assert_eq!(
        logs.iter()
            .filter(|l| l.message.starts_with("log cut:"))
            .count(),
        1,
        "one line says the rest was cut"
    );
    // More lines after the cut store nothing.
    store.propose(lines(sent, 50)).await?;
    assert_eq!(store.logs("a1")?.len(), logs.len());
    let stored: u64 = logs.iter().map(|l| l.message.len() as u64 + 64).sum();
    assert!(stored <= MAX_LOG_BYTES_PER_ATTEMPT + per_line, "{stored}");

    store
        .propose(Command::FinishAttempt {
            id: "a1".into(),
            by: Reporter::Agent("ag".into()),
            fencing_token,
            state: AttemptState::Failed,
            stats: Stats::default(),
            error: big.clone(),
            at_ms: 9,
        })
        .await?;
    let error = store.attempt("a1")?.map(|a| a.error).unwrap_or_default();
    assert!(
        error.len() <= MAX_LOG_LINE_BYTES && error.contains("[cut"),
        "{}",
        error.len()
    );
    Ok(())
}

#[tokio::test]
async fn both_legs_of_a_relay_attempt_report_and_the_writer_decides() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let store = Store::open(dir.path())?;
    setup(&store).await?;
    for (id, group) in [("rd", "east"), ("wr", "west")] {
        store
            .propose(Command::CreateGroup {
                name: group.into(),
                token_hash: "h".into(),
                workspaces: vec![],
                at_ms: 4,
            })
            .await?;
        store
            .propose(Command::RegisterAgent {
                id: id.into(),
                group: group.into(),
                credential_hash: "h".into(),
                host: Default::default(),
                at_ms: 4,
            })
            .await?;
    }
    let relay = |id: &str, at_ms| Command::DispatchRelay {
        id: id.into(),
        instance_id: "i1".into(),
        agent_id: "wr".into(),
        reader_agent_id: "rd".into(),
        at_ms,
    };
    let Applied::Dispatched { fencing_token } = store.propose(relay("a1", 5)).await? else {
        panic!("expected a dispatch")
    };
    // One slot on each agent.
    let busy = store.running_per_agent()?;
    assert_eq!((busy.get("rd"), busy.get("wr")), (Some(&1), Some(&1)));
    let log = |agent: &str, index: u64, message: &str| Command::AppendLogs {
        attempt_id: "a1".into(),
        agent_id: agent.into(),
        fencing_token,
        lines: vec![LogRecord {
            index,
            ts_ms: 6,
            level: "info".into(),
            message: message.into(),
        }],
    };
    // Both legs number their lines from 0; neither overwrites the other's.
    store.propose(log("wr", 0, "writer line")).await?;
    store.propose(log("rd", 0, "reader line")).await?;
    let lines: Vec<String> = store.logs("a1")?.into_iter().map(|l| l.message).collect();
    assert_eq!(lines, ["writer line", "reader line"]);
    // A third agent is nobody's leg.
    assert!(matches!(
        store.propose(log("other", 1, "forged")).await?,
        Applied::Stale(_)
    ));
    let finish = |agent: &str, state, error: &str| Command::FinishAttempt {
        id: "a1".into(),
        by: Reporter::Agent(agent.into()),
        fencing_token,
        state,
        stats: Stats::default(),
        error: error.into(),
        at_ms: 7,
    };
    // The reader leg's start and success change nothing: the writer's result is the attempt's.
    store
        .propose(Command::AttemptStarted {
            id: "a1".into(),
            agent_id: "rd".into(),
            fencing_token,
            at_ms: 6,
        })
        .await?;
    assert_eq!(
        store.instance("i1")?.map(|i| i.state),
        Some(InstanceState::Dispatched)
    );
    store
        .propose(finish("rd", AttemptState::Succeeded, ""))
        .await?;
    assert_eq!(
        store.attempt("a1")?.map(|a| a.state),
        Some(AttemptState::Dispatched)
    );
    store
        .propose(finish("wr", AttemptState::Succeeded, ""))
        .await?;
    assert_eq!(
        store.instance("i1")?.map(|i| i.state),
        Some(InstanceState::Success)
    );

    // Another instance whose reader leg fails: the attempt fails at once, naming the leg,
    // agent and group, and both agents are told to stop.
    store
        .propose(Command::RunTask {
            instance: manual("i2"),
            at_ms: 8,
        })
        .await?;
    let Applied::Dispatched { fencing_token } = store
        .propose(Command::DispatchRelay {
            id: "a2".into(),
            instance_id: "i2".into(),
            agent_id: "wr".into(),
            reader_agent_id: "rd".into(),
            at_ms: 9,
        })
        .await?
    else {
        panic!("expected a dispatch")
    };
    let failed = store
        .propose(Command::FinishAttempt {
            id: "a2".into(),
            by: Reporter::Agent("rd".into()),
            fencing_token,
            state: AttemptState::Failed,
            stats: Stats::default(),
            error: "reader: connection refused".into(),
            at_ms: 10,
        })
        .await?;
    let Applied::Changed { stop, .. } = &failed else {
        panic!("expected a change, got {failed:?}")
    };
    let mut stopped: Vec<&str> = stop.iter().map(|s| s.agent_id.as_str()).collect();
    stopped.sort();
    assert_eq!(stopped, ["rd", "wr"]);
    let a = store.attempt("a2")?.expect("attempt");
    assert_eq!(a.state, AttemptState::Failed);
    assert_eq!(
        a.error,
        "reader leg on agent rd (group east) failed: reader: connection refused"
    );
    // The writer's later failure is a resend of the end: nothing changes.
    let late = store
        .propose(Command::FinishAttempt {
            id: "a2".into(),
            by: Reporter::Agent("wr".into()),
            fencing_token,
            state: AttemptState::Failed,
            stats: Stats::default(),
            error: "relay broke".into(),
            at_ms: 11,
        })
        .await?;
    assert!(matches!(late, Applied::Stale(_)));
    Ok(())
}

/// The contents of a store's tree, for comparisons byte for byte (every key and value is
/// text, so a failure shows them readably).
fn raw(store: &Store) -> Result<BTreeMap<String, String>> {
    store
        .tree
        .iter()
        .map(|item| {
            let (k, v) = item?;
            Ok((
                String::from_utf8_lossy(&k).to_string(),
                String::from_utf8_lossy(&v).to_string(),
            ))
        })
        .collect()
}

/// Rewrites a store (whose contents are `now`) in the index layout before `m/layout-v4`: a key
/// per downstream edge and per task-day entry, a state key and a day key per instance.
fn write_earlier_layout(store: &Store, now: &BTreeMap<String, String>) -> Result<()> {
    let mut batch = sled::Batch::default();
    for (k, v) in now {
        for (list, old) in [(DOWN, OLD_DOWN), (TASK_DAY, TASK_DAY)] {
            if let Some(group) = k.strip_prefix(list) {
                batch.remove(k.as_bytes());
                for member in serde_json::from_str::<Vec<String>>(v)? {
                    batch.insert(
                        format!("{old}{group}|{member}").into_bytes(),
                        serde_json::to_vec(&member)?,
                    );
                }
            }
        }
        if let Some(id) = k.strip_prefix(INSTANCE) {
            let inst: Instance = serde_json::from_str(v)?;
            batch.insert(key(OLD_STATE, id), serde_json::to_vec(&inst.state)?);
            batch.insert(
                format!("{OLD_BIZDATE}{}|{id}", inst.bizdate).into_bytes(),
                serde_json::to_vec(&id)?,
            );
        }
    }
    batch.remove(LAYOUT);
    store.tree.apply_batch(batch)?;
    Ok(())
}

/// A store written with the earlier index layout (a state key per instance, a day index, one
/// key per downstream edge) gets this layout when it opens, the same bytes as a store that
/// always had it; a migration interrupted part way (some lists written, some edges left) ends
/// the same; and the moved edges still wake the downstream instances.
#[tokio::test]
async fn an_earlier_index_layout_is_brought_up_when_the_store_opens() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let with = |id: &str, task: &str, ws_day: &str, up: &[&str], prev: &[&str]| Instance {
        task: task.into(),
        bizdate: ws_day.into(),
        upstream: up.iter().map(|s| s.to_string()).collect(),
        previous: prev.iter().map(|s| s.to_string()).collect(),
        due_ms: i64::MAX,
        ..manual(id)
    };
    let expected = {
        let store = Store::open(dir.path())?;
        setup(&store).await?;
        let instances = vec![
            with("a1", "ws1/a", "20261124", &[], &[]),
            with("b1", "ws1/b", "20261124", &["a1"], &[]),
            with("c1", "ws2/c", "20261124", &["a1", "b1"], &[]),
            with("a2", "ws1/a", "20261125", &[], &["a1"]),
            with("c2", "ws2/c", "20261125", &["a2"], &["c1"]),
        ];
        store
            .propose(Command::AddInstances {
                instances,
                generated: None,
                at_ms: 5,
            })
            .await?;
        assert_eq!(store.downstream_of("a1")?, ["a2", "b1", "c1"]);
        assert_eq!(store.downstream_of("c1")?, ["c2"]);
        let day: Vec<String> = store
            .instances_of_bizdate("20261124")?
            .into_iter()
            .map(|i| i.id)
            .collect();
        // Workspaces in key order: `ws1|` and `ws2|` sort before `|` (task `t` has none).
        assert_eq!(day, ["a1", "b1", "c1", "i1"]);
        assert_eq!(
            store.instance_counts()?.values().sum::<u64>(),
            6,
            "the counters count every instance"
        );
        let expected = raw(&store)?;
        write_earlier_layout(&store, &expected)?;
        store.flush().await?;
        expected
    };
    let store = reopen(dir.path())?;
    assert_eq!(
        raw(&store)?,
        expected,
        "the migrated store is the one always kept so"
    );
    // Wherever a crash stops the migration (after any batch it stored, with batches as small
    // as they go), every edge and every task-day entry is still there, as an old key or in a
    // list, so the next open finishes it.
    write_earlier_layout(&store, &expected)?;
    let mut batches = 0;
    store.migrate_layout(1, &mut |s: &Store| {
        batches += 1;
        let now = raw(s)?;
        for (k, v) in &expected {
            for (list, old) in [(DOWN, OLD_DOWN), (TASK_DAY, TASK_DAY)] {
                let Some(group) = k.strip_prefix(list) else {
                    continue;
                };
                let listed: Vec<String> = match now.get(k) {
                    Some(l) => serde_json::from_str(l)?,
                    None => Vec::new(),
                };
                for member in serde_json::from_str::<Vec<String>>(v)? {
                    assert!(
                        listed.contains(&member)
                            || now.contains_key(&format!("{old}{group}|{member}")),
                        "after batch {batches}, {member} of {k} is neither listed nor kept"
                    );
                }
            }
        }
        Ok(())
    })?;
    assert!(batches > 5, "the migration stored {batches} batches");
    assert_eq!(raw(&store)?, expected, "migrated in batches of one key");
    // Interrupted: the list of a1 written with one edge, two edges left as keys, and a task's
    // day the same way; no marker.
    let mut batch = sled::Batch::default();
    batch.insert(down_key("a1"), serde_json::to_vec(&["b1"])?);
    for down in ["a2", "c1"] {
        batch.insert(
            format!("{OLD_DOWN}a1|{down}").into_bytes(),
            serde_json::to_vec(down)?,
        );
    }
    batch.insert(
        task_day_key("ws2/c", "20261124"),
        serde_json::to_vec(&["c1"])?,
    );
    batch.insert(
        format!("{TASK_DAY}ws2/c|20261124|c0").into_bytes(),
        serde_json::to_vec("c0")?,
    );
    batch.remove(LAYOUT);
    store.tree.apply_batch(batch)?;
    store.flush().await?;
    drop(store);
    let store = reopen(dir.path())?;
    let mut expected = expected;
    expected.insert(
        String::from_utf8_lossy(&task_day_key("ws2/c", "20261124")).to_string(),
        r#"["c0","c1"]"#.to_string(),
    );
    assert_eq!(
        raw(&store)?,
        expected,
        "an interrupted migration ends the same"
    );
    // The moved edges wake: a1 succeeds, b1 goes on (c1 still waits for b1).
    store
        .propose(Command::MarkSuccess {
            id: "a1".into(),
            reason: "test".into(),
            at_ms: 6,
        })
        .await?;
    let state = |id: &str| -> Result<InstanceState> {
        Ok(store.instance(id)?.map(|i| i.state).unwrap_or_default())
    };
    assert_eq!(state("b1")?, InstanceState::WaitingTime);
    assert_eq!(state("a2")?, InstanceState::WaitingTime);
    assert_eq!(state("c1")?, InstanceState::WaitingUpstream);
    Ok(())
}

mod state_scan {
    use super::super::lifecycle::{scan_state, state_in_record};
    use super::*;
    use proptest::prelude::*;

    fn any_state() -> impl Strategy<Value = InstanceState> {
        (0..InstanceState::ALL.len()).prop_map(|i| InstanceState::ALL[i])
    }

    /// A JSON value of a few kinds, nested a little.
    fn any_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            any::<String>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z\"\\\\]{0,6}", inner, 0..3)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Every instance record, whatever its text fields hold (quotes, backslashes, any
        /// character), gives its state to the scan, without the fallback.
        #[test]
        fn the_scan_reads_the_state_of_any_record(
            id in any::<String>(),
            task in any::<String>(),
            group in any::<String>(),
            bizdate in any::<String>(),
            cyctime in any::<String>(),
            version in any::<u32>(),
            state in any_state(),
            reason in any::<String>(),
        ) {
            let inst = Instance {
                id, task, group, bizdate, cyctime, version, state,
                history: vec![Transition { at_ms: 1, state, reason }],
                ..Default::default()
            };
            let json = serde_json::to_vec(&inst).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(scan_state(&json), Some(state));
            prop_assert_eq!(state_in_record(&json).ok(), Some(state));
        }

        /// On any JSON object (members of every kind, a `state` anywhere or nowhere, in any
        /// spacing), the scan either gives up or agrees with serde.
        #[test]
        fn the_scan_never_disagrees_with_serde(
            before in prop::collection::vec(("[a-z_\"\\\\]{0,6}", any_value()), 0..4),
            state in prop::option::of(any_state()),
            after in prop::collection::vec(("[a-z_]{0,6}", any_value()), 0..3),
            pretty in any::<bool>(),
        ) {
            let mut text = String::from("{");
            let mut members: Vec<String> = Vec::new();
            for (k, v) in &before {
                members.push(format!("{}:{}", serde_json::Value::from(k.as_str()), v));
            }
            if let Some(s) = state {
                members.push(format!("\"state\":\"{}\"", s.as_str()));
            }
            for (k, v) in &after {
                members.push(format!("{}:{}", serde_json::Value::from(k.as_str()), v));
            }
            text.push_str(&members.join(if pretty { " ,\n  " } else { "," }));
            text.push('}');
            let scanned = scan_state(text.as_bytes());
            match serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("state").cloned())
            {
                Some(serde_json::Value::String(s)) if scanned.is_some() => {
                    prop_assert_eq!(scanned.map(|x| x.as_str().to_string()), Some(s));
                }
                _ => {}
            }
            if let Ok(full) = serde_json::from_str::<Instance>(&text) {
                prop_assert_eq!(state_in_record(text.as_bytes()).ok(), Some(full.state));
            }
        }
    }
}
