//! The writer stage: puts embedded batches back in order, gathers each output shard, and writes its
//! embeddings (`.npy`) and metadata (Parquet) atomically, then the manifest.
//!
//! Metadata has one row per input of the shard, in listing order; `row` is the input's row in the shard's
//! embeddings file, null for an input that failed (`status` = `error`, with the reason in `error`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use crossbeam_channel::Receiver;
use indicatif::ProgressBar;
use parquet::arrow::ArrowWriter;

use super::decode::Meta;
use super::inputs::Kind;
use super::manifest::{embeddings_name, metadata_name, write_atomic, Manifest, ShardEntry};
use super::shard::Plan;
use crate::error::{CliError, Result};
use crate::output::{npy_bytes, OutDType};

/// A batch after the model: its inputs and the normalized embeddings of those that decoded, in order.
#[derive(Debug)]
pub struct Embedded {
    pub seq: u64,
    pub items: Vec<Meta>,
    pub rows: Vec<f32>,
}

/// What this run did, for the summary.
#[derive(Debug, Default)]
pub struct Report {
    pub images: u64,
    pub texts: u64,
    pub failed: u64,
    /// The first few failures, `source: reason`.
    pub first_errors: Vec<String>,
}

const ERRORS_SHOWN: usize = 5;

/// Where the writer puts things and how.
pub struct Writer<'a> {
    pub dir: &'a Path,
    pub plan: &'a Plan,
    pub dim: usize,
    pub out_dtype: OutDType,
    pub manifest: Manifest,
    pub progress: ProgressBar,
    /// Exit abruptly after writing this many shards (tests of `--resume`).
    pub stop_after: Option<u64>,
}

/// The shard being gathered.
struct Open {
    shard: u64,
    metas: Vec<Meta>,
    rows: Vec<f32>,
}

impl Writer<'_> {
    /// Runs until `embedded` is closed; fails if the inputs stopped before the last shard.
    pub fn run(mut self, embedded: Receiver<Embedded>) -> Result<(Report, Manifest)> {
        let mut report = Report::default();
        let mut waiting = BTreeMap::new();
        let (mut next_seq, mut written) = (0u64, 0u64);
        let mut open: Option<Open> = None;
        for batch in embedded {
            waiting.insert(batch.seq, batch);
            while let Some(batch) = waiting.remove(&next_seq) {
                next_seq += 1;
                let mut rows = batch.rows.chunks_exact(self.dim.max(1));
                for meta in batch.items {
                    let shard = self.plan.shard_of(meta.local);
                    let o = open.get_or_insert_with(|| Open {
                        shard,
                        metas: Vec::new(),
                        rows: Vec::new(),
                    });
                    if o.shard != shard {
                        return Err(CliError::Output(format!(
                            "shard {} ended early (a bug: inputs out of order)",
                            o.shard
                        )));
                    }
                    if meta.error.is_none() {
                        let row = rows.next().ok_or_else(|| {
                            CliError::Output("the model returned fewer rows than inputs".into())
                        })?;
                        o.rows.extend_from_slice(row);
                    }
                    count(&mut report, &meta);
                    let last = meta.local + 1 == self.plan.shard_range(shard).end;
                    o.metas.push(meta);
                    self.progress.inc(1);
                    if last {
                        if let Some(done) = open.take() {
                            self.write_shard(done)?;
                            written += 1;
                            if self.stop_after == Some(written) {
                                self.progress.finish_and_clear();
                                // As a crash would: no clean-up, no summary.
                                std::process::exit(75);
                            }
                        }
                    }
                }
            }
        }
        self.progress.finish_and_clear();
        if let Some(o) = open {
            return Err(CliError::Output(format!(
                "the inputs stopped inside shard {}; it was not written",
                o.shard
            )));
        }
        if !self.manifest.complete {
            return Err(CliError::Output(format!(
                "only {} of {} shards are written",
                self.manifest.shards.len(),
                self.manifest.shards_total
            )));
        }
        Ok((report, self.manifest))
    }

    fn write_shard(&mut self, open: Open) -> Result<()> {
        let embedded = (open.rows.len() / self.dim.max(1)) as u64;
        let entry = ShardEntry {
            shard: open.shard,
            embeddings: embeddings_name(open.shard),
            metadata: metadata_name(open.shard),
            inputs: open.metas.len() as u64,
            embedded,
            failed: open.metas.len() as u64 - embedded,
        };
        let npy = npy_bytes(&open.rows, embedded as usize, self.dim, self.out_dtype);
        write_atomic(self.dir, &entry.embeddings, &npy)?;
        write_atomic(self.dir, &entry.metadata, &parquet_bytes(&open.metas)?)?;
        self.manifest.add(entry);
        self.manifest.write(self.dir)
    }
}

fn count(report: &mut Report, meta: &Meta) {
    match (&meta.error, meta.kind) {
        (None, Kind::Image) => report.images += 1,
        (None, Kind::Text) => report.texts += 1,
        (Some(e), _) => {
            report.failed += 1;
            if report.first_errors.len() < ERRORS_SHOWN {
                report.first_errors.push(format!("{}: {e}", meta.source));
            }
        }
    }
}

/// The metadata of one shard as a Parquet file.
fn parquet_bytes(metas: &[Meta]) -> Result<Vec<u8>> {
    let err = |e: &dyn std::fmt::Display| CliError::Output(format!("parquet: {e}"));
    let schema = Arc::new(Schema::new(vec![
        Field::new("index", DataType::Int64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("bytes", DataType::Int64, true),
        Field::new("row", DataType::Int64, true),
        Field::new("text", DataType::Utf8, true),
    ]));
    let mut row = 0i64;
    let rows: Vec<Option<i64>> = metas
        .iter()
        .map(|m| {
            m.error.is_none().then(|| {
                row += 1;
                row - 1
            })
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            metas.iter().map(|m| m.index as i64),
        )),
        Arc::new(StringArray::from_iter_values(
            metas.iter().map(|m| &m.source),
        )),
        Arc::new(StringArray::from_iter_values(
            metas.iter().map(|m| m.kind.name()),
        )),
        Arc::new(StringArray::from_iter_values(metas.iter().map(|m| {
            if m.error.is_none() {
                "ok"
            } else {
                "error"
            }
        }))),
        Arc::new(StringArray::from_iter(
            metas.iter().map(|m| m.error.as_deref()),
        )),
        Arc::new(Int64Array::from_iter(
            metas.iter().map(|m| m.bytes.map(|b| b as i64)),
        )),
        Arc::new(Int64Array::from(rows)),
        Arc::new(StringArray::from_iter(
            metas.iter().map(|m| m.text.as_deref()),
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| err(&e))?;
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, None).map_err(|e| err(&e))?;
    writer.write(&batch).map_err(|e| err(&e))?;
    writer.close().map_err(|e| err(&e))?;
    Ok(out)
}
