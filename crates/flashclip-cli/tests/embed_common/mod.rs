//! Helpers of the `flashclip embed` tests: running the binary, making images and model directories, reading
//! the .npy and Parquet outputs back, and the CPU reference to compare with.
#![allow(dead_code, unused_imports)] // each test file uses its own share; the imports are re-exported for them

pub use std::collections::BTreeMap;
pub use std::fs::File;
pub use std::path::{Path, PathBuf};
pub use std::process::{Command, Output, Stdio};

pub use arrow_array::{Array, Int64Array, StringArray};
pub use flashclip_model::backend::{CpuBackend, Embedder};
pub use flashclip_model::preprocess::Preprocessor;
pub use flashclip_model::tokenizer::ClipTokenizer;
pub use flashclip_model::Checkpoint;
pub use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
pub use tempfile::TempDir;

pub fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../flashclip-model/tests/fixtures/tiny")
}

/// Runs `flashclip` with `args` and no standard input.
pub fn flashclip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flashclip"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run flashclip")
}

/// Runs `flashclip embed --model <tiny> --device cpu` with `args`.
pub fn embed(model: &Path, args: &[&str]) -> Output {
    let model = model.to_str().expect("a UTF-8 fixture path");
    let mut all = vec!["embed", "--model", model, "--device", "cpu", "--quiet"];
    all.extend_from_slice(args);
    flashclip(&all)
}

/// `flashclip flops` with `args` (after `flops`): the `2/MAC total:` figure, in TFLOPs.
pub fn flops_total(args: &[&str]) -> f64 {
    let mut all = vec!["flops"];
    all.extend_from_slice(args);
    let out = flashclip(&all);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("2/MAC total:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `2/MAC total:` line in:\n{stdout}"))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_ok(out: &Output) {
    assert!(out.status.success(), "{:?}\n{}", out.status, stderr(out));
}

/// A failure with a message, not a panic.
pub fn assert_fails(out: &Output) -> String {
    let err = stderr(out);
    assert!(
        out.status.code().is_some_and(|c| c != 0 && c != 101),
        "{:?}\n{err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A small image with a pattern depending on `seed`, in the format of the extension.
pub fn write_image(path: &Path, w: u32, h: u32, seed: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 7 + y * 13 + seed * 31) % 256;
        image::Rgb([v as u8, (255 - v) as u8, ((v * seed) % 256) as u8])
    });
    img.save(path).expect("save image");
}

/// `n` images (JPEG and PNG, several sizes) in `dir`, sorted by name.
pub fn photo_folder(dir: &Path, n: u32) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let ext = if i % 2 == 0 { "jpg" } else { "png" };
            let path = dir.join(format!("img{i:02}.{ext}"));
            write_image(&path, 40 + 9 * i, 30 + 5 * i, i + 1);
            path
        })
        .collect()
}

/// One metadata row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub index: i64,
    pub source: String,
    pub kind: String,
    pub status: String,
    pub error: Option<String>,
    pub bytes: Option<i64>,
    pub row: Option<i64>,
    pub text: Option<String>,
}

pub fn read_metadata(path: &Path) -> Vec<Row> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let b = batch.unwrap();
        let ints = |name: &str| {
            let c = b.column_by_name(name).unwrap();
            c.as_any().downcast_ref::<Int64Array>().unwrap().clone()
        };
        let strs = |name: &str| {
            let c = b.column_by_name(name).unwrap();
            c.as_any().downcast_ref::<StringArray>().unwrap().clone()
        };
        let (index, bytes, row) = (ints("index"), ints("bytes"), ints("row"));
        let (source, kind, status) = (strs("source"), strs("kind"), strs("status"));
        let (error, text) = (strs("error"), strs("text"));
        let opt_s = |a: &StringArray, r| (!a.is_null(r)).then(|| a.value(r).to_string());
        let opt_i = |a: &Int64Array, r| (!a.is_null(r)).then(|| a.value(r));
        for r in 0..b.num_rows() {
            rows.push(Row {
                index: index.value(r),
                source: source.value(r).into(),
                kind: kind.value(r).into(),
                status: status.value(r).into(),
                error: opt_s(&error, r),
                bytes: opt_i(&bytes, r),
                row: opt_i(&row, r),
                text: opt_s(&text, r),
            });
        }
    }
    rows
}

/// A `.npy` file's shape and values (float16 or float32, little-endian, C order).
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_text = header.split("'shape': (").nth(1).unwrap();
    let shape: Vec<usize> = shape_text[..shape_text.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let body = &bytes[10 + hlen..];
    let values: Vec<f32> = if header.contains("'<f4'") {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    } else {
        assert!(header.contains("'<f2'"), "{header}");
        body.chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    };
    assert_eq!(values.len(), shape.iter().product::<usize>());
    (shape, values)
}

/// Every metadata row of an output directory (shards in manifest order) and the embedding of each embedded
/// input by listing index.
pub fn read_out(dir: &Path) -> (Vec<Row>, BTreeMap<i64, Vec<f32>>) {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["complete"], true, "{manifest}");
    let (mut all, mut embeds) = (Vec::new(), BTreeMap::new());
    for shard in manifest["shards"].as_array().unwrap() {
        let rows = read_metadata(&dir.join(shard["metadata"].as_str().unwrap()));
        let (shape, values) = read_npy(&dir.join(shard["embeddings"].as_str().unwrap()));
        let ok = rows.iter().filter(|r| r.status == "ok").count();
        assert_eq!(shape[0], ok);
        assert_eq!(shard["embedded"].as_u64().unwrap() as usize, ok);
        for r in &rows {
            if let Some(row) = r.row {
                let d = shape[1];
                let v = values[row as usize * d..(row as usize + 1) * d].to_vec();
                embeds.insert(r.index, v);
            }
        }
        all.extend(rows);
    }
    (all, embeds)
}

pub fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

pub fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "{what}: max difference {worst}");
}

/// The CPU reference's normalized embedding of each image file.
pub fn reference_images(model: &Path, paths: &[PathBuf]) -> Vec<Vec<f32>> {
    let (config, checkpoint) = Checkpoint::open_dir(model).unwrap();
    let mut cpu = CpuBackend::load(&config, &checkpoint, 1).unwrap();
    let pre = Preprocessor::new(config.vision.image_size as u32);
    paths
        .iter()
        .map(|p| {
            let pixels = pre.load_and_preprocess(p).unwrap();
            normalized(cpu.embed_images(&pixels).unwrap().iter().copied().collect())
        })
        .collect()
}

/// Every file of a directory by name, with its bytes.
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// A PNG that claims `w`x`h` pixels and holds almost none.
pub fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // One IDAT chunk: a zlib stream of 64 zero bytes in a stored block, so decoding gets as far as sizing the
    // image.
    let mut idat = b"IDAT\x78\x01\x01\x40\x00\xbf\xff".to_vec();
    idat.extend_from_slice(&[0; 64]);
    idat.extend_from_slice(&0x0040_0001u32.to_be_bytes());
    png.extend_from_slice(&(idat.len() as u32 - 4).to_be_bytes());
    png.extend_from_slice(&idat);
    png.extend_from_slice(&crc32(&idat).to_be_bytes());
    png.extend_from_slice(&0u32.to_be_bytes());
    png.extend_from_slice(b"IEND");
    png.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    png
}

/// A model directory with the tiny model and a word-level tokenizer whose ids fit its 1000-token vocabulary.
pub fn tiny_model_with_tokenizer(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::os::unix::fs::symlink(tiny_model().join(f), model.join(f)).unwrap();
    }
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(998, "<|startoftext|>"), special(999, "<|endoftext|>")],
        "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "unk_token": "<unk>", "vocab": {
            "<unk>": 0, "a": 1, "photo": 2, "of": 3, "cat": 4, "dog": 5,
            "<|startoftext|>": 998, "<|endoftext|>": 999}}
    });
    std::fs::write(model.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    model
}
