//! File roots through a real agent: a txtfile job naming `..`, an absolute path elsewhere or a
//! link leading out of its data source's folder fails with the reason, and nothing outside is
//! read (no line of the outside file reaches the attempt log) or created. An agent started with
//! `--file-root` refuses paths outside it for jobs without a data source too.

use anyhow::Result;
use ferry_tests::Cluster;
use serde_json::json;

const SECRET: &str = "SECRET-LINE-4f1c";

fn reader_job(reader: serde_json::Value) -> String {
    json!({"job": {"setting": {"errorLimit": {"record": 0}}, "content": [{
        "reader": {"name": "txtfilereader", "parameter": reader},
        "writer": {"name": "streamwriter", "parameter": {"print": true}}}]}})
    .to_string()
}

#[test]
fn file_paths_stay_inside_their_roots() -> Result<()> {
    let mut c = Cluster::start()?;
    let token = c.create_group("rg")?;
    let root = c.path("data");
    let files = root.join("files");
    let outside = c.path("outside");
    std::fs::create_dir_all(&files)?;
    std::fs::create_dir_all(&outside)?;
    std::fs::write(files.join("in.csv"), "id\n1\n")?;
    // Were it read, its line would be a dirty record printed into the attempt log.
    let secret = outside.join("secret.csv");
    std::fs::write(&secret, format!("{SECRET}\n"))?;
    std::os::unix::fs::symlink(&secret, files.join("link.csv"))?;
    let url = c.url.clone();
    let root_arg = root.display().to_string();
    c.start_agent_with("a1", "rg", &token, &url, &["--file-root", &root_arg])?;
    c.wait_online("rg", 1)?;
    c.ferry(&[
        "datasource",
        "add",
        "files",
        "--type",
        "csv",
        "--path",
        &files.display().to_string(),
    ])?
    .ok()?;

    let column = json!([{"index": 0, "type": "long"}]);
    let secret_path = secret.display().to_string();
    let cases = [
        (
            "dotdot",
            reader_job(
                json!({"datasource": "files", "path": ["../../outside/secret.csv"], "column": column}),
            ),
            "contains \"..\"",
        ),
        (
            "absolute",
            reader_job(json!({"datasource": "files", "path": [secret_path], "column": column})),
            "outside the data source's folder",
        ),
        (
            "link",
            reader_job(json!({"datasource": "files", "path": ["link.csv"], "column": column})),
            "leads (through a symbolic link) outside",
        ),
        (
            "noroot",
            reader_job(json!({"path": [secret_path], "column": column})),
            "outside this agent's file roots",
        ),
        (
            "writer",
            json!({"job": {"content": [{
                "reader": {"name": "streamreader", "parameter": {"column": [{"type": "long", "value": "1"}], "sliceRecordCount": 1}},
                "writer": {"name": "txtfilewriter", "parameter": {"datasource": "files", "path": "../../outside/made", "fileName": "x.csv"}}}]}})
            .to_string(),
            "contains \"..\"",
        ),
    ];
    for (name, job, expected) in cases {
        let file = c.job_file(&format!("{name}.json"), &job)?;
        c.ferry(&["task", "create", name, "--group", "rg", "--file", &file])?
            .ok()?;
        let run = c.ferry(&["task", "run", name, "--follow"])?;
        assert_eq!(run.code, 1, "{name}: {run:?}");
        assert!(
            run.stdout.contains("finished: failed"),
            "{name}: {}",
            run.stdout
        );
        assert!(run.stdout.contains(expected), "{name}: {}", run.stdout);
        assert!(
            !run.stdout.contains(SECRET),
            "{name} read outside: {}",
            run.stdout
        );
        let id = Cluster::instance_id(&run)?;
        let logs = c.ferry(&["instance", "logs", &id])?;
        assert!(!logs.stdout.contains(SECRET), "{name}: {}", logs.stdout);
    }
    let mut outside_now: Vec<_> = std::fs::read_dir(&outside)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    outside_now.sort();
    assert_eq!(outside_now, vec![std::ffi::OsString::from("secret.csv")]);
    assert!(!c.path("made").exists());

    // Inside the folder the same agent reads as before.
    let ok = c.job_file(
        "ok.json",
        &reader_job(json!({"datasource": "files", "path": ["in.csv"], "skipHeader": true, "column": column})),
    )?;
    c.ferry(&["task", "create", "ok", "--group", "rg", "--file", &ok])?
        .ok()?;
    c.ferry(&["task", "run", "ok", "--follow"])?.ok()?;
    Ok(())
}
