//! `txtfilereader` / `txtfilewriter`: CSV and delimited text files.
//!
//! The reader takes files or folders (every regular, non-hidden file of a folder, in name order)
//! and reads each file as one split. The writer writes one file, `path/fileName`; in truncate and
//! nonConflict modes it writes a temporary file and renames it at the end, so readers of the
//! target never see half a file and a failed run leaves the old one in place.

use super::engine::{
    JobLog, ReadSplit, Reader, Result, RowSink, Shared, SyncError, TargetInfo, WriteChannel, Writer,
};
use super::value::{Row, Value, java_date_format, parse_typed, row_size};
use ferry_common::job::{
    FileWriteMode, TxtColumn, TxtFileReader as ReaderParams, TxtFileWriter as WriterParams,
    is_gzip, text_encoding,
};
use std::fs::File;
use std::io::BufWriter;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

/// DataX's default marker for NULL in text files.
const DEFAULT_NULL: &str = "\\N";

fn delimiter(d: Option<&str>) -> Result<u8, String> {
    match d {
        None => Ok(b','),
        Some("\\t") | Some("\t") => Ok(b'\t'),
        Some(s) if s.len() == 1 => Ok(s.as_bytes()[0]),
        Some(s) => Err(format!(
            "fieldDelimiter \"{s}\" must be a single one-byte character"
        )),
    }
}

/// The files a path list names: files as given, folders expanded.
pub fn expand(paths: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        let path = Path::new(p);
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("source file {p} does not exist"),
            std::io::ErrorKind::PermissionDenied => format!("no permission to read {p}"),
            _ => format!("cannot read {p}: {e}"),
        })?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("cannot list folder {p}: {e}"))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|f| f.is_file())
                .filter(|f| {
                    f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.starts_with('.'))
                })
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.to_path_buf());
        }
    }
    Ok(files)
}

pub struct TxtFileReader {
    params: ReaderParams,
}

impl TxtFileReader {
    pub fn new(params: ReaderParams) -> Self {
        Self { params }
    }
}

impl Reader for TxtFileReader {
    fn name(&self) -> &'static str {
        "txtfilereader"
    }

    fn splits(&self, _channels: usize, log: &JobLog) -> Result<Vec<Box<dyn ReadSplit>>> {
        let delim = delimiter(self.params.field_delimiter.as_deref()).map_err(SyncError::Source)?;
        let files = expand(&self.params.path).map_err(SyncError::Source)?;
        if files.is_empty() {
            log.warn(format!(
                "no files under {}; nothing to read",
                self.params.path.join(", ")
            ));
        }
        Ok(files
            .into_iter()
            .map(|file| {
                Box::new(FileSplit {
                    file,
                    delim,
                    params: self.params.clone(),
                }) as Box<dyn ReadSplit>
            })
            .collect())
    }
}

struct FileSplit {
    file: PathBuf,
    delim: u8,
    params: ReaderParams,
}

impl FileSplit {
    fn convert(&self, record: &csv::StringRecord) -> Result<Row, String> {
        let null = self.params.null_format.as_deref().unwrap_or(DEFAULT_NULL);
        let cell = |text: &str, kind: &str, format: Option<&str>| {
            if text == null {
                Ok(Value::Null)
            } else {
                parse_typed(text, kind, format)
            }
        };
        let all = self.params.column.is_empty()
            || matches!(self.params.column.as_slice(), [TxtColumn::All(_)]);
        if all {
            return record.iter().map(|f| cell(f, "string", None)).collect();
        }
        let mut row = Vec::with_capacity(self.params.column.len());
        for c in &self.params.column {
            match c {
                TxtColumn::All(_) => {
                    return Err("\"*\" must be the only column".into());
                }
                TxtColumn::Spec(s) => {
                    let v = if let Some(constant) = &s.value {
                        cell(constant, &s.kind, s.format.as_deref())?
                    } else {
                        let i = s.index.unwrap_or_default() as usize;
                        let text = record.get(i).ok_or_else(|| {
                            format!(
                                "record has {} fields, column index {i} is missing",
                                record.len()
                            )
                        })?;
                        cell(text, &s.kind, s.format.as_deref())?
                    };
                    row.push(v);
                }
            }
        }
        Ok(row)
    }
}

impl ReadSplit for FileSplit {
    fn describe(&self) -> String {
        self.file.display().to_string()
    }

    fn run(self: Box<Self>, sink: &mut RowSink<'_>, _target: &TargetInfo) -> Result<()> {
        let name = self.file.display().to_string();
        let f = File::open(&self.file)
            .map_err(|e| SyncError::Source(format!("cannot open {name}: {e}")))?;
        let mut input: Box<dyn Read + Send> = Box::new(f);
        if is_gzip(self.params.compress.as_deref()) {
            input = Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
                input,
            )));
        }
        let encoding = text_encoding(self.params.encoding.as_deref()).unwrap_or(encoding_rs::UTF_8);
        if encoding != encoding_rs::UTF_8 {
            // Decoded to UTF-8 as it streams; bytes that are not valid in the encoding become
            // U+FFFD, which the reader reports as a dirty record rather than passing on.
            input = Box::new(
                encoding_rs_io::DecodeReaderBytesBuilder::new()
                    .encoding(Some(encoding))
                    .build(input),
            );
        }
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(self.delim)
            .has_headers(false)
            .flexible(true)
            .from_reader(std::io::BufReader::with_capacity(1 << 16, input));
        let mut record = csv::StringRecord::new();
        let mut first = true;
        loop {
            match rdr.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    return Err(SyncError::Source(format!("{name} line {line}: {e}")));
                }
            }
            if first && self.params.skip_header {
                first = false;
                continue;
            }
            first = false;
            let decoded = if encoding != encoding_rs::UTF_8
                && record.iter().any(|f| f.contains('\u{FFFD}'))
            {
                Err(format!("bytes that are not valid {}", encoding.name()))
            } else {
                self.convert(&record)
            };
            match decoded {
                Ok(row) => sink.push(row)?,
                Err(reason) => {
                    let raw: Row = record.iter().map(|f| Value::String(f.into())).collect();
                    let line = record.position().map(|p| p.line()).unwrap_or(0);
                    sink.shared()
                        .counters
                        .records_read
                        .fetch_add(1, Ordering::Relaxed);
                    sink.shared().dirty(
                        "reader",
                        &raw,
                        &format!("{name} line {line}: {reason}"),
                    )?;
                }
            }
        }
        Ok(())
    }
}

pub struct TxtFileWriter {
    params: WriterParams,
    final_path: PathBuf,
    temp_path: PathBuf,
    file: Mutex<Option<File>>,
}

impl TxtFileWriter {
    pub fn new(params: WriterParams, attempt: &str) -> Self {
        let dir = PathBuf::from(params.path.clone().unwrap_or_default());
        let final_path = dir.join(&params.file_name);
        let temp_path = dir.join(format!(".{}.{attempt}.tmp", params.file_name));
        Self {
            params,
            final_path,
            temp_path,
            file: Mutex::new(None),
        }
    }

    fn via_temp(&self) -> bool {
        self.params.write_mode != FileWriteMode::Append
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> SyncError {
    SyncError::Target(format!("{what} {}: {e}", path.display()))
}

impl Writer for TxtFileWriter {
    fn name(&self) -> &'static str {
        "txtfilewriter"
    }

    fn prepare(&self, log: &JobLog) -> Result<()> {
        delimiter(self.params.field_delimiter.as_deref()).map_err(SyncError::Target)?;
        if let Some(dir) = self.final_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create folder", dir, e))?;
        }
        let exists = self.final_path.exists();
        if self.params.write_mode == FileWriteMode::NonConflict && exists {
            return Err(SyncError::Target(format!(
                "{} exists and writeMode is nonConflict; remove it or use truncate",
                self.final_path.display()
            )));
        }
        let (path, file) = if self.via_temp() {
            let f = File::create(&self.temp_path)
                .map_err(|e| io_err("cannot create", &self.temp_path, e))?;
            (&self.temp_path, f)
        } else {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.final_path)
                .map_err(|e| io_err("cannot open", &self.final_path, e))?;
            (&self.final_path, f)
        };
        log.info(format!(
            "txtfilewriter: writing {} ({:?} mode) via {}",
            self.final_path.display(),
            self.params.write_mode,
            path.display()
        ));
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
        Ok(())
    }

    fn parallelism(&self) -> usize {
        1
    }

    fn open(&self, _index: usize) -> Result<Box<dyn WriteChannel>> {
        let file = self
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| SyncError::Internal("txtfilewriter opened twice".into()))?;
        let append_to_existing =
            !self.via_temp() && file.metadata().map(|m| m.len() > 0).unwrap_or(false);
        let text = self
            .params
            .file_format
            .as_deref()
            .is_some_and(|f| f.eq_ignore_ascii_case("text"));
        let delim = delimiter(self.params.field_delimiter.as_deref()).map_err(SyncError::Target)?;
        let line_buf = LineBuf::default();
        let line = csv::WriterBuilder::new()
            .delimiter(delim)
            .flexible(true)
            .quote_style(if text {
                csv::QuoteStyle::Never
            } else {
                csv::QuoteStyle::Necessary
            })
            .from_writer(line_buf.clone());
        let out = if is_gzip(self.params.compress.as_deref()) {
            Output::Gzip(BufWriter::with_capacity(
                1 << 16,
                flate2::write::GzEncoder::new(file, flate2::Compression::default()),
            ))
        } else {
            Output::Plain(BufWriter::with_capacity(1 << 16, file))
        };
        let mut ch = FileChannel {
            line,
            line_buf,
            out,
            encoding: text_encoding(self.params.encoding.as_deref()).unwrap_or(encoding_rs::UTF_8),
            path: self.final_path.clone(),
            null: self
                .params
                .null_format
                .clone()
                .unwrap_or_else(|| DEFAULT_NULL.to_string()),
            date_format: self.params.date_format.as_deref().map(java_date_format),
        };
        if !self.params.header.is_empty() && !append_to_existing {
            let header: Vec<String> = self.params.header.clone();
            ch.put_line(&header)
                .map_err(|e| SyncError::Target(format!("header: {e}")))?
                .map_err(|e| SyncError::Target(format!("header has {e}")))?;
        }
        Ok(Box::new(ch))
    }

    fn finish(&self, log: &JobLog) -> Result<()> {
        if self.via_temp() {
            if self.params.write_mode == FileWriteMode::NonConflict && self.final_path.exists() {
                return Err(SyncError::Target(format!(
                    "{} appeared while writing and writeMode is nonConflict",
                    self.final_path.display()
                )));
            }
            std::fs::rename(&self.temp_path, &self.final_path)
                .map_err(|e| io_err("cannot move the finished file to", &self.final_path, e))?;
        }
        log.info(format!(
            "txtfilewriter: {} complete",
            self.final_path.display()
        ));
        Ok(())
    }

    fn abort(&self, log: &JobLog) {
        if self.via_temp() && self.temp_path.exists() {
            let _ = std::fs::remove_file(&self.temp_path);
            log.warn(format!(
                "txtfilewriter: removed the partial file; {} is unchanged",
                self.final_path.display()
            ));
        } else if !self.via_temp() {
            log.warn(format!(
                "txtfilewriter: append mode; {} may hold part of this attempt's rows",
                self.final_path.display()
            ));
        }
    }
}

/// The file being written, plain or gzip-compressed.
enum Output {
    Plain(BufWriter<File>),
    Gzip(BufWriter<flate2::write::GzEncoder<File>>),
}

impl Output {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Output::Plain(w) => w.write_all(b),
            Output::Gzip(w) => w.write_all(b),
        }
    }

    /// Flushes, ends the gzip stream, and syncs the file to disk.
    fn finish(self) -> std::io::Result<()> {
        let file = match self {
            Output::Plain(w) => w.into_inner().map_err(|e| e.into_error())?,
            Output::Gzip(w) => w.into_inner().map_err(|e| e.into_error())?.finish()?,
        };
        file.sync_all()
    }
}

/// Where the CSV formatter puts one record, so it can be transcoded and checked on its own.
#[derive(Clone, Default)]
struct LineBuf(std::sync::Arc<Mutex<Vec<u8>>>);

impl Write for LineBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LineBuf {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

struct FileChannel {
    line: csv::Writer<LineBuf>,
    line_buf: LineBuf,
    out: Output,
    encoding: &'static encoding_rs::Encoding,
    path: PathBuf,
    null: String,
    date_format: Option<String>,
}

impl FileChannel {
    fn text(&self, v: &Value) -> String {
        match (v, &self.date_format) {
            (Value::Null, _) => self.null.clone(),
            (Value::Date(d), Some(f)) => d.format(f).to_string(),
            (Value::Timestamp(t), Some(f)) => t.format(f).to_string(),
            (other, _) => other.to_string(),
        }
    }

    /// Writes one record; an error string means the record cannot be represented in the
    /// file's encoding (a dirty record), an `Err` of the outer result is an I/O failure.
    fn put_line(&mut self, fields: &[String]) -> Result<Result<(), String>, String> {
        self.line.write_record(fields).map_err(|e| e.to_string())?;
        self.line.flush().map_err(|e| e.to_string())?;
        let bytes = self.line_buf.take();
        if self.encoding == encoding_rs::UTF_8 {
            self.out.write_all(&bytes).map_err(|e| e.to_string())?;
            return Ok(Ok(()));
        }
        let text = String::from_utf8_lossy(&bytes);
        let (encoded, _, unmappable) = self.encoding.encode(&text);
        if unmappable {
            return Ok(Err(format!(
                "characters that {} cannot represent",
                self.encoding.name()
            )));
        }
        self.out.write_all(&encoded).map_err(|e| e.to_string())?;
        Ok(Ok(()))
    }
}

impl WriteChannel for FileChannel {
    fn write(&mut self, rows: Vec<Row>, shared: &Shared) -> Result<()> {
        let (mut written, mut bytes) = (0u64, 0u64);
        for row in &rows {
            let fields: Vec<String> = row.iter().map(|v| self.text(v)).collect();
            match self
                .put_line(&fields)
                .map_err(|e| SyncError::Target(format!("{}: {e}", self.path.display())))?
            {
                Ok(()) => {
                    written += 1;
                    bytes += row_size(row) as u64;
                }
                Err(reason) => shared.dirty("writer", row, &reason)?,
            }
        }
        shared.written(written, bytes);
        Ok(())
    }

    fn commit(self: Box<Self>, _shared: &Shared) -> Result<()> {
        let path = self.path.clone();
        self.out
            .finish()
            .map_err(|e| io_err("cannot finish", &path, e))
    }
}
