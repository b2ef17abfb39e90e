//! Records of delimited text files in both spellings Ferry writes and reads back exactly:
//! `csv` (RFC 4180 quotes) and `text` (backslash escapes, no quotes).
//!
//! Parsing keeps whether a field was quoted, so in csv a quoted `"\N"` is the two characters and
//! only an unquoted `\N` is NULL; in text a field is NULL only when spelled exactly as
//! `nullFormat` before unescaping (a value `\N` is written `\\N`). Malformed input (a quote
//! never closed, text after a closing quote) is an error or a malformed record with its line,
//! never silently joined into one long field.

use ferry_common::job::FileFormat;
use std::borrow::Cow;
use std::io::BufRead;

/// A record longer than this is refused: it is almost always an unclosed quote swallowing the
/// rest of the file, and it would otherwise be held in memory whole.
const MAX_RECORD: usize = 256 << 20;

/// How fields are delimited, quoted or escaped, and how NULL is spelled.
#[derive(Debug, Clone)]
pub struct Spelling {
    pub format: FileFormat,
    pub delim: u8,
    pub null: String,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    quoted: bool,
}

/// One record as read: its fields' bytes (csv quotes removed, text escapes kept until a field
/// is asked for), the line it starts on, and why it is malformed if it is.
#[derive(Debug, Default)]
pub struct Record {
    data: Vec<u8>,
    fields: Vec<Span>,
    pub line: u64,
    pub malformed: Option<String>,
}

impl Record {
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn clear(&mut self) {
        self.data.clear();
        self.fields.clear();
        self.malformed = None;
    }

    fn end_field(&mut self, start: usize, quoted: bool) {
        self.fields.push(Span {
            start,
            end: self.data.len(),
            quoted,
        });
    }

    /// Field `i`: `None` if the record has no such field, `Some(Ok(None))` for NULL, the text
    /// otherwise; an error when the bytes are not UTF-8.
    pub fn field(&self, i: usize, sp: &Spelling) -> Option<Result<Option<Cow<'_, str>>, String>> {
        let span = *self.fields.get(i)?;
        let raw = &self.data[span.start..span.end];
        if !span.quoted && raw == sp.null.as_bytes() {
            return Some(Ok(None));
        }
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(_) => {
                return Some(Err(format!(
                    "field {} holds bytes that are not valid UTF-8",
                    i + 1
                )));
            }
        };
        Some(Ok(Some(match sp.format {
            FileFormat::Csv => Cow::Borrowed(text),
            FileFormat::Text => unescape(text),
        })))
    }

    /// The raw fields, for a dirty record whose fields could not be converted: text where it
    /// is UTF-8, bytes where it is not.
    pub fn raw(&self) -> Vec<super::Value> {
        self.fields
            .iter()
            .map(|s| {
                let b = &self.data[s.start..s.end];
                match std::str::from_utf8(b) {
                    Ok(t) => super::Value::String(t.to_string()),
                    Err(_) => super::Value::Bytes(b.to_vec()),
                }
            })
            .collect()
    }
}

fn unescape(text: &str) -> Cow<'_, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            // `\\`, `\<delimiter>`, and a backslash before any other character: that character.
            Some(other) => out.push(other),
            // A lone backslash at the very end is kept as written.
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the end of the field, or the first of `""`.
    QuoteInQuoted,
    /// A backslash in text format: the next byte is taken as written.
    Escape,
}

/// Reads records one by one from a buffered input.
pub struct RecordReader<R> {
    input: R,
    sp: Spelling,
    /// The line the next byte is on (1-based).
    line: u64,
    /// A CR ended the last record; a LF right after it belongs to it.
    after_cr: bool,
}

impl<R: BufRead> RecordReader<R> {
    pub fn new(input: R, sp: Spelling) -> Self {
        Self {
            input,
            sp,
            line: 1,
            after_cr: false,
        }
    }

    /// Reads the next record into `rec`; `Ok(false)` at the end of the input. An error means
    /// the rest of the input cannot be read as records (an unclosed quote, a record over
    /// 256 MiB, an I/O error).
    pub fn read(&mut self, rec: &mut Record) -> Result<bool, String> {
        rec.clear();
        let csv = self.sp.format == FileFormat::Csv;
        let delim = self.sp.delim;
        let mut state = State::FieldStart;
        let mut started = false;
        let mut field_start = 0;
        let mut quoted = false;
        rec.line = self.line;
        loop {
            let buf = self
                .input
                .fill_buf()
                .map_err(|e| format!("line {}: {e}", self.line))?;
            if buf.is_empty() {
                return match state {
                    State::Quoted => Err(format!(
                        "line {}: a quoted field opened here is never closed (the file ends inside it)",
                        rec.line
                    )),
                    _ if !started => Ok(false),
                    _ => {
                        rec.end_field(field_start, quoted);
                        Ok(true)
                    }
                };
            }
            let mut used = 0;
            let mut done = false;
            for &b in buf {
                used += 1;
                if self.after_cr {
                    self.after_cr = false;
                    if b == b'\n' {
                        continue;
                    }
                }
                if !started {
                    // csv skips blank lines; in text format an empty line is one empty field.
                    if csv && (b == b'\n' || b == b'\r') {
                        self.line += 1;
                        self.after_cr = b == b'\r';
                        rec.line = self.line;
                        continue;
                    }
                    started = true;
                }
                let line_end = b == b'\n' || b == b'\r';
                match state {
                    State::FieldStart | State::Unquoted => {
                        if b == delim {
                            rec.end_field(field_start, quoted);
                            field_start = rec.data.len();
                            quoted = false;
                            state = State::FieldStart;
                        } else if line_end {
                            rec.end_field(field_start, quoted);
                            self.line += 1;
                            self.after_cr = b == b'\r';
                            done = true;
                        } else if csv && b == b'"' && state == State::FieldStart {
                            quoted = true;
                            state = State::Quoted;
                        } else if !csv && b == b'\\' {
                            rec.data.push(b);
                            state = State::Escape;
                        } else {
                            rec.data.push(b);
                            state = State::Unquoted;
                        }
                    }
                    State::Quoted => {
                        if b == b'"' {
                            state = State::QuoteInQuoted;
                        } else {
                            if b == b'\n' {
                                self.line += 1;
                            }
                            rec.data.push(b);
                        }
                    }
                    State::QuoteInQuoted => {
                        if b == b'"' {
                            rec.data.push(b'"');
                            state = State::Quoted;
                        } else if b == delim {
                            rec.end_field(field_start, quoted);
                            field_start = rec.data.len();
                            quoted = false;
                            state = State::FieldStart;
                        } else if line_end {
                            rec.end_field(field_start, quoted);
                            self.line += 1;
                            self.after_cr = b == b'\r';
                            done = true;
                        } else {
                            if rec.malformed.is_none() {
                                rec.malformed = Some(format!(
                                    "line {}: text after the closing quote of field {}",
                                    self.line,
                                    rec.fields.len() + 1
                                ));
                            }
                            rec.data.push(b);
                            state = State::Unquoted;
                        }
                    }
                    State::Escape => {
                        if b == b'\n' {
                            self.line += 1;
                        }
                        rec.data.push(b);
                        state = State::Unquoted;
                    }
                }
                if done {
                    break;
                }
            }
            self.input.consume(used);
            if done {
                return Ok(true);
            }
            if rec.data.len() > MAX_RECORD {
                return Err(format!(
                    "line {}: a record longer than {} MiB (is a quote never closed?)",
                    rec.line,
                    MAX_RECORD >> 20
                ));
            }
        }
    }
}

/// Appends one record to `out`; `None` fields are NULL. Errors only when a value cannot be
/// told apart from NULL, which the job's validation rules out.
pub fn write_record(
    out: &mut Vec<u8>,
    fields: &[Option<Cow<'_, str>>],
    sp: &Spelling,
) -> Result<(), String> {
    let only = fields.len() == 1;
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(sp.delim);
        }
        match f {
            None => out.extend_from_slice(sp.null.as_bytes()),
            Some(text) => match sp.format {
                FileFormat::Csv => write_csv_field(out, text, sp, only),
                FileFormat::Text => write_text_field(out, text, sp)?,
            },
        }
    }
    out.push(b'\n');
    Ok(())
}

fn write_csv_field(out: &mut Vec<u8>, text: &str, sp: &Spelling, only: bool) {
    let needs_quotes = text == sp.null
        || (only && text.is_empty())
        || text
            .bytes()
            .any(|b| b == sp.delim || b == b'"' || b == b'\n' || b == b'\r');
    if !needs_quotes {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    out.push(b'"');
    for b in text.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn write_text_field(out: &mut Vec<u8>, text: &str, sp: &Spelling) -> Result<(), String> {
    let start = out.len();
    for b in text.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b if b == sp.delim => out.extend_from_slice(&[b'\\', b]),
            b => out.push(b),
        }
    }
    if out[start..] != *sp.null.as_bytes() {
        return Ok(());
    }
    // The escaped text reads as NULL: put a backslash before its first plain character that
    // has no escape of its own; `\c` reads back as `c`.
    let mut i = start;
    while i < out.len() {
        match out[i] {
            b'\\' => i += 2,
            b't' | b'n' | b'r' => i += 1,
            _ => {
                out.insert(i, b'\\');
                return Ok(());
            }
        }
    }
    out.truncate(start);
    Err(format!(
        "\"{text}\" cannot be told apart from nullFormat \"{}\" in fileFormat text",
        sp.null
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(format: FileFormat, delim: u8, null: &str) -> Spelling {
        Spelling {
            format,
            delim,
            null: null.into(),
        }
    }

    fn read_all(input: &[u8], s: &Spelling) -> Result<Vec<Vec<Option<String>>>, String> {
        let mut r = RecordReader::new(input, s.clone());
        let mut rec = Record::default();
        let mut out = Vec::new();
        while r.read(&mut rec)? {
            if let Some(m) = &rec.malformed {
                return Err(m.clone());
            }
            let mut row = Vec::new();
            for i in 0..rec.len() {
                row.push(rec.field(i, s).unwrap_or(Ok(None))?.map(|c| c.into_owned()));
            }
            out.push(row);
        }
        Ok(out)
    }

    fn round_trip(s: &Spelling, rows: &[Vec<Option<&str>>]) -> Result<(), String> {
        let mut buf = Vec::new();
        for r in rows {
            let fields: Vec<Option<Cow<'_, str>>> =
                r.iter().map(|f| f.map(Cow::Borrowed)).collect();
            write_record(&mut buf, &fields, s)?;
        }
        let back = read_all(&buf, s)?;
        let want: Vec<Vec<Option<String>>> = rows
            .iter()
            .map(|r| r.iter().map(|f| f.map(str::to_string)).collect())
            .collect();
        assert_eq!(back, want, "{:?}", String::from_utf8_lossy(&buf));
        Ok(())
    }

    #[test]
    fn values_equal_to_the_null_marker_read_back_as_themselves() -> Result<(), String> {
        let rows = vec![
            vec![Some("\\N"), None, Some("")],
            vec![Some("a,b"), Some("say \"hi\""), Some("two\nlines\r\n")],
            vec![Some("\\\\N"), Some("NULL"), Some("tab\there")],
        ];
        for format in [FileFormat::Csv, FileFormat::Text] {
            for null in ["\\N", "NULL", "null", "-"] {
                for delim in [b',', b'\t', b'|'] {
                    round_trip(&sp(format, delim, null), &rows)?;
                }
            }
        }
        round_trip(&sp(FileFormat::Csv, b',', ""), &rows)?;
        // One column: an empty value is not a blank line the reader would skip.
        round_trip(
            &sp(FileFormat::Csv, b',', "\\N"),
            &[vec![Some("")], vec![None]],
        )?;
        round_trip(
            &sp(FileFormat::Text, b',', "\\N"),
            &[vec![Some("")], vec![None]],
        )?;
        Ok(())
    }

    #[test]
    fn unclosed_quote_is_an_error_with_its_line() {
        let s = sp(FileFormat::Csv, b',', "\\N");
        let err = read_all(b"1,a\n2,\"b\n3,c\n4,d\n", &s)
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("line 2") && err.contains("never closed"),
            "{err}"
        );
        let err = read_all(b"1,\"a\"x,2\n", &s).err().unwrap_or_default();
        assert!(err.contains("after the closing quote"), "{err}");
    }

    #[test]
    fn crlf_and_blank_lines() -> Result<(), String> {
        let s = sp(FileFormat::Csv, b',', "\\N");
        let rows = read_all(b"1,a\r\n\r\n2,\\N\r\n", &s)?;
        assert_eq!(
            rows,
            vec![
                vec![Some("1".into()), Some("a".into())],
                vec![Some("2".into()), None]
            ]
        );
        Ok(())
    }
}
