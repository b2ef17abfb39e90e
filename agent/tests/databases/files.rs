//! Text files as DataX users have them: gzip-compressed, GBK-encoded, round-tripped through a
//! database, with unrepresentable characters reported as dirty records.

use crate::support::*;
use serde_json::json;
use std::io::Write;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gbk_gzip_file_to_postgresql_and_back() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pg = PgDb::create().await?;
    let result = async {
        // A GBK file, gzip-compressed, as exported by many Chinese systems.
        let text = "1\t张三\t北京\n2\t李四\t上海\n3\t\\N\t广州\n";
        let (gbk, _, bad) = encoding_rs::GBK.encode(text);
        assert!(!bad);
        let input = dir.path().join("in.txt.gz");
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&input)?, flate2::Compression::default());
        gz.write_all(&gbk)?;
        gz.finish()?;
        pg.client()
            .await?
            .batch_execute("CREATE TABLE people (id integer, name text, city text)")
            .await?;
        let reader = json!({"name": "txtfilereader", "parameter": {
            "path": [input.display().to_string()], "encoding": "GBK", "compress": "gzip",
            "fieldDelimiter": "\t", "column": [{"index": 0, "type": "long"}, {"index": 1, "type": "string"}, {"index": 2, "type": "string"}]}});
        let (r, log) = run_job(&job(1, Some(0), reader, pg_writer(&pg, "people", &["id", "name", "city"], json!({})))).await;
        r.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
        let rows = pg.client().await?.query("SELECT id, name, city FROM people ORDER BY id", &[]).await?;
        let got: Vec<(i32, Option<String>, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        assert_eq!(got[0], (1, Some("张三".into()), "北京".into()));
        assert_eq!(got[2].1, None, "\\N is NULL");

        // Back out as GBK + gzip; a row with a character GBK lacks is dirty, not mangled.
        pg.client().await?.batch_execute("INSERT INTO people VALUES (4, 'emoji 🚢', 'x')").await?;
        let reader = pg_reader(&pg, "people", &["id", "name", "city"], None);
        let writer = json!({"name": "txtfilewriter", "parameter": {
            "path": dir.path().join("out").display().to_string(), "fileName": "people.txt.gz",
            "encoding": "GBK", "compress": "gzip", "fieldDelimiter": "\t", "fileFormat": "text"}});
        let (r, log) = run_job(&job(1, Some(1), reader, writer)).await;
        let s = r.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
        assert_eq!((s.records_written, s.dirty_records), (3, 1));
        assert!(log.iter().any(|l| l.contains("cannot represent")), "{log:?}");
        let mut raw = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(dir.path().join("out/people.txt.gz"))?),
            &mut raw,
        )?;
        let (decoded, _, bad) = encoding_rs::GBK.decode(&raw);
        assert!(!bad);
        let mut lines: Vec<&str> = decoded.lines().collect();
        lines.sort();
        assert_eq!(lines, vec!["1\t张三\t北京", "2\t李四\t上海", "3\t\\N\t广州"]);
        anyhow::Ok(())
    }
    .await;
    pg.drop_db().await?;
    result
}
