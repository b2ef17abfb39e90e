//! `ferry datasource test` from the agent's side: real logins, and failures classified the way
//! an operator thinks about them.

use crate::support::*;
use ferry_agent::connectivity::test;

fn cfg(kind: &str, port: u16, db: &str, user: &str, password: &str) -> String {
    serde_json::json!({"type": kind, "host": "127.0.0.1", "port": port, "database": db,
                       "username": user, "password": password})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifies_login_failures() {
    let ok = test("1".into(), &cfg("mysql", 3306, "test", MY_USER, "")).await;
    assert!(ok.reachable, "{}", ok.message);
    assert!(ok.message.contains("logged in to test"), "{}", ok.message);

    let auth = test(
        "2".into(),
        &cfg("mysql", 3306, "test", "ferry_nobody", "secret-pw"),
    )
    .await;
    assert_eq!(auth.error_kind, "auth", "{}", auth.message);
    assert!(!auth.message.contains("secret-pw"));

    let db = test(
        "3".into(),
        &cfg("mysql", 3306, "ferry_no_such_db", MY_USER, ""),
    )
    .await;
    assert_eq!(db.error_kind, "missing_database", "{}", db.message);

    let ok = test("4".into(), &cfg("postgresql", 5432, "test", PG_USER, "")).await;
    assert!(ok.reachable, "{}", ok.message);

    let db = test(
        "5".into(),
        &cfg("postgresql", 5432, "ferry_no_such_db", PG_USER, ""),
    )
    .await;
    assert_eq!(db.error_kind, "missing_database", "{}", db.message);

    let role = test(
        "6".into(),
        &cfg("postgresql", 5432, "test", "ferry_no_such_role", ""),
    )
    .await;
    assert_eq!(role.error_kind, "auth", "{}", role.message);
}
