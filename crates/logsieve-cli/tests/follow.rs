//! `logsieve classify --follow`: a real process tails a file that grows,
//! is rotated by rename (logrotate's default) and then truncated
//! (copytruncate); every line comes out once, in order, as it is written.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn append(path: &std::path::Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// Lines `from..to`: rule-decided (no encoder needed), each unique.
fn batch(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("User User{i} logged in.")).collect()
}

#[test]
fn follow_survives_appends_rename_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, &batch(0, 5));
    let mut child = Command::new(env!("CARGO_BIN_EXE_logsieve"))
        .args(["classify", "--follow"])
        .arg(&log)
        .args(["--source", "app", "--follow-interval-ms", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            if tx.send(l.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut got: Vec<serde_json::Value> = Vec::new();
    let wait_for = |n: usize, got: &mut Vec<serde_json::Value>| {
        while got.len() < n {
            let l = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("only {} of {n} lines came out", got.len()));
            got.push(serde_json::from_str(&l).unwrap());
        }
    };
    // What was there at the start, then appends as they come.
    wait_for(5, &mut got);
    append(&log, &batch(5, 10));
    wait_for(10, &mut got);
    // A line written in two parts comes out once, whole.
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        write!(f, "User User10 ").unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        writeln!(f, "logged in.").unwrap();
    }
    wait_for(11, &mut got);
    // Rotation by rename, with lines written to the old file just before it.
    append(&log, &batch(11, 14));
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    append(&log, &batch(14, 20));
    wait_for(20, &mut got);
    // Rotation by truncation (copytruncate).
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    append(&log, &batch(20, 22));
    wait_for(22, &mut got);
    // Nothing more comes out: no line twice.
    assert!(
        rx.recv_timeout(Duration::from_millis(800)).is_err(),
        "a line came out twice"
    );

    let messages: Vec<&str> = got.iter().map(|v| v["log_message"].as_str().unwrap()).collect();
    assert_eq!(messages, batch(0, 22), "every line once, in order");
    for v in &got {
        assert_eq!(v["source"], "app");
        assert_eq!(v["target_label"], "User Action", "{v}");
        assert_eq!(v["method"], "rule");
    }
    let lines: Vec<u64> = got.iter().map(|v| v["line"].as_u64().unwrap()).collect();
    assert_eq!(
        lines,
        (1..=22).collect::<Vec<u64>>(),
        "line numbers run on across rotations"
    );

    // SIGTERM ends it cleanly, saying what it did.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("22 lines") && err.contains("2 rotations"), "{err}");
}

/// Start `classify --follow LOG --store DB`, read `n` JSON lines, stop it
/// with SIGTERM; the lines and what it said on stderr.
fn follow_for(log: &std::path::Path, db: &std::path::Path, n: usize) -> (Vec<String>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_logsieve"))
        .args(["classify", "--follow"])
        .arg(log)
        .arg("--store")
        .arg(db)
        .args(["--source", "app", "--follow-interval-ms", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut got = Vec::new();
    for _ in 0..n {
        let mut l = String::new();
        assert!(
            out.read_line(&mut l).unwrap() > 0,
            "only {} of {n} lines came out",
            got.len()
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        got.push(v["log_message"].as_str().unwrap().to_string());
    }
    // Give it a moment to keep its place after the last write, then stop it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(rest.is_empty(), "more lines than expected: {rest}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (got, err)
}

/// With a decision store, a stopped follower picks up after the last line
/// it wrote: lines written while it was down come out, none twice.
#[test]
fn follow_with_a_store_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let db = dir.path().join("store.db");
    append(&log, &batch(0, 5));
    let (first, err) = follow_for(&log, &db, 5);
    assert_eq!(first, batch(0, 5));
    assert!(!err.contains("resuming"), "{err}");
    // Written while nobody follows.
    append(&log, &batch(5, 8));
    let (second, err) = follow_for(&log, &db, 3);
    assert_eq!(second, batch(5, 8), "only the lines written since, in order");
    assert!(err.contains("resuming at byte"), "{err}");
}
