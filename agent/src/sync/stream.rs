//! `streamreader` / `streamwriter`: generated rows and a counting sink, for tests, benchmarks and
//! trying a pipeline without a database. As in DataX, every channel generates
//! `sliceRecordCount` rows.

use super::plugin::{
    BoxFuture, JobLog, ReadSplit, Reader, Result, RowSink, Shared, SyncError, TargetInfo,
    WriteChannel, Writer,
};
use super::value::{Row, TextSpelling, Value, parse_typed, row_size};
use ferry_common::job::{StreamColumn, StreamReader as Params, StreamWriter as WriterParams};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct StreamReader {
    params: Params,
}

impl StreamReader {
    pub fn new(params: Params) -> Self {
        Self { params }
    }
}

fn column_value(c: &StreamColumn) -> Result<Value> {
    let text = match &c.value {
        serde_json::Value::Null => return Ok(Value::Null),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    parse_typed(
        &text,
        &c.kind,
        TextSpelling {
            date: c.date_format.as_ref(),
            bytes: None,
        },
    )
    .map_err(|e| SyncError::Source(format!("streamreader column: {e}")))
}

impl Reader for StreamReader {
    fn name(&self) -> &'static str {
        "streamreader"
    }

    fn splits<'a>(
        &'a self,
        channels: usize,
        _log: &'a JobLog,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn ReadSplit>>>> {
        Box::pin(async move {
            let row: Row = self
                .params
                .column
                .iter()
                .map(column_value)
                .collect::<Result<_>>()?;
            Ok((0..channels)
                .map(|i| {
                    Box::new(Slice {
                        index: i,
                        row: row.clone(),
                        count: self.params.slice_record_count,
                    }) as Box<dyn ReadSplit>
                })
                .collect())
        })
    }
}

struct Slice {
    index: usize,
    row: Row,
    count: u64,
}

impl ReadSplit for Slice {
    fn describe(&self) -> String {
        format!("slice {} ({} records)", self.index, self.count)
    }

    fn run<'a>(
        self: Box<Self>,
        sink: &'a mut RowSink,
        _target: &'a TargetInfo,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for _ in 0..self.count {
                sink.push(self.row.clone()).await?;
            }
            Ok(())
        })
    }
}

/// How many rows `print` logs before it stops: the log is not a data store.
const PRINT_LIMIT: u64 = 1000;

pub struct StreamWriter {
    params: WriterParams,
    printed: Arc<AtomicU64>,
}

impl StreamWriter {
    pub fn new(params: WriterParams) -> Self {
        Self {
            params,
            printed: Arc::default(),
        }
    }
}

impl Writer for StreamWriter {
    fn name(&self) -> &'static str {
        "streamwriter"
    }
    fn prepare<'a>(&'a self, _log: &'a JobLog) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn parallelism(&self) -> usize {
        usize::MAX
    }
    fn open(&self, _index: usize) -> BoxFuture<'_, Result<Box<dyn WriteChannel>>> {
        Box::pin(async move {
            Ok(Box::new(StreamChannel {
                print: self.params.print,
                printed: self.printed.clone(),
            }) as Box<dyn WriteChannel>)
        })
    }
    fn finish<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let printed = self.printed.load(Ordering::Relaxed);
            if printed > PRINT_LIMIT {
                log.info(format!(
                    "streamwriter printed the first {PRINT_LIMIT} records of {printed}"
                ));
            }
            Ok(())
        })
    }
    fn abort<'a>(&'a self, _log: &'a JobLog) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

struct StreamChannel {
    print: bool,
    printed: Arc<AtomicU64>,
}

impl WriteChannel for StreamChannel {
    fn write<'a>(
        &'a mut self,
        rows: Vec<Row>,
        shared: &'a Arc<Shared>,
    ) -> BoxFuture<'a, Result<()>> {
        let bytes: usize = rows.iter().map(row_size).sum();
        if self.print {
            for row in &rows {
                let n = self.printed.fetch_add(1, Ordering::Relaxed);
                if n < PRINT_LIMIT {
                    let line: Vec<String> = row.iter().map(ToString::to_string).collect();
                    shared.log.info(line.join("\t"));
                }
            }
        }
        shared.written(rows.len() as u64, bytes as u64);
        Box::pin(async { Ok(()) })
    }

    fn commit(self: Box<Self>, _shared: &Arc<Shared>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}
