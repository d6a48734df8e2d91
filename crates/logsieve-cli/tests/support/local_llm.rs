//! The llama.cpp server that `scripts/local-llm.sh` sets up (PyPI only,
//! hashes pinned), started and stopped by a test.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The llama.cpp server child process; stopped when dropped.
pub struct LocalLlm {
    child: Child,
    pub port: u16,
}

impl LocalLlm {
    /// `None` when the model is not set up (and that is allowed).
    pub fn start(model: &str) -> Option<LocalLlm> {
        let script = repo().join("scripts/local-llm.sh");
        let check = Command::new("bash")
            .arg(&script)
            .args(["check", model])
            .status()
            .expect("bash runs");
        if !check.success() {
            let required = std::env::var("LOGSIEVE_REQUIRE_LOCAL_LLM").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{model} is not set up and LOGSIEVE_REQUIRE_LOCAL_LLM=1: run scripts/local-llm.sh setup {model}"
            );
            eprintln!("skipped: {model} is not set up (scripts/local-llm.sh setup {model})");
            return None;
        }
        let port = free_port();
        let mut child = Command::new("bash")
            .arg(&script)
            .args(["serve", model, "--port", &port.to_string(), "--exit-on-stdin-eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the local LLM server");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let server = LocalLlm { child, port };
        assert!(
            line.starts_with("ready http://127.0.0.1:"),
            "server did not start: {line:?}"
        );
        Some(server)
    }

    #[allow(dead_code)]
    pub fn is_listening(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    /// Stops the server: its stdin closes (it exits on that), then a kill
    /// if it has not gone within 20 s.
    pub fn stop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalLlm {
    fn drop(&mut self) {
        self.stop();
    }
}
