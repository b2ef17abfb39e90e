use super::*;
use model::Stats;

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
            at_ms: 1,
        })
        .await?;
    store
        .propose(Command::CreateTask {
            name: "t".into(),
            group: "rg".into(),
            job_text: "{}".into(),
            at_ms: 2,
        })
        .await?;
    store
        .propose(Command::CreateInstance {
            id: "i1".into(),
            task: "t".into(),
            bizdate: "20261124".into(),
            cyctime: "20261125000000".into(),
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
        let v = store
            .propose(Command::CreateTask {
                name: "t".into(),
                group: "rg".into(),
                job_text: "{\"v\":2}".into(),
                at_ms: 4,
            })
            .await?;
        assert_eq!(v, Applied::TaskVersion(2));
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
            at_ms: 9,
        })
        .await;
    assert!(matches!(again, Err(Error::AlreadyExists { .. })));
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
    assert_eq!(done, Applied::Done);
    assert_eq!(
        store.instance("i1")?.map(|i| i.state),
        Some(InstanceState::Success)
    );
    assert!(store.live_attempts()?.is_empty());
    // A resent finish after success changes nothing.
    let resent = store
        .propose(Command::FinishAttempt {
            id: "a1".into(),
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
