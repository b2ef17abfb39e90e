//! The job file: DataX job JSON, accepted as-is, with Ferry's short plugin names as aliases.
//!
//! A job is parsed in two steps. First the text becomes a `serde_json::Value`, which reports
//! syntax errors with line and column and, like DataX's parser, keeps the last of a key that
//! appears twice in one object (DataX's own templates do this). Then each part is deserialized into
//! typed parameters with `serde_path_to_error`, so a wrong type or an unknown key names its full
//! path (`job.content[0].reader.parameter.sliceRecordCount`). Nothing runs until the whole job
//! has parsed.
//!
//! DataX quirks kept: numbers given as strings (`"sliceRecordCount": "10"`), empty strings meaning
//! "not set" (`"writeMode": ""`), `path` as a string or an array.

mod datefmt;
mod dbtls;
mod rdbms;
pub mod template;
pub mod wizard;

pub use datefmt::DatePattern;
pub use dbtls::{DbTls, Pem, TlsMode};
pub use rdbms::{DbKind, JdbcUrl, RdbmsReader, RdbmsWriter, ReaderConnection, WriterConnection};

use crate::datasource::DataSourceConfig;
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A parsed, validated job: one reader, one writer, and the settings that bind them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSpec {
    pub setting: Setting,
    pub reader: ReaderConfig,
    pub writer: WriterConfig,
}

/// `job.setting`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Setting {
    #[serde(default)]
    pub speed: Speed,
    #[serde(default)]
    pub error_limit: ErrorLimit,
    /// Ferry: where to append dirty records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty: Option<DirtySetting>,
}

/// `job.setting.dirty`: a file that receives every dirty record as a JSON line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirtySetting {
    #[serde(default, deserialize_with = "de::opt_string")]
    pub path: Option<String>,
}

/// `job.setting.speed`: parallel channels and limits across all of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Speed {
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub channel: Option<u64>,
    /// Bytes per second.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub byte: Option<u64>,
    /// Records per second.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub record: Option<u64>,
}

/// `job.setting.errorLimit`, with DataX's meaning: the job fails when dirty records exceed
/// `record` (so 0 allows none), and when their share exceeds `percentage` at the end.
///
/// Unlike DataX, a job that sets neither allows no dirty record at all: a sync that drops rows
/// must say so in its job file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorLimit {
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub record: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub percentage: Option<f64>,
}

impl ErrorLimit {
    /// How many dirty records the job may have before it fails: `record` when set; no count
    /// limit when only `percentage` is set (it is checked at the end); none at all otherwise.
    pub fn record_limit(&self) -> u64 {
        match (self.record, self.percentage) {
            (Some(n), _) => n,
            (None, Some(_)) => u64::MAX,
            (None, None) => 0,
        }
    }
}

/// The reader side of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "name", content = "parameter")]
pub enum ReaderConfig {
    #[serde(rename = "streamreader")]
    Stream(StreamReader),
    #[serde(rename = "sqlitereader")]
    Sqlite(SqliteReader),
    #[serde(rename = "txtfilereader")]
    TxtFile(TxtFileReader),
    #[serde(rename = "mysqlreader")]
    Mysql(RdbmsReader),
    #[serde(rename = "postgresqlreader")]
    Postgresql(RdbmsReader),
}

/// The writer side of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "name", content = "parameter")]
pub enum WriterConfig {
    #[serde(rename = "streamwriter")]
    Stream(StreamWriter),
    #[serde(rename = "sqlitewriter")]
    Sqlite(SqliteWriter),
    #[serde(rename = "txtfilewriter")]
    TxtFile(TxtFileWriter),
    #[serde(rename = "mysqlwriter")]
    Mysql(RdbmsWriter),
    #[serde(rename = "postgresqlwriter")]
    Postgresql(RdbmsWriter),
}

/// `streamreader`: the same columns repeated `sliceRecordCount` times per channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StreamReader {
    pub column: Vec<StreamColumn>,
    #[serde(deserialize_with = "de::req_u64")]
    pub slice_record_count: u64,
}

/// One generated column of `streamreader`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StreamColumn {
    #[serde(default)]
    pub value: Value,
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    #[serde(default, deserialize_with = "de::opt_date_pattern")]
    pub date_format: Option<DatePattern>,
}

fn default_type() -> String {
    "string".to_string()
}

/// `streamwriter`: counts rows and, with `print`, logs them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StreamWriter {
    #[serde(default, deserialize_with = "de::lenient_bool")]
    pub print: bool,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub encoding: Option<String>,
}

/// `sqlitereader`: a table (with optional column list and `where`) or a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SqliteReader {
    #[serde(default, deserialize_with = "de::opt_string")]
    pub datasource: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub path: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub table: Option<String>,
    #[serde(default)]
    pub column: Vec<String>,
    #[serde(default, rename = "where", deserialize_with = "de::opt_string")]
    pub where_clause: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub query_sql: Option<String>,
}

/// `sqlitewriter`: inserts into an existing table, after `preSql` and before `postSql`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SqliteWriter {
    #[serde(default, deserialize_with = "de::opt_string")]
    pub datasource: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub path: Option<String>,
    pub table: String,
    #[serde(default)]
    pub column: Vec<String>,
    #[serde(default)]
    pub write_mode: WriteMode,
    #[serde(default)]
    pub pre_sql: Vec<String>,
    #[serde(default)]
    pub post_sql: Vec<String>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub batch_size: Option<u64>,
}

/// How a database writer treats a row whose key exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    #[default]
    Insert,
    /// Replace the whole row on a key conflict (MySQL `REPLACE`, SQLite `INSERT OR REPLACE`,
    /// PostgreSQL `ON CONFLICT DO UPDATE` of every column).
    Replace,
    /// Upsert: update the row on a key conflict (MySQL `ON DUPLICATE KEY UPDATE`, PostgreSQL
    /// `ON CONFLICT DO UPDATE`).
    Update,
}

impl<'de> Deserialize<'de> for WriteMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "insert" => Ok(Self::Insert),
            "replace" => Ok(Self::Replace),
            "update" | "upsert" => Ok(Self::Update),
            other => Err(serde::de::Error::custom(format!(
                "unknown writeMode \"{other}\"; expected insert, replace or update"
            ))),
        }
    }
}

/// `txtfilereader`: CSV / delimited text files, or every file of a folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TxtFileReader {
    #[serde(default, deserialize_with = "de::opt_string")]
    pub datasource: Option<String>,
    /// Ferry: the folder every path must stay inside. The scheduler sets it from the data
    /// source, so a job naming `../..`, an absolute path elsewhere or a link leading out of the
    /// data source's folder is refused on the agent before a byte is touched.
    #[serde(
        default,
        deserialize_with = "de::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub root: Option<String>,
    /// Folders the agent may touch at all (its `--file-root`); set by the agent, never read
    /// from the job text.
    #[serde(skip)]
    pub agent_roots: Vec<std::path::PathBuf>,
    #[serde(default, deserialize_with = "de::string_or_vec")]
    pub path: Vec<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub encoding: Option<String>,
    #[serde(default)]
    pub column: Vec<TxtColumn>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub field_delimiter: Option<String>,
    #[serde(default, deserialize_with = "de::lenient_bool")]
    pub skip_header: bool,
    /// `""` is a real value here: empty fields are NULL.
    #[serde(default, deserialize_with = "de::opt_string_keep_empty")]
    pub null_format: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub compress: Option<String>,
    /// Ferry: `csv` (quotes, the default) or `text` (backslash escapes), as the writer wrote it.
    #[serde(default)]
    pub file_format: FileFormat,
    /// Ferry: how `bytes` columns are spelled in the file.
    #[serde(default)]
    pub bytes_encoding: BytesEncoding,
}

/// A column of `txtfilereader`: `"*"` (every field as a string), a field by `index`, or a
/// constant `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TxtColumn {
    All(String),
    Spec(TxtColumnSpec),
}

/// A typed column of `txtfilereader`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxtColumnSpec {
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    #[serde(default, deserialize_with = "de::opt_date_pattern")]
    pub format: Option<DatePattern>,
}

/// `txtfilewriter`: one file `fileName` in folder `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TxtFileWriter {
    #[serde(default, deserialize_with = "de::opt_string")]
    pub datasource: Option<String>,
    /// Ferry: the folder every path must stay inside. The scheduler sets it from the data
    /// source, so a job naming `../..`, an absolute path elsewhere or a link leading out of the
    /// data source's folder is refused on the agent before a byte is touched.
    #[serde(
        default,
        deserialize_with = "de::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub root: Option<String>,
    /// Folders the agent may touch at all (its `--file-root`); set by the agent, never read
    /// from the job text.
    #[serde(skip)]
    pub agent_roots: Vec<std::path::PathBuf>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub path: Option<String>,
    pub file_name: String,
    #[serde(default)]
    pub write_mode: FileWriteMode,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub field_delimiter: Option<String>,
    #[serde(default, deserialize_with = "de::opt_date_pattern")]
    pub date_format: Option<DatePattern>,
    #[serde(default)]
    pub header: Vec<String>,
    /// `""` is a real value here: empty fields are NULL.
    #[serde(default, deserialize_with = "de::opt_string_keep_empty")]
    pub null_format: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub encoding: Option<String>,
    #[serde(default)]
    pub file_format: FileFormat,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub compress: Option<String>,
    /// Ferry: how `bytes` values are spelled in the file.
    #[serde(default)]
    pub bytes_encoding: BytesEncoding,
}

/// How fields are delimited in a text file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// RFC 4180: a field holding the delimiter, a quote, a line break or the `nullFormat` text
    /// is quoted; an unquoted field equal to `nullFormat` is NULL.
    #[default]
    Csv,
    /// No quotes: backslash, tab, line breaks and the delimiter are escaped with a backslash
    /// (`\\`, `\t`, `\n`, `\r`, `\<delimiter>`), as in MySQL's `LOAD DATA` and PostgreSQL's
    /// text `COPY`; a field spelled exactly as `nullFormat` is NULL.
    Text,
}

impl<'de> Deserialize<'de> for FileFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "csv" => Ok(Self::Csv),
            "text" => Ok(Self::Text),
            other => Err(serde::de::Error::custom(format!(
                "unknown fileFormat \"{other}\"; expected csv or text"
            ))),
        }
    }
}

/// How `bytes` values are spelled in a text file, so any byte survives a round trip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BytesEncoding {
    /// Two lowercase hex digits per byte (`deadbeef`); upper case is read too.
    #[default]
    Hex,
    /// Standard base64 with padding (RFC 4648).
    Base64,
}

impl<'de> Deserialize<'de> for BytesEncoding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "hex" => Ok(Self::Hex),
            "base64" => Ok(Self::Base64),
            other => Err(serde::de::Error::custom(format!(
                "unknown bytesEncoding \"{other}\"; expected hex or base64"
            ))),
        }
    }
}

/// DataX's default marker for NULL in text files.
pub const DEFAULT_NULL_FORMAT: &str = "\\N";

/// Whether a `nullFormat` can be told apart from every value in `fileFormat: text`, where
/// there are no quotes: the writer escapes a value that would read as the marker by putting a
/// backslash before one of its plain characters, so the marker needs one that has no escape of
/// its own (`t`, `n`, `r`), or must be something the escaping never produces (`\\N`).
pub fn text_null_format_ok(marker: &str, delimiter: u8) -> bool {
    let mut chars = marker.chars();
    let mut plain_escapable = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\' | 't' | 'n' | 'r') => {}
                Some(d) if d.is_ascii() && d as u8 == delimiter => {}
                // Never written by the escaping: no value can collide with the marker.
                _ => return true,
            },
            '\t' | '\n' | '\r' => return true,
            c if c.is_ascii() && c as u8 == delimiter => return true,
            't' | 'n' | 'r' => {}
            _ => plain_escapable = true,
        }
    }
    plain_escapable
}

/// The one-byte field delimiter a job names (`,` when unset; `\t` spelled out is a tab).
pub fn field_delimiter(d: Option<&str>) -> Result<u8, String> {
    let b = match d {
        None => b',',
        Some("\\t") | Some("\t") => b'\t',
        Some(s) if s.len() == 1 => s.as_bytes()[0],
        Some(s) => {
            return Err(format!(
                "fieldDelimiter \"{s}\" must be a single one-byte character"
            ));
        }
    };
    if matches!(b, b'"' | b'\\' | b'\n' | b'\r') {
        return Err(format!(
            "fieldDelimiter {:?} would be mistaken for quoting, escaping or a line break",
            b as char
        ));
    }
    Ok(b)
}

/// Checks the settings a text file reader and writer share: delimiter, and a `nullFormat` that
/// no value can be mistaken for.
fn check_text_file(
    p: &str,
    delimiter: Option<&str>,
    null_format: Option<&str>,
    format: FileFormat,
) -> Result<()> {
    let delim = field_delimiter(delimiter).map_err(|message| Error::InvalidJob {
        path: format!("{p}.fieldDelimiter"),
        message,
    })?;
    let marker = null_format.unwrap_or(DEFAULT_NULL_FORMAT);
    if format == FileFormat::Text && !text_null_format_ok(marker, delim) {
        return Err(Error::InvalidJob {
            path: format!("{p}.nullFormat"),
            message: format!(
                "\"{marker}\" cannot be told apart from a value in fileFormat \"text\", which has no quotes; use the default \"\\N\" or fileFormat \"csv\""
            ),
        });
    }
    Ok(())
}

/// What `txtfilewriter` does when the file exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FileWriteMode {
    /// Replace the file.
    #[default]
    Truncate,
    Append,
    /// Fail if the file exists.
    NonConflict,
}

impl<'de> Deserialize<'de> for FileWriteMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "truncate" => Ok(Self::Truncate),
            "append" => Ok(Self::Append),
            "nonconflict" => Ok(Self::NonConflict),
            other => Err(serde::de::Error::custom(format!(
                "unknown writeMode \"{other}\"; expected truncate, append or nonConflict"
            ))),
        }
    }
}

const READERS: &[(&str, &str)] = &[
    ("streamreader", "stream"),
    ("stream", "stream"),
    ("sqlitereader", "sqlite"),
    ("sqlite", "sqlite"),
    ("txtfilereader", "txtfile"),
    ("txtfile", "txtfile"),
    ("csvreader", "txtfile"),
    ("csv", "txtfile"),
    ("mysqlreader", "mysql"),
    ("mysql", "mysql"),
    ("postgresqlreader", "postgresql"),
    ("postgresql", "postgresql"),
];
const WRITERS: &[(&str, &str)] = &[
    ("streamwriter", "stream"),
    ("stream", "stream"),
    ("sqlitewriter", "sqlite"),
    ("sqlite", "sqlite"),
    ("txtfilewriter", "txtfile"),
    ("txtfile", "txtfile"),
    ("csvwriter", "txtfile"),
    ("csv", "txtfile"),
    ("mysqlwriter", "mysql"),
    ("mysql", "mysql"),
    ("postgresqlwriter", "postgresql"),
    ("postgresql", "postgresql"),
];
/// DataX plugins Ferry knows by name but does not run in this release.
const PLANNED: &[&str] = &["hdfsreader", "hdfswriter"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoot {
    job: RawJob,
    /// DataX's engine tuning block; Ferry tunes itself and ignores it.
    #[serde(default)]
    #[allow(dead_code)]
    core: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    #[serde(default)]
    setting: Setting,
    content: Vec<RawContent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContent {
    reader: RawPlugin,
    writer: RawPlugin,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    name: String,
    #[serde(default)]
    parameter: Value,
}

fn typed<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{inner}")
        };
        Error::InvalidJob {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

fn known(table: &[(&str, &str)]) -> String {
    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

impl JobSpec {
    /// Parses a job file's text (DataX job JSON or Ferry's aliases) and validates all of it.
    pub fn parse(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::MalformedJson {
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?;
        let root: RawRoot = typed(value, "")?;
        let job = root.job;
        if job.content.len() != 1 {
            return Err(Error::InvalidJob {
                path: "job.content".into(),
                message: format!(
                    "must hold exactly one reader/writer pair, found {}",
                    job.content.len()
                ),
            });
        }
        let mut content = job.content;
        let Some(pair) = content.pop() else {
            return Err(Error::InvalidJob {
                path: "job.content".into(),
                message: "is empty".into(),
            });
        };
        let reader = parse_reader(pair.reader)?;
        let writer = parse_writer(pair.writer)?;
        Ok(Self {
            setting: job.setting,
            reader,
            writer,
        })
    }

    /// The job in DataX's shape with Ferry's canonical plugin names; [`JobSpec::parse`] reads it
    /// back unchanged, which is how a resolved job travels to an agent.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "job": {
                "setting": self.setting,
                "content": [{ "reader": self.reader, "writer": self.writer }],
            }
        })
        .to_string()
    }

    /// Every password written in the job itself (not coming from a data source), so the
    /// scheduler can seal them at rest and open them for dispatch.
    pub fn secrets_mut(&mut self) -> Vec<&mut crate::secret::Secret> {
        let mut out = Vec::new();
        if let ReaderConfig::Mysql(r) | ReaderConfig::Postgresql(r) = &mut self.reader {
            out.push(&mut r.password);
        }
        if let WriterConfig::Mysql(w) | WriterConfig::Postgresql(w) = &mut self.writer {
            out.push(&mut w.password);
        }
        out
    }

    /// The names of the catalog data sources the job refers to.
    pub fn datasources(&self) -> Vec<String> {
        self.reader_datasource()
            .into_iter()
            .chain(self.writer_datasource())
            .collect()
    }

    /// The catalog data source the reader names, if any.
    pub fn reader_datasource(&self) -> Option<String> {
        match &self.reader {
            ReaderConfig::Stream(_) => None,
            ReaderConfig::Sqlite(r) => r.datasource.clone(),
            ReaderConfig::TxtFile(r) => r.datasource.clone(),
            ReaderConfig::Mysql(r) | ReaderConfig::Postgresql(r) => r.datasource.clone(),
        }
    }

    /// The catalog data source the writer names, if any.
    pub fn writer_datasource(&self) -> Option<String> {
        match &self.writer {
            WriterConfig::Stream(_) => None,
            WriterConfig::Sqlite(w) => w.datasource.clone(),
            WriterConfig::TxtFile(w) => w.datasource.clone(),
            WriterConfig::Mysql(w) | WriterConfig::Postgresql(w) => w.datasource.clone(),
        }
    }

    /// The job as the reader leg of a two-group sync receives it: the writer is replaced by a
    /// placeholder that names nothing, so no connection field or password of the target ever
    /// reaches the reader's agent (and the reader leg never opens the target).
    pub fn reader_half(&self) -> Self {
        Self {
            setting: self.setting.clone(),
            reader: self.reader.clone(),
            writer: WriterConfig::Stream(StreamWriter::default()),
        }
    }

    /// The job as the writer leg of a two-group sync receives it: the reader is replaced by a
    /// placeholder that names nothing (see [`JobSpec::reader_half`]).
    pub fn writer_half(&self) -> Self {
        Self {
            setting: self.setting.clone(),
            reader: ReaderConfig::Stream(StreamReader {
                column: Vec::new(),
                slice_record_count: 0,
            }),
            writer: self.writer.clone(),
        }
    }

    /// Fills connection fields from the catalog for every `"datasource": name`; relative paths
    /// in the job are taken inside the data source's folder.
    pub fn resolve(mut self, lookup: impl Fn(&str) -> Option<DataSourceConfig>) -> Result<Self> {
        let find = |name: &str| lookup(name).ok_or_else(|| Error::DataSourceNotFound(name.into()));
        let mismatch = |name: &str, actual: &DataSourceConfig, expected: &str, path: &str| {
            Error::DataSourceKindMismatch {
                name: name.to_string(),
                actual: actual.kind().to_string(),
                expected: expected.to_string(),
                path: path.to_string(),
            }
        };
        let kind = match &self.reader {
            ReaderConfig::Postgresql(_) => DbKind::Postgresql,
            _ => DbKind::Mysql,
        };
        let wkind = match &self.writer {
            WriterConfig::Postgresql(_) => DbKind::Postgresql,
            _ => DbKind::Mysql,
        };
        const RP: &str = "job.content[0].reader.parameter.datasource";
        const WP: &str = "job.content[0].writer.parameter.datasource";
        match &mut self.reader {
            ReaderConfig::Stream(_) => {}
            ReaderConfig::Sqlite(r) => {
                if let Some(name) = &r.datasource {
                    match find(name)? {
                        DataSourceConfig::Sqlite(f) => r.path = Some(f.path),
                        other => return Err(mismatch(name, &other, "sqlite", RP)),
                    }
                }
            }
            ReaderConfig::TxtFile(r) => {
                if let Some(name) = &r.datasource {
                    match find(name)? {
                        DataSourceConfig::Csv(f) => {
                            r.path = if r.path.is_empty() {
                                vec![f.path.clone()]
                            } else {
                                r.path.iter().map(|p| join(&f.path, p)).collect()
                            };
                            r.root = Some(f.path);
                        }
                        other => return Err(mismatch(name, &other, "csv", RP)),
                    }
                }
            }
            ReaderConfig::Mysql(r) | ReaderConfig::Postgresql(r) => {
                if let Some(name) = &r.datasource {
                    match (kind, find(name)?) {
                        (DbKind::Mysql, DataSourceConfig::Mysql(c)) => {
                            r.apply_datasource(DbKind::Mysql, &c)
                        }
                        (DbKind::Postgresql, DataSourceConfig::Postgresql(c)) => {
                            r.apply_datasource(DbKind::Postgresql, &c)
                        }
                        (k, other) => return Err(mismatch(name, &other, k.as_str(), RP)),
                    }
                }
            }
        }
        match &mut self.writer {
            WriterConfig::Stream(_) => {}
            WriterConfig::Sqlite(w) => {
                if let Some(name) = &w.datasource {
                    match find(name)? {
                        DataSourceConfig::Sqlite(f) => w.path = Some(f.path),
                        other => return Err(mismatch(name, &other, "sqlite", WP)),
                    }
                }
            }
            WriterConfig::TxtFile(w) => {
                if let Some(name) = &w.datasource {
                    match find(name)? {
                        DataSourceConfig::Csv(f) => {
                            w.path = Some(match &w.path {
                                Some(p) => join(&f.path, p),
                                None => f.path.clone(),
                            });
                            w.root = Some(f.path);
                        }
                        other => return Err(mismatch(name, &other, "csv", WP)),
                    }
                }
            }
            WriterConfig::Mysql(w) | WriterConfig::Postgresql(w) => {
                if let Some(name) = &w.datasource {
                    match (wkind, find(name)?) {
                        (DbKind::Mysql, DataSourceConfig::Mysql(c)) => {
                            w.apply_datasource(DbKind::Mysql, &c)
                        }
                        (DbKind::Postgresql, DataSourceConfig::Postgresql(c)) => {
                            w.apply_datasource(DbKind::Postgresql, &c)
                        }
                        (k, other) => return Err(mismatch(name, &other, k.as_str(), WP)),
                    }
                }
            }
        }
        self.check_locations()?;
        Ok(self)
    }

    /// Every reader and writer knows where its data is, from the job or a data source.
    fn check_locations(&self) -> Result<()> {
        let missing = |path: &str, what: &str| Error::InvalidJob {
            path: path.to_string(),
            message: format!("{what} is missing: set it or name a \"datasource\""),
        };
        match &self.reader {
            ReaderConfig::Sqlite(r) if r.path.is_none() => {
                return Err(missing("job.content[0].reader.parameter.path", "path"));
            }
            ReaderConfig::TxtFile(r) if r.path.is_empty() => {
                return Err(missing("job.content[0].reader.parameter.path", "path"));
            }
            ReaderConfig::Mysql(r) | ReaderConfig::Postgresql(r) => {
                r.check("job.content[0].reader.parameter")?;
            }
            _ => {}
        }
        match &self.writer {
            WriterConfig::Sqlite(w) if w.path.is_none() => {
                Err(missing("job.content[0].writer.parameter.path", "path"))
            }
            WriterConfig::TxtFile(w) if w.path.is_none() => {
                Err(missing("job.content[0].writer.parameter.path", "path"))
            }
            WriterConfig::Mysql(w) | WriterConfig::Postgresql(w) => {
                w.check("job.content[0].writer.parameter")
            }
            _ => Ok(()),
        }
    }
}

/// serde_json appends " at line L column C"; the error already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn join(base: &str, rel: &str) -> String {
    if rel.starts_with('/') {
        rel.to_string()
    } else {
        std::path::Path::new(base)
            .join(rel)
            .to_string_lossy()
            .into_owned()
    }
}

fn plugin_kind<'a>(
    table: &'a [(&'a str, &'a str)],
    role: &'static str,
    name: &str,
    path: &str,
) -> Result<&'a str> {
    let lower = name.trim().to_ascii_lowercase();
    if let Some((_, kind)) = table.iter().find(|(n, _)| *n == lower) {
        return Ok(kind);
    }
    if PLANNED.contains(&lower.as_str()) {
        return Err(Error::UnsupportedPlugin {
            name: name.to_string(),
            path: path.to_string(),
        });
    }
    Err(Error::UnknownPlugin {
        role,
        name: name.to_string(),
        path: path.to_string(),
        known: known(table),
    })
}

fn parse_reader(raw: RawPlugin) -> Result<ReaderConfig> {
    const P: &str = "job.content[0].reader.parameter";
    let kind = plugin_kind(READERS, "reader", &raw.name, "job.content[0].reader.name")?;
    Ok(match kind {
        "stream" => ReaderConfig::Stream(typed(raw.parameter, P)?),
        "sqlite" => {
            let r: SqliteReader = typed(raw.parameter, P)?;
            if r.table.is_none() && r.query_sql.is_none() {
                return Err(Error::InvalidJob {
                    path: P.into(),
                    message: "set \"table\" or \"querySql\"".into(),
                });
            }
            ReaderConfig::Sqlite(r)
        }
        "mysql" | "postgresql" => {
            let mut r: RdbmsReader = typed(raw.parameter, P)?;
            r.normalize();
            if kind == "mysql" {
                ReaderConfig::Mysql(r)
            } else {
                ReaderConfig::Postgresql(r)
            }
        }
        _ => {
            let r: TxtFileReader = typed(raw.parameter, P)?;
            check_compress(r.compress.as_deref(), P)?;
            check_encoding(r.encoding.as_deref(), P)?;
            check_text_file(
                P,
                r.field_delimiter.as_deref(),
                r.null_format.as_deref(),
                r.file_format,
            )?;
            for (i, c) in r.column.iter().enumerate() {
                if let TxtColumn::All(s) = c
                    && s != "*"
                {
                    return Err(Error::InvalidJob {
                        path: format!("{P}.column[{i}]"),
                        message: format!("\"{s}\" is neither \"*\" nor a column object"),
                    });
                }
                if let TxtColumn::Spec(s) = c
                    && s.index.is_none()
                    && s.value.is_none()
                {
                    return Err(Error::InvalidJob {
                        path: format!("{P}.column[{i}]"),
                        message: "a column needs \"index\" or \"value\"".into(),
                    });
                }
            }
            ReaderConfig::TxtFile(r)
        }
    })
}

fn parse_writer(raw: RawPlugin) -> Result<WriterConfig> {
    const P: &str = "job.content[0].writer.parameter";
    let kind = plugin_kind(WRITERS, "writer", &raw.name, "job.content[0].writer.name")?;
    Ok(match kind {
        "stream" => WriterConfig::Stream(typed(raw.parameter, P)?),
        "sqlite" => WriterConfig::Sqlite(typed(raw.parameter, P)?),
        "mysql" | "postgresql" => {
            let mut w: RdbmsWriter = typed(raw.parameter, P)?;
            w.normalize();
            if kind == "mysql" {
                WriterConfig::Mysql(w)
            } else {
                WriterConfig::Postgresql(w)
            }
        }
        _ => {
            let w: TxtFileWriter = typed(raw.parameter, P)?;
            check_compress(w.compress.as_deref(), P)?;
            check_encoding(w.encoding.as_deref(), P)?;
            check_text_file(
                P,
                w.field_delimiter.as_deref(),
                w.null_format.as_deref(),
                w.file_format,
            )?;
            WriterConfig::TxtFile(w)
        }
    })
}

/// Whether a `compress` value means gzip; other codecs are refused at parse time.
pub fn is_gzip(c: Option<&str>) -> bool {
    matches!(
        c.map(str::to_ascii_lowercase).as_deref(),
        Some("gzip" | "gz")
    )
}

fn check_compress(c: Option<&str>, p: &str) -> Result<()> {
    match c {
        None => Ok(()),
        Some(_) if is_gzip(c) => Ok(()),
        Some(other) => Err(Error::InvalidJob {
            path: format!("{p}.compress"),
            message: format!("compression \"{other}\" is not supported; use \"gzip\" or none"),
        }),
    }
}

/// The text encoding a job names (`UTF-8`, `GBK`, `GB18030`, `Big5`, `Shift_JIS`, …).
pub fn text_encoding(label: Option<&str>) -> Option<&'static encoding_rs::Encoding> {
    match label {
        None => Some(encoding_rs::UTF_8),
        Some(l) => encoding_rs::Encoding::for_label(l.trim().as_bytes()),
    }
}

fn check_encoding(e: Option<&str>, p: &str) -> Result<()> {
    match text_encoding(e) {
        Some(_) => Ok(()),
        None => Err(Error::InvalidJob {
            path: format!("{p}.encoding"),
            message: format!(
                "unknown encoding \"{}\"; use a WHATWG label such as UTF-8, GBK, GB18030, Big5",
                e.unwrap_or_default()
            ),
        }),
    }
}

/// Lenient deserializers for DataX's habits (numbers as strings, "" for unset).
mod de {
    use serde::{Deserialize, Deserializer, de::Error};
    use serde_json::Value;

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("{n} is not a non-negative integer"))),
            Value::String(s) if s.trim().is_empty() => Ok(None),
            Value::String(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| D::Error::custom(format!("\"{s}\" is not a non-negative integer"))),
            other => Err(D::Error::custom(format!(
                "expected a non-negative integer, found {other}"
            ))),
        }
    }

    pub fn req_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        opt_u64(d)?.ok_or_else(|| D::Error::custom("a non-negative integer is required"))
    }

    pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::Number(n) => Ok(n.as_f64()),
            Value::String(s) if s.trim().is_empty() => Ok(None),
            Value::String(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| D::Error::custom(format!("\"{s}\" is not a number"))),
            other => Err(D::Error::custom(format!(
                "expected a number, found {other}"
            ))),
        }
    }

    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::String(s) if s.is_empty() => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Number(n) => Ok(Some(n.to_string())),
            other => Err(D::Error::custom(format!(
                "expected a string, found {other}"
            ))),
        }
    }

    pub fn opt_date_pattern<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<super::DatePattern>, D::Error> {
        match opt_string(d)? {
            None => Ok(None),
            Some(s) => super::DatePattern::parse(&s)
                .map(Some)
                .map_err(D::Error::custom),
        }
    }

    pub fn opt_string_keep_empty<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(D::Error::custom(format!(
                "expected a string, found {other}"
            ))),
        }
    }

    pub fn string_or_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(Vec::new()),
            Value::String(s) if s.is_empty() => Ok(Vec::new()),
            Value::String(s) => Ok(vec![s]),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(D::Error::custom(format!(
                        "expected a string, found {other}"
                    ))),
                })
                .collect(),
            other => Err(D::Error::custom(format!(
                "expected a string or an array of strings, found {other}"
            ))),
        }
    }

    pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(false),
            Value::Bool(b) => Ok(b),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "" | "false" => Ok(false),
                "true" => Ok(true),
                _ => Err(D::Error::custom(format!("\"{s}\" is not true or false"))),
            },
            other => Err(D::Error::custom(format!(
                "expected true or false, found {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
