//! A resource group inside a private network, made with a network namespace: its agent dials out
//! to the scheduler, the scheduler never dials in, and a PostgreSQL server listens only inside
//! the namespace. The connectivity test from that group succeeds, from a group outside it fails
//! with "unreachable from group …", and the sync runs there.

use anyhow::Result;
use ferry_tests::netns::{self, Netns, PrivatePg};
use ferry_tests::{Cluster, sqlite_count};

#[test]
fn a_private_database_is_reached_only_from_its_group() -> Result<()> {
    if let Some(why) = netns::available() {
        println!("SKIPPED: {why}");
        return Ok(());
    }
    let ns = Netns::create("pn", 77, (std::process::id() % 200) as u8)?;
    // The scheduler listens on the host side of the private network's link.
    let mut c = Cluster::start_listen(&format!("{}:0", ns.host_ip), &[])?;
    let pg_port = netns::free_port()?;
    let pg = PrivatePg::start(&ns, pg_port, c.dir.path())?;
    pg.psql(
        &ns,
        "private",
        "CREATE TABLE orders (id bigint primary key, amount numeric(10,2));
         INSERT INTO orders SELECT g, g * 0.5 FROM generate_series(1, 5000) g;",
    )?;

    let inside = c.create_group("inside")?;
    let outside = c.create_group("outside")?;
    let url = c.url.clone();
    c.start_agent_in(&ns.name, "in1", "inside", &inside, &url)?;
    c.start_agent("out1", "outside", &outside)?;
    c.wait_online("inside", 1)?;
    c.wait_online("outside", 1)?;

    // Nothing outside the namespace reaches its database.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", pg_port)).is_err(),
        "the private database must not be reachable from the scheduler's side"
    );
    assert!(ns.can_connect(&format!("127.0.0.1:{pg_port}")));

    c.ferry(&[
        "datasource",
        "add",
        "private_pg",
        "--type",
        "postgresql",
        "--host",
        "127.0.0.1",
        "--port",
        &pg_port.to_string(),
        "--database",
        "private",
        "--user",
        "postgres",
    ])?
    .ok()?;
    let ok = c
        .ferry(&[
            "datasource",
            "test",
            "private_pg",
            "--group",
            "inside",
            "--table",
            "orders",
            "--access",
            "read",
        ])?
        .ok()?;
    assert!(
        ok.stdout
            .contains("reachable from every agent of group inside"),
        "{}",
        ok.stdout
    );
    let no = c.ferry(&["datasource", "test", "private_pg", "--group", "outside"])?;
    assert_eq!(no.code, 2, "{}", no.stdout);
    assert!(
        no.stdout.contains("unreachable from group outside"),
        "{}",
        no.stdout
    );
    assert!(no.stdout.contains("refused"), "{}", no.stdout);

    // The sync runs in the private network: the private database into a SQLite warehouse.
    let wh = c.path("wh.db");
    c.ferry(&[
        "datasource",
        "add",
        "wh",
        "--type",
        "sqlite",
        "--path",
        &wh.display().to_string(),
    ])?
    .ok()?;
    let job = serde_json::json!({"job": {
        "setting": {"errorLimit": {"record": 0}},
        "content": [{
            "reader": {"name": "postgresqlreader", "parameter": {
                "datasource": "private_pg", "column": ["id", "amount"], "table": ["orders"]}},
            "writer": {"name": "sqlitewriter", "parameter": {
                "datasource": "wh", "table": "orders", "column": ["id", "amount"],
                "preSql": ["CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, amount TEXT)", "DELETE FROM orders"]}}
        }]}})
    .to_string();
    let path = c.job_file("job.json", &job)?;
    c.ferry(&[
        "task", "create", "private", "--group", "inside", "--file", &path,
    ])?
    .ok()?;
    let run = c.ferry(&["task", "run", "private", "--follow"])?.ok()?;
    assert!(run.stdout.contains("finished: success"), "{}", run.stdout);
    assert_eq!(sqlite_count(&wh, "orders")?, (5000, 5000 * 5001 / 2));
    drop(c);
    drop(pg);
    Ok(())
}
