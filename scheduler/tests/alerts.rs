//! Alerts end to end inside the scheduler: the real state machine raises events, the leader's
//! delivery rounds post them to a real HTTP server on loopback, on a manual clock so back-off
//! and baselines take no wall time.

use chrono::DateTime;
use ferry_common::secret::Secret;
use ferry_scheduler::alerts::{self, MAX_TRIES, backoff_ms};
use ferry_scheduler::clock::ManualClock;
use ferry_scheduler::context::{Config, Context};
use ferry_scheduler::hub::Hub;
use ferry_scheduler::secrets::SecretBox;
use ferry_scheduler::state::Store;
use ferry_scheduler::state::alerts::{AlertKind, AlertRule, DeliveryState, WebhookFormat};
use ferry_scheduler::state::command::{Command, Reporter};
use ferry_scheduler::state::model::{
    AttemptState, Instance, InstanceState, Stats, TaskVersion, Transition,
};
use ferry_tests::webhook::Receiver;
use std::collections::HashMap;
use std::sync::Arc;

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

fn ms(t: &str) -> i64 {
    DateTime::parse_from_rfc3339(t)
        .map(|t| t.timestamp_millis())
        .unwrap_or_default()
}

struct Fixture {
    ctx: Arc<Context>,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn version(task: &str) -> TaskVersion {
    TaskVersion {
        task: format!("default/{task}"),
        group: "rg".into(),
        job_text: "{}".into(),
        ..Default::default()
    }
}

fn instance(id: &str, task: &str, bizdate: &str) -> Instance {
    Instance {
        id: id.into(),
        task: format!("default/{task}"),
        version: 1,
        group: "rg".into(),
        bizdate: bizdate.into(),
        cyctime: format!("{bizdate}000000"),
        history: vec![Transition {
            at_ms: 0,
            state: InstanceState::WaitingUpstream,
            reason: "test".into(),
        }],
        ..Default::default()
    }
}

impl Fixture {
    async fn new(start: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let clock = ManualClock::new(ms(start));
        let store = Arc::new(Store::open(dir.path())?);
        let secrets = SecretBox::load_or_create(dir.path())?;
        let config = Config::new(dir.path().to_path_buf(), "http://test".into());
        let ctx = Arc::new(Context {
            store,
            hub: Hub::new(clock.clone()),
            secrets,
            config,
            clock: clock.clone(),
        });
        ctx.store
            .propose(Command::CreateGroup {
                name: "rg".into(),
                token_hash: "h".into(),
                workspaces: vec![],
                at_ms: 0,
            })
            .await?;
        for task in ["load", "other"] {
            ctx.store
                .propose(Command::SubmitTask {
                    version: version(task),
                    submit_id: format!("submit-{task}"),
                    first_day: None,
                    at_ms: 0,
                })
                .await?;
        }
        Ok(Self {
            ctx,
            clock,
            http: alerts::http_client()?,
            _dir: dir,
        })
    }

    async fn rule(&self, name: &str, url: &str, tasks: &[&str], on: &[AlertKind]) -> Result<()> {
        self.rule_with(name, url, tasks, on, None, WebhookFormat::Generic)
            .await
    }

    async fn rule_with(
        &self,
        name: &str,
        url: &str,
        tasks: &[&str],
        on: &[AlertKind],
        baseline: Option<&str>,
        format: WebhookFormat,
    ) -> Result<()> {
        let mut sealed = Secret::new(url);
        self.ctx.secrets.seal_one(&mut sealed)?;
        self.ctx
            .store
            .propose(Command::PutAlertRule {
                rule: AlertRule {
                    workspace: "default".into(),
                    name: name.into(),
                    tasks: tasks.iter().map(|t| format!("default/{t}")).collect(),
                    on: on.to_vec(),
                    baseline: baseline.map(String::from),
                    timezone: "Asia/Shanghai".into(),
                    url: sealed,
                    format,
                    created_ms: 0,
                },
            })
            .await?;
        Ok(())
    }

    /// Runs instance `id` of `task` once and ends it `state`.
    async fn run(&self, id: &str, task: &str, state: AttemptState) -> Result<()> {
        let s = &self.ctx.store;
        let now = self.ctx.now_ms();
        s.propose(Command::RunTask {
            instance: instance(id, task, "20261124"),
            at_ms: now,
        })
        .await?;
        let attempt = format!("{id}-a1");
        let token = match s
            .propose(Command::DispatchAttempt {
                id: attempt.clone(),
                instance_id: id.into(),
                agent_id: "ag".into(),
                at_ms: now,
            })
            .await?
        {
            ferry_scheduler::state::command::Applied::Dispatched { fencing_token } => fencing_token,
            other => return Err(format!("not dispatched: {other:?}").into()),
        };
        s.propose(Command::FinishAttempt {
            id: attempt,
            by: Reporter::Agent("ag".into()),
            fencing_token: token,
            state,
            stats: Stats::default(),
            error: "boom: relation does not exist".into(),
            at_ms: now,
        })
        .await?;
        Ok(())
    }

    async fn round(&self) -> Result<()> {
        alerts::round(&self.ctx, &self.http).await?;
        Ok(())
    }
}

#[tokio::test]
async fn failures_are_posted_with_retries_and_recorded() -> Result<()> {
    let f = Fixture::new("2026-11-25T02:00:00+08:00").await?;
    let (hook, url) = Receiver::start(&[500, 503]).await?;
    let (elsewhere, other_url) = Receiver::start(&[]).await?;
    f.rule("oncall", &url, &["load"], &[AlertKind::Failed])
        .await?;
    // Watches another task: never told about `load`.
    f.rule("other-team", &other_url, &["other"], &[AlertKind::Failed])
        .await?;

    f.run("i-ok", "load", AttemptState::Succeeded).await?;
    f.run("i-bad", "load", AttemptState::Failed).await?;
    assert_eq!(
        f.ctx.store.alert_events(10)?.len(),
        1,
        "one failure, one event"
    );

    f.round().await?;
    assert_eq!(hook.count(), 1);
    let d = f.ctx.store.alert_deliveries(10)?;
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].state, d[0].tries), (DeliveryState::Retrying, 1));
    assert!(d[0].last_result.contains("500"), "{:?}", d[0]);

    // Not before its back-off.
    f.round().await?;
    assert_eq!(hook.count(), 1);
    f.clock.advance(backoff_ms(1));
    f.round().await?;
    assert_eq!(hook.count(), 2);
    f.clock.advance(backoff_ms(2));
    f.round().await?;
    assert_eq!(hook.count(), 3);
    let d = f.ctx.store.alert_deliveries(10)?;
    assert_eq!((d[0].state, d[0].tries), (DeliveryState::Delivered, 3));
    // Settled: the outbox is empty and nothing is sent again.
    f.round().await?;
    assert!(f.ctx.store.alert_events(10)?.is_empty());
    f.clock.advance(3_600_000);
    f.round().await?;
    assert_eq!(hook.count(), 3);
    assert_eq!(elsewhere.count(), 0);

    let body = &hook.bodies()[0];
    assert_eq!(body["event"], "failed");
    assert_eq!(body["task"], "default/load");
    assert_eq!(body["instance"], "i-bad");
    assert_eq!(body["bizdate"], "20261124");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("boom"),
        "{body}"
    );
    // The webhook's token is in no record.
    let records = serde_json::to_string(&f.ctx.store.alert_deliveries(10)?)?;
    assert!(!records.contains("SECRET-TOKEN-123"));
    Ok(())
}

#[tokio::test]
async fn a_webhook_that_keeps_failing_ends_failed_after_its_tries() -> Result<()> {
    let f = Fixture::new("2026-11-25T02:00:00+08:00").await?;
    let (hook, url) = Receiver::start(&[500; 20]).await?;
    f.rule("oncall", &url, &[], &[AlertKind::Failed]).await?;
    f.run("i-bad", "other", AttemptState::Failed).await?;
    for tries in 1..=MAX_TRIES + 2 {
        f.round().await?;
        f.clock.advance(backoff_ms(tries));
    }
    assert_eq!(hook.count(), MAX_TRIES as usize);
    let d = f.ctx.store.alert_deliveries(10)?;
    assert_eq!((d[0].state, d[0].tries), (DeliveryState::Failed, MAX_TRIES));
    assert!(f.ctx.store.alert_events(10)?.is_empty());

    // A server that is not there at all is a failed try too, with the reason recorded.
    let port_gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let gone = format!("http://127.0.0.1:{port_gone}/hook?access_token=SECRET-TOKEN-123");
    f.rule("nobody", &gone, &["load"], &[AlertKind::Failed])
        .await?;
    f.run("i-bad2", "load", AttemptState::Failed).await?;
    f.round().await?;
    let d = f.ctx.store.alert_deliveries(10)?;
    let nobody = d
        .iter()
        .find(|d| d.rule == "default/nobody")
        .ok_or("no delivery for the rule")?;
    assert_eq!(nobody.state, DeliveryState::Retrying);
    assert!(!nobody.last_result.is_empty());
    assert!(!nobody.last_result.contains("SECRET-TOKEN"), "{nobody:?}");
    Ok(())
}

#[tokio::test]
async fn baselines_are_raised_once_per_rule_and_day() -> Result<()> {
    let f = Fixture::new("2026-11-25T05:00:00+08:00").await?;
    let (hook, url) = Receiver::start(&[]).await?;
    f.rule_with(
        "morning",
        &url,
        &[],
        &[AlertKind::Baseline],
        Some("06:00"),
        WebhookFormat::Dingtalk,
    )
    .await?;
    // Business date 20261124: one instance done, one still waiting at 06:00 the next day.
    f.run("i-done", "load", AttemptState::Succeeded).await?;
    f.ctx
        .store
        .propose(Command::RunTask {
            instance: instance("i-late", "other", "20261124"),
            at_ms: f.ctx.now_ms(),
        })
        .await?;
    let mut checked = HashMap::new();
    alerts::check_baselines(&f.ctx, &mut checked).await?;
    assert!(f.ctx.store.alert_events(10)?.is_empty(), "before 06:00");

    f.clock.set(ms("2026-11-25T06:00:30+08:00"));
    alerts::check_baselines(&f.ctx, &mut checked).await?;
    let events = f.ctx.store.alert_events(10)?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].instance_id, "i-late");
    assert_eq!(events[0].kind, AlertKind::Baseline);
    // A new leader checks again: nothing twice, before or after delivery.
    alerts::check_baselines(&f.ctx, &mut HashMap::new()).await?;
    assert_eq!(f.ctx.store.alert_events(10)?.len(), 1);
    f.round().await?;
    f.round().await?;
    assert_eq!(hook.count(), 1);
    alerts::check_baselines(&f.ctx, &mut HashMap::new()).await?;
    f.round().await?;
    assert_eq!(hook.count(), 1);
    let body = &hook.bodies()[0];
    assert_eq!(body["msgtype"], "text");
    let text = body["text"]["content"].as_str().unwrap_or_default();
    assert!(
        text.contains("default/other") && text.contains("missed its baseline"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn timeouts_raise_their_own_event() -> Result<()> {
    let f = Fixture::new("2026-11-25T02:00:00+08:00").await?;
    let mut v = version("slow");
    v.timeout_secs = 60;
    f.ctx
        .store
        .propose(Command::SubmitTask {
            version: v,
            submit_id: "slow".into(),
            first_day: None,
            at_ms: 0,
        })
        .await?;
    let (hook, url) = Receiver::start(&[]).await?;
    f.rule("slow-watch", &url, &["slow"], &[AlertKind::Timeout])
        .await?;
    let now = f.ctx.now_ms();
    f.ctx
        .store
        .propose(Command::RunTask {
            instance: instance("i-slow", "slow", "20261124"),
            at_ms: now,
        })
        .await?;
    f.ctx
        .store
        .propose(Command::DispatchAttempt {
            id: "a-slow".into(),
            instance_id: "i-slow".into(),
            agent_id: "ag".into(),
            at_ms: now,
        })
        .await?;
    f.ctx
        .store
        .propose(Command::Tick {
            at_ms: now + 61_000,
        })
        .await?;
    f.round().await?;
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["event"], "timeout");
    assert!(
        bodies[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{}",
        bodies[0]
    );
    Ok(())
}
