//! The output directory: checking it before any work, atomic file writes, and `manifest.json`, the record of
//! finished shards that `--resume` continues from.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::shard::Partition;
use crate::error::{CliError, Result};
use crate::output::OutDType;

pub const MANIFEST: &str = "manifest.json";
const FORMAT: &str = "flashclip-embeddings/1";

pub fn embeddings_name(shard: u64) -> String {
    format!("embeddings-{shard:05}.npy")
}

pub fn metadata_name(shard: u64) -> String {
    format!("metadata-{shard:05}.parquet")
}

/// What identifies a job: a resumed run must match it field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub model: String,
    pub dtype: String,
    pub out_dtype: OutDType,
    pub dim: usize,
    pub shard_rows: u64,
    pub partition: Partition,
    /// Inputs listed in all (every partition).
    pub inputs: u64,
    pub fingerprint: String,
}

/// One written shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub shard: u64,
    pub embeddings: String,
    pub metadata: String,
    /// Inputs in the shard (rows of its metadata).
    pub inputs: u64,
    /// Rows of its embeddings file.
    pub embedded: u64,
    pub failed: u64,
}

/// `manifest.json`. It holds no times or host names, so an interrupted and resumed job ends with the same bytes
/// as an uninterrupted one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    #[serde(flatten)]
    pub job: Job,
    pub shards_total: u64,
    pub complete: bool,
    pub embedded: u64,
    pub failed: u64,
    pub shards: Vec<ShardEntry>,
}

impl Manifest {
    pub fn new(job: Job, shards_total: u64) -> Self {
        Self {
            format: FORMAT.into(),
            job,
            shards_total,
            complete: false,
            embedded: 0,
            failed: 0,
            shards: Vec::new(),
        }
    }

    /// Records a written shard (kept in shard order).
    pub fn add(&mut self, entry: ShardEntry) {
        self.embedded += entry.embedded;
        self.failed += entry.failed;
        self.shards.push(entry);
        self.shards.sort_by_key(|e| e.shard);
        self.complete = self.shards.len() as u64 == self.shards_total;
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| CliError::Output(format!("manifest: {e}")))?;
        bytes.push(b'\n');
        write_atomic(dir, MANIFEST, &bytes)
    }

    /// The shards of a previous run of the same job whose files are still there; a different job is an error
    /// naming what differs.
    pub fn resume_from(previous: Manifest, job: &Job, dir: &Path) -> Result<Manifest> {
        let theirs = &previous.job;
        let differs: Vec<String> = [
            ("model", theirs.model != job.model),
            ("--dtype", theirs.dtype != job.dtype),
            ("--out-dtype", theirs.out_dtype != job.out_dtype),
            ("embedding size", theirs.dim != job.dim),
            ("--shard-rows", theirs.shard_rows != job.shard_rows),
            ("--shard", theirs.partition != job.partition),
            (
                "inputs (their names, order or number)",
                theirs.inputs != job.inputs || theirs.fingerprint != job.fingerprint,
            ),
        ]
        .iter()
        .filter(|(_, d)| *d)
        .map(|(what, _)| what.to_string())
        .collect();
        if !differs.is_empty() || previous.format != FORMAT {
            return Err(CliError::Usage(format!(
                "cannot resume into {}: the job there differs in {} (use --overwrite to start over)",
                dir.display(),
                if differs.is_empty() {
                    "format".into()
                } else {
                    differs.join(", ")
                }
            )));
        }
        let mut manifest = Manifest::new(job.clone(), previous.shards_total);
        for entry in previous.shards {
            if dir.join(&entry.embeddings).is_file() && dir.join(&entry.metadata).is_file() {
                manifest.add(entry);
            }
        }
        Ok(manifest)
    }
}

/// What `--out` holds before the job starts.
#[derive(Debug)]
pub enum Existing {
    /// Not there yet: [`create_out_dir`] makes it once the inputs have been checked, so that a job refused
    /// before any work leaves nothing behind.
    Missing,
    /// An empty directory.
    Empty,
    /// A previous run's manifest, for `--resume`.
    Resume(Manifest),
    /// Outputs to replace (`--overwrite`).
    Overwrite,
}

/// Checks `--out` before any model work: it is a writable directory, or a missing one in a writable parent, and
/// it is empty unless `--overwrite` or `--resume` says what to do with what it holds.
pub fn check_out_dir(dir: &Path, overwrite: bool, resume: bool) -> Result<Existing> {
    if dir.exists() && !dir.is_dir() {
        return Err(CliError::Usage(format!(
            "--out {} exists and is not a directory",
            dir.display()
        )));
    }
    if !dir.exists() {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(CliError::Usage(format!(
                "the parent of --out {} does not exist",
                dir.display()
            )));
        }
        // A trial file proves the parent writable now rather than after the embedding work.
        tempfile::NamedTempFile::new_in(&parent)
            .map_err(|e| CliError::io("cannot write in", &parent, e))?;
        return Ok(Existing::Missing);
    }
    tempfile::NamedTempFile::new_in(dir).map_err(|e| CliError::io("cannot write in", dir, e))?;
    let empty = std::fs::read_dir(dir)
        .map_err(|e| CliError::io("cannot read", dir, e))?
        .next()
        .is_none();
    let manifest = dir.join(MANIFEST);
    if empty {
        Ok(Existing::Empty)
    } else if resume && manifest.is_file() {
        let text = std::fs::read_to_string(&manifest)
            .map_err(|e| CliError::io("cannot read", &manifest, e))?;
        let previous = serde_json::from_str(&text).map_err(|e| {
            CliError::Usage(format!(
                "{} is not a flashclip manifest: {e}",
                manifest.display()
            ))
        })?;
        Ok(Existing::Resume(previous))
    } else if overwrite || resume {
        // --resume without a manifest: the job was stopped before its first shard; start over.
        Ok(Existing::Overwrite)
    } else {
        Err(CliError::Usage(format!(
            "--out {} is not empty: pass --resume to continue the job there or --overwrite to replace its \
             outputs",
            dir.display()
        )))
    }
}

/// Makes a missing `--out` ([`Existing::Missing`]) once the job is known to run.
pub fn create_out_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir(dir).map_err(|e| CliError::io("cannot create", dir, e))
}

/// Removes a previous job's outputs (the manifest first, so no manifest ever lists shards that are gone), and
/// nothing else.
pub fn clear_outputs(dir: &Path) -> Result<()> {
    let manifest = dir.join(MANIFEST);
    if manifest.exists() {
        std::fs::remove_file(&manifest).map_err(|e| CliError::io("cannot remove", &manifest, e))?;
    }
    remove_matching(dir, |name| {
        (name.starts_with("embeddings-") && name.ends_with(".npy"))
            || (name.starts_with("metadata-") && name.ends_with(".parquet"))
    })
}

/// Removes the temporary files of writes that a killed run left unfinished.
pub fn remove_temporaries(dir: &Path) -> Result<()> {
    remove_matching(dir, |name| {
        let ours = [".embeddings-", ".metadata-", ".manifest.json."];
        ours.iter().any(|p| name.starts_with(p)) && name.ends_with(".tmp")
    })
}

fn remove_matching(dir: &Path, matches: impl Fn(&str) -> bool) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| CliError::io("cannot read", dir, e))?;
    for entry in entries.flatten() {
        if matches(&entry.file_name().to_string_lossy()) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| CliError::io("cannot remove", &path, e))?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `dir/name` atomically: a temporary file in `dir`, flushed to disk, renamed over the final
/// name, then the directory entry flushed. A crash leaves the old file or the new one, never a partial one.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let err = |e| CliError::io("cannot write", &path, e);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    // Temporary files are private (0600); outputs are ordinary files.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(&path).map_err(|e| err(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CliError::io("cannot sync", dir, e))
}
