//! Two private networks that cannot reach each other (the DataWorks "both ends unreachable"
//! case), made with two network namespaces, each holding one PostgreSQL server that listens
//! only inside it and one agent of its own resource group. The scheduler listens on the host
//! side of both links; neither namespace has a route to the other. A task names the source's
//! group as its group and the target's group as its writer group: the reader runs in one
//! network, the writer in the other, and rows flow through the scheduler's relay, which both
//! agents dial out to.
//!
//! Checked: the sync ends success with exactly the source rows; a rerun leaves exactly the
//! source rows (preSql delete, as on one agent); a data source limited to one group is refused
//! for the other side; and a relay cut mid-sync, by an agent killed or by a network link that
//! drops, fails the attempt, naming the leg, agent and group, after which a rerun yields
//! exactly the source rows.

use anyhow::Result;
use ferry_tests::netns::{self, Netns, PrivatePg};
use ferry_tests::{Cluster, wait_for};
use std::time::Duration;

/// Two private networks, their databases and agents, and a scheduler both reach.
struct TwoNetworks {
    c: Cluster,
    east: Netns,
    west: Netns,
    east_pg: PrivatePg,
    west_pg: PrivatePg,
    east_token: String,
}

impl TwoNetworks {
    fn start(tag: &str, a: u8) -> Result<Option<Self>> {
        Self::start_with(tag, a, &[])
    }

    fn start_with(tag: &str, a: u8, scheduler_flags: &[&str]) -> Result<Option<Self>> {
        if let Some(why) = netns::available() {
            println!("SKIPPED: {why}");
            return Ok(None);
        }
        let b = (std::process::id() % 200) as u8;
        let east = Netns::create(&format!("{tag}e"), a, b)?;
        let west = Netns::create(&format!("{tag}w"), a + 1, b)?;
        // One scheduler on every host address: each network reaches it on its own link.
        let c = Cluster::start_listen("0.0.0.0:0", scheduler_flags)?;
        let port = c.port;
        let east_pg = PrivatePg::start(&east, netns::free_port()?, c.dir.path())?;
        let west_pg = PrivatePg::start(&west, netns::free_port()?, c.dir.path())?;
        let mut net = Self {
            c,
            east,
            west,
            east_pg,
            west_pg,
            east_token: String::new(),
        };
        // The two networks cannot reach each other, nor each other's databases.
        let (e, w) = (&net.east, &net.west);
        assert!(!e.can_connect(&format!("{}:{}", w.ns_ip, net.west_pg.port)));
        assert!(!w.can_connect(&format!("{}:{}", e.ns_ip, net.east_pg.port)));
        assert!(e.can_connect(&format!("127.0.0.1:{}", net.east_pg.port)));
        assert!(w.can_connect(&format!("127.0.0.1:{}", net.west_pg.port)));
        let east_token = net.c.create_group("east")?;
        net.east_token = east_token.clone();
        let west_token = net.c.create_group("west")?;
        let (east_url, west_url) = (
            format!("http://{}:{port}", net.east.host_ip),
            format!("http://{}:{port}", net.west.host_ip),
        );
        let (en, wn) = (net.east.name.clone(), net.west.name.clone());
        net.c
            .start_agent_in(&en, "e1", "east", &east_token, &east_url)?;
        net.c
            .start_agent_in(&wn, "w1", "west", &west_token, &west_url)?;
        net.c.wait_online("east", 1)?;
        net.c.wait_online("west", 1)?;
        for (name, pg, group) in [
            ("src_pg", net.east_pg.port, "east"),
            ("dst_pg", net.west_pg.port, "west"),
        ] {
            net.c
                .ferry(&[
                    "datasource",
                    "add",
                    name,
                    "--type",
                    "postgresql",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &pg.to_string(),
                    "--database",
                    "private",
                    "--user",
                    "postgres",
                    "--allow-group",
                    group,
                ])?
                .ok()?;
        }
        Ok(Some(net))
    }

    /// Creates task `relay`: reader in group east, writer in group west, with job speed `speed`.
    fn create_task(&self, speed: &str) -> Result<ferry_tests::CliOutput> {
        let path = self.c.job_file("job.json", &job(speed))?;
        self.c
            .ferry(&[
                "task",
                "create",
                "relay",
                "--group",
                "east",
                "--writer-group",
                "west",
                "--file",
                &path,
            ])?
            .ok()
    }

    /// Runs a slow `relay` task (30,000 rows at 3,000 rows/s) and returns its instance once
    /// rows flow (the reader leg saw the target ready), so a cut lands in the middle.
    fn run_slowly(&self) -> Result<String> {
        self.create_task(r#"{"channel": 1, "record": 3000}"#)?;
        let run = self.c.ferry(&["task", "run", "relay"])?.ok()?;
        let id = Cluster::instance_id(&run)?;
        wait_for(Duration::from_secs(60), "rows flowing", || {
            let out = self.c.ferry(&["instance", "logs", &id]).ok()?;
            out.stdout.contains("target ready").then_some(())
        })?;
        Ok(id)
    }

    fn source(&self, sql: &str) -> Result<String> {
        self.east_pg.psql(&self.east, "private", sql)
    }

    fn target(&self, sql: &str) -> Result<String> {
        self.west_pg.psql(&self.west, "private", sql)
    }

    /// Row count and an order-independent checksum of every row's text.
    fn digest(&self, east: bool) -> Result<String> {
        let sql = "SELECT count(*) || ' ' || coalesce(sum(('x' || substr(md5(o::text), 1, 8))::bit(32)::bigint), 0) FROM orders o";
        if east {
            self.source(sql)
        } else {
            self.target(sql)
        }
    }
}

fn job(speed: &str) -> String {
    format!(
        r#"{{"job": {{
  "setting": {{ "speed": {speed}, "errorLimit": {{ "record": 0 }} }},
  "content": [{{
    "reader": {{ "name": "postgresqlreader", "parameter": {{
      "datasource": "src_pg", "column": ["id", "amount", "note", "created"], "splitPk": "id",
      "connection": [{{ "table": ["orders"] }}] }} }},
    "writer": {{ "name": "postgresqlwriter", "parameter": {{
      "datasource": "dst_pg", "column": ["id", "amount", "note", "created"],
      "preSql": ["DELETE FROM orders"],
      "connection": [{{ "table": "orders" }}] }} }}
  }}]
}}}}"#
    )
}

const ROWS: u64 = 30_000;

fn fill_source(net: &TwoNetworks) -> Result<()> {
    net.source(&format!(
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2), note text, created timestamp);
         INSERT INTO orders SELECT g, g * 0.25, CASE WHEN g % 17 = 0 THEN NULL ELSE 'note ' || g || ' é' END,
                timestamp '2026-11-24 00:00:00' + g * interval '1 second'
           FROM generate_series(1, {ROWS}) g;"
    ))?;
    Ok(())
}

#[test]
fn relay_moves_rows_between_two_networks_exactly() -> Result<()> {
    let Some(net) = TwoNetworks::start("rl", 81)? else {
        return Ok(());
    };
    fill_source(&net)?;
    // Same column types on both sides: PostgreSQL's binary COPY tuples cross untouched.
    net.target(
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2), note text, created timestamp)",
    )?;
    let c = &net.c;
    let path = c.job_file("job.json", &job(r#"{"channel": 2}"#))?;

    // Each half may use only its own group's data source.
    let refused = c.ferry(&[
        "task",
        "create",
        "wrong",
        "--group",
        "west",
        "--writer-group",
        "east",
        "--file",
        &path,
    ])?;
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert_ne!(refused.code, 0, "{said}");
    assert!(
        said.contains("data source \"src_pg\" may not be used by resource group \"west\""),
        "{said}"
    );
    let one_group = c.ferry(&["task", "create", "one", "--group", "east", "--file", &path])?;
    let said = format!("{}{}", one_group.stdout, one_group.stderr);
    assert!(
        said.contains("\"dst_pg\" may not be used by resource group \"east\""),
        "{said}"
    );

    let created = net.create_task(r#"{"channel": 2}"#)?;
    assert!(
        created
            .stdout
            .contains("reader group east, writer group west"),
        "{}",
        created.stdout
    );
    let run = c.ferry(&["task", "run", "relay", "--follow"])?.ok()?;
    assert!(run.stdout.contains("finished: success"), "{}", run.stdout);
    let id = Cluster::instance_id(&run)?;
    assert_eq!(net.digest(false)?, net.digest(true)?);
    assert!(net.digest(false)?.starts_with(&format!("{ROWS} ")));

    let shown = c.ferry(&["instance", "show", &id])?.ok()?;
    let (e1, w1) = (c.agent_id("e1")?, c.agent_id("w1")?);
    assert!(
        shown.stdout.contains(&format!(
            "two groups: reader leg on {e1}, writer leg on {w1}"
        )),
        "{}",
        shown.stdout
    );
    // Each leg's log is the attempt's; the reader's says the writer committed.
    let logs = c.ferry(&["instance", "logs", &id])?.ok()?;
    assert!(
        logs.stdout.contains("reader leg of a two-group sync"),
        "{}",
        logs.stdout
    );
    assert!(
        logs.stdout.contains("writer leg of a two-group sync"),
        "{}",
        logs.stdout
    );
    assert!(
        logs.stdout.contains(&format!("committed {ROWS} rows")),
        "{}",
        logs.stdout
    );
    // A rerun: preSql empties the target in the writer's transaction, so exactly the source.
    c.ferry(&["instance", "rerun", &id])?.ok()?;
    wait_for(Duration::from_secs(60), "the rerun to end", || {
        let out = c.ferry(&["instance", "show", &id]).ok()?;
        (out.stdout.matches("attempt att-").count() >= 2
            && ["state: success", "state: failed"]
                .iter()
                .any(|s| out.stdout.contains(s)))
        .then_some(out.stdout)
    })
    .and_then(|out| {
        anyhow::ensure!(out.contains("state: success"), "{out}");
        Ok(())
    })?;
    assert_eq!(net.digest(false)?, net.digest(true)?);
    Ok(())
}

#[test]
fn relay_cut_by_a_killed_agent_fails_then_reruns_exactly() -> Result<()> {
    let Some(mut net) = TwoNetworks::start("rk", 83)? else {
        return Ok(());
    };
    fill_source(&net)?;
    // Another type for `note` on the target: rows cross in the column model, not as tuples.
    net.target(
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2), note varchar(64), created timestamp)",
    )?;
    let id = net.run_slowly()?;
    let e1 = net.c.agent_id("e1")?;
    net.c.agents[0].kill9();
    let shown = net.c.wait_final(&id, Duration::from_secs(90))?;
    assert!(shown.contains("state: failed"), "{shown}");
    println!("after the kill:\n{shown}");
    // Which leg failed, on which agent and group, is in the instance's error or its log.
    let logs = net.c.ferry(&["instance", "logs", &id])?.ok()?;
    let said = format!("reader leg on agent {e1} (group east)");
    assert!(
        shown.contains(&said) || logs.stdout.contains(&said),
        "{shown}\n{}",
        logs.stdout
    );
    // Nothing half-done is left as if it were the result: not the source's rows.
    assert_ne!(net.digest(false)?, net.digest(true)?);

    // The agent comes back (same identity); a rerun (same job version, as every rerun) yields
    // exactly the source rows.
    let (en, url) = (
        net.east.name.clone(),
        format!("http://{}:{}", net.east.host_ip, net.c.port),
    );
    let token = net.east_token.clone();
    net.c.start_agent_in(&en, "e1", "east", &token, &url)?;
    net.c.wait_online("east", 1)?;
    net.c.ferry(&["instance", "rerun", &id])?.ok()?;
    wait_for(Duration::from_secs(90), "the rerun to succeed", || {
        let out = net.c.ferry(&["instance", "show", &id]).ok()?;
        out.stdout.contains("state: success").then_some(())
    })?;
    assert_eq!(net.digest(false)?, net.digest(true)?);
    Ok(())
}

#[test]
fn relay_cut_by_a_dropped_link_fails_then_reruns_exactly() -> Result<()> {
    // A short lease, so the scheduler gives up on the silent writer leg soon.
    let Some(net) = TwoNetworks::start_with("rc", 85, &["--attempt-lease-secs", "8"])? else {
        return Ok(());
    };
    fill_source(&net)?;
    net.target(
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2), note text, created timestamp)",
    )?;
    let c = &net.c;
    let id = net.run_slowly()?;
    // The writer's network drops: its relay stream and its session go silent, no reset.
    net.west.cut()?;
    let shown = c.wait_final(&id, Duration::from_secs(90))?;
    println!("after the cut:\n{shown}");
    assert!(shown.contains("state: failed"), "{shown}");
    let w1 = c.agent_id("w1")?;
    assert!(
        shown.contains(&w1),
        "the failure names the writer's agent: {shown}"
    );
    assert!(shown.contains("writer leg"), "{shown}");
    net.west.heal()?;
    c.wait_online("west", 1)?;
    c.ferry(&["instance", "rerun", &id])?.ok()?;
    wait_for(Duration::from_secs(90), "the rerun to succeed", || {
        let out = c.ferry(&["instance", "show", &id]).ok()?;
        out.stdout.contains("state: success").then_some(())
    })?;
    assert_eq!(net.digest(false)?, net.digest(true)?);
    Ok(())
}
