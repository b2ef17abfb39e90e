//! Three real schedulers replicating their state with raft, and real agents: what a user sees
//! when schedulers die, restart, or drop off the network. Checked by invariants over what the
//! cluster reports (every instance ends once, one successful attempt each, rows exactly once),
//! never by sleeping and hoping.

use anyhow::{Result, anyhow, bail};
use ferry_tests::db::{ScratchDb, psql};
use ferry_tests::ha::Replicated;
use ferry_tests::netns::{self, Lan};
use ferry_tests::{Cluster, wait_for};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const STREAM_JOB: &str = r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x"},{"value":"${bizdate}"}],"sliceRecordCount":20}},"writer":{"name":"streamwriter","parameter":{"print":false}}}]}}"#;

fn instances(c: &Cluster, task: &str) -> Result<Vec<serde_json::Value>> {
    let out = c
        .ferry(&[
            "--output", "json", "instance", "list", "--task", task, "--limit", "100000",
        ])?
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

fn show(c: &Cluster, id: &str) -> Result<serde_json::Value> {
    let out = c
        .ferry(&["--output", "json", "instance", "show", id])?
        .ok()?;
    Ok(serde_json::from_str(&out.stdout)?)
}

/// Runs `task` for `bizdate` and waits for success; returns the instance.
fn run_once(c: &Cluster, task: &str, bizdate: &str) -> Result<serde_json::Value> {
    let out = c
        .ferry(&["task", "run", task, "--bizdate", bizdate])?
        .ok()?;
    let id = Cluster::instance_id(&out)?;
    let text = c.wait_final(&id, Duration::from_secs(60))?;
    if !text.contains("state: success") {
        bail!("{task} {bizdate} did not succeed:\n{text}");
    }
    show(c, &id)
}

fn succeeded_attempts(i: &serde_json::Value) -> usize {
    i["attempts"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["state"] == "succeeded").count())
        .unwrap_or(0)
}

/// Kill -9 and restart each scheduler in turn, then the whole cluster at once: the catalog,
/// the instances and their attempts are intact, and scheduling carries on after each.
#[test]
fn each_scheduler_restarted_in_turn_and_all_at_once_keep_the_state() -> Result<()> {
    let mut r = Replicated::start(3, &[])?;
    let leader = r.leader(Duration::from_secs(30))?;
    let token = r.c.create_group("rg")?;
    r.c.start_agent("a1", "rg", &token)?;
    r.c.wait_online("rg", 1)?;
    let job = r.c.job_file("job.json", STREAM_JOB)?;
    r.c.ferry(&["task", "create", "ping", "--group", "rg", "--file", &job])?
        .ok()?;
    let first = run_once(&r.c, "ping", "2026-11-01")?;

    let mut days = vec![("2026-11-01", first["id"].as_str().unwrap_or("").to_string())];
    let order: Vec<usize> = (0..3).map(|k| (leader + k) % 3).collect();
    for (n, i) in order.into_iter().enumerate() {
        r.kill9(i);
        // The two left keep scheduling while one is down...
        let day = ["2026-11-02", "2026-11-03", "2026-11-04"][n];
        let inst = run_once(&r.c, "ping", day).map_err(|e| anyhow!("{e}\n{}", r.logs()))?;
        days.push((day, inst["id"].as_str().unwrap_or("").to_string()));
        // ...and the restarted one catches up and agrees on the leader.
        r.restart(i)?;
        r.leader(Duration::from_secs(30))?;
        wait_for(
            Duration::from_secs(30),
            "the restarted scheduler to catch up",
            || {
                let s = r.status(i).ok()?;
                let leader = r.leader(Duration::from_secs(5)).ok()?;
                let l = r.status(leader).ok()?;
                (s["applied_index"].as_u64()? >= l["commit_index"].as_u64()?.saturating_sub(5))
                    .then_some(())
            },
        )?;
    }

    // The whole cluster at once.
    for i in 0..3 {
        r.kill9(i);
    }
    for i in 0..3 {
        r.restart(i)?;
    }
    r.leader(Duration::from_secs(30))?;
    r.c.wait_online("rg", 1)?;
    for (day, id) in &days {
        let i = show(&r.c, id)?;
        assert_eq!(i["state"], "success", "{day}: {i}");
        assert_eq!(succeeded_attempts(&i), 1, "{day}: {i}");
    }
    let all = instances(&r.c, "ping")?;
    assert_eq!(all.len(), days.len(), "{all:?}");
    let tasks = r.c.ferry(&["task", "list"])?.ok()?;
    assert!(tasks.stdout.contains("ping"), "{}", tasks.stdout);
    run_once(&r.c, "ping", "2026-11-05").map_err(|e| anyhow!("{e}\n{}", r.logs()))?;
    Ok(())
}

fn pg_copy_job(from: &str, to: &str) -> String {
    format!(
        r#"{{"job": {{"setting": {{"speed": {{"channel": 1}}, "errorLimit": {{"record": 0}}}},
      "content": [{{
        "reader": {{"name": "postgresqlreader", "parameter": {{"datasource": "pg", "table": ["{from}"],
                   "column": ["id", "day", "amount"], "where": "day = '${{bizdate}}'"}}}},
        "writer": {{"name": "postgresqlwriter", "parameter": {{"datasource": "pg", "table": ["{to}"],
                   "column": ["id", "day", "amount"], "preSql": ["DELETE FROM @table WHERE day = '${{bizdate}}'"]}}}}
      }}]}}}}"#
    )
}

const DAYS: usize = 100;
const ROWS_PER_DAY: usize = 30;

/// A day of 1,000 instances (10 tasks in a DAG, 100 business dates backfilled; the first three
/// tasks sync PostgreSQL tables) while the leader is killed with SIGKILL every few seconds and
/// started again. Every instance ends success with exactly one successful attempt, no (task,
/// business date) exists twice, and every target table holds exactly its source rows.
#[test]
fn a_thousand_instances_survive_the_leader_killed_every_few_seconds() -> Result<()> {
    let db = ScratchDb::postgres("ferry_ha")?;
    let name = db.name.clone();
    let mut ddl = String::new();
    for t in ["src", "d0", "d1", "d2"] {
        ddl.push_str(&format!(
            "CREATE TABLE {t} (id bigint, day text, amount numeric(20,4));"
        ));
    }
    ddl.push_str(&format!(
        "INSERT INTO src SELECT g, to_char(date '2026-01-01' + (g % {DAYS}), 'YYYYMMDD'), g / 7.0 FROM generate_series(1, {}) g;",
        DAYS * ROWS_PER_DAY
    ));
    psql(&name, &ddl)?;

    let mut r = Replicated::start(3, &[])?;
    r.leader(Duration::from_secs(30))?;
    let token = r.c.create_group("rg")?;
    for a in ["a1", "a2", "a3"] {
        let url = r.c.url.clone();
        r.c.start_agent_with(a, "rg", &token, &url, &["--slots", "6"])?;
    }
    r.c.wait_online("rg", 3)?;
    r.c.ferry_stdin(
        &[
            "datasource",
            "add",
            "pg",
            "--type",
            "postgresql",
            "--host",
            "127.0.0.1",
            "--port",
            "5432",
            "--database",
            &name,
            "--user",
            "postgres",
            "--password-stdin",
        ],
        Some("\n"),
    )?
    .ok()?;
    let submit = |task: &str, job: &str, after: &[&str]| -> Result<()> {
        let path = r.c.job_file(&format!("{task}.json"), job)?;
        let mut args = vec!["task", "create", task, "--group", "rg", "--file", &path];
        let after = after.join(",");
        if !after.is_empty() {
            args.extend(["--after", &after]);
        }
        r.c.ferry(&args)?.ok()?;
        Ok(())
    };
    submit("extract", &pg_copy_job("src", "d0"), &[])?;
    submit("load1", &pg_copy_job("d0", "d1"), &["extract"])?;
    submit("load2", &pg_copy_job("d0", "d2"), &["extract"])?;
    let checks: Vec<String> = (3..10).map(|k| format!("check{k}")).collect();
    for (k, t) in checks.iter().enumerate() {
        let up = if k % 2 == 0 { "load1" } else { "load2" };
        submit(t, STREAM_JOB, &[up])?;
    }
    let last_day = psql(
        &name,
        &format!(
            "SELECT to_char(date '2026-01-01' + {}, 'YYYY-MM-DD')",
            DAYS - 1
        ),
    )?;
    r.c.ferry(&[
        "backfill",
        "extract",
        "--from",
        "2026-01-01",
        "--to",
        &last_day,
        "--downstream",
        "--parallelism",
        "10",
    ])?
    .ok()?;

    // Kill the leader every few seconds until every instance has ended.
    let started = Instant::now();
    let mut kills = 0;
    let all_tasks: Vec<String> = ["extract", "load1", "load2"]
        .iter()
        .map(|s| s.to_string())
        .chain(checks.iter().cloned())
        .collect();
    let list_all = |r: &Replicated| -> Result<Vec<serde_json::Value>> {
        let out =
            r.c.ferry(&["--output", "json", "instance", "list", "--limit", "100000"])?
                .ok()?;
        let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
        Ok(v.as_array().cloned().unwrap_or_default())
    };
    let final_states = ["success", "failed", "killed"];
    loop {
        let all = list_all(&r).map_err(|e| anyhow!("{e}\n{}", r.logs()))?;
        let ended = all
            .iter()
            .filter(|i| final_states.contains(&i["state"].as_str().unwrap_or("")))
            .count();
        if all.len() >= DAYS * all_tasks.len() && ended == all.len() {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "after 10 minutes and {kills} leader kills, {ended} of {} instances ended\n{}",
                all.len(),
                r.logs()
            );
        }
        std::thread::sleep(Duration::from_secs(3));
        if kills < 12 {
            let leader = r.leader(Duration::from_secs(30))?;
            r.kill9(leader);
            kills += 1;
            std::thread::sleep(Duration::from_millis(500));
            r.restart(leader)?;
        }
    }
    assert!(
        kills >= 3,
        "the run ended before the leader was killed 3 times ({kills})"
    );

    let all = list_all(&r)?;
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
    for i in &all {
        let key = (
            i["task"].as_str().unwrap_or("").to_string(),
            i["bizdate"].as_str().unwrap_or("").to_string(),
        );
        assert!(seen.insert(key.clone()), "{key:?} exists twice");
        *per_task.entry(key.0.clone()).or_default() += 1;
        assert_eq!(i["state"], "success", "{i}");
        assert_eq!(succeeded_attempts(i), 1, "{i}");
    }
    for t in &all_tasks {
        assert_eq!(
            per_task.get(t.as_str()).copied(),
            Some(DAYS),
            "{t}: {per_task:?}"
        );
    }
    for t in ["d0", "d1", "d2"] {
        // Per day, exactly the source's rows: nothing lost, nothing twice.
        let diff = psql(
            &name,
            &format!(
                "SELECT count(*) FROM (SELECT day, count(*) c, sum(id) s FROM src GROUP BY day
                 EXCEPT SELECT day, count(*), sum(id) FROM {t} GROUP BY day) x"
            ),
        )?;
        if diff != "0" {
            let days = psql(
                &name,
                &format!(
                    "SELECT s.day, s.c, coalesce(t.c, 0) FROM
                       (SELECT day, count(*) c FROM src GROUP BY day) s
                       LEFT JOIN (SELECT day, count(*) c FROM {t} GROUP BY day) t USING (day)
                     WHERE s.c IS DISTINCT FROM t.c ORDER BY 1 LIMIT 20"
                ),
            )?;
            panic!("{t} differs from src on {diff} days (day|src|{t}):\n{days}");
        }
        assert_eq!(
            psql(&name, &format!("SELECT count(*) FROM {t}"))?,
            (DAYS * ROWS_PER_DAY).to_string(),
            "{t}"
        );
    }
    eprintln!(
        "{} instances in {:?} with {kills} leader kills",
        all.len(),
        started.elapsed()
    );
    Ok(())
}

/// A CLI that talks to scheduler `i` only, from inside its own host (so it still reaches it
/// when the host is cut off the LAN).
fn cli_on_host(r: &Replicated, lan: &Lan, i: usize) -> Result<Cluster> {
    let mut one = Cluster::without_scheduler()?;
    one.url = r.urls[i].clone();
    one.token = r.c.token.clone();
    one.netns = Some(lan.hosts[i].ns.clone());
    Ok(one)
}

/// The leader cut off the network: the two others elect a new leader and go on dispatching;
/// the old one stops leading (answers UNAVAILABLE, hands no work to the agent on its own host,
/// which alone still reaches it) and, plugged back in, follows the new leader and catches up.
#[test]
fn an_isolated_leader_steps_down_and_rejoins_as_a_follower() -> Result<()> {
    if let Some(why) = netns::available() {
        println!("SKIPPED: {why}");
        return Ok(());
    }
    let lan = Lan::create("ha", 78, (std::process::id() % 200) as u8, 4)?;
    let mut r = Replicated::start_in_lan(&lan, 3, &[])?;
    let old = r.leader(Duration::from_secs(30))?;
    let token = r.c.create_group("rg")?;
    // One agent on every scheduler's host, plus one beside the CLI.
    for i in 0..4 {
        let url = r.c.url.clone();
        r.c.start_agent_in(&lan.hosts[i].ns, &format!("h{i}"), "rg", &token, &url)?;
    }
    r.c.wait_online("rg", 4)?;
    let stranded = r.c.agent_id(&format!("h{old}"))?;
    let path = r.c.job_file("ping.json", STREAM_JOB)?;
    r.c.ferry(&["task", "create", "ping", "--group", "rg", "--file", &path])?
        .ok()?;
    run_once(&r.c, "ping", "2026-10-01")?;

    lan.cut(old)?;
    let cut_at = Instant::now();
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = wait_for(
        Duration::from_secs(30),
        "a new leader among the others",
        || {
            let ids: Vec<u64> = others
                .iter()
                .map(|&i| r.status(i).ok().and_then(|s| s["leader_id"].as_u64()))
                .collect::<Option<_>>()?;
            let id = ids[0];
            (id != 0 && ids.iter().all(|&x| x == id) && id as usize - 1 != old)
                .then(|| id as usize - 1)
        },
    )
    .map_err(|e| anyhow!("{e}\n{}", r.logs()))?;
    eprintln!("new leader {} after {:?}", new + 1, cut_at.elapsed());

    // The old leader, seen from its own host, no longer leads and refuses admin calls.
    let local = cli_on_host(&r, &lan, old)?;
    let refused = wait_for(
        Duration::from_secs(30),
        "the old leader to stop leading",
        || {
            let s = local
                .ferry(&["--output", "json", "cluster", "status"])
                .ok()?;
            let v: serde_json::Value = serde_json::from_str(&s.stdout).ok()?;
            (v["role"] != "leader").then_some(())?;
            let list = local.ferry(&["instance", "list"]).ok()?;
            (list.code != 0).then_some(list.stderr)
        },
    )
    .map_err(|e| anyhow!("{e}\n{}", r.logs()))?;
    assert!(
        refused.to_lowercase().contains("leader") || refused.contains("navailable"),
        "the old leader's refusal should say it does not lead: {refused}"
    );

    // Work goes on through the new leader, never to the agent stranded with the old one.
    let mut ids = Vec::new();
    for d in 2..=6 {
        let out =
            r.c.ferry(&["task", "run", "ping", "--bizdate", &format!("2026-10-0{d}")])?
                .ok()?;
        ids.push(Cluster::instance_id(&out)?);
    }
    for id in &ids {
        let text = r.c.wait_final(id, Duration::from_secs(60))?;
        assert!(text.contains("state: success"), "{text}\n{}", r.logs());
        let i = show(&r.c, id)?;
        assert_eq!(succeeded_attempts(&i), 1, "{i}");
        for a in i["attempts"].as_array().into_iter().flatten() {
            assert_ne!(
                a["agent_id"],
                stranded.as_str(),
                "dispatched by the cut-off leader: {i}"
            );
        }
    }

    // Plugged back in, the old leader follows the new one and catches up with its log.
    lan.heal(old)?;
    let leader = r.leader(Duration::from_secs(30))?;
    assert_eq!(leader, new, "healing must not depose the new leader");
    wait_for(
        Duration::from_secs(30),
        "the old leader to catch up",
        || {
            let l = r.status(new).ok()?;
            let o = r.status(old).ok()?;
            (o["role"] == "follower"
                && o["applied_index"].as_u64()? >= l["commit_index"].as_u64()?.saturating_sub(2))
            .then_some(())
        },
    )
    .map_err(|e| anyhow!("{e}\n{}", r.logs()))?;
    // It answers from the replicated state again, by pointing at the leader.
    let all = instances(&local, "ping")?;
    assert_eq!(all.len(), 6, "{all:?}");
    Ok(())
}

/// Membership: a fourth scheduler started with `--join` and added with `ferry cluster add`
/// catches up (from a snapshot: the log before it is compacted) and votes; a follower removed
/// with `ferry cluster remove` leaves the voters; then the old leader dies and the cluster made
/// of the newcomer and the last original member still elects a leader and runs the day.
#[test]
fn a_scheduler_joins_and_another_leaves() -> Result<()> {
    let mut r = Replicated::start(3, &["--snapshot-every", "8"])?;
    let leader = r.leader(Duration::from_secs(30))?;
    let token = r.c.create_group("rg")?;
    r.c.start_agent("a1", "rg", &token)?;
    r.c.wait_online("rg", 1)?;
    let path = r.c.job_file("ping.json", STREAM_JOB)?;
    r.c.ferry(&["task", "create", "ping", "--group", "rg", "--file", &path])?
        .ok()?;
    for d in 1..=4 {
        run_once(&r.c, "ping", &format!("2026-09-0{d}"))?;
    }
    let before = r.status(leader)?;
    assert!(
        before["snapshot_index"].as_u64().unwrap_or(0) > 0,
        "the log should have been compacted: {before}"
    );

    let new = r.start_joining()?;
    let out =
        r.c.ferry(&["cluster", "add", &(new + 1).to_string(), &r.urls[new]])?
            .ok()?;
    assert!(
        out.stdout.contains(&(new + 1).to_string()),
        "{}",
        out.stdout
    );
    wait_for(
        Duration::from_secs(30),
        "the new member to catch up",
        || {
            let l = r.status(leader).ok()?;
            let n = r.status(new).ok()?;
            let voters = l["members"]
                .as_array()?
                .iter()
                .filter(|m| m["voter"] == true)
                .count();
            (voters == 4 && n["applied_index"].as_u64()? + 2 >= l["commit_index"].as_u64()?)
                .then_some(())
        },
    )
    .map_err(|e| anyhow!("{e}\n{}", r.logs()))?;

    let gone = (0..3)
        .find(|&i| i != leader)
        .ok_or_else(|| anyhow!("no follower"))?;
    r.c.ferry(&["cluster", "remove", &(gone + 1).to_string()])?
        .ok()?;
    r.kill9(gone);
    let ids: BTreeSet<u64> = wait_for(Duration::from_secs(30), "three voters", || {
        let members = r.status(leader).ok()?["members"].as_array()?.clone();
        let ids: BTreeSet<u64> = members
            .iter()
            .filter(|m| m["voter"] == true)
            .filter_map(|m| m["id"].as_u64())
            .collect();
        (ids.len() == 3).then_some(ids)
    })?;
    assert!(!ids.contains(&(gone as u64 + 1)), "{ids:?}");
    assert!(ids.contains(&(new as u64 + 1)), "{ids:?}");

    // Without the old leader, the newcomer and the last original member are a majority.
    r.kill9(leader);
    let next = r
        .leader(Duration::from_secs(30))
        .map_err(|e| anyhow!("{e}\n{}", r.logs()))?;
    assert!(next != leader && next != gone);
    let all = instances(&r.c, "ping")?;
    assert_eq!(all.len(), 4, "the state came along: {all:?}");
    run_once(&r.c, "ping", "2026-09-05").map_err(|e| anyhow!("{e}\n{}", r.logs()))?;
    Ok(())
}
