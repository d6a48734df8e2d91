//! The cases of issue 12 ("nothing lost, nothing let in") as a hostile
//! client would hit them: huge lines behind small gzip bodies, idle and
//! slow sockets, made-up methods, two files in one upload, odd encodings.
//! Each test is named after its case. The encoder is a fixed stand-in (no
//! weights), so the tests are about the server, not the model.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use logsieve_pipeline::{Config, Pipeline};
use logsieve_server::ServerConfig;
use logsieve_server::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

const RULE_HIT: &str = "User User1 logged in.";

#[path = "support/fixed.rs"]
mod fixed;
use fixed::Fixed;

fn pipeline() -> Arc<Pipeline> {
    Arc::new(
        Pipeline::builder(Config::builtin())
            .embedder(Arc::new(Fixed))
            .build()
            .unwrap(),
    )
}

fn test_app(cfg: ServerConfig) -> Router {
    app(AppState::new(pipeline(), cfg, None))
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(app: Router, req: Request<Body>) -> Reply {
    let resp = app.oneshot(req).await.expect("infallible router");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    Reply {
        status,
        headers,
        body,
    }
}

fn post(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

fn gzip_parts(parts: &[&[u8]], repeat: (usize, &[u8])) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(parts[0]).unwrap();
    for _ in 0..repeat.0 {
        e.write_all(repeat.1).unwrap();
    }
    for p in &parts[1..] {
        e.write_all(p).unwrap();
    }
    e.finish().unwrap()
}

/// Every error answer has the one shape.
fn assert_shape(r: &Reply, code: &str) {
    let j = r.json();
    assert_eq!(j["error"]["code"], code, "{j}");
    assert!(
        j["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{j}"
    );
}

// ---- case 3 ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case3_a_huge_line_behind_a_small_gzip_body_is_cut_while_reading() {
    let app = test_app(ServerConfig::default());
    let block = vec![b'x'; 1 << 20];
    // 16 MiB in one CSV line, then a normal one; the body is a few KiB.
    let body = gzip_parts(
        &[
            b"source,log_message\nModernCRM,User User1 logged in. ",
            b"\nB,Disk cleanup completed successfully.\n",
        ],
        (16, &block),
    );
    assert!(body.len() < 100_000);
    let mut req = post("/classify", "text/csv", body);
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let r = send(app.clone(), req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(r.body.as_ref())
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2, "both rows come back");
    let max = Config::builtin().input.max_message_bytes;
    assert!(
        rows[0][1].len() <= max,
        "the huge line is cut to the limit, not echoed whole"
    );
    assert_eq!(&rows[0][2], "User Action", "classified on its first bytes");
    assert!(rows[0][5].contains("over the limit"), "{}", &rows[0][5]);
    assert_eq!(&rows[1][2], "System Notification");

    // The same through /v1/logs: a cut JSON line cannot be parsed, so it
    // comes back unclassified with the reason, and the next line is fine.
    let body = gzip_parts(
        &[
            br#"{"source":"ModernCRM","log_message":"x"#,
            b"\"}\n{\"source\":\"A\",\"log_message\":\"User User1 logged in.\"}\n",
        ],
        (16, &block),
    );
    let mut req = post("/v1/logs", "application/x-ndjson", body);
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let r = send(app, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["method"], "none");
    assert!(lines[0]["raw"].as_str().unwrap().len() <= max);
    assert!(
        lines[0]["detail"].as_str().unwrap().contains("over the limit"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["target_label"], "User Action");
}

// ---- case 4 ------------------------------------------------------------------

/// A server on a real port with short connection timeouts; its address.
async fn real_server(cfg: ServerConfig) -> (String, tokio::sync::oneshot::Sender<()>) {
    let st = AppState::new(pipeline(), cfg, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(logsieve_server::serve(listener, st, async {
        let _ = stop_rx.await;
    }));
    (addr, stop_tx)
}

/// Read until the server closes the connection (or 10 s pass); what was read.
fn read_to_close(s: &mut TcpStream) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&out).into_owned())
            }
            Err(_) => return None, // still open after 10 s
        }
    }
}

fn get_health(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    read_to_close(&mut s).expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case4_idle_slow_and_surplus_connections_are_closed() {
    let cfg = ServerConfig {
        max_connections: 3,
        header_timeout_ms: 300,
        idle_timeout_ms: 300,
        body_timeout_ms: 300,
        ..ServerConfig::default()
    };
    let (addr, _stop) = real_server(cfg).await;
    tokio::task::spawn_blocking(move || {
        // An idle socket that never sends a byte is closed.
        let mut idle = TcpStream::connect(&addr).unwrap();
        assert_eq!(read_to_close(&mut idle).as_deref(), Some(""), "idle socket closed");

        // Slow headers: half a request line, then nothing.
        let mut slow = TcpStream::connect(&addr).unwrap();
        slow.write_all(b"GET /health HT").unwrap();
        assert!(read_to_close(&mut slow).is_some(), "slow headers closed");

        // A keep-alive connection that goes quiet after an answer is closed.
        let mut ka = TcpStream::connect(&addr).unwrap();
        ka.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let got = read_to_close(&mut ka).expect("closed after the idle timeout");
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");

        // A body that stalls: 408 in the one error shape.
        let mut stalled = TcpStream::connect(&addr).unwrap();
        stalled
            .write_all(b"POST /classify-single HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"source\":")
            .unwrap();
        let got = read_to_close(&mut stalled).expect("stalled body cut");
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(got.contains("\"code\":\"request_timeout\""), "{got}");

    })
    .await
    .unwrap();

    // The cap, on a server of its own: three connections held open (headers
    // unfinished), the fourth is told so in the one shape and closed.
    let cfg = ServerConfig {
        max_connections: 3,
        header_timeout_ms: 60_000,
        ..ServerConfig::default()
    };
    let (addr, _stop) = real_server(cfg).await;
    tokio::task::spawn_blocking(move || {
        let held: Vec<TcpStream> = (0..3)
            .map(|_| {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut over = TcpStream::connect(&addr).unwrap();
        let got = read_to_close(&mut over).expect("refused");
        assert!(got.starts_with("HTTP/1.1 503"), "{got:?}");
        assert!(got.contains("\"code\":\"too_many_connections\""), "{got}");
        // Once they go, /health answers again.
        drop(held);
        let mut answered = false;
        for _ in 0..100 {
            if get_health(&addr).starts_with("HTTP/1.1 200") {
                answered = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(answered);
    })
    .await
    .unwrap();
}

// ---- case 5 ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case5_made_up_methods_and_paths_add_no_metric_series() {
    let app = test_app(ServerConfig::default());
    let count = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("logsieve_http_requests_total{"))
            .count()
    };
    let before = send(app.clone(), Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .text();
    for i in 0..200 {
        let req = Request::builder()
            .method(format!("FOO{i}").as_str())
            .uri(format!("/classify-single/{i}"))
            .body(Body::empty())
            .unwrap();
        let r = send(app.clone(), req).await;
        assert!(r.status.is_client_error());
        let req = Request::builder()
            .method(format!("BAR{i}").as_str())
            .uri("/health")
            .body(Body::empty())
            .unwrap();
        send(app.clone(), req).await;
    }
    let after = send(app, Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .text();
    assert!(!after.contains("FOO") && !after.contains("BAR"));
    assert!(count(&after) <= count(&before) + 3, "{after}");
    assert!(after.contains("method=\"other\""), "{after}");
}

// ---- case 8 ------------------------------------------------------------------

fn multipart(files: &[(&str, &str)]) -> (String, String) {
    let boundary = "XhostileBOUNDARYx";
    let mut body = String::new();
    body.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
    ));
    for (name, content) in files {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/csv\r\n\r\n{content}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case8_two_file_parts_are_both_classified_in_order() {
    let app = test_app(ServerConfig::default());
    let a = "source,log_message\nA,User User1 logged in.\nA,User User2 logged in.\n";
    let b = "source,log_message\nB,Disk cleanup completed successfully.\n";
    let (ct, body) = multipart(&[("a.csv", a), ("b.csv", b)]);
    let r = send(app.clone(), post("/classify", &ct, body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(r.body.as_ref())
        .records()
        .map(Result::unwrap)
        .collect();
    let sources: Vec<&str> = rows.iter().map(|r| &r[0]).collect();
    assert_eq!(sources, ["A", "A", "B"], "{}", r.text());
    assert_eq!(&rows[2][2], "System Notification");
    assert!(r.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("a_classified.csv"));

    // Files whose headers differ cannot share one CSV answer: refused, never dropped.
    let c = "log_message,source\nUser User3 logged in.,C\n";
    let (ct, body) = multipart(&[("a.csv", "source,log_message\n"), ("c.csv", c)]);
    let r = send(app, post("/classify", &ct, body)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_shape(&r, "validation");
    assert!(
        r.text().contains("differs from the first file part"),
        "{}",
        r.text()
    );
}

// ---- case 9 ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case9_every_error_has_the_one_shape() {
    let app = test_app(ServerConfig::default());
    // Stacked gzip: refused in the shape, not a bare 415.
    let mut req = post("/v1/logs", "application/x-ndjson", "{}\n");
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip, gzip".parse().unwrap());
    let r = send(app.clone(), req).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_shape(&r, "unsupported_encoding");

    // gzip on /classify-single: the message does not offer gzip.
    let mut req = post(
        "/classify-single",
        "application/json",
        json!({"source": "A", "log_message": RULE_HIT}).to_string(),
    );
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let r = send(app.clone(), req).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_shape(&r, "unsupported_encoding");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(!msg.contains("expected gzip"), "{msg}");

    // `line` and `column` are both numbers.
    let r = send(
        app.clone(),
        post("/classify-single", "application/json", "{\n \"source\": ,}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let j = r.json();
    assert!(
        j["error"]["line"].is_u64() && j["error"]["column"].is_u64(),
        "{j}"
    );

    // A `null` JSON line is called null.
    let r = send(app.clone(), post("/v1/logs", "application/x-ndjson", "null\n")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("found null"), "{}", r.text());

    // An upload whose header lacks `log_message`: the place, as a number.
    let r = send(
        app.clone(),
        post("/classify", "text/csv", "source,message\nA,b\n"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_shape(&r, "validation");
    assert_eq!(r.json()["error"]["line"], 1);

    // Errors from layers below the handlers are in the shape too.
    let req = Request::post("/v1/classify")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from("not gzip at all"))
        .unwrap();
    let r = send(app, req).await;
    assert!(r.status.is_client_error(), "{}", r.status);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    r.json();
}
