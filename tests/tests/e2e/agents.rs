//! Agents in resource groups, relied on through failures: a result reached while the scheduler
//! was away, a network drop under a running sync, a restart with spooled reports, forged reports
//! from another agent, a log line larger than a gRPC message, two processes on one identity,
//! revocation, draining, labels, token rotation, install and uninstall.

use anyhow::{Result, bail};
use ferry_tests::db::ScratchDb;
use ferry_tests::proxy::Proxy;
use ferry_tests::{Cluster, wait_for};
use std::process::Command;
use std::time::Duration;

/// A scratch PostgreSQL database with `src` (n rows) and an empty `dst`, dropped at the end.
struct PgPair(ScratchDb);

impl PgPair {
    fn create(rows: u64) -> Result<Self> {
        let me = Self(ScratchDb::postgres("ferry_e2e")?);
        me.0.psql(&format!(
            "CREATE TABLE src (id bigint primary key, name text, amount numeric(12,2));
                 INSERT INTO src SELECT g, 'name ' || g, g * 1.25 FROM generate_series(1, {rows}) g;
                 CREATE TABLE dst (id bigint primary key, name text, amount numeric(12,2));"
        ))?;
        Ok(me)
    }

    /// Rows in `dst`, distinct ids in it, and whether it equals `src` exactly.
    fn check(&self) -> Result<(u64, u64, bool)> {
        let out = self.0.psql(
            "SELECT count(*), count(DISTINCT id), \
             (SELECT count(*) FROM (SELECT * FROM src EXCEPT SELECT * FROM dst) x) = 0 \
             AND (SELECT count(*) FROM (SELECT * FROM dst EXCEPT SELECT * FROM src) y) = 0 FROM dst",
        )?;
        let parts: Vec<&str> = out.split('|').collect();
        if parts.len() != 3 {
            bail!("unexpected psql output {out}");
        }
        Ok((parts[0].parse()?, parts[1].parse()?, parts[2] == "t"))
    }

    /// A PG -> PG job, throttled so it runs for a few seconds; idempotent (preSql delete).
    fn job(&self, records_per_sec: u64) -> String {
        let url = format!("jdbc:postgresql://127.0.0.1:5432/{}", self.0.name);
        serde_json::json!({"job": {
            "setting": {"speed": {"channel": 1, "record": records_per_sec}, "errorLimit": {"record": 0}},
            "content": [{
                "reader": {"name": "postgresqlreader", "parameter": {
                    "username": "postgres", "password": "", "column": ["id", "name", "amount"],
                    "connection": [{"jdbcUrl": [url], "table": ["src"]}]}},
                "writer": {"name": "postgresqlwriter", "parameter": {
                    "username": "postgres", "password": "", "column": ["id", "name", "amount"],
                    "preSql": ["DELETE FROM @table"],
                    "connection": [{"jdbcUrl": url, "table": ["dst"]}]}}
            }]}})
        .to_string()
    }
}

const ENDLESS: &str = r#"{"job":{"setting":{"speed":{"channel":1,"record":2000}},"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x","type":"string"}],"sliceRecordCount":"2000000000"}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#;

fn attempts_of(shown: &str) -> usize {
    shown.lines().filter(|l| l.starts_with("attempt ")).count()
}

/// The defect: a sync that finished while the scheduler was down was recorded "failed: agent
/// restarted", and the advised rerun doubled the rows. Now its result lands when the scheduler
/// is back, whether that is at once or after a while.
#[test]
fn result_reached_while_the_scheduler_is_down_is_kept() -> Result<()> {
    for outage_ms in [300u64, 6000] {
        let db = PgPair::create(60_000)?;
        let (mut c, _) = Cluster::start_with_agent("rg")?;
        let job = c.job_file("job.json", &db.job(30_000))?;
        c.ferry(&["task", "create", "t", "--group", "rg", "--file", &job])?
            .ok()?;
        let run = c.ferry(&["task", "run", "t"])?.ok()?;
        let id = Cluster::instance_id(&run)?;
        c.wait_instance(&id, "state: running", Duration::from_secs(20))?;
        std::thread::sleep(Duration::from_millis(700));
        c.crash_scheduler();
        // The sync goes on without the scheduler and commits.
        let agent = &c.agents[0];
        wait_for(
            Duration::from_secs(60),
            "the agent to finish the sync",
            || agent.log_text().contains("attempt succeeded").then_some(()),
        )?;
        std::thread::sleep(Duration::from_millis(outage_ms.saturating_sub(300)));
        c.restart_scheduler()?;
        let shown = c.wait_final(&id, Duration::from_secs(60))?;
        assert!(
            shown.contains("state: success"),
            "outage {outage_ms} ms: {shown}"
        );
        assert_eq!(attempts_of(&shown), 1, "{shown}");
        assert_eq!(db.check()?, (60_000, 60_000, true), "outage {outage_ms} ms");
        let logs = c.ferry(&["instance", "logs", &id])?.ok()?;
        assert!(
            logs.stdout.contains("finished: 60000 records"),
            "{}",
            logs.stdout
        );
    }
    Ok(())
}

/// A network drop under a running sync: the agent reconnects, the sync ends success, once.
#[test]
fn network_drop_during_a_sync_ends_success_once() -> Result<()> {
    let db = PgPair::create(60_000)?;
    let mut c = Cluster::start()?;
    let token = c.create_group("rg")?;
    let proxy = Proxy::start(format!("127.0.0.1:{}", c.port))?;
    c.start_agent_with("a1", "rg", &token, &proxy.url(), &[])?;
    c.wait_online("rg", 1)?;
    let job = c.job_file("job.json", &db.job(20_000))?;
    c.ferry(&["task", "create", "t", "--group", "rg", "--file", &job])?
        .ok()?;
    let id = Cluster::instance_id(&c.ferry(&["task", "run", "t"])?.ok()?)?;
    c.wait_instance(&id, "state: running", Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_millis(500));
    proxy.cut();
    std::thread::sleep(Duration::from_secs(2));
    proxy.restore();
    let shown = c.wait_final(&id, Duration::from_secs(60))?;
    assert!(shown.contains("state: success"), "{shown}");
    assert_eq!(attempts_of(&shown), 1, "{shown}");
    assert_eq!(db.check()?, (60_000, 60_000, true));
    Ok(())
}

/// The agent is killed after its sync committed but before it could report, and the scheduler is
/// down too: the result waits in the agent's spool and lands after both come back.
#[test]
fn spooled_result_survives_an_agent_restart() -> Result<()> {
    let db = PgPair::create(30_000)?;
    let (mut c, token) = Cluster::start_with_agent("rg")?;
    let job = c.job_file("job.json", &db.job(15_000))?;
    c.ferry(&["task", "create", "t", "--group", "rg", "--file", &job])?
        .ok()?;
    let id = Cluster::instance_id(&c.ferry(&["task", "run", "t"])?.ok()?)?;
    c.wait_instance(&id, "state: running", Duration::from_secs(20))?;
    c.crash_scheduler();
    let agent = &c.agents[0];
    wait_for(
        Duration::from_secs(60),
        "the agent to finish the sync",
        || agent.log_text().contains("attempt succeeded").then_some(()),
    )?;
    c.agents[0].kill9();
    c.start_agent("a1", "rg", &token)?;
    std::thread::sleep(Duration::from_millis(500));
    c.restart_scheduler()?;
    let shown = c.wait_final(&id, Duration::from_secs(60))?;
    assert!(shown.contains("state: success"), "{shown}");
    assert_eq!(db.check()?, (30_000, 30_000, true));
    let logs = c.ferry(&["instance", "logs", &id])?.ok()?;
    assert!(
        logs.stdout.contains("finished: 30000 records"),
        "{}",
        logs.stdout
    );
    Ok(())
}

/// Fencing tokens are a counter anyone can guess. A registered agent that sends reports for
/// another agent's attempt changes nothing: no forged success, no forged log line.
#[test]
fn reports_for_another_agents_attempt_are_refused() -> Result<()> {
    use ferry_proto::agent::v1 as pb;
    let (mut c, token) = Cluster::start_with_agent("rg")?;
    let job = c.job_file("job.json", ENDLESS)?;
    c.ferry(&["task", "create", "t", "--group", "rg", "--file", &job])?
        .ok()?;
    let id = Cluster::instance_id(&c.ferry(&["task", "run", "t"])?.ok()?)?;
    let shown = c.wait_instance(&id, "state: running", Duration::from_secs(20))?;
    let attempt = shown
        .lines()
        .find_map(|l| l.strip_prefix("attempt "))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no attempt in {shown}"))?;
    // The attacker: a second agent of the same group, with its own valid credential.
    c.start_agent("evil", "rg", &token)?;
    c.wait_online("rg", 2)?;
    c.agents[1].kill9();
    let text = std::fs::read_to_string(c.path("agent-evil/agent.json"))?;
    let ident: serde_json::Value = serde_json::from_str(&text)?;
    let (agent_id, credential) = (
        ident["agent_id"].as_str().unwrap_or_default().to_string(),
        ident["credential"].as_str().unwrap_or_default().to_string(),
    );
    let url = c.url.clone();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let mut client = pb::agent_service_client::AgentServiceClient::connect(url).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut msgs = vec![pb::agent_message::Body::Hello(pb::Hello {
            boot_id: "evil-boot".into(),
            ..Default::default()
        })];
        for token in 1..=20u64 {
            msgs.push(pb::agent_message::Body::Log(pb::AttemptLog {
                attempt_id: attempt.clone(),
                fencing_token: token,
                lines: vec![pb::LogLine {
                    index: 900 + token,
                    ts_ms: 0,
                    level: "info".into(),
                    message: "forged line".into(),
                }],
            }));
            msgs.push(pb::agent_message::Body::Finished(pb::AttemptFinished {
                attempt_id: attempt.clone(),
                fencing_token: token,
                status: pb::AttemptStatus::Succeeded as i32,
                stats: None,
                error: String::new(),
            }));
        }
        let n = msgs.len() as u64;
        for (i, body) in msgs.into_iter().enumerate() {
            tx.send(pb::AgentMessage {
                seq: i as u64 + 1,
                body: Some(body),
            })
            .await?;
        }
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.metadata_mut()
            .insert(ferry_proto::AGENT_ID_HEADER, agent_id.parse()?);
        req.metadata_mut()
            .insert(ferry_proto::AGENT_CREDENTIAL_HEADER, credential.parse()?);
        let mut inbound = client.session(req).await?.into_inner();
        // Every message is acknowledged (so an honest agent would not resend), none applied.
        while let Some(m) = inbound.message().await? {
            if let Some(pb::scheduler_message::Body::Ack(a)) = m.body
                && a.up_to >= n
            {
                break;
            }
        }
        drop(tx);
        anyhow::Ok(())
    })?;
    let shown = c.ferry(&["instance", "show", &id])?.ok()?;
    assert!(shown.stdout.contains("state: running"), "{}", shown.stdout);
    let logs = c.ferry(&["instance", "logs", &id])?.ok()?;
    assert!(!logs.stdout.contains("forged"), "{}", logs.stdout);
    Ok(())
}

/// One log line far over the gRPC message limit (a 6 MB field printed by streamwriter) used to
/// wedge the agent for good. Now the line is cut, the attempt succeeds and the agent keeps
/// working.
#[test]
fn a_huge_log_line_does_not_break_the_session() -> Result<()> {
    let (c, _) = Cluster::start_with_agent("rg")?;
    // 3.5 MB per line: a job file under the old 4 MiB limit, whose printed rows overflowed one
    // log message (three lines) and wedged the agent.
    let big = "z".repeat(7 << 19);
    let job = serde_json::json!({"job": {"content": [{
        "reader": {"name": "streamreader", "parameter": {
            "column": [{"value": big, "type": "string"}], "sliceRecordCount": 3}},
        "writer": {"name": "streamwriter", "parameter": {"print": true}}}]}})
    .to_string();
    let path = c.job_file("big.json", &job)?;
    c.ferry(&["task", "create", "big", "--group", "rg", "--file", &path])?
        .ok()?;
    let run = c.ferry(&["task", "run", "big", "--follow"])?.ok()?;
    assert!(run.stdout.contains("finished: success"), "{}", run.stdout);
    let logs = c.ferry(&["task", "logs", "big"])?.ok()?;
    assert!(logs.stdout.contains("more bytes cut]"), "log not cut");
    // Later attempts still run on the same agent.
    let small = r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x"}],"sliceRecordCount":10}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#;
    let path = c.job_file("small.json", small)?;
    c.ferry(&["task", "create", "small", "--group", "rg", "--file", &path])?
        .ok()?;
    let run = c.ferry(&["task", "run", "small", "--follow"])?.ok()?;
    assert!(run.stdout.contains("finished: success"), "{}", run.stdout);
    Ok(())
}

/// A restart while the old copy is still stopping: the new process waits for the data folder,
/// then its session wins and the agent is online at once.
#[test]
fn a_second_process_on_one_identity_waits_then_wins() -> Result<()> {
    let (mut c, token) = Cluster::start_with_agent("rg")?;
    let second = c.start_agent("a1", "rg", &token)?;
    wait_for(
        Duration::from_secs(20),
        "the second process to wait",
        || {
            c.agents[second]
                .log_text()
                .contains("waiting for it to exit")
                .then_some(())
        },
    )?;
    c.agents[0].stop()?;
    wait_for(
        Duration::from_secs(20),
        "the second process to connect",
        || {
            c.agents[second]
                .log_text()
                .contains("session open")
                .then_some(())
        },
    )?;
    c.wait_online("rg", 1)?;
    let small = r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x"}],"sliceRecordCount":10}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#;
    let path = c.job_file("small.json", small)?;
    c.ferry(&["task", "create", "small", "--group", "rg", "--file", &path])?
        .ok()?;
    let run = c.ferry(&["task", "run", "small", "--follow"])?.ok()?;
    assert!(run.stdout.contains("finished: success"), "{}", run.stdout);
    Ok(())
}

/// Revocation cuts an agent off at once: its attempt fails, its process stops with the reason,
/// and it cannot come back with its old credential.
#[test]
fn a_revoked_agent_is_cut_off_at_once() -> Result<()> {
    let (mut c, token) = Cluster::start_with_agent("rg")?;
    let agent = c.agent_id("a1")?;
    let job = c.job_file("job.json", ENDLESS)?;
    c.ferry(&["task", "create", "t", "--group", "rg", "--file", &job])?
        .ok()?;
    let id = Cluster::instance_id(&c.ferry(&["task", "run", "t"])?.ok()?)?;
    c.wait_instance(&id, "state: running", Duration::from_secs(20))?;
    let out = c.ferry(&["agent", "revoke", &agent])?.ok()?;
    assert!(out.stdout.contains("revoked"), "{}", out.stdout);
    let shown = c.wait_final(&id, Duration::from_secs(20))?;
    assert!(
        shown.contains("state: failed") && shown.contains("revoked"),
        "{shown}"
    );
    let status = c.agents[0].wait_exit(Duration::from_secs(20))?;
    assert_eq!(status.code(), Some(3));
    assert!(
        c.agents[0].log_text().contains("revoked"),
        "agent log lacks the reason"
    );
    // Started again, it is refused.
    let again = c.start_agent("a1", "rg", &token)?;
    let status = c.agents[again].wait_exit(Duration::from_secs(20))?;
    assert_eq!(status.code(), Some(3));
    let list = c.ferry(&["agent", "list"])?.ok()?;
    assert!(list.stdout.contains("revoked"), "{}", list.stdout);
    Ok(())
}

/// A rotated token admits new agents; the old one no longer does; registered agents keep working.
#[test]
fn token_rotation_keeps_registered_agents() -> Result<()> {
    let (mut c, old) = Cluster::start_with_agent("rg")?;
    let out = c.ferry(&["group", "rotate-token", "rg"])?.ok()?;
    let new = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("registration token (shown once): "))
        .map(|t| t.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("no token in {}", out.stdout))?;
    assert!(out.stdout.contains("ferry-agent install"), "{}", out.stdout);
    let refused = c.start_agent("late", "rg", &old)?;
    let status = c.agents[refused].wait_exit(Duration::from_secs(20))?;
    assert!(!status.success());
    assert!(
        c.agents[refused].log_text().contains("token"),
        "{}",
        c.agents[refused].log_text()
    );
    c.start_agent("fresh", "rg", &new)?;
    c.wait_online("rg", 2)?;
    Ok(())
}

/// Draining: the agent finishes nothing new; labels pin a task to the agents that carry them.
#[test]
fn drained_agents_get_nothing_and_labels_pin_tasks() -> Result<()> {
    let mut c = Cluster::start()?;
    let token = c.create_group("rg")?;
    let url = c.url.clone();
    c.start_agent_with("east", "rg", &token, &url, &["--labels", "zone=east"])?;
    c.start_agent_with("west", "rg", &token, &url, &["--labels", "zone=west"])?;
    c.wait_online("rg", 2)?;
    let east = c.agent_id("east")?;
    let west = c.agent_id("west")?;
    let small = r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x"}],"sliceRecordCount":10}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#;
    let path = c.job_file("small.json", small)?;
    c.ferry(&[
        "task",
        "create",
        "pinned",
        "--group",
        "rg",
        "--file",
        &path,
        "--agent-label",
        "zone=west",
    ])?
    .ok()?;
    for _ in 0..3 {
        let run = c.ferry(&["task", "run", "pinned", "--follow"])?.ok()?;
        assert!(run.stdout.contains("finished: success"), "{}", run.stdout);
        let id = Cluster::instance_id(&run)?;
        let shown = c.ferry(&["instance", "show", &id])?.ok()?;
        assert!(
            shown.stdout.contains(&format!("on {west}")),
            "{}",
            shown.stdout
        );
    }
    c.ferry(&["agent", "drain", &west])?.ok()?;
    let id = Cluster::instance_id(&c.ferry(&["task", "run", "pinned"])?.ok()?)?;
    let shown = c.wait_instance(&id, "waiting:", Duration::from_secs(20))?;
    assert!(
        shown.contains("draining") || shown.contains("labels"),
        "{shown}"
    );
    let list = c.ferry(&["agent", "list"])?.ok()?;
    assert!(list.stdout.contains("draining"), "{}", list.stdout);
    assert!(list.stdout.contains("zone=east"), "{}", list.stdout);
    c.ferry(&["agent", "resume", &west])?.ok()?;
    let shown = c.wait_final(&id, Duration::from_secs(30))?;
    assert!(shown.contains("state: success"), "{shown}");
    assert!(!shown.contains(&format!("on {east}")), "{shown}");
    Ok(())
}

/// The scheduler gives up on an attempt whose agent stays away past the lease, and tells the
/// agent to stop it when it is back; an agent left alone stops it by itself (self-fencing).
#[test]
fn attempts_given_up_are_stopped_on_the_agent() -> Result<()> {
    let mut c = Cluster::start_with(&["--attempt-lease-secs", "3"])?;
    let token = c.create_group("rg")?;
    let proxy = Proxy::start(format!("127.0.0.1:{}", c.port))?;
    // Self-fencing off for this agent: it keeps running until the scheduler says stop.
    c.start_agent_with(
        "a1",
        "rg",
        &token,
        &proxy.url(),
        &["--fence-after-secs", "3600"],
    )?;
    c.wait_online("rg", 1)?;
    let job = c.job_file("job.json", ENDLESS)?;
    c.ferry(&["task", "create", "t", "--group", "rg", "--file", &job])?
        .ok()?;
    let id = Cluster::instance_id(&c.ferry(&["task", "run", "t"])?.ok()?)?;
    c.wait_instance(&id, "state: running", Duration::from_secs(20))?;
    proxy.cut();
    let shown = c.wait_final(&id, Duration::from_secs(30))?;
    assert!(shown.contains("unreachable for more than 3s"), "{shown}");
    proxy.restore();
    let agent = &c.agents[0];
    wait_for(
        Duration::from_secs(30),
        "the agent to stop the attempt",
        || agent.log_text().contains("killing attempt").then_some(()),
    )?;

    // With self-fencing, the agent stops on its own while still cut off.
    let proxy2 = Proxy::start(format!("127.0.0.1:{}", c.port))?;
    c.start_agent_with(
        "a2",
        "rg",
        &token,
        &proxy2.url(),
        &["--fence-after-secs", "2"],
    )?;
    c.wait_online("rg", 2)?;
    let a1 = c.agent_id("a1")?;
    c.ferry(&["agent", "drain", &a1])?.ok()?;
    let id = Cluster::instance_id(&c.ferry(&["task", "run", "t"])?.ok()?)?;
    c.wait_instance(&id, "state: running", Duration::from_secs(20))?;
    proxy2.cut();
    let fenced = &c.agents[1];
    wait_for(Duration::from_secs(30), "self-fencing", || {
        fenced.log_text().contains("self-fencing").then_some(())
    })?;
    Ok(())
}

/// `ferry-agent install` registers, writes its settings and unit (here without systemd), the
/// agent runs from those settings, and `uninstall` makes the scheduler forget it.
#[test]
fn install_run_and_uninstall() -> Result<()> {
    let c = Cluster::start()?;
    let token = c.create_group("rg")?;
    let root = c.path("install");
    let (data, env, units) = (
        root.join("data"),
        root.join("agent.env"),
        root.join("units"),
    );
    let agent_bin = ferry_tests::bin("ferry-agent")?;
    let out = Command::new(&agent_bin)
        .args([
            "install",
            "--scheduler",
            &c.url,
            "--group",
            "rg",
            "--token",
            &token,
        ])
        .args([
            "--labels",
            "zone=lab",
            "--slots",
            "2",
            "--user",
            "root",
            "--no-start",
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&env)
        .arg("--unit-dir")
        .arg(&units)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("registered as agent"), "{text}");
    let settings = std::fs::read_to_string(&env)?;
    assert!(!settings.contains(&token), "the token must not be kept");
    let unit = std::fs::read_to_string(units.join("ferry-agent.service"))?;
    assert!(
        unit.contains(&format!(
            "ExecStart={}",
            std::fs::canonicalize(&agent_bin)?.display()
        )),
        "{unit}"
    );
    // Run it the way the unit does: settings from the environment file.
    let mut cmd = Command::new(&agent_bin);
    cmd.arg("run").env_clear();
    for line in settings.lines().filter(|l| !l.starts_with('#')) {
        if let Some((k, v)) = line.split_once('=') {
            cmd.env(k, v);
        }
    }
    let log = std::fs::File::create(c.path("installed.log"))?;
    let mut child = cmd.stdout(log.try_clone()?).stderr(log).spawn()?;
    let online = c.wait_online("rg", 1);
    let list = c.ferry(&["agent", "list"])?.ok()?;
    let _ = child.kill();
    let _ = child.wait();
    online?;
    assert!(list.stdout.contains("zone=lab"), "{}", list.stdout);
    let out = Command::new(&agent_bin)
        .args(["uninstall", "--scheduler", &c.url, "--purge"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&env)
        .arg("--unit-dir")
        .arg(&units)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("forgot agent"), "{text}");
    assert!(!env.exists() && !data.exists() && !units.join("ferry-agent.service").exists());
    let list = c.ferry(&["agent", "list"])?.ok()?;
    assert!(list.stdout.contains("revoked"), "{}", list.stdout);
    Ok(())
}

/// `deploy/install-agent.sh` on a "fresh server" (paths moved into a scratch folder): installs
/// the binary it is given, registers, writes settings and unit, downloads nothing.
#[test]
fn install_script_sets_up_an_agent() -> Result<()> {
    let c = Cluster::start()?;
    let token = c.create_group("rg")?;
    let root = c.path("server");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/install-agent.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["--binary"])
        .arg(ferry_tests::bin("ferry-agent")?)
        .args(["--scheduler", &c.url, "--group", "rg", "--token", &token])
        .args(["--user", "root", "--labels", "zone=lab", "--no-start"])
        .env("FERRY_BIN_DIR", root.join("bin"))
        .env("FERRY_ETC_DIR", root.join("etc"))
        .env("FERRY_UNIT_DIR", root.join("units"))
        .env("FERRY_DATA_DIR", root.join("data"))
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("registered as agent"), "{text}");
    assert!(root.join("bin/ferry-agent").exists());
    assert!(root.join("etc/agent.env").exists());
    assert!(root.join("units/ferry-agent.service").exists());
    let list = c.ferry(&["agent", "list"])?.ok()?;
    assert!(list.stdout.contains("zone=lab"), "{}", list.stdout);
    // A wrong token fails before anything is written.
    let again = Command::new("bash")
        .arg(&script)
        .arg("--binary")
        .arg(ferry_tests::bin("ferry-agent")?)
        .args([
            "--scheduler",
            &c.url,
            "--group",
            "rg",
            "--token",
            "frt_wrong",
        ])
        .args(["--user", "root", "--no-start"])
        .env("FERRY_BIN_DIR", root.join("bin2"))
        .env("FERRY_ETC_DIR", root.join("etc2"))
        .env("FERRY_UNIT_DIR", root.join("units2"))
        .env("FERRY_DATA_DIR", root.join("data2"))
        .output()?;
    assert!(!again.status.success());
    assert!(!root.join("etc2/agent.env").exists());
    Ok(())
}
