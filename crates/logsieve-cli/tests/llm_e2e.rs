//! The whole cascade with an LLM: a local server speaking the OpenAI
//! chat-completions protocol stands in for Groq (hosted providers are not
//! reachable from CI). It reads the line out of logsieve's prompt and
//! answers the way a competent model would for the seed data's rare labels.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the fake server was asked: the line, and the labels of the prompt's
/// examples (nearest first).
type Asked = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// Start the fake chat server; returns its base URL, a request counter and
/// what each request asked.
fn fake_llm() -> (String, Arc<AtomicUsize>, Asked) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let asked: Asked = Arc::default();
    let c = count.clone();
    let a = asked.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let c = c.clone();
            let a = a.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                let mut first = String::new();
                if r.read_line(&mut first).unwrap_or(0) == 0 {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let user = req["messages"].as_array().unwrap().last().unwrap()["content"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let data = user.split("<log>\n").nth(1).unwrap().trim_end_matches("\n</log>");
                let line: serde_json::Value = serde_json::from_str(data).unwrap();
                let example_labels: Vec<String> = user
                    .split("<examples>\n")
                    .nth(1)
                    .map(|e| {
                        let e = e.split("\n</examples>").next().unwrap();
                        let list: Vec<serde_json::Value> = serde_json::from_str(e).unwrap();
                        list.iter()
                            .map(|x| x["label"].as_str().unwrap().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                a.lock()
                    .unwrap()
                    .push((line["message"].as_str().unwrap().to_string(), example_labels));
                let msg = line["message"].as_str().unwrap().to_lowercase();
                let label = if [
                    "deprecated",
                    "no longer supported",
                    "retired",
                    "outdated",
                    "discontinued",
                ]
                .iter()
                .any(|k| msg.contains(k))
                {
                    "Deprecation Warning"
                } else if msg.contains("failed") || msg.contains("could not") || msg.contains("aborted") {
                    "Workflow Error"
                } else {
                    "Unclassified"
                };
                let content = serde_json::json!({"label": label, "reason": "keyword match"}).to_string();
                let resp = serde_json::json!({
                    "id": "x", "object": "chat.completion", "model": req["model"],
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                })
                .to_string();
                let mut w = stream;
                let _ = write!(
                    w,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{resp}",
                    resp.len()
                );
            });
        }
    });
    (url, count, asked)
}

fn logsieve() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_logsieve"));
    for v in [
        "LOGSIEVE_LLM_API_KEY",
        "GROQ_API_KEY",
        "OPENAI_API_KEY",
        "LOGSIEVE_LLM_MODEL",
        "LOGSIEVE_CONFIG",
    ] {
        c.env_remove(v);
    }
    c
}

#[test]
fn eval_with_an_llm_reports_all_nine_labels_and_its_share() {
    let (url, count, _) = fake_llm();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/synthetic_logs.csv");
    let out = logsieve()
        .env("LOGSIEVE_LLM_BASE_URL", &url)
        .args([
            "eval",
            "--data",
            data.to_str().unwrap(),
            "--split",
            "test",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let labels: Vec<&str> = r["report"]["per_label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 9, "{labels:?}");
    for rare in ["Workflow Error", "Deprecation Warning"] {
        let s = r["report"]["per_label"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["label"] == rare)
            .unwrap();
        assert_eq!(s["recall"], 1.0, "{s}");
    }
    let llm = r["by_method"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == "llm")
        .unwrap();
    // The held-out split holds two LegacyCRM rows, routed straight to the LLM.
    assert!(llm["rows"].as_u64().unwrap() >= 2, "{llm}");
    assert!(count.load(Ordering::SeqCst) >= 2);
}

#[test]
fn classify_sends_legacy_rows_to_the_llm_and_explains() {
    let (url, count, asked) = fake_llm();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/seed_test.csv");
    let out = logsieve()
        .env("LOGSIEVE_LLM_BASE_URL", &url)
        .args(["classify", data.to_str().unwrap(), "--output-format", "jsonl"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 10);
    let labels: Vec<&str> = rows[6..]
        .iter()
        .map(|r| r["target_label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "Workflow Error",
            "Workflow Error",
            "Deprecation Warning",
            "Deprecation Warning"
        ]
    );
    for r in &rows[6..] {
        assert_eq!(r["method"], "llm");
        assert!(r["detail"].as_str().unwrap().contains("keyword match"), "{r}");
    }
    assert_eq!(count.load(Ordering::SeqCst), 4);
    // Each prompt carried the 5 nearest training rows as examples (the
    // default `max_examples`), the line's true label among them.
    let asked = asked.lock().unwrap();
    for (row, want) in rows[6..].iter().zip(labels) {
        let msg = row["log_message"].as_str().unwrap();
        let (_, examples) = asked.iter().find(|(m, _)| m == msg).unwrap();
        assert_eq!(examples.len(), 5, "{msg}: {examples:?}");
        assert!(examples.iter().any(|l| l == want), "{msg}: {examples:?}");
    }
}
