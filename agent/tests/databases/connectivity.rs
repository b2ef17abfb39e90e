//! `ferry datasource test` from the agent's side: real logins against PostgreSQL and MariaDB, and
//! every failure class an operator acts on (dns, refused, timeout, auth, missing database, missing
//! table, read privilege, write privilege), checked against the real servers.

use crate::support::*;
use ferry_agent::connectivity::test;
use mysql_async::prelude::Queryable;

fn cfg(kind: &str, port: u16, db: &str, user: &str, password: &str) -> String {
    serde_json::json!({"type": kind, "host": "127.0.0.1", "port": port, "database": db,
                       "username": user, "password": password})
    .to_string()
}

fn unique_user() -> String {
    format!(
        "ferry_u_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifies_login_failures() {
    let ok = test("1".into(), &cfg("mysql", 3306, "test", MY_USER, ""), "", "").await;
    assert!(ok.reachable, "{}", ok.message);
    assert!(ok.message.contains("logged in to test"), "{}", ok.message);

    let auth = test(
        "2".into(),
        &cfg("mysql", 3306, "test", "ferry_nobody", "secret-pw"),
        "",
        "",
    )
    .await;
    assert_eq!(auth.error_kind, "auth", "{}", auth.message);
    assert!(!auth.message.contains("secret-pw"));

    let db = test(
        "3".into(),
        &cfg("mysql", 3306, "ferry_no_such_db", MY_USER, ""),
        "",
        "",
    )
    .await;
    assert_eq!(db.error_kind, "missing_database", "{}", db.message);

    let ok = test(
        "4".into(),
        &cfg("postgresql", 5432, "test", PG_USER, ""),
        "",
        "",
    )
    .await;
    assert!(ok.reachable, "{}", ok.message);

    let db = test(
        "5".into(),
        &cfg("postgresql", 5432, "ferry_no_such_db", PG_USER, ""),
        "",
        "",
    )
    .await;
    assert_eq!(db.error_kind, "missing_database", "{}", db.message);

    let role = test(
        "6".into(),
        &cfg("postgresql", 5432, "test", "ferry_no_such_role", ""),
        "",
        "",
    )
    .await;
    assert_eq!(role.error_kind, "auth", "{}", role.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifies_network_failures() -> anyhow::Result<()> {
    let dns =
        serde_json::json!({"type": "postgresql", "host": "no-such-host.invalid", "port": 5432,
                                 "database": "test", "username": PG_USER})
        .to_string();
    let r = test("d".into(), &dns, "", "").await;
    assert_eq!(r.error_kind, "dns", "{}", r.message);

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let r = test("r".into(), &cfg("mysql", port, "test", MY_USER, ""), "", "").await;
    assert_eq!(r.error_kind, "refused", "{}", r.message);

    // A server that accepts the connection and never answers the login: the test gives up with
    // "timeout" instead of hanging.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = silent.local_addr()?.port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let r = test(
        "t".into(),
        &cfg("postgresql", port, "test", PG_USER, ""),
        "",
        "",
    )
    .await;
    assert_eq!(r.error_kind, "timeout", "{}", r.message);
    let r = test(
        "t2".into(),
        &cfg("mysql", port, "test", MY_USER, ""),
        "",
        "",
    )
    .await;
    assert_eq!(r.error_kind, "timeout", "{}", r.message);
    hold.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_table_and_privileges() -> anyhow::Result<()> {
    let db = PgDb::create().await?;
    let user = unique_user();
    let c = db.client().await?;
    c.batch_execute(&format!(
        "CREATE TABLE t (id int); CREATE TABLE hidden (id int);
         CREATE ROLE {user} LOGIN; GRANT SELECT ON t TO {user};"
    ))
    .await?;
    let as_user = cfg("postgresql", 5432, &db.name, &user, "");
    let as_owner = cfg("postgresql", 5432, &db.name, PG_USER, "");
    let results = [
        test("1".into(), &as_owner, "t", "both").await,
        test("2".into(), &as_owner, "missing", "read").await,
        test("3".into(), &as_user, "hidden", "read").await,
        test("4".into(), &as_user, "t", "write").await,
        test("5".into(), &as_user, "t", "read").await,
    ];
    let kinds: Vec<&str> = results.iter().map(|r| r.error_kind.as_str()).collect();
    drop(c);
    db.drop_db().await?;
    let (ac, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port=5432 user={PG_USER} dbname=test"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    ac.batch_execute(&format!("DROP ROLE IF EXISTS {user}"))
        .await?;
    assert_eq!(
        kinds,
        vec!["", "missing_table", "read_privilege", "write_privilege", ""],
        "{results:?}"
    );
    assert!(
        results[0].message.contains("readable, writable"),
        "{}",
        results[0].message
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_table_and_privileges() -> anyhow::Result<()> {
    let db = MyDb::create().await?;
    let user = unique_user();
    let mut c = db.conn().await?;
    c.query_drop("CREATE TABLE t (id int)").await?;
    c.query_drop("CREATE TABLE hidden (id int)").await?;
    for host in ["%", "localhost", "127.0.0.1"] {
        c.query_drop(format!(
            "CREATE USER '{user}'@'{host}' IDENTIFIED BY 'pw-1'"
        ))
        .await?;
        c.query_drop(format!(
            "GRANT SELECT ON {}.t TO '{user}'@'{host}'",
            db.name
        ))
        .await?;
    }
    let as_user = cfg("mysql", 3306, &db.name, &user, "pw-1");
    let as_owner = cfg("mysql", 3306, &db.name, MY_USER, "");
    let results = [
        test("1".into(), &as_owner, "t", "both").await,
        test("2".into(), &as_owner, "missing", "read").await,
        test("3".into(), &as_user, "hidden", "read").await,
        test("4".into(), &as_user, "t", "write").await,
        test("5".into(), &as_user, "t", "read").await,
    ];
    let kinds: Vec<&str> = results.iter().map(|r| r.error_kind.as_str()).collect();
    for host in ["%", "localhost", "127.0.0.1"] {
        c.query_drop(format!("DROP USER IF EXISTS '{user}'@'{host}'"))
            .await?;
    }
    drop(c);
    db.drop_db().await?;
    assert_eq!(
        kinds,
        vec!["", "missing_table", "read_privilege", "write_privilege", ""],
        "{results:?}"
    );
    // The probe inserted nothing.
    assert!(
        results[0].message.contains("readable, writable"),
        "{}",
        results[0].message
    );
    Ok(())
}
