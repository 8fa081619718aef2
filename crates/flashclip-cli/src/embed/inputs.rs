//! Listing a job's inputs as a stream, in a fixed order: `--images` arguments in the order given (directories
//! walked recursively in file-name order, patterns expanded in sorted order, webdataset `.tar` shards member by
//! member), then `--images-from` lines, then `--texts`, `--texts-file` lines and `--texts-jsonl` records.
//!
//! The listing runs twice: once to count the inputs and fingerprint their names (before any model work), then
//! to feed the decoders. Nothing but the current tar member is held in memory, so a job's memory does not grow
//! with its number of inputs; lists read from standard input are the exception (they cannot be read twice).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{CliError, Result};

/// File extensions taken as images from directories and tar shards (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// The largest image file or tar member read (larger ones are reported, not read): bounds what one decode holds.
pub const MAX_INPUT_BYTES: u64 = 256 << 20;

/// What an input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Text,
}

impl Kind {
    /// The name in metadata files.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Text => "text",
        }
    }
}

/// What a decode worker gets for an input.
#[derive(Debug)]
pub enum Payload {
    /// An image file, read by the worker.
    File(PathBuf),
    /// The bytes of an image (a tar member).
    Bytes(Vec<u8>),
    /// A tar member during the counting pass, which reads headers only.
    Unread,
    /// A text.
    Text(String),
    /// An input already known to be bad, with the reason (a tar sample without an image, a JSONL line without
    /// the text field).
    Invalid(String),
}

/// One input: its position in the whole listing, a name for reports and metadata, and its payload.
#[derive(Debug)]
pub struct Input {
    pub index: u64,
    pub source: String,
    pub kind: Kind,
    pub payload: Payload,
}

/// A list of lines: a file read on each pass, or standard input read once.
#[derive(Debug)]
enum Lines {
    File(PathBuf),
    Stdin(Vec<String>),
}

impl Lines {
    fn new(path: &Path) -> Result<Self> {
        if path != Path::new("-") {
            if !path.is_file() {
                return Err(CliError::Usage(format!(
                    "{} is not a readable file",
                    path.display()
                )));
            }
            return Ok(Lines::File(path.to_path_buf()));
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::io("cannot read", "<stdin>", e))?;
        Ok(Lines::Stdin(text.lines().map(str::to_string).collect()))
    }

    fn name(&self) -> String {
        match self {
            Lines::File(p) => p.display().to_string(),
            Lines::Stdin(_) => "stdin".into(),
        }
    }

    /// Calls `f` with each non-blank line (without `\r`) and its 1-based number.
    fn each(
        &self,
        f: &mut dyn FnMut(usize, &str) -> Result<ControlFlow<()>>,
    ) -> Result<ControlFlow<()>> {
        let mut visit = |n: usize, line: &str| {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                Ok(ControlFlow::Continue(()))
            } else {
                f(n + 1, line)
            }
        };
        match self {
            Lines::Stdin(lines) => {
                for (n, line) in lines.iter().enumerate() {
                    if visit(n, line)?.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
            }
            Lines::File(path) => {
                let file = File::open(path).map_err(|e| CliError::io("cannot open", path, e))?;
                for (n, line) in BufReader::new(file).lines().enumerate() {
                    let line = line.map_err(|e| CliError::io("cannot read", path, e))?;
                    if visit(n, &line)?.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    }
}

/// A job's input arguments.
#[derive(Debug)]
pub struct Inputs {
    images: Vec<PathBuf>,
    images_from: Option<Lines>,
    texts: Vec<String>,
    texts_file: Option<Lines>,
    texts_jsonl: Option<(Lines, String)>,
}

/// The result of the counting pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub count: u64,
    pub texts: u64,
    /// `sha256:` + hex of every input's kind and name in order: what `--resume` checks.
    pub fingerprint: String,
}

impl Inputs {
    /// Checks the list files (reading standard input now where one is `-`).
    pub fn new(
        images: &[PathBuf],
        images_from: Option<&Path>,
        texts: &[String],
        texts_file: Option<&Path>,
        texts_jsonl: Option<(&Path, &str)>,
    ) -> Result<Self> {
        let stdin_uses = [images_from, texts_file, texts_jsonl.map(|(p, _)| p)]
            .iter()
            .filter(|p| p.is_some_and(|p| p == Path::new("-")))
            .count();
        if stdin_uses > 1 {
            return Err(CliError::Usage(
                "only one of --images-from, --texts-file and --texts-jsonl can read standard input (-)"
                    .into(),
            ));
        }
        Ok(Self {
            images: images.to_vec(),
            images_from: images_from.map(Lines::new).transpose()?,
            texts: texts.to_vec(),
            texts_file: texts_file.map(Lines::new).transpose()?,
            texts_jsonl: texts_jsonl
                .map(|(p, field)| Ok::<_, CliError>((Lines::new(p)?, field.to_string())))
                .transpose()?,
        })
    }

    /// The counting pass: reads names and tar headers only, and prints listing warnings (missing matches,
    /// unreadable directories, symlink loops) once.
    pub fn count(&self) -> Result<Listing> {
        let mut seen = Fingerprint::default();
        self.visit(false, &mut |input| {
            seen.add(&input);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(seen.finish())
    }

    /// Lists every input in order with its payload (tar members read), until `f` breaks. Warnings are left to
    /// [`Inputs::count`].
    pub fn stream(&self, f: &mut dyn FnMut(Input) -> Result<ControlFlow<()>>) -> Result<()> {
        self.visit(true, f)
    }

    fn visit(&self, read: bool, f: &mut dyn FnMut(Input) -> Result<ControlFlow<()>>) -> Result<()> {
        let mut out = Emitter { next: 0, read, f };
        for spec in &self.images {
            if out.image_spec(spec, true)?.is_break() {
                return Ok(());
            }
        }
        if let Some(lines) = &self.images_from {
            let flow = lines.each(&mut |_, line| out.image_spec(Path::new(line), false))?;
            if flow.is_break() {
                return Ok(());
            }
        }
        for (n, text) in self.texts.iter().enumerate() {
            let source = format!("--texts:{}", n + 1);
            if out
                .emit(source, Kind::Text, Payload::Text(text.clone()))?
                .is_break()
            {
                return Ok(());
            }
        }
        if let Some(lines) = &self.texts_file {
            let name = lines.name();
            let flow = lines.each(&mut |n, line| {
                out.emit(
                    format!("{name}:{n}"),
                    Kind::Text,
                    Payload::Text(line.into()),
                )
            })?;
            if flow.is_break() {
                return Ok(());
            }
        }
        if let Some((lines, field)) = &self.texts_jsonl {
            let name = lines.name();
            let _ = lines.each(&mut |n, line| {
                out.emit(format!("{name}:{n}"), Kind::Text, jsonl_text(line, field))
            })?;
        }
        Ok(())
    }
}

/// The text in field `field` of one JSON line, or why there is none.
fn jsonl_text(line: &str, field: &str) -> Payload {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) => match v.get(field) {
            Some(serde_json::Value::String(s)) => Payload::Text(s.clone()),
            Some(_) => Payload::Invalid(format!("field {field:?} is not a string")),
            None => Payload::Invalid(format!("no field {field:?}")),
        },
        Err(e) => Payload::Invalid(format!("invalid JSON: {e}")),
    }
}

/// Counts inputs and hashes their kinds and names (and texts) in order.
#[derive(Default)]
pub struct Fingerprint {
    count: u64,
    texts: u64,
    hash: Sha256,
}

impl Fingerprint {
    pub fn add(&mut self, input: &Input) {
        self.count += 1;
        if input.kind == Kind::Text {
            self.texts += 1;
        }
        self.hash.update(input.kind.name().as_bytes());
        self.hash.update([0]);
        self.hash.update(input.source.as_bytes());
        self.hash.update([0]);
        if let Payload::Text(t) = &input.payload {
            self.hash.update(t.as_bytes());
        }
        self.hash.update([0xff]);
    }

    pub fn finish(self) -> Listing {
        Listing {
            count: self.count,
            texts: self.texts,
            fingerprint: format!("sha256:{:x}", self.hash.finalize()),
        }
    }
}

/// Numbers inputs and hands them to the visitor.
struct Emitter<'a> {
    next: u64,
    read: bool,
    f: &'a mut dyn FnMut(Input) -> Result<ControlFlow<()>>,
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

impl Emitter<'_> {
    fn emit(&mut self, source: String, kind: Kind, payload: Payload) -> Result<ControlFlow<()>> {
        let index = self.next;
        self.next += 1;
        (self.f)(Input {
            index,
            source,
            kind,
            payload,
        })
    }

    fn warn(&self, message: std::fmt::Arguments<'_>) {
        // Printed on the counting pass only, so each warning appears once.
        if !self.read {
            eprintln!("warning: {message}");
        }
    }

    /// One `--images` argument (`glob`: patterns expanded, a missing path refused) or `--images-from` line.
    fn image_spec(&mut self, spec: &Path, glob: bool) -> Result<ControlFlow<()>> {
        let text = spec.to_string_lossy();
        if glob && (text.contains('*') || text.contains('?')) {
            let paths = glob::glob(&text)
                .map_err(|e| CliError::Usage(format!("bad pattern {text}: {e}")))?;
            let mut matched = false;
            for path in paths {
                match path {
                    Ok(path) => {
                        matched = true;
                        if self.path(&path)?.is_break() {
                            return Ok(ControlFlow::Break(()));
                        }
                    }
                    Err(e) => self.warn(format_args!("{e}")),
                }
            }
            if !matched {
                self.warn(format_args!("{text} matched no files"));
            }
            return Ok(ControlFlow::Continue(()));
        }
        // A path typed on the command line that is not there is a usage error, found before any model loads; a
        // missing file in a --images-from list is one input's error row, like any unreadable image.
        if glob && !spec.exists() {
            return Err(CliError::Usage(format!(
                "--images {text}: no such file or directory"
            )));
        }
        self.path(spec)
    }

    fn path(&mut self, path: &Path) -> Result<ControlFlow<()>> {
        if path.is_dir() {
            self.walk(path)
        } else if path.is_file() && has_extension(path, &["tar"]) {
            self.tar(path)
        } else {
            // A missing file is listed and reported when decoding, like any unreadable image.
            let source = path.display().to_string();
            self.emit(source, Kind::Image, Payload::File(path.to_path_buf()))
        }
    }

    /// Images and tar shards under `dir` in file-name order. Symlinks are followed; walkdir detects loops
    /// (a link to an ancestor) and reports them instead of descending forever.
    fn walk(&mut self, dir: &Path) -> Result<ControlFlow<()>> {
        let mut found = false;
        let walker = walkdir::WalkDir::new(dir)
            .follow_links(true)
            .sort_by_file_name();
        for entry in walker {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.warn(format_args!("skipped: {e}"));
                    continue;
                }
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let path = entry.path();
            let flow = if has_extension(path, &IMAGE_EXTENSIONS) {
                let source = path.display().to_string();
                self.emit(source, Kind::Image, Payload::File(path.to_path_buf()))?
            } else if has_extension(path, &["tar"]) {
                self.tar(path)?
            } else {
                continue;
            };
            found = true;
            if flow.is_break() {
                return Ok(flow);
            }
        }
        if !found {
            self.warn(format_args!(
                "no {} or tar files in {}",
                IMAGE_EXTENSIONS.join("/"),
                dir.display()
            ));
        }
        Ok(ControlFlow::Continue(()))
    }

    /// A webdataset shard: members grouped by key (the member path up to the first `.` of its file name), one
    /// input per key with its first image member. Read as a stream; the counting pass seeks past member data.
    fn tar(&mut self, path: &Path) -> Result<ControlFlow<()>> {
        let err = |e| CliError::io("cannot read tar shard", path, e);
        let file = File::open(path).map_err(err)?;
        let mut archive = tar::Archive::new(BufReader::new(file));
        let entries = if self.read {
            archive.entries()
        } else {
            archive.entries_with_seek()
        }
        .map_err(err)?;
        let mut group: Option<(String, Payload)> = None;
        for entry in entries {
            let mut entry = entry.map_err(err)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let (key, ext) = split_key(&member);
            if group.as_ref().is_none_or(|(k, _)| k != key) {
                if let Some(done) = group.take() {
                    if self.sample(path, done)?.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
                group = Some((key.to_string(), Payload::Invalid(no_image())));
            }
            let Some((_, payload)) = group.as_mut() else {
                continue;
            };
            let is_image = IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(ext));
            if !is_image || !matches!(payload, Payload::Invalid(_)) {
                continue;
            }
            let size = entry.size();
            *payload = if size > MAX_INPUT_BYTES {
                Payload::Invalid(format!(
                    "{member} is {size} bytes, over the {MAX_INPUT_BYTES}-byte limit"
                ))
            } else if self.read {
                // `size` is checked above, so this allocation is bounded.
                let mut bytes = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut bytes).map_err(err)?;
                Payload::Bytes(bytes)
            } else {
                Payload::Unread
            };
        }
        match group {
            Some(done) => self.sample(path, done),
            None => Ok(ControlFlow::Continue(())),
        }
    }

    fn sample(&mut self, tar: &Path, (key, payload): (String, Payload)) -> Result<ControlFlow<()>> {
        let source = format!("{}#{key}", tar.display());
        self.emit(source, Kind::Image, payload)
    }
}

fn no_image() -> String {
    format!("sample has no {} member", IMAGE_EXTENSIONS.join("/"))
}

/// A webdataset member name's key and extension: `dir/abc.seg.jpg` is key `dir/abc`, extension `seg.jpg`'s
/// last part `jpg`.
fn split_key(member: &str) -> (&str, &str) {
    let name_start = member.rfind('/').map_or(0, |i| i + 1);
    let key_end = member[name_start..]
        .find('.')
        .map_or(member.len(), |i| name_start + i);
    let ext = member.rsplit_once('.').map_or("", |(_, e)| e);
    (
        &member[..key_end],
        if key_end == member.len() { "" } else { ext },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webdataset_keys() {
        assert_eq!(split_key("a/b/000123.jpg"), ("a/b/000123", "jpg"));
        assert_eq!(split_key("000123.seg.PNG"), ("000123", "PNG"));
        assert_eq!(split_key("x.y/000123"), ("x.y/000123", ""));
    }

    #[test]
    fn jsonl_fields() {
        assert!(matches!(jsonl_text(r#"{"t": "a cat"}"#, "t"), Payload::Text(t) if t == "a cat"));
        assert!(matches!(
            jsonl_text(r#"{"t": 3}"#, "t"),
            Payload::Invalid(_)
        ));
        assert!(matches!(jsonl_text("{", "t"), Payload::Invalid(_)));
    }
}
