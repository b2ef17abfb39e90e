//! Days of scheduling in seconds: the real state machine, generation, ticks and dispatcher on a
//! manual clock, with a simulated agent that runs what it is sent and answers as each test says.
//!
//! Each test submits tasks, moves the clock in steps (every step: generate and tick as the
//! leader does, dispatch to the simulated agent, let it report), and checks what happened by
//! the instances' states, attempts and histories.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use ferry_proto::agent::v1 as pb;
use ferry_scheduler::clock::{Clock, ManualClock};
use ferry_scheduler::context::{Config, Context};
use ferry_scheduler::hub::Hub;
use ferry_scheduler::secrets::SecretBox;
use ferry_scheduler::state::Store;
use ferry_scheduler::state::command::{Applied, Command, Reporter};
use ferry_scheduler::state::model::{
    AttemptState, DependencySpec, HostInfo, Instance, InstanceState, RunKind, ScheduleSpec, Stats,
    TaskVersion,
};
use ferry_scheduler::{dispatch, generate};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// What the simulated agent does with an attempt of a task: its `n`-th attempt (from 1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Succeed,
    Fail,
    /// Starts and never reports an end.
    Hang,
}

struct Sim {
    ctx: Arc<Context>,
    clock: Arc<ManualClock>,
    dir: Arc<tempfile::TempDir>,
    rx: mpsc::Receiver<Result<pb::SchedulerMessage, tonic::Status>>,
    /// Attempts per task so far.
    attempts: HashMap<String, u32>,
    /// Attempts the agent was told to stop.
    kills: Vec<String>,
}

fn ms(t: &str) -> i64 {
    DateTime::parse_from_rfc3339(t)
        .map(|t| t.timestamp_millis())
        .unwrap_or_default()
}

/// A job the dispatcher can resolve; the simulated agent does not run it.
const JOB: &str = r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"${bizdate}"}],"sliceRecordCount":1}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#;

fn version(task: &str, cron: Option<(&str, &str)>) -> TaskVersion {
    TaskVersion {
        task: format!("default/{task}"),
        group: "rg".into(),
        job_text: JOB.into(),
        schedule: cron.map(|(c, tz)| ScheduleSpec {
            cron: c.into(),
            timezone: tz.into(),
        }),
        ..Default::default()
    }
}

fn after(mut v: TaskVersion, upstream: &str, previous: bool) -> TaskVersion {
    v.dependencies.push(DependencySpec {
        upstream: format!("default/{upstream}"),
        previous,
    });
    v
}

impl Sim {
    async fn open(dir: Arc<tempfile::TempDir>, clock: Arc<ManualClock>) -> Result<Self> {
        let store = std::sync::Arc::new(Store::open(dir.path())?);
        let secrets = SecretBox::load_or_create(dir.path())?;
        let mut config = Config::new(dir.path().to_path_buf(), "http://sim".into());
        // The simulated agent is told about attempts through its channel at once.
        config.attempt_lease = std::time::Duration::from_secs(3600 * 24 * 365);
        let ctx = Arc::new(Context {
            store,
            hub: Hub::new(clock.clone()),
            secrets,
            config,
            clock: clock.clone(),
        });
        let (tx, rx) = mpsc::channel(10_000);
        ctx.hub.open_session("agt-sim", "rg", "boot", 1000, tx);
        Ok(Self {
            ctx,
            clock,
            dir,
            rx,
            attempts: HashMap::new(),
            kills: Vec::new(),
        })
    }

    async fn new(start: &str) -> Result<Self> {
        let dir = Arc::new(tempfile::tempdir()?);
        let clock = ManualClock::new(ms(start));
        let sim = Self::open(dir, clock).await?;
        let s = &sim.ctx.store;
        s.propose(Command::CreateWorkspace {
            name: "default".into(),
            at_ms: 0,
        })
        .await?;
        s.propose(Command::CreateGroup {
            name: "rg".into(),
            token_hash: "h".into(),
            workspaces: vec!["default".into()],
            at_ms: 0,
        })
        .await?;
        s.propose(Command::RegisterAgent {
            id: "agt-sim".into(),
            group: "rg".into(),
            credential_hash: "h".into(),
            host: HostInfo {
                slots: 1000,
                ..Default::default()
            },
            at_ms: 0,
        })
        .await?;
        Ok(sim)
    }

    /// Submits `v`; with a schedule its first generated day is the day after now (T+1).
    async fn submit(&self, v: TaskVersion) -> Result<()> {
        let first_day = v
            .schedule
            .as_ref()
            .and_then(|s| generate::first_day(self.ctx.now_ms(), &s.timezone));
        self.ctx
            .store
            .propose(Command::SubmitTask {
                version: v,
                submit_id: uuid_like(),
                first_day,
                at_ms: self.ctx.now_ms(),
            })
            .await?;
        Ok(())
    }

    /// Moves the clock to `until` in steps of `step_ms`; at each step the leader's work runs and
    /// the agent answers attempts with `outcome(task, attempt number)`.
    async fn run_until(
        &mut self,
        until: &str,
        step_ms: i64,
        outcome: impl Fn(&str, u32) -> Outcome,
    ) -> Result<()> {
        let end = ms(until);
        while self.clock.now_ms() < end {
            self.clock
                .advance(step_ms.min(end - self.clock.now_ms()).max(1));
            self.step(&outcome).await?;
        }
        Ok(())
    }

    async fn step(&mut self, outcome: &impl Fn(&str, u32) -> Outcome) -> Result<()> {
        for _ in 0..1000 {
            self.ctx.hub.heartbeat("agt-sim", 1000, 0.0);
            generate::tick(&self.ctx).await?;
            dispatch::tick(&self.ctx).await?;
            let mut any = false;
            while let Ok(Ok(msg)) = self.rx.try_recv() {
                let start = match msg.body {
                    Some(pb::scheduler_message::Body::Start(start)) => start,
                    Some(pb::scheduler_message::Body::Kill(k)) => {
                        self.kills.push(k.attempt_id);
                        continue;
                    }
                    _ => continue,
                };
                any = true;
                let n = self.attempts.entry(start.task.clone()).or_default();
                *n += 1;
                let task = start.task.trim_start_matches("default/").to_string();
                let store = &self.ctx.store;
                store
                    .propose(Command::AttemptStarted {
                        id: start.attempt_id.clone(),
                        agent_id: "agt-sim".into(),
                        fencing_token: start.fencing_token,
                        at_ms: self.clock.now_ms(),
                    })
                    .await?;
                let state = match outcome(&task, *n) {
                    Outcome::Succeed => AttemptState::Succeeded,
                    Outcome::Fail => AttemptState::Failed,
                    Outcome::Hang => continue,
                };
                let applied = store
                    .propose(Command::FinishAttempt {
                        id: start.attempt_id,
                        by: Reporter::Agent("agt-sim".into()),
                        fencing_token: start.fencing_token,
                        state,
                        stats: Stats::default(),
                        error: if state == AttemptState::Failed {
                            "simulated failure".into()
                        } else {
                            String::new()
                        },
                        at_ms: self.clock.now_ms(),
                    })
                    .await?;
                self.ctx.announce(&applied);
            }
            if !any {
                break;
            }
        }
        Ok(())
    }

    fn instances(&self, task: &str) -> Result<Vec<Instance>> {
        let q = format!("default/{task}");
        let mut v: Vec<Instance> = self
            .ctx
            .store
            .instances()?
            .into_iter()
            .filter(|i| i.task == q)
            .collect();
        v.sort_by(|a, b| (a.due_ms, &a.id).cmp(&(b.due_ms, &b.id)));
        Ok(v)
    }

    fn states(&self, task: &str) -> Result<Vec<InstanceState>> {
        Ok(self.instances(task)?.iter().map(|i| i.state).collect())
    }

    /// When an instance's state last became `state` (ms).
    fn when(i: &Instance, state: InstanceState) -> i64 {
        i.history
            .iter()
            .rev()
            .find(|t| t.state == state)
            .map(|t| t.at_ms)
            .unwrap_or(i64::MAX)
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("submit-{}", N.fetch_add(1, Ordering::Relaxed))
}

const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;

/// A daily task in Shanghai runs once a day on its own, from the day after it is submitted.
#[tokio::test]
async fn a_week_of_a_daily_task() -> Result<()> {
    let mut sim = Sim::new("2026-11-20T12:00:00Z").await?;
    sim.submit(version("orders", Some(("30 2 * * *", "Asia/Shanghai"))))
        .await?;
    sim.run_until("2026-11-27T12:00:00Z", HOUR, |_, _| Outcome::Succeed)
        .await?;
    let inst = sim.instances("orders")?;
    // Submitted on the 20th (20:00 in Shanghai): the 21st .. 27th, 02:30 Shanghai.
    assert_eq!(
        inst.len(),
        7,
        "{:?}",
        inst.iter().map(|i| &i.id).collect::<Vec<_>>()
    );
    assert!(inst.iter().all(|i| i.state == InstanceState::Success));
    assert_eq!(inst[0].bizdate, "20261120");
    assert_eq!(inst[0].cyctime, "20261121023000");
    // Each ran at its cycle time, not before.
    for i in &inst {
        assert!(
            Sim::when(i, InstanceState::WaitingResources) >= i.due_ms,
            "{}",
            i.id
        );
        assert_eq!(i.attempts.len(), 1);
    }
    Ok(())
}

/// Daylight saving in Berlin: an hourly task has 23 instances on the spring day and 25 on the
/// autumn day, each run once; a daily run inside the spring gap runs at the first valid instant.
#[tokio::test]
async fn daylight_saving_days() -> Result<()> {
    let mut sim = Sim::new("2026-03-27T12:00:00Z").await?;
    sim.submit(version("hourly", Some(("0 * * * *", "Europe/Berlin"))))
        .await?;
    sim.submit(version("gap", Some(("30 2 * * *", "Europe/Berlin"))))
        .await?;
    sim.run_until("2026-03-30T12:00:00Z", 15 * MINUTE, |_, _| Outcome::Succeed)
        .await?;
    let spring: Vec<Instance> = sim
        .instances("hourly")?
        .into_iter()
        .filter(|i| i.cyctime.starts_with("20260329"))
        .collect();
    assert_eq!(spring.len(), 23);
    assert!(spring.iter().all(|i| i.state == InstanceState::Success));
    let gap: Vec<Instance> = sim
        .instances("gap")?
        .into_iter()
        .filter(|i| i.cyctime.starts_with("20260329"))
        .collect();
    assert_eq!(gap.len(), 1, "the 02:30 run in the gap is never skipped");
    assert_eq!(gap[0].cyctime, "20260329030000");
    assert_eq!(gap[0].state, InstanceState::Success);

    sim.clock.set(ms("2026-10-23T12:00:00Z"));
    sim.run_until("2026-10-26T12:00:00Z", 15 * MINUTE, |_, _| Outcome::Succeed)
        .await?;
    let autumn: Vec<Instance> = sim
        .instances("hourly")?
        .into_iter()
        .filter(|i| i.cyctime.starts_with("20261025"))
        .collect();
    assert_eq!(autumn.len(), 25);
    assert!(autumn.iter().all(|i| i.state == InstanceState::Success));
    let once: Vec<Instance> = sim
        .instances("gap")?
        .into_iter()
        .filter(|i| i.cyctime.starts_with("20261025"))
        .collect();
    assert_eq!(
        once.len(),
        1,
        "a fixed time in the fall-back overlap runs once"
    );
    Ok(())
}

/// A failure is retried after the interval and the instance ends in success with two attempts.
#[tokio::test]
async fn a_failure_retries_after_the_interval() -> Result<()> {
    let mut sim = Sim::new("2026-11-20T12:00:00Z").await?;
    let mut v = version("flaky", Some(("0 1 * * *", "UTC")));
    v.retries = 2;
    v.retry_interval_secs = 300;
    sim.submit(v).await?;
    sim.run_until("2026-11-21T03:00:00Z", MINUTE, |_, n| {
        if n == 1 {
            Outcome::Fail
        } else {
            Outcome::Succeed
        }
    })
    .await?;
    let inst = sim.instances("flaky")?;
    assert_eq!(inst.len(), 1);
    let i = &inst[0];
    assert_eq!(i.state, InstanceState::Success);
    assert_eq!(i.attempts.len(), 2);
    let failed_at = i
        .history
        .iter()
        .find(|t| t.reason.starts_with("retry 1 of 2"))
        .map(|t| t.at_ms)
        .unwrap_or_default();
    let second = sim
        .ctx
        .store
        .attempt(&i.attempts[1])?
        .map(|a| a.dispatched_ms)
        .unwrap_or_default();
    assert!(second - failed_at >= 300_000, "retried before its interval");
    Ok(())
}

/// Without retries a failure is final; a frozen instance holds its downstream until unfrozen.
#[tokio::test]
async fn a_frozen_instance_blocks_its_downstream() -> Result<()> {
    let mut sim = Sim::new("2026-11-20T12:00:00Z").await?;
    sim.submit(version("a", Some(("0 1 * * *", "UTC")))).await?;
    sim.submit(after(version("b", Some(("0 2 * * *", "UTC"))), "a", false))
        .await?;
    sim.run_until("2026-11-21T00:30:00Z", HOUR, |_, _| Outcome::Succeed)
        .await?;
    let a = sim.instances("a")?;
    assert_eq!(a.len(), 1);
    sim.ctx
        .store
        .propose(Command::Freeze {
            ids: vec![a[0].id.clone()],
            freeze: true,
            reason: "test".into(),
            at_ms: sim.ctx.now_ms(),
        })
        .await?;
    sim.run_until("2026-11-21T06:00:00Z", HOUR, |_, _| Outcome::Succeed)
        .await?;
    assert_eq!(sim.states("a")?, vec![InstanceState::Frozen]);
    assert_eq!(sim.states("b")?, vec![InstanceState::WaitingUpstream]);
    let b = &sim.instances("b")?[0];
    let why = sim.ctx.store.waiting_for(b)?.unwrap_or_default();
    assert!(why.contains("frozen"), "{why}");
    sim.ctx
        .store
        .propose(Command::Freeze {
            ids: vec![a[0].id.clone()],
            freeze: false,
            reason: "test".into(),
            at_ms: sim.ctx.now_ms(),
        })
        .await?;
    sim.run_until("2026-11-21T07:00:00Z", MINUTE, |_, _| Outcome::Succeed)
        .await?;
    assert_eq!(sim.states("a")?, vec![InstanceState::Success]);
    assert_eq!(sim.states("b")?, vec![InstanceState::Success]);
    Ok(())
}

/// A daily task downstream of an hourly one waits for all 24 hourly instances of the day; an
/// hourly task downstream of a daily one waits for the day's instance.
#[tokio::test]
async fn hourly_and_daily_dependencies() -> Result<()> {
    let mut sim = Sim::new("2026-11-20T12:00:00Z").await?;
    sim.submit(version("h", Some(("0 * * * *", "UTC")))).await?;
    sim.submit(after(version("d", Some(("30 0 * * *", "UTC"))), "h", false))
        .await?;
    sim.submit(after(
        version("h2", Some(("15 * * * *", "UTC"))),
        "d",
        false,
    ))
    .await?;
    sim.run_until("2026-11-22T02:00:00Z", 5 * MINUTE, |_, _| Outcome::Succeed)
        .await?;
    let day: Vec<Instance> = sim
        .instances("h")?
        .into_iter()
        .filter(|i| i.cyctime.starts_with("20261121"))
        .collect();
    assert_eq!(day.len(), 24);
    let d = sim
        .instances("d")?
        .into_iter()
        .find(|i| i.cyctime.starts_with("20261121"))
        .ok_or("no daily instance")?;
    assert_eq!(d.upstream.len(), 24);
    let last_hour = day
        .iter()
        .map(|i| Sim::when(i, InstanceState::Success))
        .max()
        .unwrap_or(0);
    assert!(Sim::when(&d, InstanceState::WaitingResources) >= last_hour);
    assert_eq!(d.state, InstanceState::Success);
    // h2 at 00:15 waits for d (00:30) of its day.
    let h2 = sim
        .instances("h2")?
        .into_iter()
        .find(|i| i.cyctime == "20261121001500")
        .ok_or("no h2 instance")?;
    assert_eq!(h2.upstream, vec![d.id.clone()]);
    assert!(
        Sim::when(&h2, InstanceState::WaitingResources) >= Sim::when(&d, InstanceState::Success)
    );
    Ok(())
}

/// A self-dependency holds day N+1 until day N succeeds; a rerun of day N releases it.
#[tokio::test]
async fn a_self_dependency_holds_the_next_day() -> Result<()> {
    let mut sim = Sim::new("2026-11-20T12:00:00Z").await?;
    sim.submit(after(version("s", Some(("0 1 * * *", "UTC"))), "s", true))
        .await?;
    sim.run_until("2026-11-22T12:00:00Z", HOUR, |_, n| {
        if n == 1 {
            Outcome::Fail
        } else {
            Outcome::Succeed
        }
    })
    .await?;
    assert_eq!(
        sim.states("s")?,
        vec![InstanceState::Failed, InstanceState::WaitingUpstream]
    );
    let first = sim.instances("s")?[0].id.clone();
    sim.ctx
        .store
        .propose(Command::Rerun {
            ids: vec![first],
            reason: "test".into(),
            at_ms: sim.ctx.now_ms(),
        })
        .await?;
    sim.run_until("2026-11-22T13:00:00Z", MINUTE, |_, _| Outcome::Succeed)
        .await?;
    assert_eq!(
        sim.states("s")?,
        vec![InstanceState::Success, InstanceState::Success]
    );
    Ok(())
}

/// A 7-day backfill of a task and its downstream runs the days in date order, one at a time.
#[tokio::test]
async fn a_seven_day_backfill_with_downstream() -> Result<()> {
    let mut sim = Sim::new("2026-11-20T12:00:00Z").await?;
    sim.submit(version("a", Some(("0 1 * * *", "UTC")))).await?;
    sim.submit(after(version("b", Some(("0 2 * * *", "UTC"))), "a", false))
        .await?;
    let days: Vec<NaiveDate> = (1..=7)
        .filter_map(|d| NaiveDate::from_ymd_opt(2026, 11, d))
        .collect();
    let tasks = generate::downstream_tasks(&sim.ctx.store, "default/a")?;
    assert_eq!(tasks.len(), 2);
    let (bf, instances) = generate::plan_backfill(
        &sim.ctx.store,
        &generate::BackfillSpec {
            id: "bf-test",
            root: "default/a",
            tasks: &tasks,
            days: &days,
            downstream: true,
            parallelism: 1,
            now_ms: sim.ctx.now_ms(),
            who: "test",
        },
    )?;
    assert_eq!(instances.len(), 14);
    sim.ctx
        .store
        .propose(Command::CreateBackfill {
            backfill: bf,
            instances,
            at_ms: sim.ctx.now_ms(),
        })
        .await?;
    sim.run_until("2026-11-20T13:00:00Z", MINUTE, |_, _| Outcome::Succeed)
        .await?;
    let mut all: Vec<Instance> = sim
        .ctx
        .store
        .instances()?
        .into_iter()
        .filter(|i| matches!(i.run, RunKind::Backfill { .. }))
        .collect();
    assert_eq!(all.len(), 14);
    assert!(
        all.iter().all(|i| i.state == InstanceState::Success),
        "{:?}",
        all.iter()
            .map(|i| (&i.id, i.state, sim.ctx.store.waiting_for(i).ok().flatten()))
            .collect::<Vec<_>>()
    );
    // Day order: every instance of day k succeeded before any of day k+1 became ready.
    all.sort_by_key(|i| i.bizdate.clone());
    for w in all.windows(2) {
        if w[0].bizdate < w[1].bizdate {
            assert!(
                Sim::when(&w[0], InstanceState::Success)
                    <= Sim::when(&w[1], InstanceState::WaitingResources),
                "{} ran before {} succeeded",
                w[1].id,
                w[0].id
            );
        }
    }
    // Inside a day, b ran after a.
    for d in days {
        let day = (d).format("%Y%m%d").to_string();
        let a = all
            .iter()
            .find(|i| i.bizdate == day && i.task.ends_with("/a"));
        let b = all
            .iter()
            .find(|i| i.bizdate == day && i.task.ends_with("/b"));
        if let (Some(a), Some(b)) = (a, b) {
            assert!(
                Sim::when(a, InstanceState::Success)
                    <= Sim::when(b, InstanceState::WaitingResources)
            );
        }
    }
    Ok(())
}

/// A backfill of manual tasks (no schedule) keeps their dependencies inside each date, and
/// previous-cycle ones across dates, even with every date open at once.
#[tokio::test]
async fn a_backfill_of_manual_tasks_keeps_their_dependencies() -> Result<()> {
    let mut sim = Sim::new("2026-11-20T12:00:00Z").await?;
    sim.submit(version("a", None)).await?;
    sim.submit(after(version("b", None), "a", false)).await?;
    sim.submit(after(version("c", None), "b", true)).await?;
    let days: Vec<NaiveDate> = (1..=5)
        .filter_map(|d| NaiveDate::from_ymd_opt(2026, 11, d))
        .collect();
    let tasks = generate::downstream_tasks(&sim.ctx.store, "default/a")?;
    assert_eq!(tasks.len(), 3);
    let (bf, instances) = generate::plan_backfill(
        &sim.ctx.store,
        &generate::BackfillSpec {
            id: "bf-manual",
            root: "default/a",
            tasks: &tasks,
            days: &days,
            downstream: true,
            parallelism: 5,
            now_ms: sim.ctx.now_ms(),
            who: "test",
        },
    )?;
    assert_eq!(instances.len(), 15);
    sim.ctx
        .store
        .propose(Command::CreateBackfill {
            backfill: bf,
            instances,
            at_ms: sim.ctx.now_ms(),
        })
        .await?;
    sim.run_until("2026-11-20T13:00:00Z", MINUTE, |_, _| Outcome::Succeed)
        .await?;
    let all: Vec<Instance> = sim.ctx.store.instances()?;
    assert_eq!(all.len(), 15);
    assert!(all.iter().all(|i| i.state == InstanceState::Success));
    let find = |task: &str, day: &NaiveDate| {
        let day = day.format("%Y%m%d").to_string();
        all.iter()
            .find(|i| i.bizdate == day && i.task.ends_with(task))
            .cloned()
    };
    for (k, d) in days.iter().enumerate() {
        let (Some(a), Some(b), Some(c)) = (find("/a", d), find("/b", d), find("/c", d)) else {
            panic!("an instance of {d} is missing");
        };
        assert_eq!(b.upstream, vec![a.id.clone()], "{b:?}");
        assert!(
            Sim::when(&a, InstanceState::Success) <= Sim::when(&b, InstanceState::WaitingResources),
            "{} became ready before {} succeeded",
            b.id,
            a.id
        );
        if let Some(before) = k.checked_sub(1).and_then(|p| days.get(p)) {
            let Some(b_before) = find("/b", before) else {
                panic!("b of {before} is missing");
            };
            assert_eq!(c.previous, vec![b_before.id.clone()], "{c:?}");
            assert!(
                Sim::when(&b_before, InstanceState::Success)
                    <= Sim::when(&c, InstanceState::WaitingResources)
            );
        } else {
            assert!(c.previous.is_empty(), "{c:?}");
        }
    }
    Ok(())
}

/// A scheduler restarted mid-day carries on from its store: no instance lost, none generated
/// twice, the rest of the day runs.
#[tokio::test]
async fn a_restart_mid_day_loses_and_repeats_nothing() -> Result<()> {
    let mut sim = Sim::new("2026-11-20T12:00:00Z").await?;
    sim.submit(version("h", Some(("0 * * * *", "UTC")))).await?;
    sim.run_until("2026-11-21T11:30:00Z", 20 * MINUTE, |_, _| Outcome::Succeed)
        .await?;
    let before = sim.instances("h")?.len();
    let clock = sim.clock.clone();
    let Sim { ctx, dir, .. } = sim;
    drop(ctx);
    // sled may hold its directory lock for a moment after the handle is dropped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut sim = loop {
        match Sim::open(dir.clone(), clock.clone()).await {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    assert_eq!(sim.instances("h")?.len(), before);
    sim.run_until("2026-11-22T00:30:00Z", 20 * MINUTE, |_, _| Outcome::Succeed)
        .await?;
    let day: Vec<Instance> = sim
        .instances("h")?
        .into_iter()
        .filter(|i| i.cyctime.starts_with("20261121"))
        .collect();
    assert_eq!(day.len(), 24);
    assert!(
        day.iter()
            .all(|i| i.state == InstanceState::Success && i.attempts.len() == 1)
    );
    let mut ids: Vec<String> = sim.instances("h")?.into_iter().map(|i| i.id).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    drop(dir);
    Ok(())
}

/// An attempt running past its timeout is killed (the agent is told to stop it) and, with no
/// retry left, the instance fails.
#[tokio::test]
async fn a_timeout_kills_the_attempt() -> Result<()> {
    let mut sim = Sim::new("2026-11-20T12:00:00Z").await?;
    let mut v = version("slow", Some(("0 1 * * *", "UTC")));
    v.timeout_secs = 600;
    sim.submit(v).await?;
    sim.run_until("2026-11-21T01:30:00Z", MINUTE, |_, _| Outcome::Hang)
        .await?;
    let i = &sim.instances("slow")?[0];
    assert_eq!(i.state, InstanceState::Failed);
    let a = sim.ctx.store.attempt(&i.attempts[0])?.ok_or("no attempt")?;
    assert_eq!(a.state, AttemptState::Killed);
    assert!(a.error.contains("timed out"), "{}", a.error);
    assert!(
        sim.kills.contains(&a.id),
        "the agent was not told to stop the attempt"
    );
    Ok(())
}

/// Generating a day twice makes nothing new; a manual run of a (task, date) already waiting
/// joins it.
#[tokio::test]
async fn generation_and_manual_runs_are_idempotent() -> Result<()> {
    let sim = Sim::new("2026-11-20T23:40:00Z").await?;
    sim.submit(version("d", Some(("0 5 * * *", "UTC")))).await?;
    generate::generate_due(&sim.ctx).await?;
    let n = sim.instances("d")?.len();
    let day = NaiveDate::from_ymd_opt(2026, 11, 21).ok_or("date")?;
    assert!(sim.ctx.store.generated("UTC", day)?);
    let again = generate::plan(
        &sim.ctx.store,
        day,
        ferry_scheduler::plan::Generation::FullDay,
        |_| true,
        "again",
    )?;
    generate::store_instances(&sim.ctx, again, None).await?;
    assert_eq!(sim.instances("d")?.len(), n);
    assert_eq!(n, 1);
    // The 21st's instance is waiting (due at 05:00); a manual run of its bizdate joins it.
    let v = sim
        .ctx
        .store
        .task_version("default/d", 1)?
        .ok_or("no version")?;
    let bizdate = NaiveDate::from_ymd_opt(2026, 11, 20).ok_or("date")?;
    let manual = generate::manual_instance(&v, bizdate, sim.ctx.now_ms(), "test")?;
    for _ in 0..10 {
        let applied = sim
            .ctx
            .store
            .propose(Command::RunTask {
                instance: manual.clone(),
                at_ms: sim.ctx.now_ms(),
            })
            .await?;
        assert!(matches!(applied, Applied::Joined(_)), "{applied:?}");
    }
    assert_eq!(sim.ctx.store.instances()?.len(), 1);
    let _ = Utc.timestamp_millis_opt(0);
    Ok(())
}

/// Two tasks every minute, b after a: 2,880 instances a day, more than one generation chunk.
async fn minutely_pair() -> Result<Sim> {
    let sim = Sim::new("2026-11-20T23:40:00Z").await?;
    sim.submit(version("a", Some(("* * * * *", "UTC")))).await?;
    sim.submit(after(version("b", Some(("* * * * *", "UTC"))), "a", false))
        .await?;
    Ok(sim)
}

/// A day larger than one generation chunk (stored with chunks in flight): every instance once,
/// edges across chunks intact, the day marked generated; a second generation adds nothing.
#[tokio::test]
async fn a_day_of_many_chunks_is_generated_whole_and_once() -> Result<()> {
    let sim = minutely_pair().await?;
    sim.submit(after(version("c", Some(("0 5 * * *", "UTC"))), "b", false))
        .await?;
    generate::generate_due(&sim.ctx).await?;
    let day = NaiveDate::from_ymd_opt(2026, 11, 21).ok_or("date")?;
    assert!(sim.ctx.store.generated("UTC", day)?);
    let (a, b, c) = (
        sim.instances("a")?,
        sim.instances("b")?,
        sim.instances("c")?,
    );
    assert_eq!((a.len(), b.len(), c.len()), (1440, 1440, 1));
    let ids: std::collections::BTreeSet<&str> = a.iter().chain(&b).map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), 2880, "an instance identity appears twice");
    for i in &b {
        assert_eq!(i.upstream.len(), 1, "{}: {:?}", i.id, i.upstream);
        assert!(
            ids.contains(i.upstream[0].as_str()),
            "{} waits for a missing {}",
            i.id,
            i.upstream[0]
        );
    }
    // The daily node after a minutely one waits for all of its day.
    assert_eq!(c[0].upstream.len(), 1440);
    generate::generate_due(&sim.ctx).await?;
    assert_eq!(sim.ctx.store.instances()?.len(), 2881);
    Ok(())
}

/// A day whose plan fails (a parameter outside the calendar) is not marked generated, and the
/// error names the parameter; the next generation after the task is fixed makes the whole day,
/// with no instance twice.
#[tokio::test]
async fn a_day_whose_plan_fails_is_generated_again_once_fixed() -> Result<()> {
    let sim = minutely_pair().await?;
    // Planned after a and b (it depends on b), and its parameter falls outside the calendar.
    let mut bad = after(version("z", Some(("0 5 * * *", "UTC"))), "b", false);
    bad.params = "far=$[yyyymmdd-100000000]".into();
    sim.submit(bad.clone()).await?;
    let failed = generate::generate_due(&sim.ctx).await;
    let e = failed
        .err()
        .ok_or("a day with an unresolvable parameter was generated")?;
    assert!(e.to_string().contains("far="), "{e}");
    let day = NaiveDate::from_ymd_opt(2026, 11, 21).ok_or("date")?;
    assert!(!sim.ctx.store.generated("UTC", day)?);
    assert!(sim.instances("z")?.is_empty());
    bad.params = "near=$[yyyymmdd-1]".into();
    sim.submit(bad).await?;
    generate::generate_due(&sim.ctx).await?;
    assert!(sim.ctx.store.generated("UTC", day)?);
    assert_eq!(sim.instances("a")?.len(), 1440);
    assert_eq!(sim.instances("b")?.len(), 1440);
    assert_eq!(sim.instances("z")?.len(), 1);
    assert_eq!(sim.ctx.store.instances()?.len(), 2881);
    Ok(())
}
