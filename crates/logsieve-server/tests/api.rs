//! The HTTP API as a client sees it: the router driven in process
//! (`app(state).oneshot(request)`), one test on a real port with a real
//! HTTP client. Happy paths use the real pipeline and encoder; overload and
//! timeout use a gated encoder that blocks until the test lets it go.
//! Nothing here asserts on wall-clock time.

use std::sync::{mpsc, Arc, Mutex, OnceLock};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use logsieve_embed::{EmbedError, Embedder, MiniLm};
use logsieve_llm::{ChatRequest, CompletionFuture, LlmClient, LlmStage};
use logsieve_pipeline::{Config, Pipeline};
use logsieve_server::{app, AppState, ServerConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

const SEED: &str = include_str!("../../../data/seed_test.csv");
/// A line no rule matches, so it reaches the encoder.
const NOVEL: &str = "Email service experiencing issues with sending";
const RULE_HIT: &str = "User User1 logged in.";

/// The built-in pipeline with the real encoder (from `dir`, else the cache).
fn pipeline_with_encoder(cfg: Config) -> Pipeline {
    let (dir, options) = (cfg.model.embedding_dir.clone(), cfg.batch_options());
    Pipeline::builder(cfg)
        .embedder_loader(move || {
            Ok(Arc::new(MiniLm::load_default(dir.as_deref(), options)?) as Arc<dyn Embedder>)
        })
        .build()
        .expect("built-in pipeline")
}

fn real_pipeline() -> Arc<Pipeline> {
    static P: OnceLock<Arc<Pipeline>> = OnceLock::new();
    P.get_or_init(|| Arc::new(pipeline_with_encoder(Config::builtin())))
        .clone()
}

fn state(pipeline: Arc<Pipeline>, cfg: ServerConfig, token: Option<&str>) -> Arc<AppState> {
    AppState::new(pipeline, cfg, token)
}

fn real_app() -> Router {
    app(state(real_pipeline(), ServerConfig::default(), None))
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("UTF-8 body")
    }
    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .expect("error.code")
            .to_string()
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

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

fn single(source: &str, message: &str) -> Request<Body> {
    post(
        "/classify-single",
        "application/json",
        json!({"source": source, "log_message": message}).to_string(),
    )
}

fn multipart(field: &str, filename: &str, content: &str) -> (String, String) {
    let boundary = "XlogsieveBOUNDARYx";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n\
         Content-Type: text/csv\r\n\r\n{content}\r\n--{boundary}--\r\n"
    );
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn wait_ready(app: &Router) {
    loop {
        if send(app.clone(), get("/ready")).await.status == StatusCode::OK {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// An encoder that reports each call and blocks until released (or until
/// the release sender is dropped).
struct Gate {
    entered: Mutex<mpsc::Sender<usize>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Embedder for Gate {
    fn model_id(&self) -> &str {
        "gate"
    }
    fn weights_sha256(&self) -> &str {
        "gate"
    }
    fn dim(&self) -> usize {
        384
    }
    fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
        Ok(texts.iter().map(|_| 1).collect())
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let _ = self.entered.lock().unwrap().send(texts.len());
        let _ = self.release.lock().unwrap().recv();
        let mut v = vec![0.0; 384];
        v[0] = 1.0;
        Ok(vec![v; texts.len()])
    }
}

/// A pipeline whose encoder blocks: (pipeline, "entered" receiver, release sender).
fn gated() -> (Arc<Pipeline>, mpsc::Receiver<usize>, mpsc::Sender<()>) {
    let (etx, erx) = mpsc::channel();
    let (rtx, rrx) = mpsc::channel();
    let gate = Gate {
        entered: Mutex::new(etx),
        release: Mutex::new(rrx),
    };
    let p = Pipeline::builder(Config::builtin())
        .embedder(Arc::new(gate))
        .build()
        .unwrap();
    (Arc::new(p), erx, rtx)
}

async fn entered(rx: mpsc::Receiver<usize>) -> (usize, mpsc::Receiver<usize>) {
    tokio::task::spawn_blocking(move || (rx.recv().expect("encoder entered"), rx))
        .await
        .unwrap()
}

fn csv_rows(text: &str) -> Vec<csv::StringRecord> {
    csv::ReaderBuilder::new()
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.expect("valid CSV out"))
        .collect()
}

// ---- happy paths, real model ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_stages() {
    let app = real_app();
    wait_ready(&app).await;
    for path in ["/", "/health"] {
        let r = send(app.clone(), get(path)).await;
        assert_eq!(r.status, StatusCode::OK);
        let j = r.json();
        assert_eq!(j["status"], "ok");
        assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
        assert!(j["stages"]["rules"].as_u64().unwrap() > 0);
        assert_eq!(j["stages"]["model_loaded"], true);
        assert!(j["stages"]["llm"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_the_encoder_cannot_load_and_rules_still_answer() {
    let empty = tempfile::tempdir().unwrap();
    let mut cfg = Config::builtin();
    cfg.model.embedding_dir = Some(empty.path().to_path_buf());
    let app = app(state(
        Arc::new(pipeline_with_encoder(cfg)),
        ServerConfig::default(),
        None,
    ));
    // Not ready while loading, and still not once the load has failed.
    let r = send(app.clone(), get("/ready")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    for _ in 0..500 {
        if send(app.clone(), get("/health")).await.json()["stages"]["model"] == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = send(app.clone(), get("/ready")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.error_code(), "not_ready");
    // Liveness stays 200 and names the failure; rules still decide; a line
    // for the model comes out `none` with the reason, never lost.
    let h = send(app.clone(), get("/health")).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.json()["stages"]["model"], "failed");
    let hit = send(app.clone(), single("ModernCRM", RULE_HIT)).await.json();
    assert_eq!(hit["method"], "rule");
    let novel = send(app.clone(), single("ModernCRM", NOVEL)).await.json();
    assert_eq!(novel["method"], "none");
    assert_eq!(novel["target_label"], "Unclassified");
    assert!(
        novel["detail"]
            .as_str()
            .unwrap()
            .contains("model stage unavailable"),
        "{novel}"
    );
}

/// An encoder that loads but fails its health check.
struct Sick;

impl Embedder for Sick {
    fn model_id(&self) -> &str {
        "sick"
    }
    fn weights_sha256(&self) -> &str {
        "sick"
    }
    fn dim(&self) -> usize {
        384
    }
    fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
        Ok(texts.iter().map(|_| 1).collect())
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(vec![vec![0.0; 384]; texts.len()])
    }
    fn health(&self) -> Result<(), EmbedError> {
        Err(EmbedError::Unhealthy("zero vectors".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_when_the_encoder_fails_its_health_check() {
    let p = Pipeline::builder(Config::builtin())
        .embedder(Arc::new(Sick))
        .build()
        .unwrap();
    let app = app(state(Arc::new(p), ServerConfig::default(), None));
    for _ in 0..500 {
        if send(app.clone(), get("/health")).await.json()["stages"]["model"] == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = send(app.clone(), get("/ready")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.error_code(), "not_ready");
    // The cause goes to the log, not to the client.
    assert!(!r.text().contains("zero vectors"), "{}", r.text());
}

/// An LLM client that reports each call and answers only when released.
struct GateLlm {
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    release: Arc<tokio::sync::Semaphore>,
}

impl LlmClient for GateLlm {
    fn complete<'a>(&'a self, _request: &'a ChatRequest) -> CompletionFuture<'a> {
        Box::pin(async move {
            let _ = self.entered.send(());
            self.release.acquire().await.expect("gate open").forget();
            Ok(r#"{"label": "Workflow Error", "reason": "a lead conversion step failed"}"#.into())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_llm_holds_up_only_the_requests_that_wait_for_it() {
    let (entered, mut asked) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let cfg = Config::builtin();
    let gate = GateLlm {
        entered,
        release: release.clone(),
    };
    let llm = LlmStage::with_client(cfg.llm.clone(), &["Workflow Error"], Arc::new(gate)).unwrap();
    let pipeline = Pipeline::builder(cfg).llm(llm).build().unwrap();
    // One classifier thread (the default), so a blocked thread would block all.
    let app = app(state(Arc::new(pipeline), ServerConfig::default(), None));
    let legacy = tokio::spawn(send(
        app.clone(),
        single(
            "LegacyCRM",
            "Lead conversion failed for prospect ID 7842 due to missing contact information.",
        ),
    ));
    asked.recv().await.expect("the LLM was asked");
    // The LLM holds that request; a rule-decided one is answered meanwhile.
    // (The timeout only turns a hang into a failure.)
    let quick = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        send(app.clone(), single("ModernCRM", RULE_HIT)),
    )
    .await
    .expect("a rule-decided request waited for the LLM");
    assert_eq!(quick.json()["method"], "rule");
    assert!(!legacy.is_finished());
    release.add_permits(1);
    let r = legacy.await.unwrap().json();
    assert_eq!(r["method"], "llm", "{r}");
    assert_eq!(r["target_label"], "Workflow Error");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("lead conversion step failed"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_of_the_seed_file_returns_it_classified() {
    let app = real_app();
    let (ct, body) = multipart("file", "seed_test.csv", SEED);
    let r = send(app, post("/classify/", &ct, body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let cd = r.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert_eq!(cd, "attachment; filename=\"seed_test_classified.csv\"");
    let text = r.text();
    let header_line = text.lines().next().unwrap();
    assert_eq!(
        header_line,
        "source,log_message,target_label,method,confidence,detail"
    );
    let rows = csv_rows(&text);
    assert_eq!(
        rows.len(),
        SEED.lines().count() - 1,
        "one output row per input row"
    );
    for row in &rows {
        let (source, method) = (row[0].trim(), &row[3]);
        if source == "LegacyCRM" {
            assert_eq!(method, "none", "no LLM configured: {row:?}");
            assert_eq!(&row[2], "Unclassified");
        } else {
            assert!(method == "rule" || method == "model", "{row:?}");
        }
    }
    assert!(rows.iter().any(|r| &r[3] == "model"), "some rows reach the model");
    assert!(rows
        .iter()
        .any(|r| r[1].contains("User 12345 logged in") && &r[2] == "User Action" && &r[3] == "rule"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_csv_and_ndjson_bodies_work_too() {
    let app = real_app();
    let r = send(app.clone(), post("/classify", "text/csv", SEED)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(csv_rows(&r.text()).len(), SEED.lines().count() - 1);
    assert!(r.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .starts_with("attachment;"));

    let ndjson = format!(
        "{}\n{}\n",
        json!({"source": "ModernCRM", "log_message": RULE_HIT, "host": "a"}),
        json!({"source": "ModernCRM", "log_message": NOVEL}),
    );
    for path in ["/v1/logs", "/classify"] {
        let r = send(app.clone(), post(path, "application/x-ndjson", ndjson.clone())).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/x-ndjson");
        let out: Vec<Value> = r
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["host"], "a", "other fields are kept");
        assert_eq!(out[0]["target_label"], "User Action");
        assert_eq!(out[0]["method"], "rule");
        assert_eq!(out[1]["log_message"], NOVEL);
        assert!(out[1]["detail"].is_string());
    }
}

fn batch_body() -> String {
    json!({"logs": [{"source": "ModernCRM", "log_message": RULE_HIT}]}).to_string()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> String {
    use std::io::Read;
    let mut out = String::new();
    flate2::read::GzDecoder::new(data)
        .read_to_string(&mut out)
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_in_and_gzip_answers_out_for_log_shippers() {
    let app = real_app();
    let ndjson = format!(
        "{}\n{}\n",
        json!({"source": "ModernCRM", "log_message": RULE_HIT}),
        json!({"source": "ModernCRM", "log_message": "User User7 logged out."}),
    );
    let mut req = post("/v1/logs", "application/x-ndjson", gzip(ndjson.as_bytes()));
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    req.headers_mut()
        .insert(header::ACCEPT_ENCODING, "gzip".parse().unwrap());
    let r = send(app.clone(), req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_ENCODING], "gzip");
    let rows: Vec<Value> = gunzip(&r.body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["target_label"] == "User Action"));

    let mut req = post("/v1/classify", "application/json", gzip(batch_body().as_bytes()));
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let r = send(app.clone(), req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["results"][0]["method"], "rule");

    // A single line comes plain; compressed, it is refused with the reason.
    let mut req = single("ModernCRM", RULE_HIT);
    let body = json!({"source": "ModernCRM", "log_message": RULE_HIT}).to_string();
    *req.body_mut() = Body::from(gzip(body.as_bytes()));
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let r = send(app.clone(), req).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.error_code(), "unsupported_encoding");

    // Another encoding: refused in the one error shape.
    let mut req = post("/v1/logs", "application/x-ndjson", ndjson.clone());
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "br".parse().unwrap());
    let r = send(app.clone(), req).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.error_code(), "unsupported_encoding");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_count_decompressed_bytes_so_a_gzip_bomb_is_413() {
    let cfg = ServerConfig {
        max_body_bytes: 1024,
        max_upload_bytes: 1024,
        ..Default::default()
    };
    let app = app(state(real_pipeline(), cfg, None));
    // 256 KiB of CSV that compresses to well under 1 KiB.
    let csv = format!(
        "source,log_message\n{}",
        "ModernCRM,User User1 logged in.\n".repeat(8 * 1024)
    );
    let packed = gzip(csv.as_bytes());
    assert!(packed.len() < 1024, "{}", packed.len());
    let mut req = post("/classify", "text/csv", packed);
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let r = send(app.clone(), req).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert_eq!(r.error_code(), "payload_too_large");

    let big = json!({"logs": [{"source": "ModernCRM", "log_message": "x".repeat(100_000)}]}).to_string();
    let mut req = post("/v1/classify", "application/json", gzip(big.as_bytes()));
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let r = send(app.clone(), req).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert_eq!(r.error_code(), "payload_too_large");

    // A body that is not gzip at all: a client error in the one shape.
    let mut req = post("/v1/classify", "application/json", batch_body());
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let r = send(app, req).await;
    assert!(r.status.is_client_error(), "{}", r.status);
    assert!(!r.error_code().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_single_and_batch_answer_in_order() {
    let app = real_app();
    for path in ["/classify-single", "/classify-single/"] {
        let mut req = single("ModernCRM", RULE_HIT);
        *req.uri_mut() = path.parse().unwrap();
        let r = send(app.clone(), req).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let j = r.json();
        assert_eq!(j["target_label"], "User Action");
        assert_eq!(j["method"], "rule");
        assert_eq!(j["confidence"], 1.0);
        assert!(j["detail"].as_str().unwrap().starts_with("rule "));
    }
    let logs = [
        ("ModernCRM", "IP 192.168.133.114 blocked due to potential attack"),
        ("LegacyCRM", "Case escalation for ticket ID 7324 failed"),
        ("BillingSystem", RULE_HIT),
    ];
    let body =
        json!({"logs": logs.iter().map(|(s, m)| json!({"source": s, "log_message": m})).collect::<Vec<_>>()});
    let r = send(
        app.clone(),
        post("/v1/classify", "application/json", body.to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let results = r.json()["results"].as_array().unwrap().clone();
    // What a user expects: a blocked attack is a Security Alert (no rule
    // knows it, the model decides), LegacyCRM is unclassified without an
    // LLM, and the rule hit.
    let want = [
        ("Security Alert", "model"),
        ("Unclassified", "none"),
        ("User Action", "rule"),
    ];
    assert_eq!(results.len(), 3);
    for (got, (label, method)) in results.iter().zip(want) {
        assert_eq!(got["target_label"], label, "{got}");
        assert_eq!(got["method"], method, "{got}");
    }
    assert_eq!(results[1]["method"], "none", "LegacyCRM without an LLM");
    assert_eq!(results[2]["method"], "rule");

    let r = send(app, post("/v1/classify", "application/json", r#"{"logs":[]}"#)).await;
    assert_eq!(r.json(), json!({"results": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_answer() {
    let app = real_app();
    wait_ready(&app).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let msg = if i % 2 == 0 {
            format!("User User{i} logged in.")
        } else {
            format!("{NOVEL} {i}")
        };
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let r = send(app, single("ModernCRM", &msg)).await;
            (i, r.status, r.json())
        }));
    }
    for t in tasks {
        let (i, status, j) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        if i % 2 == 0 {
            assert_eq!(j["method"], "rule", "request {i}: {j}");
        } else {
            assert_ne!(j["method"], "rule", "request {i}: {j}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_rows_and_batches() {
    let app = real_app();
    let r = send(app.clone(), single("ModernCRM", RULE_HIT)).await;
    assert_eq!(r.status, StatusCode::OK);
    let m = send(app, get("/metrics")).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(m.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = m.text();
    for needle in [
        r#"logsieve_http_requests_total{method="POST",route="/classify-single",status="200"} 1"#,
        r#"logsieve_rows_total{label="User Action",method="rule"}"#,
        "logsieve_http_request_duration_seconds_bucket{route=\"/classify-single\"",
        "logsieve_batch_rows_count",
        "logsieve_llm_calls_total",
        "logsieve_llm_cache_hits_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

// ---- docs -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_render_from_local_assets_only() {
    let app = real_app();
    for page in ["/docs", "/redoc"] {
        let r = send(app.clone(), get(page)).await;
        assert_eq!(r.status, StatusCode::OK);
        let html = r.text();
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{page} references a CDN:\n{html}"
        );
        // Every asset the page names is served by us.
        for src in html.split(['"', '\'']).filter(|s| s.starts_with("/docs/assets/")) {
            let a = send(app.clone(), get(src)).await;
            assert_eq!(a.status, StatusCode::OK, "{src}");
            assert!(a.body.len() > 10_000, "{src} is the real bundle");
        }
        assert!(html.contains("/openapi.json"));
    }
    let spec = send(app, get("/openapi.json")).await.json();
    assert_eq!(spec["openapi"], "3.1.0");
    for path in [
        "/classify",
        "/classify-single",
        "/v1/classify",
        "/v1/logs",
        "/v1/feedback",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is documented");
    }
}

/// A pipeline with no encoder (rules only): for tests of the HTTP surface.
fn rules_only_app() -> Router {
    let p = Pipeline::builder(Config::builtin()).build().unwrap();
    app(state(Arc::new(p), ServerConfig::default(), None))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_served_is_in_the_api_description() {
    let app = rules_only_app();
    let spec = send(app.clone(), get("/openapi.json")).await.json();
    let paths = spec["paths"].as_object().expect("paths");
    // Every documented operation is served: the answer is never the
    // router's not-found or wrong-method fallback.
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(path.as_str())
                .body(Body::empty())
                .unwrap();
            let r = send(app.clone(), req).await;
            if !r.status.is_success() {
                let code = r.error_code();
                assert!(
                    code != "not_found" && code != "method_not_allowed",
                    "{method} {path} is documented but not served: {code}"
                );
            }
            operations += 1;
        }
    }
    assert!(operations >= 11, "{operations} operations");
    // What is served without a description is only aliases and assets.
    for path in logsieve_server::UNDOCUMENTED {
        assert!(
            paths.contains_key(path.trim_end_matches('/')) || path.starts_with("/docs/assets/"),
            "{path} is served but neither documented nor an alias"
        );
    }
    for schema in [
        "LogIn",
        "Decision",
        "BatchIn",
        "BatchOut",
        "Health",
        "Error",
        "FeedbackIn",
        "FeedbackOut",
    ] {
        assert!(
            spec["components"]["schemas"][schema].is_object(),
            "schema {schema} is described"
        );
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(spec["paths"]["/classify"]["post"]["requestBody"]["content"]["multipart/form-data"].is_object());
}

// ---- errors: one shape, the right status ------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_bodies_are_413() {
    let cfg = ServerConfig {
        max_body_bytes: 64,
        max_upload_bytes: 100,
        ..Default::default()
    };
    let app = app(state(real_pipeline(), cfg, None));
    let r = send(app.clone(), single("ModernCRM", &"x".repeat(200))).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error_code(), "payload_too_large");

    // Declared too large: refused before reading.
    let big = format!("source,log_message\n{}", "ModernCRM,hello\n".repeat(20));
    let r = send(app.clone(), post("/classify", "text/csv", big.clone())).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error_code(), "payload_too_large");

    // Streamed with no length (chunked): found while reading.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(big))]);
    let r = send(app, post("/classify", "text/csv", Body::from_stream(stream))).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_types_are_415() {
    let app = real_app();
    let r = send(app.clone(), post("/classify", "application/xml", "<x/>")).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.error_code(), "unsupported_media_type");
    let r = send(
        app.clone(),
        post(
            "/classify-single",
            "text/plain",
            r#"{"source":"a","log_message":"b"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = send(app.clone(), post("/v1/logs", "text/csv", SEED)).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut req = post("/classify", "text/csv", SEED);
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "deflate".parse().unwrap());
    let r = send(app.clone(), req).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.error_code(), "unsupported_encoding");
    // Said to be gzip, but not: a client error that says so.
    let mut req = post("/classify", "text/csv", SEED);
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let r = send(app, req).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("Invalid gzip header"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_and_missing_columns_are_422_with_line_and_column() {
    let app = real_app();
    let r = send(
        app.clone(),
        post(
            "/classify-single",
            "application/json",
            "{\n  \"source\": \"a\",\n  \"log_message\": \n}",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "validation");
    assert_eq!(e["line"], 4);
    assert_eq!(e["column"], 1, "a number, as `line` is");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("line 4 column 1: invalid JSON"),
        "{e}"
    );

    let r = send(
        app.clone(),
        post("/classify-single", "application/json", r#"{"source":"a"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("log_message"));

    let r = send(
        app.clone(),
        post("/v1/classify", "application/json", r#"{"logs":[{"source":1}]}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["line"], 1);

    let (ct, body) = multipart("file", "x.csv", "source,message\nModernCRM,hello\n");
    let r = send(app.clone(), post("/classify", &ct, body)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let e = &r.json()["error"];
    assert_eq!(e["line"], 1);
    assert!(
        e["message"].as_str().unwrap().contains("no `log_message` column"),
        "{e}"
    );

    let (ct, body) = multipart("upload", "x.csv", SEED);
    let r = send(app, post("/classify", &ct, body)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("`file`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_when_configured() {
    let app = app(state(
        real_pipeline(),
        ServerConfig::default(),
        Some("s3cret-token"),
    ));
    let r = send(app.clone(), single("ModernCRM", RULE_HIT)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "unauthorized");
    assert!(!r.text().contains("s3cret"));

    let mut req = single("ModernCRM", RULE_HIT);
    req.headers_mut()
        .insert(header::AUTHORIZATION, "Bearer s3cret-tokeN".parse().unwrap());
    assert_eq!(send(app.clone(), req).await.status, StatusCode::UNAUTHORIZED);

    let mut req = single("ModernCRM", RULE_HIT);
    req.headers_mut()
        .insert(header::AUTHORIZATION, "Bearer s3cret-token".parse().unwrap());
    assert_eq!(send(app.clone(), req).await.status, StatusCode::OK);

    assert_eq!(
        send(app.clone(), get("/metrics")).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Probes and docs stay open.
    assert_eq!(send(app.clone(), get("/health")).await.status, StatusCode::OK);
    assert_eq!(send(app, get("/docs")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_health_stays_up() {
    let (pipeline, entered_rx, release) = gated();
    let cfg = ServerConfig {
        queue_capacity: 1,
        ..Default::default()
    };
    let app = app(state(pipeline, cfg, None));
    let first = tokio::spawn(send(app.clone(), single("ModernCRM", NOVEL)));
    let (_, _entered_rx) = entered(entered_rx).await; // the classifier is busy with it

    let r = send(app.clone(), single("ModernCRM", RULE_HIT)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.error_code(), "overloaded");
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    let r = send(app.clone(), post("/classify", "text/csv", SEED)).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "uploads are admitted the same way"
    );

    let h = send(app.clone(), get("/health")).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.json()["queue"]["in_flight"], 1);

    release.send(()).unwrap();
    let r = first.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "the admitted request still completes");
    // Room again.
    assert_eq!(
        send(app, single("ModernCRM", RULE_HIT)).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_classifier_gives_504_and_cuts_uploads() {
    let (pipeline, entered_rx, release) = gated();
    let cfg = ServerConfig {
        request_timeout_ms: 50,
        ..Default::default()
    };
    let app = app(state(pipeline, cfg, None));
    let r = send(app.clone(), single("ModernCRM", NOVEL)).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.error_code(), "timeout");
    // An upload is admitted and starts its response; when its rows do not
    // come back in time the transfer is cut, not completed with missing rows.
    let csv = format!("source,log_message\nModernCRM,{NOVEL}\n");
    let resp = app.oneshot(post("/classify", "text/csv", csv)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(axum::body::to_bytes(resp.into_body(), usize::MAX).await.is_err());
    drop(release);
    drop(entered_rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_requests_are_merged_into_one_batch() {
    let (pipeline, entered_rx, release) = gated();
    let app = app(state(pipeline, ServerConfig::default(), None));
    let first = tokio::spawn(send(app.clone(), single("ModernCRM", NOVEL)));
    let (n, entered_rx) = entered(entered_rx).await;
    assert_eq!(n, 1);
    let mut waiting = Vec::new();
    // Distinct words, not numbers: numbers are masked, and lines that mask
    // alike share one encoder row through the template cache.
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    ];
    for w in words {
        waiting.push(tokio::spawn(send(
            app.clone(),
            single("ModernCRM", &format!("{NOVEL} {w}")),
        )));
    }
    // All ten are queued behind the first.
    while send(app.clone(), get("/health")).await.json()["queue"]["in_flight"] != 11 {
        tokio::task::yield_now().await;
    }
    drop(release); // the gate opens for good
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    for w in waiting {
        assert_eq!(w.await.unwrap().status, StatusCode::OK);
    }
    let (n, _) = entered(entered_rx).await;
    assert_eq!(
        n, 10,
        "the ten waiting requests went through the encoder together"
    );
    let m = send(app, get("/metrics")).await.text();
    assert!(m.contains("logsieve_batch_requests_count 2"), "{m}");
    assert!(m.contains("logsieve_batch_rows_sum 11"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_use_the_error_shape() {
    let app = real_app();
    let r = send(app.clone(), get("/nope")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "not_found");
    let r = send(app, get("/classify-single")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error_code(), "method_not_allowed");
}

// ---- a real port, a real client, graceful shutdown ---------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_port_serves_and_shuts_down_gracefully() {
    let (pipeline, entered_rx, release) = gated();
    let st = state(pipeline, ServerConfig::default(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(logsieve_server::serve(listener, st, async {
        let _ = stop_rx.await;
    }));

    let url = base.clone();
    let upload = tokio::task::spawn_blocking(move || {
        let boundary = "b0undary";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"seed_test.csv\"\r\n\r\n{SEED}\r\n--{boundary}--\r\n"
        );
        let mut resp = ureq::post(format!("{url}/classify/"))
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .send(body)
            .expect("upload");
        let cd = resp.headers().get("content-disposition").cloned();
        (resp.body_mut().read_to_string().unwrap(), cd)
    });
    // The upload is in the classifier; now ask the server to stop.
    let (_, _rx) = entered(entered_rx).await;
    stop_tx.send(()).unwrap();
    release.send(()).unwrap();
    drop(release);
    let (text, cd) = upload.await.unwrap();
    assert_eq!(
        csv_rows(&text).len(),
        SEED.lines().count() - 1,
        "in-flight upload finished"
    );
    assert!(cd.unwrap().to_str().unwrap().starts_with("attachment"));
    server.await.unwrap().expect("clean shutdown");
    // And the port is closed.
    let after = tokio::task::spawn_blocking(move || ureq::get(format!("{base}/health")).call().is_err());
    assert!(after.await.unwrap());
}
