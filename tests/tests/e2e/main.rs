//! End-to-end tests: real `ferry-scheduler`, `ferry-agent` and `ferry` processes on ephemeral
//! ports, real files and SQLite databases.

mod access;
mod agents;
mod alerts;
mod console;
mod databases;
mod errors;
mod files;
mod metrics;
mod private_network;
mod relay;
mod replication;
mod resilience;
mod scheduling;
mod sync;
mod tls;

/// A CSV-folder-to-SQLite job over data sources `files` and `wh`.
pub fn csv_to_sqlite_job(file: &str, table: &str) -> String {
    format!(
        r#"{{
  "job": {{
    "setting": {{ "speed": {{ "channel": 2 }}, "errorLimit": {{ "record": 0 }} }},
    "content": [{{
      "reader": {{ "name": "txtfilereader", "parameter": {{
        "datasource": "files", "path": ["{file}"], "skipHeader": true,
        "column": [ {{"index": 0, "type": "long"}}, {{"index": 1, "type": "string"}}, {{"index": 2, "type": "string"}} ]
      }} }},
      "writer": {{ "name": "sqlitewriter", "parameter": {{
        "datasource": "wh", "table": "{table}", "column": ["id", "name", "amount"],
        "preSql": ["CREATE TABLE IF NOT EXISTS @table (id INTEGER PRIMARY KEY, name TEXT, amount TEXT, day TEXT)", "DELETE FROM @table"],
        "postSql": ["UPDATE @table SET day = '${{bizdate}}'"]
      }} }}
    }}]
  }}
}}"#
    )
}
