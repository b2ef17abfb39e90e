//! The database reader and writer skeleton: everything `mysqlreader`/`mysqlwriter` and
//! `postgresqlreader`/`postgresqlwriter` share, over a small per-database [`Driver`].
//!
//! The skeleton owns what DataX's RDBMS plugins have in common: trying each `jdbcUrl` in turn,
//! the job's `session` statements on every connection, cutting tables by `splitPk` ([`split`]),
//! `preSql`/`postSql` with `@table`, one transaction per writer channel, segments of rows kept
//! until the database confirms them, and the hunt for the rows a refused segment holds (halving
//! behind savepoints) so each refused row becomes a dirty record and every other row is written.
//! A driver supplies the connection, its own read path and bulk write path (PostgreSQL's binary
//! COPY, MySQL's LOAD DATA), and how values convert. A new database is one driver file.
//!
//! # Layout
//! - [`split`]: `splitPk` planning over [`SplitQueries`].
//! - [`reader`]: [`DbReader`], the `Reader` of any driver.
//! - [`writer`]: [`DbWriter`], the `Writer` of any driver, with the segment and replay logic.

pub mod reader;
pub mod split;
pub mod writer;

pub use reader::DbReader;
pub use split::{SplitQueries, TableSplit, plan_table};
pub use writer::DbWriter;

use super::plugin::{JobLog, RawBatch, Result, RowSink, SyncError, TargetInfo};
use super::value::Row;
use ferry_common::job::RdbmsWriter;
use ferry_common::secret::Secret;
use std::future::Future;

/// One database: how to connect, read a split, learn a target and open a bulk channel. The
/// skeleton calls these from async code; nothing here may block.
pub trait Driver: Dialect + Default + Send + Sync + 'static {
    /// The plugin names, as in DataX job files.
    const READER: &'static str;
    const WRITER: &'static str;
    /// A connection with its session set up; it also answers the split-planning queries.
    type Conn: SplitQueries + Send;
    /// What the writer learns about the target in `prepare`, shared by all channels.
    type Target: Send + Sync + 'static;
    /// A writer channel: one connection inside one transaction.
    type Channel: BulkChannel;

    /// Connects and sets the session up: the driver's own settings, then the job's `session`
    /// statements (then whatever the driver must re-assert after them).
    fn connect(
        url: &str,
        user: &str,
        password: &Secret,
        session: &[String],
    ) -> impl Future<Output = std::result::Result<Self::Conn, String>> + Send;

    /// Runs one statement of the job's own SQL (`preSql`, `postSql`) or a transaction command.
    fn execute(
        conn: &mut Self::Conn,
        sql: &str,
    ) -> impl Future<Output = std::result::Result<(), String>> + Send;

    /// Closes a connection politely.
    fn close(conn: Self::Conn) -> impl Future<Output = ()> + Send;

    /// Reads one split into `sink`: rows that cannot be converted go to [`RowSink::dirty`];
    /// errors about the split are made with [`TableSplit::fail`]. `target` lets a reader pick a
    /// pass-through path when the writer takes its own wire format.
    fn read(
        conn: &mut Self::Conn,
        split: &TableSplit,
        sink: &mut RowSink,
        target: &TargetInfo,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Learns the target table (`table` already quoted) after `preSql`: its columns and their
    /// types; logs the write path it will take.
    fn target(
        conn: &mut Self::Conn,
        params: &RdbmsWriter,
        table: &str,
        log: &JobLog,
    ) -> impl Future<Output = Result<Self::Target>> + Send;

    /// What readers may know of the target.
    fn target_info(target: &Self::Target) -> TargetInfo;

    /// Makes a channel of a connection whose transaction has begun; `index` tells channels
    /// apart (PostgreSQL names its staging table by it).
    fn channel(
        conn: Self::Conn,
        target: &Self::Target,
        params: &RdbmsWriter,
        index: usize,
    ) -> impl Future<Output = Result<Self::Channel>> + Send;
}

/// Why the database refused rows: the reason as it words it, and the column when it names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub column: Option<String>,
}

/// A row the writer cannot send: the column at fault, why, and the row as far as it was
/// converted, for the dirty-record log.
pub struct BadRow {
    pub column: Option<String>,
    pub reason: String,
    pub row: Row,
}

/// A writer channel's connection in its transaction, and the database's bulk path. The skeleton
/// ([`writer`]) calls `push` for each converted row of a segment and `end` when the segment is
/// full, behind a savepoint it sets; when `end` answers a refusal it rolls back and calls `part`
/// on ever smaller pieces to find the refused rows.
pub trait BulkChannel: Send + 'static {
    /// A row converted for the target, kept until the database confirms it.
    type Row: Send + Sync + 'static;

    /// How many columns a row must have.
    fn width(&self) -> usize;
    /// Converts (and checks) a row for the target.
    fn convert(&self, row: Row) -> std::result::Result<Self::Row, BadRow>;
    /// The row's size for statistics.
    fn size(row: &Self::Row) -> u64;
    /// What the row holds in memory, which bounds a segment (its size by default).
    fn held(row: &Self::Row) -> u64 {
        Self::size(row)
    }
    /// The row in the column model, for the dirty-record log.
    fn shown(&self, row: &Self::Row) -> Row;
    /// Whether a segment of `rows` rows holding `bytes` bytes is complete.
    fn full(&self, rows: usize, bytes: u64) -> bool;

    /// Runs a statement on the channel's connection (savepoints, COMMIT); the error is the
    /// database's text.
    fn execute(
        &mut self,
        sql: &str,
    ) -> impl Future<Output = std::result::Result<(), String>> + Send;
    /// Adds a row to the segment's bulk statement, starting one if needed; `Ok(Err(reason))`
    /// when this row cannot be encoded (it is dirty; the segment goes on).
    fn push(
        &mut self,
        row: &Self::Row,
    ) -> impl Future<Output = Result<std::result::Result<(), String>>> + Send;
    /// Adds rows in the driver's own wire format (see [`TargetInfo::raw`]) and answers them as
    /// segment rows.
    fn push_raw(&mut self, batch: RawBatch) -> impl Future<Output = Result<Vec<Self::Row>>> + Send {
        async move {
            Err(SyncError::Internal(format!(
                "this writer cannot take raw {} rows",
                batch.format
            )))
        }
    }
    /// Ends the segment's bulk statement; `rows` are the rows pushed since it began.
    /// `Some` when the database refused the data (the skeleton rolls back and replays).
    fn end(
        &mut self,
        rows: &[Self::Row],
        log: &JobLog,
    ) -> impl Future<Output = Result<Option<Refusal>>> + Send;
    /// Writes `rows` with plain statements, the replay path; `Some` when refused.
    fn part(&mut self, rows: &[Self::Row]) -> impl Future<Output = Result<Option<Refusal>>> + Send;
    /// A line for the log when the channel commits.
    fn summary(&self) -> Option<String> {
        None
    }
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Quotes one identifier part for a dialect.
pub trait Dialect {
    /// Quotes a plain name part the dialect's usual way (PostgreSQL keeps mixed-case ones as
    /// written, so they fold as the author expects).
    fn quote_part(&self, part: &str) -> String;
    /// The identifier quote character (`"` or `` ` ``).
    fn quote_char(&self) -> char;
    /// Quotes `name` as exactly one identifier, whatever it holds.
    fn quote_exact(&self, name: &str) -> String {
        let q = self.quote_char();
        format!("{q}{}{q}", name.replace(q, &format!("{q}{q}")))
    }
}

pub(crate) fn is_plain(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// One part of a dotted name as written: plain, or already quoted (kept as written).
enum Part<'a> {
    Plain(&'a str),
    Quoted(&'a str),
}

/// Splits `schema.table`, `"Mixed"."T.x"` and the like into parts; `None` when the text is not
/// a well-formed sequence of plain or quoted parts joined by dots.
fn parts(name: &str, q: char) -> Option<Vec<Part<'_>>> {
    let mut out = Vec::new();
    let mut rest = name;
    loop {
        if let Some(after) = rest.strip_prefix(q) {
            // A quoted part ends at a quote not doubled.
            let mut end = None;
            let mut chars = after.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                if c == q {
                    if chars.peek().is_some_and(|&(_, n)| n == q) {
                        chars.next();
                    } else {
                        end = Some(i);
                        break;
                    }
                }
            }
            let end = end?;
            let len = q.len_utf8() * 2 + end;
            out.push(Part::Quoted(&rest[..len]));
            rest = &rest[len..];
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            let p = &rest[..end];
            if !is_plain(p) {
                return None;
            }
            out.push(Part::Plain(p));
            rest = &rest[end..];
        }
        match rest.strip_prefix('.') {
            Some(r) => rest = r,
            None if rest.is_empty() => return Some(out),
            None => return None,
        }
    }
}

/// A table or a writer's column: always a name, never SQL. Plain (possibly dotted) parts are
/// quoted per dialect so reserved words work, parts already written quoted are kept, and any
/// other text is quoted as one identifier, so a name like `t"; DROP TABLE x; --` can only ever
/// name a table.
pub fn sql_name(d: &impl Dialect, name: &str) -> String {
    match parts(name, d.quote_char()) {
        Some(ps) => ps
            .iter()
            .map(|p| match p {
                Part::Plain(p) => d.quote_part(p),
                Part::Quoted(q) => (*q).to_string(),
            })
            .collect::<Vec<_>>()
            .join("."),
        None => d.quote_exact(name),
    }
}

/// A reader's column: plain (possibly dotted) names are quoted per dialect; anything else
/// (`"Mixed"`, `count(*)`, `'const'`) is the job author's select expression and passes
/// through unchanged, as in DataX (the reader only ever runs it as one SELECT).
fn select_item(d: &impl Dialect, name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.iter().all(|p| is_plain(p)) {
        parts
            .iter()
            .map(|p| d.quote_part(p))
            .collect::<Vec<_>>()
            .join(".")
    } else {
        name.to_string()
    }
}

/// A writer's column list: names only (see [`sql_name`]).
pub fn column_list(d: &impl Dialect, columns: &[String]) -> String {
    if columns.is_empty() || columns == ["*"] {
        "*".to_string()
    } else {
        columns
            .iter()
            .map(|c| sql_name(d, c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The select list of a reader.
pub fn select_list(d: &impl Dialect, columns: &[String]) -> String {
    if columns.is_empty() || columns == ["*"] {
        "*".to_string()
    } else {
        columns
            .iter()
            .map(|c| select_item(d, c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
