//! The web console in headless Chromium against a real scheduler, agent and PostgreSQL: log in
//! with a password and with the first admin's token, create a data source and test it, build a
//! sync task in the wizard, run it and watch its log, open the DAG, rerun the instance and see
//! its state change.
//! With `FERRY_SCREENSHOTS=docs/console` it also writes the screenshots of docs/console.md.

use anyhow::{Result, ensure};
use ferry_tests::Cluster;
use ferry_tests::browser::Browser;
use ferry_tests::db::ScratchDb;
use std::time::Duration;

const ROWS: i64 = 2000;
const LONG: Duration = Duration::from_secs(90);
const SHORT: Duration = Duration::from_secs(20);

#[test]
fn console_logs_in_builds_a_task_runs_and_reruns_it() -> Result<()> {
    let db = ScratchDb::postgres("ferry_console")?;
    db.psql(&format!(
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), note text);
         INSERT INTO orders SELECT g, 'customer ' || g, g * 1.25, 'internal' FROM generate_series(1, {ROWS}) g;
         CREATE TABLE orders_copy (id bigint PRIMARY KEY, customer text, amount numeric(12,2),
                                   loaded_at timestamptz DEFAULT now());"
    ))?;
    let (mut c, group_token) = Cluster::start_with_agent("rg")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let browser = rt.block_on(Browser::start(c.dir.path()))?;
    let outcome = rt.block_on(journey(&browser, &mut c, &db, &group_token));
    let _ = rt.block_on(browser.close());
    outcome
}

async fn journey(b: &Browser, c: &mut Cluster, db: &ScratchDb, group_token: &str) -> Result<()> {
    // Log in: the scheduler's root leads to the console, which asks for a password or a
    // token. A password login's session ends with the logout; then the first admin's token.
    c.ferry_stdin(
        &["user", "passwd", "--password-stdin"],
        Some("a long console password\n"),
    )?
    .ok()?;
    b.goto(&format!("{}/", c.url)).await?;
    b.el("#login-user").await?;
    b.screenshot("login").await?;
    b.fill("#login-user", "admin").await?;
    b.fill("#login-password", "not the password").await?;
    b.click("#login-password-submit").await?;
    b.wait_text("#login-error", "password", SHORT).await?;
    b.fill("#login-password", "a long console password").await?;
    b.click("#login-password-submit").await?;
    b.wait_text("#view h1", "Overview", SHORT).await?;
    b.wait_text("#user", "admin", SHORT).await?;
    b.click("#logout").await?;
    b.el("#login-token").await?;
    b.fill("#login-token", "frt_not_a_real_token").await?;
    b.click("#login-submit").await?;
    b.wait_text("#login-error", "not valid", SHORT).await?;
    b.fill("#login-token", &c.token).await?;
    b.click("#login-submit").await?;
    b.wait_text("#view h1", "Overview", SHORT).await?;
    b.wait_text("#user", "admin", SHORT).await?;
    b.wait_text("#overview-groups", "rg", SHORT).await?;

    // A data source, created in the form (the password field stays empty and write-only), then
    // tested from the group's agent with a table check.
    b.goto(&format!("{}/console/#/datasources", c.url)).await?;
    b.click("#ds-new").await?;
    b.fill("#ds-name", "pg").await?;
    b.select("#ds-type", "postgresql").await?;
    b.fill("#ds-host", "127.0.0.1").await?;
    b.fill("#ds-port", "5432").await?;
    b.fill("#ds-database", &db.name).await?;
    b.fill("#ds-username", "postgres").await?;
    b.click("#ds-save").await?;
    b.el("tr[data-datasource=\"pg\"]").await?;
    b.select("#test-group", "rg").await?;
    b.fill("#test-table", "orders").await?;
    b.click("#test-run").await?;
    let verdict = b.wait_text("#test-verdict", "reachable", LONG).await?;
    ensure!(verdict.contains("reachable from every agent"), "{verdict}");
    b.wait_text("#test-result", "numeric(12,2)", SHORT).await?;
    b.screenshot("datasources").await?;

    // Script mode checks the JSON in the browser and points at line and column.
    b.goto(&format!("{}/console/#/tasks/new?mode=script", c.url))
        .await?;
    b.fill("#task-name", "broken").await?;
    b.fill(
        "#script-editor",
        "{\n  \"job\": {\n    \"content\": [1, 2,]\n  }\n}",
    )
    .await?;
    b.click("#task-save").await?;
    b.wait_text("#script-editor-pos", "line 3, column 22", SHORT)
        .await?;

    // The wizard: both tables' columns read through the agent, the mapping shown, saved.
    b.goto(&format!("{}/console/#/tasks", c.url)).await?;
    b.click("#task-new").await?;
    b.fill("#task-name", "copy_orders").await?;
    b.select("#task-group", "rg").await?;
    b.select("#wiz-src-ds", "pg").await?;
    b.fill("#wiz-src-table", "orders").await?;
    b.select("#wiz-dst-ds", "pg").await?;
    b.fill("#wiz-dst-table", "orders_copy").await?;
    b.fill("#wiz-channels", "2").await?;
    b.fill("#wiz-pre-sql", "DELETE FROM @table").await?;
    b.click("#wiz-preview").await?;
    b.wait_text("#wiz-mapping", "customer", LONG).await?;
    b.wait_text("#wiz-source-only", "note", SHORT).await?;
    b.wait_text("#wiz-target-only", "loaded_at", SHORT).await?;
    b.screenshot("wizard").await?;
    // "Show as script": the wizard's job in the editor, and no way back to the wizard.
    b.click("#wiz-show-script").await?;
    let script = b
        .wait(SHORT, "the wizard's job in the script editor", || async {
            let v = b
                .el("#script-editor")
                .await
                .ok()?
                .prop("value")
                .await
                .ok()??;
            v.contains("splitPk").then_some(v)
        })
        .await?;
    let job: serde_json::Value = serde_json::from_str(&script)?;
    ensure!(
        job["job"]["content"][0]["reader"]["parameter"]["splitPk"] == "id",
        "{script}"
    );
    ensure!(
        b.attr("#mode-wizard", "disabled").await.is_some(),
        "the wizard can be reopened after show as script"
    );
    b.click("#task-save").await?;
    b.wait_text("#view h1", "Task copy_orders", LONG).await?;

    // Run it; the instance page follows the run and its log without a reload.
    b.click("#task-run").await?;
    b.el("#instance-state").await?;
    let state = b
        .wait(LONG, "the run to succeed", || async {
            let s = b.attr("#instance-state", "data-state").await?;
            matches!(s.as_str(), "success" | "failed" | "killed").then_some(s)
        })
        .await?;
    ensure!(state == "success", "the run ended {state}");
    let first_lines: usize = b
        .wait(SHORT, "log lines", || async {
            let n: usize = b.attr("#instance-log", "data-lines").await?.parse().ok()?;
            (n > 0).then_some(n)
        })
        .await?;
    b.wait_text("#log-status", "ended", SHORT).await?;
    ensure!(
        db.psql("SELECT count(*) FROM orders_copy")? == ROWS.to_string(),
        "the target does not hold {ROWS} rows"
    );
    let url = b.client.current_url().await?;
    let instance_hash = url.fragment().unwrap_or_default().to_string();

    // The DAG; the agent goes away, the rerun clicked on the graph waits for resources, and the
    // node's colour (its state) changes on the page.
    b.goto(&format!("{}/console/#/dag?task=copy_orders", c.url))
        .await?;
    let node = "g.node[data-state=\"success\"]";
    b.el(node).await?;
    for a in &mut c.agents {
        a.kill9();
    }
    ferry_tests::wait_for(SHORT, "the agent to be offline", || {
        let out = c.ferry(&["group", "list"]).ok()?;
        (!out
            .stdout
            .lines()
            .any(|l| l.starts_with("rg ") && l.trim_end().ends_with("online")))
        .then_some(())
    })?;
    b.click(node).await?;
    b.wait_text("#dag-detail", "copy_orders", SHORT).await?;
    b.click("#dag-rerun").await?;
    b.wait(LONG, "the node to wait for resources", || async {
        let s = b.attr("g.node", "data-state").await?;
        (s == "waiting_resources").then_some(())
    })
    .await?;

    // Back on the instance: it waits, then the agent returns, and the second attempt's log
    // lines arrive on the open page.
    b.goto(&format!("{}/console/#{instance_hash}", c.url))
        .await?;
    b.wait(SHORT, "the instance to wait for resources", || async {
        (b.attr("#instance-state", "data-state").await? == "waiting_resources").then_some(())
    })
    .await?;
    c.start_agent("a1", "rg", group_token)?;
    b.wait(LONG, "the rerun to succeed", || async {
        (b.attr("#instance-state", "data-state").await? == "success").then_some(())
    })
    .await?;
    b.wait(SHORT, "the second attempt's log lines", || async {
        let n: usize = b.attr("#instance-log", "data-lines").await?.parse().ok()?;
        (n > first_lines).then_some(())
    })
    .await?;
    ensure!(
        b.count("#instance-attempts tr[data-attempt]").await == 2,
        "two attempts expected"
    );
    b.wait_text("#instance-history", "rerun by admin", SHORT)
        .await?;
    b.screenshot("instance").await?;
    ensure!(
        db.psql("SELECT count(*) FROM orders_copy")? == ROWS.to_string(),
        "the rerun left other than {ROWS} rows (preSql deletes first)"
    );

    // A backfill of two days with the downstream, from the task's page: the DAG of the later
    // day shows same-cycle edges solid and the previous-cycle edge dashed.
    for args in [
        &[
            "task",
            "create",
            "report_daily",
            "--type",
            "virtual",
            "--group",
            "rg",
            "--after",
            "copy_orders",
            "--after-previous",
            "report_daily",
        ][..],
        &[
            "task",
            "create",
            "export_bi",
            "--type",
            "virtual",
            "--group",
            "rg",
            "--after",
            "copy_orders",
        ],
        &[
            "task",
            "create",
            "report_weekly",
            "--type",
            "virtual",
            "--group",
            "rg",
            "--after",
            "report_daily,export_bi",
        ],
    ] {
        c.ferry(args)?.ok()?;
    }
    let bizdate = b
        .wait_text("#instance-summary", "Business date", SHORT)
        .await?;
    let day = bizdate
        .lines()
        .find_map(|l| l.strip_prefix("Business date").map(str::trim))
        .and_then(day_and_before)
        .ok_or_else(|| anyhow::anyhow!("no business date in {bizdate}"))?;
    b.goto(&format!("{}/console/#/task/copy_orders", c.url))
        .await?;
    b.set_value("#backfill-from", &day.0).await?;
    b.set_value("#backfill-to", &day.1).await?;
    b.click("#backfill-downstream").await?;
    b.click("#backfill-run").await?;
    b.wait_text("#flash", "2 days", SHORT).await?;
    b.goto(&format!("{}/console/#/dag?task=report_daily", c.url))
        .await?;
    b.wait(LONG, "every backfilled instance to succeed", || async {
        let nodes = b.count("g.node").await;
        let done = b.count("g.node[data-state=\"success\"]").await;
        (nodes >= 5 && nodes == done).then_some(())
    })
    .await?;
    ensure!(
        b.count("path.edge.previous").await >= 1,
        "no dashed previous-cycle edge on the DAG"
    );
    ensure!(
        b.count("path.edge:not(.previous)").await >= 3,
        "too few same-cycle edges on the DAG"
    );
    b.click("g.node").await?;
    b.wait_text("#dag-detail", "Open instance", SHORT).await?;
    b.screenshot("dag").await?;

    b.goto(&format!("{}/console/#/instances", c.url)).await?;
    b.wait_text("#instance-list", "report_weekly", SHORT)
        .await?;
    b.screenshot("instances").await?;

    b.goto(&format!("{}/console/#/", c.url)).await?;
    b.wait_text("#state-counts", "success", SHORT).await?;
    b.screenshot("overview").await?;
    b.goto(&format!("{}/console/#/groups", c.url)).await?;
    b.wait_text("#groups", "online", LONG).await?;
    b.screenshot("groups").await?;
    Ok(())
}

/// The day before `yyyymmdd` and the day itself, as yyyy-mm-dd (what date inputs hold).
fn day_and_before(yyyymmdd: &str) -> Option<(String, String)> {
    let day = chrono::NaiveDate::parse_from_str(yyyymmdd.get(..8)?, "%Y%m%d").ok()?;
    let before = day.pred_opt()?;
    Some((
        before.format("%Y-%m-%d").to_string(),
        day.format("%Y-%m-%d").to_string(),
    ))
}
