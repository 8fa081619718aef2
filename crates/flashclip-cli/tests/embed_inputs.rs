//! `flashclip embed`'s inputs on the CPU backend and the tiny test model: bad files reported while the job goes
//! on, tar shards and texts, patterns and lists, and a missing GPU refused before any decoding.

mod embed_common;

use embed_common::*;

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
    assert!(
        !out_dir.exists(),
        "a job refused for want of a GPU leaves no --out behind"
    );
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

#[test]
fn a_missing_path_is_refused_on_the_command_line_and_an_error_row_in_a_list() {
    let tmp = TempDir::new().unwrap();
    let photos = photo_folder(&tmp.path().join("photos"), 2);
    let missing = tmp.path().join("photos/nope.jpg");
    let out = tmp.path().join("out");
    let err = assert_fails(&embed(
        &tiny_model(),
        &[
            "--images",
            photos[0].to_str().unwrap(),
            missing.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("nope.jpg: no such file or directory"), "{err}");
    assert!(!out.exists(), "a refused job leaves nothing behind");

    let list = tmp.path().join("list.txt");
    std::fs::write(
        &list,
        format!("{}\n{}\n", photos[0].display(), missing.display()),
    )
    .unwrap();
    assert_ok(&embed(
        &tiny_model(),
        &[
            "--images-from",
            list.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    let (rows, embeds) = read_out(&out);
    let status: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(status, ["ok", "error"]);
    assert_eq!(embeds.len(), 1);
}

#[test]
fn texts_of_mixed_lengths_come_back_in_their_order() {
    // The model thread embeds a window of texts shortest first, two per call here: every row must still be its own
    // text's embedding, in the input order.
    let tmp = TempDir::new().unwrap();
    let model = tiny_model_with_tokenizer(tmp.path());
    let texts = [
        "a photo of a small dog running on a wide beach at sunset",
        "cat",
        "two dogs",
        "a diagram of a bicycle with labels",
        "x",
        "a cat on a mat",
        "the night sky",
    ];
    let out_dir = tmp.path().join("out");
    let mut args = vec!["--batch", "2", "--out-dtype", "float32", "--texts"];
    args.extend(texts);
    args.extend(["--out", out_dir.to_str().unwrap()]);
    assert_ok(&embed(&model, &args));
    let (rows, embeds) = read_out(&out_dir);
    assert_eq!(rows.len(), texts.len());

    let (config, checkpoint) = Checkpoint::open_dir(&model).unwrap();
    let ids = ClipTokenizer::from_dir(&model)
        .unwrap()
        .encode_batch(&texts, config.text.max_len())
        .unwrap();
    let mut lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    lengths.dedup();
    assert!(
        lengths.len() > 3,
        "the texts should differ in length: {lengths:?}"
    );
    let mut alone = CpuBackend::load(&config, &checkpoint, 1).unwrap();
    for (i, (row, text)) in rows.iter().zip(&texts).enumerate() {
        assert_eq!(row.text.as_deref(), Some(*text));
        let want = alone.embed_texts(&ids[i..i + 1]).unwrap();
        assert_close(
            &embeds[&(i as i64)],
            &normalized(want.row(0).to_vec()),
            text,
        );
    }
}
