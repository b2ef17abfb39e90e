//! The operations center's reads (issue 11) through the admin handlers, against answers worked
//! out by brute force from the instance records.
//!
//! Each generated case is a small two-day graph of tasks (same-cycle dependencies on earlier
//! tasks, cross-cycle ones on a task's previous cycle, which for the first cycle of the first
//! day does not exist), in two resource groups, pushed through random operator actions (mark
//! success, kill, freeze) so the instances spread over states, plus one instance of another
//! workspace that must never show. Then:
//! 1. every list query (day, state, exact task, search, group, ascending or not), paged with
//!    page tokens at a random page size, returns each matching instance exactly once in the
//!    documented order; paged with offsets, the same; `total` and `counts` agree;
//! 2. the DAG around a random instance at random depths holds exactly the instances within
//!    that many hops, the edges among them with their `previous` flags, and border flags
//!    exactly where the graph goes on beyond the answer;
//! 3. the listing indexes agree with the records after a restart.
//!
//! Refusals (bad state, bad date, bad page token, unknown instance, another workspace's
//! instance) are plain tests below. 64 cases from a fixed seed; `PROPTEST_CASES` /
//! `PROPTEST_RNG_SEED` explore more.

use anyhow::{Result, anyhow, ensure};
use ferry_proto::admin::v1 as pb;
use ferry_proto::admin::v1::admin_service_server::AdminService;
use ferry_scheduler::admin::AdminApi;
use ferry_scheduler::auth::Principal;
use ferry_scheduler::clock::ManualClock;
use ferry_scheduler::context::{Config, Context};
use ferry_scheduler::hub::Hub;
use ferry_scheduler::secrets::SecretBox;
use ferry_scheduler::state::Store;
use ferry_scheduler::state::command::Command;
use ferry_scheduler::state::model::{Instance, InstanceState, Transition};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{RngSeed, TestCaseError};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

const WS: &str = "default";
const DAYS: [&str; 2] = ["20261124", "20261125"];
/// Task names, so that searches match several and case matters not.
const NAMES: [&str; 5] = ["orders", "users", "ods_orders", "dim_User", "sales"];

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x5eed_0011);
    }
    config
}

#[derive(Debug, Clone)]
struct TaskShape {
    /// Same-cycle upstream tasks (indexes into the tasks before it).
    ups: Vec<Index>,
    /// Waits for this task's previous cycle (itself when it picks itself).
    previous: Option<Index>,
    /// Runs in the second group.
    other_group: bool,
}

#[derive(Debug, Clone)]
struct Query {
    day: usize,
    state: Option<Index>,
    search: Option<usize>,
    task: Option<Index>,
    group: Option<bool>,
    limit: u32,
    descending: bool,
}

#[derive(Debug, Clone)]
struct Case {
    tasks: Vec<TaskShape>,
    cycles: usize,
    /// (instance, action): 0 mark success, 1 kill, 2 freeze.
    actions: Vec<(Index, u8)>,
    queries: Vec<Query>,
    /// DAG centre and depths (0: the default).
    dags: Vec<(Index, u32, u32)>,
}

const SEARCHES: [&str; 5] = ["ord", "USER", "s_", "zzz", "a"];

fn case_strategy() -> impl Strategy<Value = Case> {
    let task = (
        proptest::collection::vec(any::<Index>(), 0..3),
        proptest::option::weighted(0.3, any::<Index>()),
        any::<bool>(),
    )
        .prop_map(|(ups, previous, other_group)| TaskShape {
            ups,
            previous,
            other_group,
        });
    let query = (
        0..3usize,
        proptest::option::of(any::<Index>()),
        proptest::option::weighted(0.3, 0..SEARCHES.len()),
        proptest::option::weighted(0.2, any::<Index>()),
        proptest::option::weighted(0.2, any::<bool>()),
        1..7u32,
        any::<bool>(),
    )
        .prop_map(
            |(day, state, search, task, group, limit, descending)| Query {
                day,
                state,
                search,
                task,
                group,
                limit,
                descending,
            },
        );
    (
        proptest::collection::vec(task, 1..10),
        1..4usize,
        proptest::collection::vec((any::<Index>(), 0..3u8), 0..40),
        proptest::collection::vec(query, 1..8),
        proptest::collection::vec((any::<Index>(), 0..5u32, 0..5u32), 1..5),
    )
        .prop_map(|(tasks, cycles, actions, queries, dags)| Case {
            tasks,
            cycles,
            actions,
            queries,
            dags,
        })
}

fn task_name(k: usize) -> String {
    format!("{}_{k}", NAMES[k % NAMES.len()])
}

fn id(k: usize, day: usize, cycle: usize) -> String {
    format!("{WS}/{}@{}T{cycle:02}", task_name(k), DAYS[day])
}

/// The instances of the case's two days, with their edges.
fn instances(case: &Case) -> Vec<Instance> {
    let mut out = Vec::new();
    for (day, bizdate) in DAYS.iter().enumerate() {
        for (k, t) in case.tasks.iter().enumerate() {
            let ups: BTreeSet<usize> = if k == 0 {
                BTreeSet::new()
            } else {
                t.ups.iter().map(|i| i.index(k)).collect()
            };
            for c in 0..case.cycles {
                let previous = t.previous.map(|p| {
                    let j = p.index(k + 1);
                    match (c, day) {
                        (0, 0) => format!("{WS}/{}@20261123T{:02}", task_name(j), case.cycles - 1),
                        (0, d) => id(j, d - 1, case.cycles - 1),
                        (c, d) => id(j, d, c - 1),
                    }
                });
                out.push(Instance {
                    id: id(k, day, c),
                    task: format!("{WS}/{}", task_name(k)),
                    version: 1,
                    group: if t.other_group { "rg2" } else { "rg" }.into(),
                    bizdate: (*bizdate).into(),
                    cyctime: format!("{bizdate}{c:02}0000"),
                    upstream: ups.iter().map(|u| id(*u, day, c)).collect(),
                    previous: previous.into_iter().collect(),
                    history: vec![Transition {
                        at_ms: 0,
                        state: InstanceState::WaitingUpstream,
                        reason: "test".into(),
                    }],
                    ..Default::default()
                });
            }
        }
    }
    out
}

struct Fixture {
    api: AdminApi,
    ctx: Arc<Context>,
    dir: tempfile::TempDir,
}

fn context(dir: &tempfile::TempDir) -> Result<Arc<Context>> {
    let clock = ManualClock::new(1_000_000);
    Ok(Arc::new(Context {
        store: Arc::new(reopen(dir.path())?),
        hub: Hub::new(clock.clone()),
        secrets: SecretBox::load_or_create(dir.path())?,
        config: Config::new(dir.path().to_path_buf(), "http://test".into()),
        clock,
    }))
}

/// Opens the store; sled's flusher may hold the directory a moment after a previous handle.
fn reopen(dir: &std::path::Path) -> Result<Store> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir) {
            Ok(s) => return Ok(s),
            Err(e) if std::time::Instant::now() > deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

async fn fixture(case: &Case) -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let ctx = context(&dir)?;
    let s = &ctx.store;
    let mut all = instances(case);
    // One instance of another workspace, on the same day, never listed here.
    all.push(Instance {
        id: "other/orders_0@x".into(),
        task: "other/orders_0".into(),
        group: "rg".into(),
        bizdate: DAYS[1].into(),
        cyctime: format!("{}000000", DAYS[1]),
        ..Default::default()
    });
    let ids: Vec<String> = all.iter().map(|i| i.id.clone()).collect();
    s.propose(Command::AddInstances {
        instances: all,
        generated: None,
        at_ms: 10,
    })
    .await?;
    for (n, (i, action)) in case.actions.iter().enumerate() {
        let id = ids[i.index(ids.len() - 1)].clone();
        let at_ms = 20 + n as i64;
        let cmd = match action {
            0 => Command::MarkSuccess {
                id,
                reason: "test".into(),
                at_ms,
            },
            1 => Command::KillInstance {
                id,
                reason: "test".into(),
                at_ms,
            },
            _ => Command::Freeze {
                ids: vec![id],
                freeze: true,
                reason: "test".into(),
                at_ms,
            },
        };
        // Refused actions (killing a success) change nothing; that is fine here.
        let _ = s.propose(cmd).await;
    }
    Ok(Fixture {
        api: AdminApi::new(ctx.clone()),
        ctx,
        dir,
    })
}

fn request<T>(msg: T) -> tonic::Request<T> {
    request_in(WS, msg)
}

fn request_in<T>(workspace: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.extensions_mut().insert(Principal {
        user: "tester".into(),
        cluster_admin: true,
        roles: Default::default(),
        token_id: "t".into(),
        workspace: workspace.into(),
        from: "test".into(),
    });
    r
}

/// An instance's place in the list: (bizdate, cyctime, task without workspace, id).
fn place(i: &Instance) -> (String, String, String, String) {
    let task = i.task.split_once('/').map_or(i.task.as_str(), |t| t.1);
    (
        i.bizdate.clone(),
        i.cyctime.clone(),
        task.to_string(),
        i.id.clone(),
    )
}

/// What a query should answer: the matching ids in order, and the counts by state of those
/// matching every filter but the state.
fn expected(
    all: &[Instance],
    req: &pb::ListInstancesRequest,
) -> (Vec<String>, BTreeMap<String, u32>) {
    let mut rows: Vec<&Instance> = all
        .iter()
        .filter(|i| i.task.starts_with(&format!("{WS}/")))
        .filter(|i| req.bizdate.is_empty() || i.bizdate == req.bizdate)
        .filter(|i| req.task.is_empty() || i.task == format!("{WS}/{}", req.task))
        .filter(|i| {
            place(i)
                .2
                .to_ascii_lowercase()
                .contains(&req.search.to_ascii_lowercase())
        })
        .filter(|i| req.group.is_empty() || i.group == req.group)
        .collect();
    let mut counts: BTreeMap<String, u32> = InstanceState::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    for i in &rows {
        *counts.entry(i.state.as_str().to_string()).or_default() += 1;
    }
    rows.retain(|i| req.state.is_empty() || i.state.as_str() == req.state);
    rows.sort_by_key(|i| place(i));
    if req.descending {
        rows.reverse();
    }
    (rows.iter().map(|i| i.id.clone()).collect(), counts)
}

async fn check_list(f: &Fixture, case: &Case) -> Result<()> {
    let all = f.ctx.store.instances()?;
    for q in &case.queries {
        let base = pb::ListInstancesRequest {
            bizdate: match q.day {
                0 => String::new(),
                d => DAYS[d - 1].into(),
            },
            state: q
                .state
                .map(|s| {
                    InstanceState::ALL[s.index(InstanceState::ALL.len())]
                        .as_str()
                        .into()
                })
                .unwrap_or_default(),
            search: q.search.map(|s| SEARCHES[s].into()).unwrap_or_default(),
            task: q
                .task
                .map(|t| task_name(t.index(case.tasks.len())))
                .unwrap_or_default(),
            group: match q.group {
                Some(true) => "rg2".into(),
                Some(false) => "rg".into(),
                None => String::new(),
            },
            limit: q.limit,
            descending: q.descending,
            ..Default::default()
        };
        let (want, want_counts) = expected(&all, &base);
        // By page tokens.
        let mut got = Vec::new();
        let mut token = String::new();
        loop {
            let r = f
                .api
                .list_instances(request(pb::ListInstancesRequest {
                    page_token: token.clone(),
                    ..base.clone()
                }))
                .await?
                .into_inner();
            ensure!(
                r.total as usize == want.len(),
                "total {} for {base:?}",
                r.total
            );
            let counts: BTreeMap<String, u32> = r.counts.into_iter().collect();
            ensure!(counts == want_counts, "counts {counts:?} for {base:?}");
            ensure!(
                r.instances.len() <= q.limit as usize,
                "a page over the limit"
            );
            got.extend(r.instances.into_iter().map(|i| i.id));
            if r.next_page_token.is_empty() {
                break;
            }
            ensure!(got.len() <= want.len(), "more pages than rows for {base:?}");
            token = r.next_page_token;
        }
        ensure!(
            got == want,
            "by tokens, {base:?}\n got {got:?}\nwant {want:?}"
        );
        // By offsets.
        let mut got = Vec::new();
        for offset in (0..=want.len()).step_by(q.limit as usize) {
            let r = f
                .api
                .list_instances(request(pb::ListInstancesRequest {
                    offset: offset as u32,
                    ..base.clone()
                }))
                .await?
                .into_inner();
            got.extend(r.instances.into_iter().map(|i| i.id));
        }
        ensure!(
            got == want,
            "by offsets, {base:?}\n got {got:?}\nwant {want:?}"
        );
    }
    Ok(())
}

/// Instances within `hops` of `from`, one way.
fn reach(
    from: &str,
    hops: u32,
    next: &BTreeMap<String, BTreeSet<String>>,
    into: &mut BTreeSet<String>,
) {
    let mut queue = VecDeque::from([(from.to_string(), 0u32)]);
    let mut seen = BTreeSet::from([from.to_string()]);
    while let Some((id, d)) = queue.pop_front() {
        into.insert(id.clone());
        if d == hops {
            continue;
        }
        for n in next.get(&id).into_iter().flatten() {
            if seen.insert(n.clone()) {
                queue.push_back((n.clone(), d + 1));
            }
        }
    }
}

async fn check_dag(f: &Fixture, case: &Case) -> Result<()> {
    let all: BTreeMap<String, Instance> = f
        .ctx
        .store
        .instances()?
        .into_iter()
        .filter(|i| i.task.starts_with(&format!("{WS}/")))
        .map(|i| (i.id.clone(), i))
        .collect();
    let mut ups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut downs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in all.values() {
        for u in i.upstream.iter().chain(&i.previous) {
            if all.contains_key(u) {
                ups.entry(i.id.clone()).or_default().insert(u.clone());
                downs.entry(u.clone()).or_default().insert(i.id.clone());
            }
        }
    }
    let ids: Vec<&String> = all.keys().collect();
    for (centre, up, down) in &case.dags {
        let centre = ids[centre.index(ids.len())].clone();
        let r = f
            .api
            .get_dag(request(pb::GetDagRequest {
                instance: centre.clone(),
                depth_up: *up,
                depth_down: *down,
                ..Default::default()
            }))
            .await?
            .into_inner();
        let (hu, hd) = (
            if *up == 0 { 2 } else { *up },
            if *down == 0 { 2 } else { *down },
        );
        ensure!((r.depth_up, r.depth_down) == (hu, hd), "depths");
        let mut want = BTreeSet::new();
        reach(&centre, hu, &ups, &mut want);
        reach(&centre, hd, &downs, &mut want);
        let got: BTreeSet<String> = r.instances.iter().map(|i| i.id.clone()).collect();
        ensure!(
            got == want,
            "nodes around {centre} ({hu} up, {hd} down)\n got {got:?}\nwant {want:?}"
        );
        let want_edges: BTreeSet<(String, String, bool)> = want
            .iter()
            .flat_map(|id| {
                let i = &all[id];
                i.upstream
                    .iter()
                    .map(|u| (u.clone(), id.clone(), false))
                    .chain(i.previous.iter().map(|u| (u.clone(), id.clone(), true)))
                    .filter(|(u, _, _)| want.contains(u))
                    .collect::<Vec<_>>()
            })
            .collect();
        let got_edges: BTreeSet<(String, String, bool)> = r
            .edges
            .iter()
            .map(|e| (e.from.clone(), e.to.clone(), e.previous))
            .collect();
        ensure!(got_edges == want_edges, "edges around {centre}");
        let want_borders: BTreeSet<(String, bool, bool)> = want
            .iter()
            .map(|id| {
                let beyond = |m: &BTreeMap<String, BTreeSet<String>>| {
                    m.get(id).into_iter().flatten().any(|n| !want.contains(n))
                };
                (id.clone(), beyond(&ups), beyond(&downs))
            })
            .filter(|(_, u, d)| *u || *d)
            .collect();
        let got_borders: BTreeSet<(String, bool, bool)> = r
            .borders
            .iter()
            .map(|b| (b.id.clone(), b.more_upstream, b.more_downstream))
            .collect();
        ensure!(
            got_borders == want_borders,
            "borders around {centre}\n got {got_borders:?}\nwant {want_borders:?}"
        );
        ensure!(!r.truncated, "a small DAG is not truncated");
    }
    Ok(())
}

/// Lists of the whole store (every day, every state) and the counts, for comparing stores.
async fn everything(api: &AdminApi) -> Result<pb::ListInstancesResponse> {
    Ok(api
        .list_instances(request(pb::ListInstancesRequest {
            limit: 100_000,
            ..Default::default()
        }))
        .await?
        .into_inner())
}

fn run(case: &Case) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let f = fixture(case).await?;
        check_list(&f, case).await?;
        check_dag(&f, case).await?;
        // After a restart the indexes still say the same.
        let before = everything(&f.api).await?;
        let Fixture { api, ctx, dir } = f;
        drop(api);
        drop(ctx);
        let ctx = context(&dir)?;
        let after = everything(&AdminApi::new(ctx)).await?;
        ensure!(before == after, "the list changed across a restart");
        Ok(())
    })
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn lists_and_dags_answer_what_the_records_say(case in case_strategy()) {
        run(&case).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    }
}

/// A case of three tasks in a chain, for the refusals.
fn small() -> Case {
    let shape = |ups: Vec<Index>| TaskShape {
        ups,
        previous: None,
        other_group: false,
    };
    Case {
        tasks: vec![shape(vec![]), shape(vec![]), shape(vec![])],
        cycles: 2,
        actions: vec![],
        queries: vec![],
        dags: vec![],
    }
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<tonic::Code> {
    match r {
        Ok(v) => Err(anyhow!("expected a refusal, got {v:?}")),
        Err(s) => Ok(s.code()),
    }
}

#[tokio::test]
async fn refusals_name_what_is_wrong() -> Result<()> {
    let f = fixture(&small()).await?;
    let lists = [
        pb::ListInstancesRequest {
            state: "broken".into(),
            ..Default::default()
        },
        pb::ListInstancesRequest {
            bizdate: "2026-13-45".into(),
            ..Default::default()
        },
        pb::ListInstancesRequest {
            page_token: "not-hex".into(),
            ..Default::default()
        },
    ];
    for req in lists {
        let what = format!("{req:?}");
        assert_eq!(
            code(f.api.list_instances(request(req)).await)?,
            tonic::Code::InvalidArgument,
            "{what}"
        );
    }
    let dags = [
        (
            pb::GetDagRequest {
                instance: "default/nope@x".into(),
                ..Default::default()
            },
            tonic::Code::NotFound,
        ),
        // Another workspace's instance looks like it does not exist.
        (
            pb::GetDagRequest {
                instance: "other/orders_0@x".into(),
                ..Default::default()
            },
            tonic::Code::NotFound,
        ),
        (pb::GetDagRequest::default(), tonic::Code::InvalidArgument),
        (
            pb::GetDagRequest {
                bizdate: "yesterday".into(),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
        ),
    ];
    for (req, expected) in dags {
        let what = format!("{req:?}");
        assert_eq!(code(f.api.get_dag(request(req)).await)?, expected, "{what}");
    }
    assert_eq!(
        code(
            f.api
                .get_instance(request(pb::GetInstanceRequest {
                    id: "default/nope".into()
                }))
                .await
        )?,
        tonic::Code::NotFound
    );
    Ok(())
}

#[tokio::test]
async fn the_overview_comes_from_one_call() -> Result<()> {
    let f = fixture(&small()).await?;
    // Three roots of two cycles on two days: all ready, nothing else.
    let r = f
        .api
        .list_instances(request(pb::ListInstancesRequest {
            bizdate: DAYS[1].into(),
            limit: 1,
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(r.total, 6);
    assert_eq!(r.instances.len(), 1);
    assert_eq!(r.counts.len(), InstanceState::ALL.len());
    assert_eq!(r.counts["waiting_resources"], 6);
    assert_eq!(r.counts["failed"], 0);
    assert!(!r.next_page_token.is_empty());
    // The other workspace sees only its own instance.
    let r = f
        .api
        .list_instances(request_in("other", pb::ListInstancesRequest::default()))
        .await?
        .into_inner();
    assert_eq!(r.total, 1);
    assert_eq!(r.instances[0].id, "other/orders_0@x");
    // Centred on a task: all its instances of the day, nothing of the other day.
    let d = f
        .api
        .get_dag(request(pb::GetDagRequest {
            bizdate: DAYS[0].into(),
            task: task_name(1),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let got: Vec<String> = d.instances.iter().map(|i| i.id.clone()).collect();
    assert_eq!(got, vec![id(1, 0, 0), id(1, 0, 1)]);
    // No centre: the whole day, as listed.
    let d = f
        .api
        .get_dag(request(pb::GetDagRequest {
            bizdate: DAYS[0].into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(d.instances.len(), 6);
    assert!(!d.truncated);
    Ok(())
}

/// An answer stops at 2,000 instances and says so.
#[tokio::test]
async fn a_dag_too_big_to_draw_is_cut() -> Result<()> {
    let f = fixture(&small()).await?;
    let many: Vec<Instance> = (0..2100)
        .map(|n| Instance {
            id: format!("{WS}/wide@{n:04}"),
            task: format!("{WS}/wide"),
            group: "rg".into(),
            bizdate: "20261201".into(),
            cyctime: format!("20261202{n:06}"),
            ..Default::default()
        })
        .collect();
    f.ctx
        .store
        .propose(Command::AddInstances {
            instances: many,
            generated: None,
            at_ms: 100,
        })
        .await?;
    let d = f
        .api
        .get_dag(request(pb::GetDagRequest {
            bizdate: "20261201".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(d.instances.len(), 2000);
    assert!(d.truncated);
    assert_eq!(d.instances[0].id, format!("{WS}/wide@0000"));
    Ok(())
}
