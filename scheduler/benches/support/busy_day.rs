//! A store holding the scheduling benchmark's day part-way through, for timing what the
//! operations center reads: the 20,000 nodes of `plan_shape.rs` (174 in 1,000 hourly, about
//! 100,000 instances), submitted as tasks of workspace `default` and generated for one day,
//! then run up to mid-afternoon by applying commands straight to the state machine (no raft, no
//! agents): most instances that came due succeed, three in a thousand fail, one in a thousand
//! is killed (their downstream waits), up to 300 are left running, and what is not due yet
//! waits.
//!
//! It also times the applies that build it (`apply_day.rs`): the state machine alone, on one
//! thread, with nothing else in the way.

use super::plan_shape;
use anyhow::{Context as _, Result, anyhow};
use chrono::NaiveDate;
use ferry_common::schedule::Period;
use ferry_scheduler::clock::ManualClock;
use ferry_scheduler::context::{Config, Context};
use ferry_scheduler::generate;
use ferry_scheduler::hub::Hub;
use ferry_scheduler::plan::{Generation, NodeSpec};
use ferry_scheduler::raft::{Committed, StateMachine};
use ferry_scheduler::secrets::SecretBox;
use ferry_scheduler::state::Store;
use ferry_scheduler::state::command::{Command, Reporter};
use ferry_scheduler::state::model::{
    AttemptState, DependencySpec, HostInfo, ScheduleSpec, Stats, TaskVersion,
};
use ferry_scheduler::state::replica::encode_command;
use std::sync::Arc;

pub const WORKSPACE: &str = "default";
const GROUP: &str = "bench";
const AGENT: &str = "agt-bench";
const ZONE: &str = "Asia/Shanghai";

/// The built day and what the timings need to know of it.
#[allow(dead_code)] // `apply_day` reads only the counts and timings
pub struct Day {
    pub ctx: Arc<Context>,
    pub dir: tempfile::TempDir,
    /// yyyymmdd
    pub bizdate: String,
    pub instances: usize,
    pub timings: Timings,
}

/// Time spent inside `StateMachine::apply` while building the day.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    /// The `AddInstances` commands of the day (2,000 instances each, one apply call each).
    pub generate: std::time::Duration,
    /// The tick and every dispatch, start, finish and kill after it.
    pub run: std::time::Duration,
    /// Commands applied in `run`.
    pub run_commands: usize,
}

/// Applies commands in calls of up to 1,000, as a busy raft applier would.
struct Applier<'a> {
    store: &'a Store,
    spent: std::cell::Cell<std::time::Duration>,
    commands: std::cell::Cell<usize>,
}

impl Applier<'_> {
    /// Time spent applying and commands applied since the last call.
    fn take(&self) -> (std::time::Duration, usize) {
        (self.spent.take(), self.commands.take())
    }

    fn apply(&self, cmds: &[Command]) -> Result<()> {
        for chunk in cmds.chunks(1000) {
            let first = self.store.applied_index() + 1;
            let data: Vec<Vec<u8>> = chunk
                .iter()
                .map(encode_command)
                .collect::<std::result::Result<_, _>>()?;
            let mut entries: Vec<Committed<'_>> = data
                .iter()
                .enumerate()
                .map(|(i, d)| Committed::new(first + i as u64, 1, d))
                .collect();
            let t = std::time::Instant::now();
            StateMachine::apply(self.store, &mut entries).map_err(|e| anyhow!("apply: {e}"))?;
            self.spent.set(self.spent.get() + t.elapsed());
            self.commands.set(self.commands.get() + chunk.len());
        }
        Ok(())
    }
}

fn version(n: &NodeSpec) -> TaskVersion {
    let cron = match n.schedule.period() {
        Period::Hourly => "0 * * * *",
        _ => "30 2 * * *",
    };
    TaskVersion {
        task: format!("{WORKSPACE}/{}", n.name),
        group: GROUP.into(),
        job_text: "true".into(),
        kind: ferry_scheduler::state::model::TaskKind::Shell,
        schedule: Some(ScheduleSpec {
            cron: cron.into(),
            timezone: ZONE.into(),
        }),
        dependencies: n
            .dependencies
            .iter()
            .map(|d| DependencySpec {
                upstream: format!("{WORKSPACE}/{}", d.upstream),
                previous: d.previous,
            })
            .collect(),
        ..Default::default()
    }
}

/// A cheap, stable hash of an id, to pick outcomes.
fn pick(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Builds the day: `nodes` tasks, `hourly` in 1,000 of them hourly.
#[allow(dead_code)] // not every bench that includes this module builds the default way
pub fn build(nodes: usize, hourly: usize) -> Result<Day> {
    build_with(nodes, hourly, Store::open)
}

/// [`build`] on a store opened by `open` (a store configured another way).
pub fn build_with(
    nodes: usize,
    hourly: usize,
    open: impl FnOnce(&std::path::Path) -> ferry_scheduler::error::Result<Store>,
) -> Result<Day> {
    let dir = tempfile::tempdir()?;
    let day = NaiveDate::from_ymd_opt(2026, 11, 25).ok_or_else(|| anyhow!("date"))?;
    let store = Arc::new(open(dir.path())?);
    let a = Applier {
        store: &store,
        spent: Default::default(),
        commands: Default::default(),
    };
    a.apply(&[
        Command::CreateWorkspace {
            name: WORKSPACE.into(),
            at_ms: 0,
        },
        Command::CreateGroup {
            name: GROUP.into(),
            token_hash: "h".into(),
            workspaces: vec![WORKSPACE.into()],
            at_ms: 0,
        },
        Command::RegisterAgent {
            id: AGENT.into(),
            group: GROUP.into(),
            credential_hash: "c".into(),
            host: HostInfo {
                slots: 1_000_000,
                ..Default::default()
            },
            at_ms: 0,
        },
        Command::AgentSeen {
            id: AGENT.into(),
            connected: true,
            host: None,
            boot_id: Some("boot".into()),
            at_ms: 0,
        },
    ])?;
    let specs = plan_shape::synthetic_with(nodes, 30, hourly, 1000)?;
    let submits: Vec<Command> = specs
        .iter()
        .enumerate()
        .map(|(i, n)| Command::SubmitTask {
            version: version(n),
            submit_id: format!("s{i}"),
            first_day: Some(day),
            at_ms: 1,
        })
        .collect();
    a.apply(&submits)?;
    let instances = generate::plan(&store, day, Generation::FullDay, |_| true, "bench day")
        .context("plan the day")?;
    let count = instances.len();
    // The plan's day is the run date; the instances' business date is the day before.
    let bizdate = instances
        .first()
        .map(|i| i.bizdate.clone())
        .ok_or_else(|| anyhow!("the day has no instances"))?;
    let mut due: Vec<i64> = instances.iter().map(|i| i.due_ms).collect();
    due.sort_unstable();
    // "Now": when 60% of the day's cycles have come.
    let now = due.get(due.len() * 6 / 10).copied().unwrap_or_default();
    // As the scheduler generates a day: chunks of 2,000 (`generate::CHUNK`), each proposed
    // once the one before is applied, so each is an apply call (and a batch) of its own.
    let adds: Vec<Command> = instances
        .chunks(2000)
        .map(|c| Command::AddInstances {
            instances: c.to_vec(),
            generated: None,
            at_ms: 2,
        })
        .collect();
    a.take();
    for add in adds {
        a.apply(&[add])?;
    }
    let (generate, _) = a.take();
    a.apply(&[Command::Tick { at_ms: now }])?;
    // Run the day: what is ready succeeds, fails or is killed, until nothing more is ready.
    let mut attempt = 0u64;
    let mut left_running = 0usize;
    loop {
        let queue = store.waiting_queue()?;
        if queue.is_empty() {
            break;
        }
        let mut cmds = Vec::new();
        let mut finish = Vec::new();
        for q in &queue {
            let h = pick(&q.id) % 1000;
            // A few left running, a few failed, one in a thousand killed, the rest succeed.
            let outcome = if h == 999 && left_running < 300 {
                left_running += 1;
                None
            } else if h < 3 {
                Some(AttemptState::Failed)
            } else if h == 3 {
                cmds.push(Command::KillInstance {
                    id: q.id.clone(),
                    reason: "killed by the benchmark".into(),
                    at_ms: now,
                });
                continue;
            } else {
                Some(AttemptState::Succeeded)
            };
            attempt += 1;
            let id = format!("at-{attempt}");
            cmds.push(Command::DispatchAttempt {
                id: id.clone(),
                instance_id: q.id.clone(),
                agent_id: AGENT.into(),
                at_ms: now,
            });
            finish.push((id, outcome));
        }
        a.apply(&cmds)?;
        let mut reports = Vec::new();
        for (id, end) in finish {
            let token = store
                .attempt(&id)?
                .map(|a| a.fencing_token)
                .ok_or_else(|| anyhow!("attempt {id} was not dispatched"))?;
            reports.push(Command::AttemptStarted {
                id: id.clone(),
                agent_id: AGENT.into(),
                fencing_token: token,
                at_ms: now,
            });
            if let Some(state) = end {
                reports.push(Command::FinishAttempt {
                    id,
                    by: Reporter::Agent(AGENT.into()),
                    fencing_token: token,
                    state,
                    stats: Stats::default(),
                    error: if state == AttemptState::Failed {
                        "exit status 1".into()
                    } else {
                        String::new()
                    },
                    at_ms: now,
                });
            }
        }
        a.apply(&reports)?;
    }
    let (run, run_commands) = a.take();
    let ctx = context(store, &dir, now)?;
    Ok(Day {
        ctx,
        dir,
        bizdate,
        instances: count,
        timings: Timings {
            generate,
            run,
            run_commands,
        },
    })
}

fn context(store: Arc<Store>, dir: &tempfile::TempDir, now: i64) -> Result<Arc<Context>> {
    let clock = ManualClock::new(now);
    Ok(Arc::new(Context {
        store,
        hub: Hub::new(clock.clone()),
        secrets: SecretBox::load_or_create(dir.path())?,
        config: Config::new(dir.path().to_path_buf(), "http://bench".into()),
        clock,
    }))
}
