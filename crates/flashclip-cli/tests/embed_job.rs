//! `flashclip embed` end to end on the CPU backend and the tiny test model: equality with the CPU reference,
//! partitions, resume and refusals, with outputs read back from the .npy and Parquet files.

mod embed_common;

use embed_common::*;

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
