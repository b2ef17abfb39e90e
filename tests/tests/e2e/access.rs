//! Who may do what: no call without a token; revoked and expired tokens refused; every role
//! against every kind of operation; a workspace's data invisible from another; every change and
//! every refusal in the audit log.

use anyhow::{Result, anyhow};
use ferry_tests::Cluster;
use std::time::Duration;

/// Creates `user` with `role` in `workspace` and returns a token for it.
fn member(c: &Cluster, user: &str, workspace: &str, role: &str) -> Result<String> {
    c.ferry(&["user", "create", user])?.ok()?;
    c.ferry(&[
        "--workspace",
        workspace,
        "user",
        "grant",
        user,
        "--role",
        role,
    ])?
    .ok()?;
    token_for(c, user)
}

fn token_for(c: &Cluster, user: &str) -> Result<String> {
    let out = c
        .ferry(&["token", "create", "--user", user, "--name", "test"])?
        .ok()?;
    out.stdout
        .lines()
        .find(|l| l.starts_with("fat_"))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no token in {}", out.stdout))
}

#[test]
fn no_call_works_without_a_valid_token() -> Result<()> {
    let c = Cluster::start()?;
    for token in [
        "",
        "fat_0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        for args in [
            vec!["group", "list"],
            vec!["group", "create", "evil"],
            vec!["group", "rotate-token", "evil"],
            vec!["datasource", "list"],
            vec!["task", "list"],
        ] {
            let out = c.ferry_as(token, &args, None)?;
            assert_ne!(out.code, 0, "{args:?} worked without a valid token");
            assert!(
                out.stderr.contains("no API token") || out.stderr.contains("not valid"),
                "{args:?}: {}",
                out.stderr
            );
        }
    }
    // Nothing was created by those attempts.
    let groups = c.ferry(&["group", "list"])?.ok()?;
    assert!(!groups.stdout.contains("evil"), "{}", groups.stdout);
    Ok(())
}

#[test]
fn revoked_and_expired_tokens_are_refused() -> Result<()> {
    let c = Cluster::start()?;
    c.ferry(&["user", "create", "bob"])?.ok()?;
    let bob = token_for(&c, "bob")?;
    c.ferry_as(&bob, &["whoami"], None)?.ok()?;
    let id = c
        .ferry(&["token", "list"])?
        .ok()?
        .stdout
        .lines()
        .find(|l| l.contains(" bob "))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("bob's token is not listed"))?;
    c.ferry(&["token", "revoke", &id])?.ok()?;
    let out = c.ferry_as(&bob, &["whoami"], None)?;
    assert!(out.stderr.contains("revoked"), "{}", out.stderr);

    let out = c
        .ferry(&["token", "create", "--user", "bob", "--expires-in", "1s"])?
        .ok()?;
    let short = out
        .stdout
        .lines()
        .find(|l| l.starts_with("fat_"))
        .ok_or_else(|| anyhow!("no token"))?
        .to_string();
    c.ferry_as(&short, &["whoami"], None)?.ok()?;
    std::thread::sleep(Duration::from_millis(1500));
    let out = c.ferry_as(&short, &["whoami"], None)?;
    assert!(out.stderr.contains("expired"), "{}", out.stderr);
    Ok(())
}

/// Every role against every kind of operation, allowed and refused.
#[test]
fn roles_against_operations() -> Result<()> {
    let (c, _) = Cluster::start_with_agent("rg")?;
    c.ferry(&["datasource", "add", "gen", "--type", "stream"])?
        .ok()?;
    let job = c.job_file(
        "job.json",
        r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x"}],"sliceRecordCount":5}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#,
    )?;
    c.ferry(&["task", "create", "t", "--group", "rg", "--file", &job])?
        .ok()?;
    let tokens = [
        ("viewer", member(&c, "vera", "default", "viewer")?),
        ("operator", member(&c, "otto", "default", "operator")?),
        ("developer", member(&c, "dana", "default", "developer")?),
        ("admin", member(&c, "ada", "default", "admin")?),
    ];
    // (operation, roles allowed)
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec!["task", "list"],
            &["viewer", "operator", "developer", "admin"],
        ),
        (
            vec!["datasource", "list"],
            &["viewer", "operator", "developer", "admin"],
        ),
        (
            vec!["task", "run", "t", "--follow"],
            &["operator", "developer", "admin"],
        ),
        (
            vec!["task", "create", "t2", "--group", "rg", "--file", &job],
            &["developer", "admin"],
        ),
        (
            vec!["datasource", "add", "gen2", "--type", "stream"],
            &["developer", "admin"],
        ),
        (vec!["audit"], &["admin"]),
        (vec!["user", "list"], &["admin"]),
        (vec!["group", "create", "rg2"], &[]),
        (vec!["group", "rotate-token", "rg"], &[]),
        (vec!["workspace", "create", "w2"], &[]),
        (vec!["user", "create", "mallory"], &[]),
    ];
    for (args, allowed) in &cases {
        for (role, token) in &tokens {
            let out = c.ferry_as(token, args, None)?;
            let ok = allowed.contains(role);
            assert_eq!(
                out.code == 0,
                ok,
                "{role} {args:?}: {}{}",
                out.stdout,
                out.stderr
            );
            if !ok {
                assert!(
                    out.stderr.contains("may not"),
                    "{role} {args:?}: {}",
                    out.stderr
                );
            }
        }
    }
    // The workspace admin manages members of its workspace.
    c.ferry(&["user", "create", "newbie"])?.ok()?;
    let ada = &tokens[3].1;
    c.ferry_as(ada, &["user", "grant", "newbie", "--role", "viewer"], None)?
        .ok()?;
    // Every change and refusal is in the audit log with who did it.
    let audit = c.ferry(&["audit"])?.ok()?;
    assert!(audit.stdout.contains("CreateTask"), "{}", audit.stdout);
    assert!(audit.stdout.contains("dana"), "{}", audit.stdout);
    assert!(audit.stdout.contains("denied"), "{}", audit.stdout);
    assert!(audit.stdout.contains("127.0.0.1"), "{}", audit.stdout);
    Ok(())
}

/// A token of workspace A sees nothing of workspace B and changes nothing there.
#[test]
fn workspaces_are_isolated() -> Result<()> {
    let (c, _) = Cluster::start_with_agent("rg")?;
    c.ferry(&["workspace", "create", "b"])?.ok()?;
    c.ferry(&[
        "--workspace",
        "b",
        "datasource",
        "add",
        "secret_db",
        "--type",
        "stream",
    ])?
    .ok()?;
    let job = c.job_file(
        "job.json",
        r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x"}],"sliceRecordCount":5}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#,
    )?;
    // Group rg belongs to "default"; workspace b may not use it until bound.
    let refused = c.ferry(&[
        "--workspace",
        "b",
        "task",
        "create",
        "bt",
        "--group",
        "rg",
        "--file",
        &job,
    ])?;
    assert!(
        refused.stderr.contains("not bound to workspace"),
        "{}",
        refused.stderr
    );
    c.ferry(&["--workspace", "b", "group", "bind", "rg"])?
        .ok()?;
    c.ferry(&[
        "--workspace",
        "b",
        "task",
        "create",
        "bt",
        "--group",
        "rg",
        "--file",
        &job,
    ])?
    .ok()?;
    let run = c
        .ferry(&["--workspace", "b", "task", "run", "bt", "--follow"])?
        .ok()?;
    let b_instance = Cluster::instance_id(&run)?;

    let alice = member(&c, "alice", "default", "admin")?;
    let shown = c.ferry_as(&alice, &["datasource", "list"], None)?.ok()?;
    assert!(!shown.stdout.contains("secret_db"), "{}", shown.stdout);
    let tasks = c.ferry_as(&alice, &["task", "list"], None)?.ok()?;
    assert!(!tasks.stdout.contains("bt"), "{}", tasks.stdout);
    for args in [
        vec!["--workspace", "b", "datasource", "list"],
        vec!["--workspace", "b", "task", "run", "bt"],
        vec![
            "--workspace",
            "b",
            "datasource",
            "add",
            "x",
            "--type",
            "stream",
        ],
    ] {
        let out = c.ferry_as(&alice, &args, None)?;
        assert_ne!(out.code, 0, "{args:?}");
        assert!(out.stderr.contains("may not"), "{args:?}: {}", out.stderr);
    }
    // B's instance does not exist as far as A is concerned.
    let out = c.ferry_as(&alice, &["instance", "show", &b_instance], None)?;
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    let out = c.ferry_as(&alice, &["instance", "logs", &b_instance], None)?;
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    Ok(())
}

#[test]
fn login_saves_the_token_for_later_commands() -> Result<()> {
    let c = Cluster::start()?;
    let out = c.ferry_as("", &["login", "--token-stdin"], Some(&c.token))?;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("logged in as admin"), "{}", out.stdout);
    let saved = c.path("cli-config/ferry/credentials.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&saved)?.permissions().mode() & 0o777,
            0o600
        );
    }
    // No FERRY_TOKEN: the saved token is used.
    c.ferry_as("", &["whoami"], None)?.ok()?;
    c.ferry_as("", &["logout"], None)?.ok()?;
    let out = c.ferry_as("", &["whoami"], None)?;
    assert!(out.stderr.contains("no API token"), "{}", out.stderr);
    Ok(())
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every file under `dir` (recursively) that holds `needle`.
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        } else if std::fs::read(&p).is_ok_and(|b| contains(&b, needle)) {
            hits.push(p.display().to_string());
        }
    }
    hits
}

/// A whole run with a catalog password and an inline one: afterwards neither appears in any
/// file the scheduler or the agent keeps, in their logs, or in any API answer; the stores are
/// readable by their owner only.
#[test]
fn passwords_appear_nowhere_after_a_run() -> Result<()> {
    let catalog = "Cat4log-S3cret-pw";
    let inline = "In1ine-S3cret-pw";
    let name = format!("ferry_e2e_pw_{}", std::process::id());
    let psql = |db: &str, sql: &str| {
        std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-tAqc", sql])
            .output()
    };
    psql("test", &format!("CREATE DATABASE {name}"))?;
    psql(
        &name,
        "CREATE TABLE src (id int); INSERT INTO src SELECT generate_series(1, 100); CREATE TABLE dst (id int);",
    )?;
    let run = (|| -> Result<()> {
        let (c, _) = Cluster::start_with_agent("rg")?;
        c.ferry_stdin(
            &[
                "datasource",
                "add",
                "pg",
                "--type",
                "postgresql",
                "--host",
                "127.0.0.1",
                "--database",
                &name,
                "--user",
                "postgres",
                "--password-stdin",
            ],
            Some(&format!("{catalog}\n")),
        )?
        .ok()?;
        let url = format!("jdbc:postgresql://127.0.0.1:5432/{name}");
        let job = serde_json::json!({"job": {"content": [{
            "reader": {"name": "postgresqlreader", "parameter": {"datasource": "pg", "column": ["id"], "table": ["src"]}},
            "writer": {"name": "postgresqlwriter", "parameter": {"username": "postgres", "password": inline,
                "column": ["id"], "preSql": ["DELETE FROM @table"],
                "connection": [{"jdbcUrl": url, "table": ["dst"]}]}}
        }]}})
        .to_string();
        let path = c.job_file("job.json", &job)?;
        c.ferry(&["task", "submit", "t", "--group", "rg", "--file", &path])?
            .ok()?;
        let run = c.ferry(&["task", "run", "t", "--follow"])?.ok()?;
        assert!(run.stdout.contains("finished: success"), "{}", run.stdout);
        std::fs::remove_file(&path)?;
        let id = Cluster::instance_id(&run)?;
        let mut answers = vec![run.stdout, run.stderr];
        for args in [
            vec!["datasource", "show", "pg"],
            vec!["datasource", "list"],
            vec!["--output", "json", "task", "show", "t"],
            vec!["--output", "json", "instance", "show", &id],
            vec!["--output", "json", "instance", "logs", &id],
            vec!["--output", "json", "dag", "--bizdate", "2026-01-01"],
            vec!["audit"],
        ] {
            let out = c.ferry(&args)?;
            answers.push(out.stdout);
            answers.push(out.stderr);
        }
        for a in &answers {
            for secret in [catalog, inline] {
                assert!(!a.contains(secret), "an API answer shows a password: {a}");
            }
        }
        // Neither in any file of the scheduler or the agent (stores, spool, logs).
        for secret in [catalog, inline] {
            let hits = files_holding(c.dir.path(), secret);
            assert!(hits.is_empty(), "{secret} in clear in {hits:?}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for dir in [c.path("scheduler"), c.path("agent-a1")] {
                let mode = std::fs::metadata(&dir)?.permissions().mode() & 0o777;
                assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
            }
        }
        Ok(())
    })();
    psql(
        "test",
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )?;
    run
}

/// A data source limited to a group never reaches an agent of another group: not by a test,
/// not by a task.
#[test]
fn a_data_source_limited_to_a_group_stays_there() -> Result<()> {
    let (mut c, _) = Cluster::start_with_agent("rg")?;
    let other = c.create_group("other")?;
    c.start_agent("o1", "other", &other)?;
    c.wait_online("other", 1)?;
    c.ferry_stdin(
        &[
            "datasource",
            "add",
            "only_rg",
            "--type",
            "mysql",
            "--host",
            "127.0.0.1",
            "--database",
            "test",
            "--user",
            "root",
            "--allow-group",
            "rg",
            "--password-stdin",
        ],
        Some("Gr0up-limited-pw\n"),
    )?
    .ok()?;
    let test = c.ferry(&["datasource", "test", "only_rg", "--group", "other"])?;
    assert_ne!(test.code, 0);
    assert!(
        test.stderr.contains("may not be used by resource group"),
        "{}",
        test.stderr
    );
    let job = c.job_file(
        "j.json",
        r#"{"job":{"content":[{"reader":{"name":"mysqlreader","parameter":{"datasource":"only_rg","column":["1"],"querySql":["SELECT 1"]}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#,
    )?;
    let task = c.ferry(&["task", "submit", "t", "--group", "other", "--file", &job])?;
    assert!(
        task.stderr.contains("may not be used by resource group"),
        "{}",
        task.stderr
    );
    let o1 = c.agents.len() - 1;
    assert!(!c.agents[o1].log_text().contains("Gr0up-limited-pw"));
    Ok(())
}

/// An agent whose credential was tampered with is refused and stops.
#[test]
fn a_tampered_agent_credential_is_refused() -> Result<()> {
    let (mut c, token) = Cluster::start_with_agent("rg")?;
    c.agents[0].stop()?;
    let path = c.path("agent-a1/agent.json");
    let mut ident: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let cred = ident["credential"].as_str().unwrap_or_default().to_string();
    let tampered = format!("{}x", &cred[..cred.len() - 1]);
    ident["credential"] = serde_json::Value::String(tampered);
    std::fs::write(&path, serde_json::to_vec(&ident)?)?;
    let i = c.start_agent("a1", "rg", &token)?;
    let status = c.agents[i].wait_exit(Duration::from_secs(20))?;
    assert_eq!(status.code(), Some(3));
    assert!(
        c.agents[i].log_text().contains("credential"),
        "{}",
        c.agents[i].log_text()
    );
    Ok(())
}

#[test]
fn a_password_set_with_the_cli_logs_in_to_the_console_api() -> Result<()> {
    let c = Cluster::start()?;
    let out = c.ferry_stdin(
        &["user", "passwd", "--password-stdin"],
        Some("a long console password\n"),
    )?;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let login = |password: &str| {
        ferry_tests::http::request(
            &c.url,
            "POST",
            "/api/v1/login",
            None,
            Some(&serde_json::json!({"user": "admin", "password": password}).to_string()),
        )
    };
    let (code, body) = login("a long console password")?;
    assert_eq!(code, 200, "{body}");
    let session: serde_json::Value = serde_json::from_str(&body)?;
    let token = session["token"].as_str().unwrap_or_default().to_string();
    // The session token works for the CLI too, and shows as a token of its own.
    let out = c.ferry_as(&token, &["whoami"], None)?.ok()?;
    assert!(out.stdout.contains("admin"), "{}", out.stdout);
    let (code, body) = login("a wrong console password")?;
    assert_eq!(code, 401, "{body}");
    // Too short, and the password never reaches the scheduler's log or data files.
    let out = c.ferry_stdin(&["user", "passwd", "--password-stdin"], Some("short\n"))?;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("at least 10"), "{}", out.stderr);
    assert!(files_holding(&c.path(""), "a long console password").is_empty());
    // Removed: tokens only again.
    c.ferry(&["user", "passwd", "--remove"])?.ok()?;
    let (code, _) = login("a long console password")?;
    assert_eq!(code, 401);
    Ok(())
}
