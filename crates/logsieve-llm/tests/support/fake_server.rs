//! A fake chat-completions server for the tests and the benchmark: plain
//! HTTP/1.1 with keep-alive on 127.0.0.1, on its own thread and runtime (so
//! blocking callers cannot starve it). A closure decides each reply; every
//! request is counted and recorded, except liveness probes (`GET /v1/models`),
//! which are counted apart and answered by the same closure (so a test decides
//! whether the server looks alive).

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// 1 for the first request the server got.
    pub n: usize,
    pub path: String,
    pub authorization: Option<String>,
    pub body: serde_json::Value,
}

impl Recorded {
    /// The `content` of the message with this role.
    pub fn content(&self, role: &str) -> String {
        self.body["messages"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["role"] == role))
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    /// The log line, decoded from the `<log>` block of the user message.
    pub fn log_message(&self) -> String {
        let user = self.content("user");
        let block = user
            .split("<log>\n")
            .nth(1)
            .and_then(|b| b.split("\n</log>").next())
            .unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(block)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// How to answer one request.
pub enum Reply {
    /// 200 with a chat completion whose content is this text.
    Content(String),
    /// The same, after a pause.
    Slow(Duration, String),
    /// This status, extra headers and body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// 200 with this body as is.
    RawBody(String),
    /// Close the connection without answering.
    Drop,
}

/// A chat-completions response body carrying `content`.
pub fn completion(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    })
    .to_string()
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

pub struct FakeServer {
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
    count: Arc<AtomicUsize>,
    probes: Arc<AtomicUsize>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let handler: Arc<Handler> = Arc::new(handler);
        let count = Arc::new(AtomicUsize::new(0));
        let probes = Arc::new(AtomicUsize::new(0));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (c, r, pr) = (count.clone(), recorded.clone(), probes.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let (handler, c, r, pr) = (handler.clone(), c.clone(), r.clone(), pr.clone());
                        tokio::spawn(serve(stream, handler, c, r, pr));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
            rt.shutdown_background();
        });
        let addr = addr_rx.recv().unwrap();
        FakeServer {
            base_url: format!("http://{addr}/v1"),
            count,
            probes,
            recorded,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Chat requests received so far.
    pub fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Liveness probes (`GET /v1/models`) received so far.
    pub fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    stream: TcpStream,
    handler: Arc<Handler>,
    count: Arc<AtomicUsize>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    probes: Arc<AtomicUsize>,
) {
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let (mut length, mut authorization) = (0usize, None);
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "authorization" => authorization = Some(value.trim().to_string()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let probe = path.ends_with("/models");
        let n = if probe {
            probes.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            count.fetch_add(1, Ordering::SeqCst) + 1
        };
        let request = Recorded {
            n,
            path,
            authorization,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        };
        if !probe {
            recorded.lock().unwrap().push(request.clone());
        }
        let (status, headers, body) = match handler(&request) {
            Reply::Content(text) => (200, Vec::new(), completion(&text)),
            Reply::Slow(pause, text) => {
                tokio::time::sleep(pause).await;
                (200, Vec::new(), completion(&text))
            }
            Reply::Status(status, headers, body) => (status, headers, body),
            Reply::RawBody(body) => (200, Vec::new(), body),
            Reply::Drop => return,
        };
        let mut head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head.push_str(&body);
        // One write: head and body in two segments meet Nagle and delayed ACK (40 ms).
        if stream.get_mut().write_all(head.as_bytes()).await.is_err() {
            return;
        }
    }
}
