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
