//! `flashclip embed` end to end on the CPU backend and the tiny test model: shards, resume, partitions, bad
//! inputs, tar shards and texts, with outputs read back from the .npy and Parquet files.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use arrow_array::{Array, Int64Array, StringArray};
use flashclip_model::backend::{CpuBackend, Embedder};
use flashclip_model::preprocess::Preprocessor;
use flashclip_model::tokenizer::ClipTokenizer;
use flashclip_model::Checkpoint;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tempfile::TempDir;

fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../flashclip-model/tests/fixtures/tiny")
}

/// Runs `flashclip embed --model <tiny> --device cpu` with `args`.
fn embed(model: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flashclip"))
        .args(["embed", "--model"])
        .arg(model)
        .args(["--device", "cpu", "--quiet"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run flashclip")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "{:?}\n{}", out.status, stderr(out));
}

/// A failure with a message, not a panic.
fn assert_fails(out: &Output) -> String {
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
fn write_image(path: &Path, w: u32, h: u32, seed: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 7 + y * 13 + seed * 31) % 256;
        image::Rgb([v as u8, (255 - v) as u8, ((v * seed) % 256) as u8])
    });
    img.save(path).expect("save image");
}

/// `n` images (JPEG and PNG, several sizes) in `dir`, sorted by name.
fn photo_folder(dir: &Path, n: u32) -> Vec<PathBuf> {
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
struct Row {
    index: i64,
    source: String,
    kind: String,
    status: String,
    error: Option<String>,
    bytes: Option<i64>,
    row: Option<i64>,
    text: Option<String>,
}

fn read_metadata(path: &Path) -> Vec<Row> {
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
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
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
fn read_out(dir: &Path) -> (Vec<Row>, BTreeMap<i64, Vec<f32>>) {
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

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "{what}: max difference {worst}");
}

/// The CPU reference's normalized embedding of each image file.
fn reference_images(model: &Path, paths: &[PathBuf]) -> Vec<Vec<f32>> {
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

#[test]
fn embeddings_match_the_cpu_reference_and_partitions_cover_every_input_once() {
    let tmp = TempDir::new().unwrap();
    let images = photo_folder(&tmp.path().join("photos"), 7);
    let photos = tmp.path().join("photos");
    let photos = photos.to_str().unwrap();
    let whole = tmp.path().join("whole");
    let out = embed(
        &tiny_model(),
        &[
            "--images",
            photos,
            "--out",
            whole.to_str().unwrap(),
            "--shard-rows",
            "3",
            "--batch",
            "2",
            "--out-dtype",
            "float32",
        ],
    );
    assert_ok(&out);
    assert!(
        stderr(&out).contains("embedded 7 images"),
        "{}",
        stderr(&out)
    );
    let (rows, embeds) = read_out(&whole);
    let sources: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    let expected: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(sources, expected, "inputs in sorted order");
    assert_eq!(
        rows.iter().map(|r| r.index).collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>()
    );
    for (r, p) in rows.iter().zip(&images) {
        assert_eq!(r.bytes, Some(std::fs::metadata(p).unwrap().len() as i64));
        assert_eq!((r.kind.as_str(), r.status.as_str()), ("image", "ok"));
    }
    for (i, reference) in reference_images(&tiny_model(), &images).iter().enumerate() {
        assert_close(
            &embeds[&(i as i64)],
            reference,
            &images[i].display().to_string(),
        );
    }

    let mut union: BTreeMap<i64, Vec<f32>> = BTreeMap::new();
    for k in 0..3 {
        let part = tmp.path().join(format!("part-{k}"));
        let shard = format!("{k}/3");
        let args = [
            "--images",
            photos,
            "--out",
            part.to_str().unwrap(),
            "--shard",
            &shard,
        ];
        let out = embed(
            &tiny_model(),
            &[&args[..], &["--shard-rows", "2", "--out-dtype", "f32"]].concat(),
        );
        assert_ok(&out);
        let (rows, embeds) = read_out(&part);
        for r in &rows {
            assert_eq!(r.index % 3, k, "{r:?}");
        }
        for (index, e) in embeds {
            assert!(
                union.insert(index, e).is_none(),
                "input {index} embedded twice"
            );
        }
    }
    assert_eq!(union.len(), 7);
    for (index, e) in &union {
        assert_close(e, &embeds[index], &format!("input {index}"));
    }
}

/// Every file of a directory by name, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
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

#[test]
fn a_killed_job_resumes_to_the_same_bytes() {
    let tmp = TempDir::new().unwrap();
    photo_folder(&tmp.path().join("photos"), 7);
    let photos = tmp.path().join("photos");
    let photos = photos.to_str().unwrap();
    let run = |dir: &Path, extra: &[&str]| {
        let args = [
            "--images",
            photos,
            "--out",
            dir.to_str().unwrap(),
            "--shard-rows",
            "2",
        ];
        embed(&tiny_model(), &[&args[..], extra].concat())
    };
    let whole = tmp.path().join("whole");
    assert_ok(&run(&whole, &[]));

    let resumed = tmp.path().join("resumed");
    let killed = run(&resumed, &["--stop-after-shards", "2"]);
    assert_eq!(killed.status.code(), Some(75), "{}", stderr(&killed));
    let partial = files(&resumed);
    let names: Vec<&str> = partial.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "embeddings-00000.npy",
            "embeddings-00001.npy",
            "manifest.json",
            "metadata-00000.parquet",
            "metadata-00001.parquet"
        ]
    );
    // Without --resume the directory is refused.
    let err = assert_fails(&run(&resumed, &[]));
    assert!(
        err.contains("--resume") && err.contains("--overwrite"),
        "{err}"
    );

    // What a write cut short by the kill would have left.
    std::fs::write(resumed.join(".embeddings-00002.npy.a1b2c3.tmp"), b"partial").unwrap();
    let out = run(&resumed, &["--resume"]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("embedded 3 images"),
        "{}",
        stderr(&out)
    );
    assert_eq!(files(&resumed), files(&whole));

    // A finished job resumes to nothing; other inputs are refused.
    let out = run(&resumed, &["--resume"]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("already complete"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(tmp.path().join("photos/img03.png")).unwrap();
    let err = assert_fails(&run(&resumed, &["--resume"]));
    assert!(err.contains("differs in inputs"), "{err}");
}

#[test]
fn outputs_are_refused_or_replaced_whole() {
    let tmp = TempDir::new().unwrap();
    photo_folder(&tmp.path().join("photos"), 3);
    let photos = tmp.path().join("photos");
    let photos = photos.to_str().unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::write(out_dir.join("notes.txt"), b"mine").unwrap();
    let out = out_dir.to_str().unwrap();

    let err = assert_fails(&embed(&tiny_model(), &["--images", photos, "--out", out]));
    assert!(
        err.contains("not empty") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(files(&out_dir).len(), 1);

    assert_ok(&embed(
        &tiny_model(),
        &[
            "--images",
            photos,
            "--out",
            out,
            "--overwrite",
            "--shard-rows",
            "1",
        ],
    ));
    assert!(out_dir.join("embeddings-00002.npy").is_file());
    assert_ok(&embed(
        &tiny_model(),
        &["--images", photos, "--out", out, "--overwrite"],
    ));
    let names: Vec<String> = files(&out_dir).into_keys().collect();
    assert_eq!(
        names,
        [
            "embeddings-00000.npy",
            "manifest.json",
            "metadata-00000.parquet",
            "notes.txt"
        ],
        "old shards are removed, other files kept, no temporary files left"
    );

    let missing = tmp.path().join("no/such/dir");
    let err = assert_fails(&embed(
        &tiny_model(),
        &["--images", photos, "--out", missing.to_str().unwrap()],
    ));
    assert!(
        err.contains("parent") && err.contains("does not exist"),
        "{err}"
    );
    let err = assert_fails(&embed(
        &tiny_model(),
        &["--out", tmp.path().join("empty").to_str().unwrap()],
    ));
    assert!(err.contains("nothing to embed"), "{err}");
}

/// A PNG that claims `w`x`h` pixels and holds almost none.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
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

#[test]
fn bad_inputs_are_reported_and_the_job_goes_on() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("mixed");
    std::fs::create_dir(&dir).unwrap();
    write_image(&dir.join("a_good.jpg"), 50, 40, 3);
    write_image(&dir.join("b_tiny.png"), 1, 1, 4);
    let whole = dir.join("a_good.jpg");
    let jpeg = std::fs::read(&whole).unwrap();
    std::fs::write(dir.join("c_truncated.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    std::fs::write(dir.join("d_empty.jpg"), b"").unwrap();
    std::fs::write(dir.join("e_not_an_image.png"), b"just some text").unwrap();
    std::fs::write(dir.join("f_huge.png"), png_header_only(20_000, 20_000)).unwrap();
    std::os::unix::fs::symlink(&dir, dir.join("g_loop")).unwrap();
    let out_dir = tmp.path().join("out");

    let out = embed(
        &tiny_model(),
        &[
            "--images",
            dir.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("loop"), "{err}");
    assert!(err.contains("4 inputs could not be embedded"), "{err}");
    assert!(
        err.contains("embedded 2 images and 0 texts, skipped 4"),
        "{err}"
    );
    let (rows, embeds) = read_out(&out_dir);
    let status: Vec<(String, &str)> = rows
        .iter()
        .map(|r| {
            let name = Path::new(&r.source)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, r.status.as_str())
        })
        .collect();
    let expected = [
        ("a_good.jpg", "ok"),
        ("b_tiny.png", "ok"),
        ("c_truncated.jpg", "error"),
        ("d_empty.jpg", "error"),
        ("e_not_an_image.png", "error"),
        ("f_huge.png", "error"),
    ];
    let expected: Vec<(String, &str)> = expected.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    assert_eq!(status, expected);
    assert!(
        rows[2].error.as_deref().unwrap().contains("truncated"),
        "{:?}",
        rows[2]
    );
    assert_eq!(rows[3].bytes, Some(0));
    let huge = rows[5].error.as_deref().unwrap();
    assert!(huge.contains("limit exceeded"), "{huge}");
    assert_eq!(
        rows.iter().map(|r| r.row).collect::<Vec<_>>(),
        [Some(0), Some(1), None, None, None, None]
    );
    assert_eq!(embeds.len(), 2);

    // Nothing embedded: the metadata is written, and the exit status says so.
    let bad_out = tmp.path().join("bad");
    let out = embed(
        &tiny_model(),
        &[
            "--images",
            dir.join("d_empty.jpg").to_str().unwrap(),
            dir.join("e_not_an_image.png").to_str().unwrap(),
            "--out",
            bad_out.to_str().unwrap(),
        ],
    );
    let err = assert_fails(&out);
    assert!(
        err.contains("nothing was embedded: all 2 inputs failed"),
        "{err}"
    );
}

/// A model directory with the tiny model and a word-level tokenizer whose ids fit its 1000-token vocabulary.
fn tiny_model_with_tokenizer(dir: &Path) -> PathBuf {
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

#[test]
fn tar_shards_and_texts() {
    let tmp = TempDir::new().unwrap();
    let model = tiny_model_with_tokenizer(tmp.path());
    let jpg = tmp.path().join("one.jpg");
    let png = tmp.path().join("two.png");
    write_image(&jpg, 48, 36, 5);
    write_image(&png, 33, 60, 6);
    let tar_path = tmp.path().join("shard-000.tar");
    let mut tar = tar::Builder::new(File::create(&tar_path).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes).unwrap();
    };
    add("s/000.jpg", &std::fs::read(&jpg).unwrap());
    add("s/000.txt", b"a photo of a cat");
    add("s/001.png", &std::fs::read(&png).unwrap());
    add("s/002.json", b"{}");
    tar.into_inner().unwrap();
    let jsonl = tmp.path().join("texts.jsonl");
    std::fs::write(
        &jsonl,
        "{\"caption\": \"a photo of a dog\"}\n{\"other\": 1}\n",
    )
    .unwrap();
    let out_dir = tmp.path().join("out");

    let out = embed(
        &model,
        &[
            "--images",
            tar_path.to_str().unwrap(),
            "--texts",
            "a cat",
            "--texts-jsonl",
            jsonl.to_str().unwrap(),
            "--text-field",
            "caption",
            "--out",
            out_dir.to_str().unwrap(),
            "--out-dtype",
            "float32",
        ],
    );
    assert_ok(&out);
    assert!(
        stderr(&out).contains("embedded 2 images and 2 texts, skipped 2"),
        "{}",
        stderr(&out)
    );
    let (rows, embeds) = read_out(&out_dir);
    let tar_name = tar_path.display().to_string();
    let got: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.source.as_str(), r.kind.as_str(), r.status.as_str()))
        .collect();
    let jsonl_name = jsonl.display().to_string();
    let (s0, s1, s2) = (
        format!("{tar_name}#s/000"),
        format!("{tar_name}#s/001"),
        format!("{tar_name}#s/002"),
    );
    let (j1, j2) = (format!("{jsonl_name}:1"), format!("{jsonl_name}:2"));
    assert_eq!(
        got,
        [
            (s0.as_str(), "image", "ok"),
            (s1.as_str(), "image", "ok"),
            (s2.as_str(), "image", "error"),
            ("--texts:1", "text", "ok"),
            (j1.as_str(), "text", "ok"),
            (j2.as_str(), "text", "error"),
        ]
    );
    assert_eq!(rows[4].text.as_deref(), Some("a photo of a dog"));

    let reference = reference_images(&model, &[jpg, png]);
    assert_close(&embeds[&0], &reference[0], "tar member 000.jpg");
    assert_close(&embeds[&1], &reference[1], "tar member 001.png");
    let (config, checkpoint) = Checkpoint::open_dir(&model).unwrap();
    let ids = ClipTokenizer::from_dir(&model)
        .unwrap()
        .encode_batch(&["a cat", "a photo of a dog"], config.text.max_len())
        .unwrap();
    let texts = CpuBackend::load(&config, &checkpoint, 2)
        .unwrap()
        .embed_texts(&ids)
        .unwrap();
    for (i, index) in [3i64, 4].iter().enumerate() {
        assert_close(&embeds[index], &normalized(texts.row(i).to_vec()), "text");
    }
}

#[test]
fn cuda_without_a_gpu_fails_before_any_decode() {
    let tmp = TempDir::new().unwrap();
    let images = photo_folder(&tmp.path().join("photos"), 1);
    let out_dir = tmp.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_flashclip"))
        .args(["embed", "--model"])
        .arg(tiny_model())
        .args(["--device", "cuda", "--images"])
        .arg(&images[0])
        .arg("--out")
        .arg(&out_dir)
        .env("CUDA_VISIBLE_DEVICES", "")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = assert_fails(&out);
    assert!(
        err.contains("no CUDA device") && err.contains("--device cpu"),
        "{err}"
    );
    assert!(files(&out_dir).is_empty(), "nothing written");
}

#[test]
fn patterns_and_lists_from_stdin_name_the_same_inputs() {
    let tmp = TempDir::new().unwrap();
    let images = photo_folder(&tmp.path().join("photos"), 4);
    let pattern = tmp.path().join("photos/*.jpg");
    let by_pattern = tmp.path().join("by-pattern");
    assert_ok(&embed(
        &tiny_model(),
        &[
            "--images",
            pattern.to_str().unwrap(),
            "--out",
            by_pattern.to_str().unwrap(),
        ],
    ));
    let jpegs: Vec<String> = images
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .map(|p| p.display().to_string())
        .collect();
    let (rows, _) = read_out(&by_pattern);
    assert_eq!(
        rows.iter().map(|r| r.source.clone()).collect::<Vec<_>>(),
        jpegs
    );

    let by_list = tmp.path().join("by-list");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashclip"))
        .args(["embed", "--model"])
        .arg(tiny_model())
        .args(["--device", "cpu", "--images-from", "-", "--out"])
        .arg(&by_list)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}\n\n{}", jpegs[0], jpegs[1]).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    let (list_rows, _) = read_out(&by_list);
    assert_eq!(list_rows, rows, "same inputs, same metadata");
    assert_eq!(files(&by_list), files(&by_pattern));
}
