//! Which plugin names Ferry runs and how each is built: the one place that knows every
//! connector. The engine asks it for a reader and a writer; a new connector is one line in each
//! table here.

use super::mysql::My;
use super::plugin::{Reader, Writer, blocking_reader, blocking_writer};
use super::postgres::Pg;
use super::rdbms::{DbReader, DbWriter};
use super::{sqlite, stream, txtfile};
use ferry_common::job::{ReaderConfig, WriterConfig};

type ReaderCtor = fn(&ReaderConfig) -> Option<Box<dyn Reader>>;
type WriterCtor = fn(&WriterConfig, &str) -> Option<Box<dyn Writer>>;

/// Reader plugin names and their constructors.
const READERS: &[(&str, ReaderCtor)] = &[
    ("streamreader", |c| match c {
        ReaderConfig::Stream(p) => Some(Box::new(stream::StreamReader::new(p.clone()))),
        _ => None,
    }),
    ("sqlitereader", |c| match c {
        ReaderConfig::Sqlite(p) => Some(blocking_reader(sqlite::SqliteReader::new(p.clone()))),
        _ => None,
    }),
    ("txtfilereader", |c| match c {
        ReaderConfig::TxtFile(p) => Some(blocking_reader(txtfile::TxtFileReader::new(p.clone()))),
        _ => None,
    }),
    ("mysqlreader", |c| match c {
        ReaderConfig::Mysql(p) => Some(Box::new(DbReader::<My>::new(p.clone()))),
        _ => None,
    }),
    ("postgresqlreader", |c| match c {
        ReaderConfig::Postgresql(p) => Some(Box::new(DbReader::<Pg>::new(p.clone()))),
        _ => None,
    }),
];

/// Writer plugin names and their constructors; the second argument names the attempt, for
/// temporary files.
const WRITERS: &[(&str, WriterCtor)] = &[
    ("streamwriter", |c, _| match c {
        WriterConfig::Stream(p) => Some(Box::new(stream::StreamWriter::new(p.clone()))),
        _ => None,
    }),
    ("sqlitewriter", |c, _| match c {
        WriterConfig::Sqlite(p) => Some(blocking_writer(sqlite::SqliteWriter::new(p.clone()))),
        _ => None,
    }),
    ("txtfilewriter", |c, attempt| match c {
        WriterConfig::TxtFile(p) => Some(blocking_writer(txtfile::TxtFileWriter::new(
            p.clone(),
            attempt,
        ))),
        _ => None,
    }),
    ("mysqlwriter", |c, _| match c {
        WriterConfig::Mysql(p) => Some(Box::new(DbWriter::<My>::new(p.clone()))),
        _ => None,
    }),
    ("postgresqlwriter", |c, _| match c {
        WriterConfig::Postgresql(p) => Some(Box::new(DbWriter::<Pg>::new(p.clone()))),
        _ => None,
    }),
];

/// The plugin names this agent runs, readers then writers.
pub fn names() -> impl Iterator<Item = &'static str> {
    READERS
        .iter()
        .map(|(n, _)| *n)
        .chain(WRITERS.iter().map(|(n, _)| *n))
}

/// Ferry's reader for a job's reader configuration.
pub fn build_reader(cfg: &ReaderConfig) -> Option<Box<dyn Reader>> {
    READERS.iter().find_map(|(_, ctor)| ctor(cfg))
}

/// Ferry's writer for a job's writer configuration; `attempt` names temporary files.
pub fn build_writer(cfg: &WriterConfig, attempt: &str) -> Option<Box<dyn Writer>> {
    WRITERS.iter().find_map(|(_, ctor)| ctor(cfg, attempt))
}

/// Drivers' own row formats (see `plugin::Batch::Raw`), by name: a relay carries a format's
/// name and the writer leg's agent finds it here.
const RAW_FORMATS: &[&str] = &[super::postgres::RAW_FORMAT];

/// The driver row format called `name`, if this agent knows it.
pub fn raw_format(name: &str) -> Option<&'static str> {
    RAW_FORMATS.iter().copied().find(|f| *f == name)
}
