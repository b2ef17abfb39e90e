//! `txtfilereader` / `txtfilewriter`: CSV and delimited text files.
//!
//! The reader takes files or folders (every regular, non-hidden file of a folder, in name order)
//! and reads each file as one split. The writer writes one file, `path/fileName`; in truncate and
//! nonConflict modes it writes a temporary file and renames it at the end, so readers of the
//! target never see half a file and a failed run leaves the old one in place.
//!
//! Every value is written so it reads back as itself (see [`format`]): bytes in the job's
//! `bytesEncoding`, a value spelled like `nullFormat` quoted (csv) or escaped (text), dates in
//! `dateFormat` only when the pattern shows them in full; what cannot be written so is a dirty
//! record.

pub mod format;

use super::plugin::{
    BlockingReadSplit, BlockingReader, BlockingSink, BlockingWriteChannel, BlockingWriter, JobLog,
    Result, Shared, SyncError, TargetInfo,
};
use super::value::{
    Row, TextSpelling, Value, decode_bytes, encode_bytes, format_date, parse_typed, row_size,
};
use crate::files::{self, Roots};
use ferry_common::job::{
    BytesEncoding, DEFAULT_NULL_FORMAT, DatePattern, FileWriteMode, TxtColumn,
    TxtFileReader as ReaderParams, TxtFileWriter as WriterParams, field_delimiter, is_gzip,
    text_encoding,
};
use format::{Record, RecordReader, Spelling};
use std::borrow::Cow;
use std::fs::File;
use std::io::BufWriter;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The files a path list names: files as given, folders expanded.
pub fn expand(paths: &[String]) -> Result<Vec<PathBuf>, String> {
    expand_within(paths, &Roots::default())
}

/// The files a path list names, each inside `roots` (canonical when confined): a path or a
/// folder entry that leaves them is an error, not a skipped file.
pub fn expand_within(paths: &[String], roots: &Roots) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        let path = roots.existing(Path::new(p))?;
        let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("source file {p} does not exist"),
            std::io::ErrorKind::PermissionDenied => format!("no permission to read {p}"),
            _ => format!("cannot read {p}: {e}"),
        })?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| format!("cannot list folder {p}: {e}"))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|f| {
                    f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.starts_with('.'))
                })
                .collect();
            entries.sort();
            for entry in entries {
                // A link in the folder leading out is refused like a path naming the target.
                let entry = roots.existing(&entry)?;
                if entry.is_file() {
                    files.push(entry);
                }
            }
        } else {
            files.push(path);
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

impl BlockingReader for TxtFileReader {
    fn name(&self) -> &'static str {
        "txtfilereader"
    }

    fn splits(&self, _channels: usize, log: &JobLog) -> Result<Vec<Box<dyn BlockingReadSplit>>> {
        let delim =
            field_delimiter(self.params.field_delimiter.as_deref()).map_err(SyncError::Source)?;
        let roots = Roots::new(self.params.root.as_deref(), &self.params.agent_roots)
            .map_err(SyncError::Source)?;
        let files = expand_within(&self.params.path, &roots).map_err(SyncError::Source)?;
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
                    confined: roots.confined(),
                    spelling: Spelling {
                        format: self.params.file_format,
                        delim,
                        null: self
                            .params
                            .null_format
                            .clone()
                            .unwrap_or_else(|| DEFAULT_NULL_FORMAT.to_string()),
                    },
                    params: self.params.clone(),
                }) as Box<dyn BlockingReadSplit>
            })
            .collect())
    }
}

struct FileSplit {
    file: PathBuf,
    /// The path was checked against file roots (and is canonical): open it without following
    /// a link swapped in since.
    confined: bool,
    spelling: Spelling,
    params: ReaderParams,
}

impl FileSplit {
    /// Converts a record into a row; the error names the column at fault and why.
    fn convert(
        &self,
        record: &Record,
        target: &TargetInfo,
    ) -> Result<Row, (Option<String>, String)> {
        let sp = &self.spelling;
        let all = self.params.column.is_empty()
            || matches!(self.params.column.as_slice(), [TxtColumn::All(_)]);
        if all {
            let mut row = Vec::with_capacity(record.len());
            for i in 0..record.len() {
                let column = || Some(format!("field {}", i + 1));
                let text = match record.field(i, sp) {
                    Some(Ok(Some(t))) => t,
                    Some(Ok(None)) | None => {
                        row.push(Value::Null);
                        continue;
                    }
                    Some(Err(e)) => return Err((column(), e)),
                };
                // A field going into a binary column is spelled in the job's bytesEncoding.
                if target.is_binary(i) {
                    row.push(Value::Bytes(
                        decode_bytes(&text, self.params.bytes_encoding)
                            .map_err(|e| (column(), e))?,
                    ));
                } else {
                    row.push(Value::String(text.into_owned()));
                }
            }
            return Ok(row);
        }
        let mut row = Vec::with_capacity(self.params.column.len());
        for c in &self.params.column {
            let TxtColumn::Spec(s) = c else {
                return Err((None, "\"*\" must be the only column".into()));
            };
            let spelling = TextSpelling {
                date: s.format.as_ref(),
                bytes: Some(self.params.bytes_encoding),
            };
            let v = if let Some(constant) = &s.value {
                if *constant == sp.null {
                    Value::Null
                } else {
                    // A constant comes from the job, not the file: bytes are its UTF-8 text.
                    parse_typed(
                        constant,
                        &s.kind,
                        TextSpelling {
                            bytes: None,
                            ..spelling
                        },
                    )
                    .map_err(|e| (Some("constant".into()), e))?
                }
            } else {
                let i = s.index.unwrap_or_default() as usize;
                let column = || Some(format!("index {i}"));
                match record.field(i, sp) {
                    None => {
                        return Err((
                            column(),
                            format!("record has {} fields, index {i} is missing", record.len()),
                        ));
                    }
                    Some(Err(e)) => return Err((column(), e)),
                    Some(Ok(None)) => Value::Null,
                    Some(Ok(Some(text))) => {
                        parse_typed(&text, &s.kind, spelling).map_err(|e| (column(), e))?
                    }
                }
            };
            row.push(v);
        }
        Ok(row)
    }
}

impl BlockingReadSplit for FileSplit {
    fn describe(&self) -> String {
        self.file.display().to_string()
    }

    fn run(self: Box<Self>, sink: &mut BlockingSink, target: &TargetInfo) -> Result<()> {
        let name = self.file.display().to_string();
        let opened = if self.confined {
            files::open_for_read(&self.file)
        } else {
            File::open(&self.file)
        };
        let f = opened.map_err(|e| SyncError::Source(format!("cannot open {name}: {e}")))?;
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
        let mut records = RecordReader::new(
            std::io::BufReader::with_capacity(1 << 16, input),
            self.spelling.clone(),
        );
        let mut record = Record::default();
        let mut first = true;
        loop {
            // An unreadable rest of file (an unclosed quote) fails the job: what follows cannot
            // be cut into records, and skipping it would lose rows without a trace.
            match records.read(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => return Err(SyncError::Source(format!("{name} {e}"))),
            }
            if first && self.params.skip_header {
                first = false;
                continue;
            }
            first = false;
            let decoded = if let Some(m) = &record.malformed {
                Err((None, m.clone()))
            } else if encoding != encoding_rs::UTF_8
                && record
                    .raw()
                    .iter()
                    .any(|f| matches!(f, Value::String(s) if s.contains('\u{FFFD}')))
            {
                Err((
                    None,
                    format!("bytes that are not valid {}", encoding.name()),
                ))
            } else {
                self.convert(&record, target)
            };
            match decoded {
                Ok(row) => sink.push(row)?,
                Err((column, reason)) => {
                    sink.dirty(
                        &record.raw(),
                        column.as_deref(),
                        &format!("{name} line {}: {reason}", record.line),
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

impl BlockingWriter for TxtFileWriter {
    fn name(&self) -> &'static str {
        "txtfilewriter"
    }

    fn prepare(&self, log: &JobLog) -> Result<()> {
        field_delimiter(self.params.field_delimiter.as_deref()).map_err(SyncError::Target)?;
        // Confined to the data source's folder and the agent's roots before anything exists.
        let roots = Roots::new(self.params.root.as_deref(), &self.params.agent_roots)
            .map_err(SyncError::Target)?;
        if roots.confined() {
            files::plain_file_name(&self.params.file_name).map_err(SyncError::Target)?;
        }
        if let Some(dir) = self.final_path.parent() {
            roots.folder_to_write(dir).map_err(SyncError::Target)?;
        }
        if files::is_symlink(&self.final_path) {
            return Err(SyncError::Target(format!(
                "{} is a symbolic link; Ferry does not write through links",
                self.final_path.display()
            )));
        }
        let exists = std::fs::symlink_metadata(&self.final_path).is_ok();
        if self.params.write_mode == FileWriteMode::NonConflict && exists {
            return Err(SyncError::Target(format!(
                "{} exists and writeMode is nonConflict; remove it or use truncate",
                self.final_path.display()
            )));
        }
        let (path, file) = if self.via_temp() {
            // A leftover of the same attempt (or a planted link) goes; the link, not its target.
            if std::fs::symlink_metadata(&self.temp_path).is_ok() {
                std::fs::remove_file(&self.temp_path)
                    .map_err(|e| io_err("cannot remove", &self.temp_path, e))?;
            }
            let f = files::open_for_write(&self.temp_path, true).map_err(SyncError::Target)?;
            (&self.temp_path, f)
        } else {
            let f = files::open_for_write(&self.final_path, false).map_err(SyncError::Target)?;
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

    fn open(&self, _index: usize) -> Result<Box<dyn BlockingWriteChannel>> {
        let file = self
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| SyncError::Internal("txtfilewriter opened twice".into()))?;
        let append_to_existing =
            !self.via_temp() && file.metadata().map(|m| m.len() > 0).unwrap_or(false);
        let delim =
            field_delimiter(self.params.field_delimiter.as_deref()).map_err(SyncError::Target)?;
        let out = if is_gzip(self.params.compress.as_deref()) {
            Output::Gzip(BufWriter::with_capacity(
                1 << 16,
                flate2::write::GzEncoder::new(file, flate2::Compression::default()),
            ))
        } else {
            Output::Plain(BufWriter::with_capacity(1 << 16, file))
        };
        let mut ch = FileChannel {
            out,
            line: Vec::with_capacity(1 << 12),
            encoding: text_encoding(self.params.encoding.as_deref()).unwrap_or(encoding_rs::UTF_8),
            path: self.final_path.clone(),
            spelling: Spelling {
                format: self.params.file_format,
                delim,
                null: self
                    .params
                    .null_format
                    .clone()
                    .unwrap_or_else(|| DEFAULT_NULL_FORMAT.to_string()),
            },
            date_format: self.params.date_format.clone(),
            bytes: self.params.bytes_encoding,
        };
        if !self.params.header.is_empty() && !append_to_existing {
            let header: Vec<Option<Cow<'_, str>>> = self
                .params
                .header
                .iter()
                .map(|h| Some(Cow::Borrowed(h.as_str())))
                .collect();
            ch.put_line(&header)
                .map_err(|e| SyncError::Target(format!("header: {e}")))?
                .map_err(|e| SyncError::Target(format!("header has {e}")))?;
        }
        Ok(Box::new(ch))
    }

    fn finish(&self, log: &JobLog) -> Result<()> {
        if self.via_temp() {
            if self.params.write_mode == FileWriteMode::NonConflict
                && std::fs::symlink_metadata(&self.final_path).is_ok()
            {
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

struct FileChannel {
    out: Output,
    /// The record being formatted, so it can be transcoded and checked on its own.
    line: Vec<u8>,
    encoding: &'static encoding_rs::Encoding,
    path: PathBuf,
    spelling: Spelling,
    date_format: Option<DatePattern>,
    bytes: BytesEncoding,
}

impl FileChannel {
    /// A value's text, `None` for NULL; an error when the value cannot be written so it reads
    /// back as itself.
    fn text<'v>(&self, v: &'v Value) -> Result<Option<Cow<'v, str>>, String> {
        Ok(Some(match (v, &self.date_format) {
            (Value::Null, _) => return Ok(None),
            (Value::String(s) | Value::Decimal(s) | Value::Json(s), _) => Cow::Borrowed(s.as_str()),
            (Value::Bytes(b), _) => Cow::Owned(encode_bytes(b, self.bytes)),
            (Value::Date(_) | Value::Timestamp(_) | Value::TimestampTz(_), Some(f)) => {
                Cow::Owned(format_date(v, f)?)
            }
            (other, _) => Cow::Owned(other.to_string()),
        }))
    }

    /// Writes one record; the inner error means the record cannot be represented in the
    /// file's encoding (a dirty record), the outer one is an I/O failure.
    fn put_line(&mut self, fields: &[Option<Cow<'_, str>>]) -> Result<Result<(), String>, String> {
        self.line.clear();
        if let Err(e) = format::write_record(&mut self.line, fields, &self.spelling) {
            return Ok(Err(e));
        }
        if self.encoding == encoding_rs::UTF_8 {
            self.out.write_all(&self.line).map_err(|e| e.to_string())?;
            return Ok(Ok(()));
        }
        let text = String::from_utf8_lossy(&self.line);
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

impl BlockingWriteChannel for FileChannel {
    fn write(&mut self, rows: Vec<Row>, shared: &Shared) -> Result<()> {
        let (mut written, mut bytes) = (0u64, 0u64);
        for row in &rows {
            let mut fields = Vec::with_capacity(row.len());
            let mut bad = None;
            for (i, v) in row.iter().enumerate() {
                match self.text(v) {
                    Ok(t) => fields.push(t),
                    Err(reason) => {
                        bad = Some((i, reason));
                        break;
                    }
                }
            }
            let outcome = match bad {
                Some((i, reason)) => Err((Some(format!("field {}", i + 1)), reason)),
                None => self
                    .put_line(&fields)
                    .map_err(|e| SyncError::Target(format!("{}: {e}", self.path.display())))?
                    .map_err(|reason| (None, reason)),
            };
            match outcome {
                Ok(()) => {
                    written += 1;
                    bytes += row_size(row) as u64;
                }
                Err((column, reason)) => shared.dirty("writer", row, column.as_deref(), &reason)?,
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
