//! `flashclip serve` as a process on the CPU: ready line, requests over loopback, clean exit on SIGTERM.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The tiny test model with a tokenizer that fits its 1000-token vocabulary, in a fresh directory.
fn model_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!("flashclip-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("model dir");
    for (from, name) in [
        (
            "flashclip-model/tests/fixtures/tiny/config.json",
            "config.json",
        ),
        (
            "flashclip-model/tests/fixtures/tiny/model.safetensors",
            "model.safetensors",
        ),
        (
            "flashclip-server/tests/fixtures/tokenizer.json",
            "tokenizer.json",
        ),
    ] {
        std::fs::copy(root.join(from), dir.join(name)).expect("copy fixture");
    }
    dir
}

/// One HTTP/1.1 request with `Connection: close`; returns the status line and the body.
fn request(addr: &str, method: &str, path: &str, body: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Waits up to `limit` for the child to exit.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn serve_prints_its_address_once_ready_answers_and_stops_on_sigterm() {
    let dir = model_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashclip"))
        .args(["serve", "--model"])
        .arg(&dir)
        .args(["--device", "cpu", "--port", "0", "--max-batch", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start flashclip serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60));
    let Some(addr) = line
        .as_deref()
        .ok()
        .and_then(|l| l.strip_prefix("flashclip serve: ready on http://"))
        .map(str::to_owned)
    else {
        let _ = child.kill();
        panic!("no ready line: {line:?}");
    };
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let (status, body) = request(&addr, "GET", "/health", "");
    assert!(status.contains(" 200 "), "{status}");
    assert!(body.contains("ready"), "{body}");
    let (status, body) = request(
        &addr,
        "POST",
        "/embed/text",
        r#"{"texts": ["a cat", "a dog"]}"#,
    );
    assert!(status.contains(" 200 "), "{status}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
    let rows = json["embeddings"].as_array().expect("embeddings");
    assert_eq!(rows.len(), 2);
    let norm: f64 = rows[0]
        .as_array()
        .expect("row")
        .iter()
        .map(|v| v.as_f64().expect("number").powi(2))
        .sum();
    assert!((norm - 1.0).abs() < 1e-5, "squared norm {norm}");

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let exit = wait_exit(&mut child, Duration::from_secs(30));
    if exit.is_none() {
        let _ = child.kill();
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(exit.is_some_and(|s| s.success()), "exit: {exit:?}");
}
