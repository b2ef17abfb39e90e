//! File roots against generated hostile paths: `..` anywhere, absolute paths elsewhere, chains
//! of symbolic links leading out or staying in, unicode names. A refused path leaves nothing
//! created; an allowed one resolves inside the root.

use super::*;
use crate::sync::plugin::JobLog;
use crate::sync::plugin::{BlockingReader, BlockingWriter};
use crate::sync::txtfile::{TxtFileReader, TxtFileWriter};
use ferry_common::datasource::{CsvFolder, DataSourceConfig};
use proptest::prelude::*;
use std::os::unix::fs::symlink;

/// A root folder and a folder beside it holding a secret file.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn world() -> World {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(root.join("in")).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(root.join("in/data.csv"), "1,inside\n").expect("write");
    std::fs::write(outside.join("secret.csv"), "SECRET-LINE\n").expect("write");
    World {
        _tmp: tmp,
        root,
        outside,
    }
}

/// Every entry under `dir`, so a test can see nothing was created.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p.clone());
                }
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        "[\u{4e00}-\u{4e10}\u{00e9}\u{1F600}a-z]{1,6}",
        Just(".".to_string()),
        Just("in".to_string()),
    ]
}

fn ds_roots(w: &World) -> Roots {
    Roots::new(Some(&w.root.display().to_string()), &[]).expect("roots")
}

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    /// A `..` anywhere in a path is refused for reading and writing, whatever surrounds it,
    /// and nothing is created.
    #[test]
    fn parent_components_are_refused(
        before in prop::collection::vec(segment(), 0..4),
        after in prop::collection::vec(segment(), 0..4),
        ups in 1usize..4,
    ) {
        let w = world();
        let mut p = w.root.clone();
        for s in &before { p.push(s); }
        for _ in 0..ups { p.push(".."); }
        for s in &after { p.push(s); }
        let roots = ds_roots(&w);
        let before_listing = listing(w.root.parent().expect("parent"));
        let read = roots.existing(&p);
        prop_assert!(matches!(&read, Err(m) if m.contains("\"..\"")), "{read:?}");
        let write = roots.folder_to_write(&p);
        prop_assert!(matches!(&write, Err(m) if m.contains("\"..\"")), "{write:?}");
        prop_assert_eq!(listing(w.root.parent().expect("parent")), before_listing);
    }

    /// An absolute path outside the root is refused and creates nothing; one inside (unicode
    /// names included) resolves inside it.
    #[test]
    fn absolute_paths_stay_inside(segs in prop::collection::vec("[a-z\u{4e00}-\u{4e10}\u{00e9}]{1,6}", 1..4)) {
        let w = world();
        let roots = ds_roots(&w);
        let mut elsewhere = w.outside.clone();
        for s in &segs { elsewhere.push(s); }
        let before = listing(&w.outside);
        let write = roots.folder_to_write(&elsewhere);
        prop_assert!(matches!(&write, Err(m) if m.contains("outside")), "{write:?}");
        prop_assert_eq!(listing(&w.outside), before);
        let read = roots.existing(&w.outside.join("secret.csv"));
        prop_assert!(matches!(&read, Err(m) if m.contains("outside")), "{read:?}");

        let mut inside = w.root.clone();
        for s in &segs { inside.push(s); }
        let made = roots.folder_to_write(&inside).map_err(TestCaseError::fail)?;
        let canon_root = w.root.canonicalize().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(made.starts_with(&canon_root));
        prop_assert!(inside.is_dir());
    }

    /// A chain of links inside the root is followed while it stays in and refused once its
    /// end leads out, for a file and for a folder to write into.
    #[test]
    fn symlink_chains(len in 1usize..5, out in any::<bool>(), to_folder in any::<bool>()) {
        let w = world();
        let target = match (out, to_folder) {
            (true, false) => w.outside.join("secret.csv"),
            (true, true) => w.outside.clone(),
            (false, false) => w.root.join("in/data.csv"),
            (false, true) => w.root.join("in"),
        };
        let mut prev = target;
        for i in 0..len {
            let link = w.root.join(format!("link{i}"));
            symlink(&prev, &link).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prev = link;
        }
        let roots = ds_roots(&w);
        let got = if to_folder {
            roots.folder_to_write(&prev.join("new"))
        } else {
            roots.existing(&prev)
        };
        if out {
            prop_assert!(matches!(&got, Err(m) if m.contains("outside")), "{got:?}");
            prop_assert!(!w.outside.join("new").exists());
        } else {
            let canon_root = w.root.canonicalize().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(got.map_err(TestCaseError::fail)?.starts_with(&canon_root));
        }
    }
}

#[test]
fn unconfined_paths_are_untouched() {
    let roots = Roots::default();
    assert!(!roots.confined());
    assert_eq!(
        roots.existing(Path::new("../x")).ok(),
        Some(PathBuf::from("../x"))
    );
}

#[test]
fn datasource_folder_outside_agent_roots_is_refused() {
    let w = world();
    let agent = agent_roots(std::slice::from_ref(&w.outside)).expect("roots");
    let err = Roots::new(Some(&w.root.display().to_string()), &agent).err();
    assert!(
        err.as_deref().is_some_and(|m| m.contains("outside")),
        "{err:?}"
    );
    // An agent root inside the data source's folder narrows it.
    let agent = agent_roots(&[w.root.join("in")]).expect("roots");
    let roots = Roots::new(Some(&w.root.display().to_string()), &agent).expect("roots");
    assert!(roots.existing(&w.root.join("in/data.csv")).is_ok());
    assert!(roots.existing(&w.root.join("in")).is_ok());
    std::fs::write(w.root.join("top.csv"), "x\n").expect("write");
    assert!(roots.existing(&w.root.join("top.csv")).is_err());
}

#[test]
fn writing_through_a_link_is_refused() {
    let w = world();
    let link = w.root.join("out.csv");
    symlink(w.outside.join("secret.csv"), &link).expect("symlink");
    for create_new in [true, false] {
        let err = open_for_write(&link, create_new).err();
        assert!(err.is_some(), "{create_new}");
    }
    assert_eq!(
        std::fs::read_to_string(w.outside.join("secret.csv")).ok(),
        Some("SECRET-LINE\n".into())
    );
}

#[test]
fn file_names_are_plain() {
    assert!(plain_file_name("out.csv").is_ok());
    assert!(plain_file_name("数据.csv").is_ok());
    for bad in ["..", "../x.csv", "a/b.csv", "/etc/passwd", ".", ""] {
        assert!(plain_file_name(bad).is_err(), "{bad}");
    }
}

fn log() -> JobLog {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::mem::forget(rx);
    JobLog::new(tx)
}

/// A job through the data source, as the scheduler resolves it and the agent builds it.
fn resolved(w: &World, reader: serde_json::Value, writer: serde_json::Value) -> JobSpec {
    let text = serde_json::json!({"job": {"content": [{"reader": reader, "writer": writer}]}});
    let folder = w.root.display().to_string();
    JobSpec::parse(&text.to_string())
        .and_then(|j| {
            j.resolve(|_| {
                Some(DataSourceConfig::Csv(CsvFolder {
                    path: folder.clone(),
                }))
            })
        })
        .expect("job")
}

#[test]
fn txtfile_reader_refuses_paths_out_of_its_datasource() {
    let w = world();
    symlink(w.outside.join("secret.csv"), w.root.join("in/link.csv")).expect("symlink");
    let secret = w.outside.join("secret.csv").display().to_string();
    for path in [
        serde_json::json!("../outside/secret.csv"),
        serde_json::json!("in/../../outside/secret.csv"),
        serde_json::json!(secret),
        serde_json::json!("in/link.csv"),
        // A folder holding a link that leads out.
        serde_json::json!("in"),
    ] {
        let job = resolved(
            &w,
            serde_json::json!({"name": "txtfilereader", "parameter": {"datasource": "files", "path": path}}),
            serde_json::json!({"name": "streamwriter", "parameter": {}}),
        );
        let ReaderConfig::TxtFile(p) = job.reader else {
            panic!("txtfile reader")
        };
        let err = TxtFileReader::new(p).splits(1, &log()).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("outside") || text.contains("\"..\""),
            "{path}: {text}"
        );
    }
}

#[test]
fn txtfile_writer_creates_nothing_out_of_its_datasource() {
    let w = world();
    symlink(&w.outside, w.root.join("away")).expect("symlink");
    let outside = w.outside.display().to_string();
    let cases = [
        serde_json::json!({"path": "../outside", "fileName": "x.csv"}),
        serde_json::json!({"path": "in/../../outside/new", "fileName": "x.csv"}),
        serde_json::json!({"path": outside, "fileName": "x.csv"}),
        serde_json::json!({"path": "away/new", "fileName": "x.csv"}),
        serde_json::json!({"path": "in", "fileName": "../../outside/x.csv"}),
    ];
    let before = listing(&w.outside);
    for params in cases {
        let mut params = params;
        params["datasource"] = "files".into();
        let job = resolved(
            &w,
            serde_json::json!({"name": "streamreader", "parameter": {"column": [], "sliceRecordCount": 1}}),
            serde_json::json!({"name": "txtfilewriter", "parameter": params}),
        );
        let WriterConfig::TxtFile(p) = job.writer else {
            panic!("txtfile writer")
        };
        let err = TxtFileWriter::new(p, "att-1").prepare(&log()).err();
        assert!(err.is_some(), "{params}");
        assert_eq!(listing(&w.outside), before, "{params}");
    }
    // The same writer inside its folder works.
    let job = resolved(
        &w,
        serde_json::json!({"name": "streamreader", "parameter": {"column": [], "sliceRecordCount": 1}}),
        serde_json::json!({"name": "txtfilewriter", "parameter": {"datasource": "files", "path": "sub", "fileName": "ok.csv"}}),
    );
    let WriterConfig::TxtFile(p) = job.writer else {
        panic!("txtfile writer")
    };
    assert!(TxtFileWriter::new(p, "att-2").prepare(&log()).is_ok());
}

#[test]
fn agent_roots_confine_jobs_without_a_datasource() {
    let w = world();
    let agent = agent_roots(std::slice::from_ref(&w.root)).expect("roots");
    let secret = w.outside.join("secret.csv").display().to_string();
    let text = serde_json::json!({"job": {"content": [{
        "reader": {"name": "txtfilereader", "parameter": {"path": secret}},
        "writer": {"name": "streamwriter", "parameter": {}}}]}});
    let mut job = JobSpec::parse(&text.to_string()).expect("job");
    confine_job(&mut job, &agent).expect("confine");
    let ReaderConfig::TxtFile(p) = job.reader else {
        panic!("txtfile reader")
    };
    let text = TxtFileReader::new(p)
        .splits(1, &log())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(text.contains("this agent's file roots"), "{text}");

    let db = w.outside.join("new.db").display().to_string();
    let text = serde_json::json!({"job": {"content": [{
        "reader": {"name": "streamreader", "parameter": {"column": [], "sliceRecordCount": 1}},
        "writer": {"name": "sqlitewriter", "parameter": {"path": db, "table": "t", "column": ["a"]}}}]}});
    let mut job = JobSpec::parse(&text.to_string()).expect("job");
    let err = confine_job(&mut job, &agent).err();
    assert!(err.is_some_and(|m| m.contains("outside")));
    assert!(!w.outside.join("new.db").exists());
}
