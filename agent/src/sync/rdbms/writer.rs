//! The writer of any [`Driver`]: `preSql`, learning the target, one transaction per channel,
//! segments kept until the database confirms them, dirty rows found by halving, `postSql`.
//!
//! Each segment runs behind a savepoint. When the database refuses a segment (a unique or NOT
//! NULL violation, a value MySQL would change), the savepoint is rolled back and the segment is
//! written again in halves, each behind a savepoint of its own: a refused half is halved again,
//! an accepted one is kept, so k bad rows in n cost about 2·k·log2(n) statements and each
//! refused row alone becomes a dirty record with the database's reason.

use super::{BadRow, BulkChannel, Driver, Refusal, sql_name};
use crate::sync::plugin::{
    BoxFuture, JobLog, RawBatch, Result, Shared, SyncError, TargetInfo, WriteChannel, Writer,
};
use crate::sync::value::Row;
use ferry_common::job::RdbmsWriter;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

/// `mysqlwriter`, `postgresqlwriter`, …: one per driver.
pub struct DbWriter<D: Driver> {
    params: RdbmsWriter,
    target: OnceLock<D::Target>,
}

impl<D: Driver> DbWriter<D> {
    pub fn new(params: RdbmsWriter) -> Self {
        Self {
            params,
            target: OnceLock::new(),
        }
    }

    async fn connect(&self) -> Result<D::Conn> {
        D::connect(
            self.params.target_url(),
            self.params.username.as_deref().unwrap_or_default(),
            &self.params.password,
            &self.params.session,
        )
        .await
        .map_err(SyncError::Target)
    }

    /// Runs the job's `preSql` or `postSql`, `@table` replaced by the quoted target table.
    async fn run_sql(
        &self,
        conn: &mut D::Conn,
        statements: &[String],
        what: &str,
        log: &JobLog,
    ) -> Result<()> {
        let table = sql_name(&D::default(), self.params.target_table());
        for s in statements {
            let sql = s.replace("@table", &table);
            log.info(format!("{what}: {sql}"));
            D::execute(conn, &sql)
                .await
                .map_err(|e| SyncError::Target(format!("{what} \"{sql}\" failed: {e}")))?;
        }
        Ok(())
    }
}

impl<D: Driver> Writer for DbWriter<D> {
    fn name(&self) -> &'static str {
        D::WRITER
    }

    fn prepare<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut conn = self.connect().await?;
            self.run_sql(&mut conn, &self.params.pre_sql, "preSql", log)
                .await?;
            let table = sql_name(&D::default(), self.params.target_table());
            let target = D::target(&mut conn, &self.params, &table, log).await;
            D::close(conn).await;
            let _ = self.target.set(target?);
            Ok(())
        })
    }

    fn target_info(&self) -> TargetInfo {
        self.target.get().map(D::target_info).unwrap_or_default()
    }

    fn parallelism(&self) -> usize {
        usize::MAX
    }

    fn open(&self, index: usize) -> BoxFuture<'_, Result<Box<dyn WriteChannel>>> {
        Box::pin(async move {
            let target = self
                .target
                .get()
                .ok_or_else(|| SyncError::Internal("writer used before prepare".into()))?;
            let mut conn = self.connect().await?;
            D::execute(&mut conn, "START TRANSACTION")
                .await
                .map_err(SyncError::Target)?;
            let ch = D::channel(conn, target, &self.params, index).await?;
            Ok(Box::new(DbChannel {
                ch,
                segment: Vec::new(),
                held: 0,
                open: false,
                name: D::WRITER,
            }) as Box<dyn WriteChannel>)
        })
    }

    fn finish<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.params.post_sql.is_empty() {
                return Ok(());
            }
            let mut conn = self.connect().await?;
            let done = self
                .run_sql(&mut conn, &self.params.post_sql, "postSql", log)
                .await;
            D::close(conn).await;
            done
        })
    }

    fn abort<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, ()> {
        log.warn(format!(
            "{}: open transactions rolled back; uncommitted rows are not in the target",
            D::WRITER
        ));
        Box::pin(async {})
    }
}

/// One writer channel: the driver's bulk channel and the segment it has not confirmed yet.
struct DbChannel<C: BulkChannel> {
    ch: C,
    segment: Vec<C::Row>,
    /// Memory the segment holds ([`BulkChannel::held`]).
    held: u64,
    /// Whether a segment (and its savepoint) is open.
    open: bool,
    name: &'static str,
}

impl<C: BulkChannel> DbChannel<C> {
    async fn exec(&mut self, sql: &str) -> Result<()> {
        self.ch.execute(sql).await.map_err(SyncError::Target)
    }

    async fn begin(&mut self) -> Result<()> {
        if !self.open {
            self.exec("SAVEPOINT ferry_segment").await?;
            self.open = true;
        }
        Ok(())
    }

    /// Adds a converted row to the segment; ends the segment when it is full.
    async fn add(&mut self, row: C::Row, shared: &Shared) -> Result<()> {
        self.begin().await?;
        match self.ch.push(&row).await? {
            Ok(()) => {
                self.held += C::held(&row);
                self.segment.push(row);
            }
            Err(reason) => shared.dirty("writer", &self.ch.shown(&row), None, &reason)?,
        }
        self.end_if_full(shared).await
    }

    async fn end_if_full(&mut self, shared: &Shared) -> Result<()> {
        if self.ch.full(self.segment.len(), self.held) {
            self.end(shared).await?;
        }
        Ok(())
    }

    /// Ends the segment: kept when the database takes it, else rolled back and replayed.
    async fn end(&mut self, shared: &Shared) -> Result<()> {
        if !self.open {
            return Ok(());
        }
        self.open = false;
        self.held = 0;
        let rows = std::mem::take(&mut self.segment);
        match self.ch.end(&rows, &shared.log).await? {
            None => {
                self.exec("RELEASE SAVEPOINT ferry_segment").await?;
                shared.written(rows.len() as u64, rows.iter().map(C::size).sum());
                Ok(())
            }
            Some(_) => {
                self.exec("ROLLBACK TO SAVEPOINT ferry_segment").await?;
                self.replay(&rows, shared).await
            }
        }
    }

    /// Writes a refused set of rows again in halves.
    fn replay<'a>(
        &'a mut self,
        rows: &'a [C::Row],
        shared: &'a Shared,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            if rows.len() > 1 {
                let (a, b) = rows.split_at(rows.len() / 2);
                self.replay_part(a, shared).await?;
                return self.replay_part(b, shared).await;
            }
            self.replay_part(rows, shared).await
        })
    }

    async fn replay_part(&mut self, rows: &[C::Row], shared: &Shared) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.exec("SAVEPOINT ferry_part").await?;
        match self.ch.part(rows).await? {
            None => {
                self.exec("RELEASE SAVEPOINT ferry_part").await?;
                shared.written(rows.len() as u64, rows.iter().map(C::size).sum());
                Ok(())
            }
            Some(Refusal { reason, column }) => {
                self.exec("ROLLBACK TO SAVEPOINT ferry_part").await?;
                match rows {
                    [one] => {
                        shared.dirty("writer", &self.ch.shown(one), column.as_deref(), &reason)
                    }
                    _ => self.replay(rows, shared).await,
                }
            }
        }
    }
}

impl<C: BulkChannel> WriteChannel for DbChannel<C> {
    fn write<'a>(
        &'a mut self,
        rows: Vec<Row>,
        shared: &'a Arc<Shared>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let width = self.ch.width();
            for row in rows {
                if row.len() != width {
                    shared.dirty(
                        "writer",
                        &row,
                        None,
                        &format!(
                            "row has {} fields but the target takes {width} columns",
                            row.len()
                        ),
                    )?;
                    continue;
                }
                match self.ch.convert(row) {
                    Ok(r) => self.add(r, shared).await?,
                    Err(BadRow {
                        column,
                        reason,
                        row,
                    }) => shared.dirty("writer", &row, column.as_deref(), &reason)?,
                }
            }
            Ok(())
        })
    }

    fn write_raw<'a>(
        &'a mut self,
        batch: RawBatch,
        shared: &'a Arc<Shared>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.begin().await?;
            let rows = self.ch.push_raw(batch).await?;
            self.held += rows.iter().map(C::held).sum::<u64>();
            self.segment.extend(rows);
            self.end_if_full(shared).await
        })
    }

    fn commit(mut self: Box<Self>, shared: &Arc<Shared>) -> BoxFuture<'_, Result<()>> {
        let shared = shared.clone();
        Box::pin(async move {
            self.end(&shared).await?;
            if let Some(line) = self.ch.summary() {
                shared.log.info(format!("{} channel: {line}", self.name));
            }
            self.ch
                .execute("COMMIT")
                .await
                .map_err(|e| SyncError::Target(format!("commit failed: {e}")))?;
            self.ch.close().await;
            Ok(())
        })
    }
}
