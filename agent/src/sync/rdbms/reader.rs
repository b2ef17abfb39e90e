//! The reader of any [`Driver`]: connects to the first `jdbcUrl` that answers, cuts each table
//! into splits (`querySql` entries are one split each), and reads every split on a connection of
//! its own with the job's session.

use super::{Driver, TableSplit, plan_table};
use crate::sync::plugin::{
    BoxFuture, JobLog, ReadSplit, Reader, Result, RowSink, SyncError, TargetInfo,
};
use ferry_common::job::RdbmsReader;
use ferry_common::secret::Secret;
use std::marker::PhantomData;
use std::sync::Arc;

/// `mysqlreader`, `postgresqlreader`, …: one per driver.
pub struct DbReader<D> {
    params: RdbmsReader,
    driver: PhantomData<fn() -> D>,
}

impl<D: Driver> DbReader<D> {
    pub fn new(params: RdbmsReader) -> Self {
        Self {
            params,
            driver: PhantomData,
        }
    }
}

/// Where and as whom a split connects.
struct Login {
    url: String,
    user: String,
    password: Secret,
    session: Vec<String>,
}

impl Login {
    async fn connect<D: Driver>(&self) -> std::result::Result<D::Conn, String> {
        D::connect(&self.url, &self.user, &self.password, &self.session).await
    }
}

/// Connects to the first of DataX's `jdbcUrl[]` that answers; the error lists every attempt.
async fn connect_first<D: Driver>(
    urls: &[String],
    user: &str,
    params: &RdbmsReader,
) -> Result<(D::Conn, Arc<Login>)> {
    let mut errors = Vec::new();
    for url in urls {
        let login = Login {
            url: url.clone(),
            user: user.to_string(),
            password: params.password.clone(),
            session: params.session.clone(),
        };
        match login.connect::<D>().await {
            Ok(c) => return Ok((c, Arc::new(login))),
            Err(e) => errors.push(e),
        }
    }
    Err(SyncError::Source(errors.join("; ")))
}

impl<D: Driver> Reader for DbReader<D> {
    fn name(&self) -> &'static str {
        D::READER
    }

    fn splits<'a>(
        &'a self,
        channels: usize,
        log: &'a JobLog,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn ReadSplit>>>> {
        Box::pin(async move {
            let p = &self.params;
            let user = p.username.clone().unwrap_or_default();
            let mut out: Vec<Box<dyn ReadSplit>> = Vec::new();
            for conn in &p.connection {
                let (mut c, login) = connect_first::<D>(&conn.jdbc_url, &user, p).await?;
                let split = |split: TableSplit| {
                    Box::new(DbSplit::<D> {
                        login: login.clone(),
                        split,
                        driver: PhantomData,
                    }) as Box<dyn ReadSplit>
                };
                for q in &conn.query_sql {
                    out.push(split(TableSplit {
                        sql: q.trim().trim_end_matches(';').to_string(),
                        label: "querySql".into(),
                        whole_table: None,
                    }));
                }
                for table in &conn.table {
                    let splits = plan_table(
                        &mut c,
                        &D::default(),
                        table,
                        &p.column,
                        p.where_clause.as_deref(),
                        p.split_pk.as_deref(),
                        channels,
                    )
                    .await
                    .map_err(|e| SyncError::Source(format!("splitting {table}: {e}")))?;
                    if let Some(pk) = &p.split_pk {
                        log.info(format!("{table}: {} split(s) by {pk}", splits.len()));
                    }
                    out.extend(splits.into_iter().map(split));
                }
                D::close(c).await;
            }
            Ok(out)
        })
    }
}

struct DbSplit<D> {
    login: Arc<Login>,
    split: TableSplit,
    driver: PhantomData<fn() -> D>,
}

impl<D: Driver> ReadSplit for DbSplit<D> {
    fn describe(&self) -> String {
        self.split.label.clone()
    }

    fn run<'a>(
        self: Box<Self>,
        sink: &'a mut RowSink,
        target: &'a TargetInfo,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut conn = self
                .login
                .connect::<D>()
                .await
                .map_err(|e| self.split.fail(e))?;
            let read = D::read(&mut conn, &self.split, sink, target).await;
            D::close(conn).await;
            read
        })
    }
}
