//! The dashboard's endpoints as a client sees them, with the real pipeline
//! and encoder: `/v1/stats` counts equal what `/v1/classify` answered, by
//! label and method, also after the state is rebuilt from what an
//! [`AggregateStore`] kept (the restart path); `/v1/explain` names the rule
//! or the model's view; `/v1/tail` streams an alert posted after it
//! opened; the bearer token guards the data but not the page.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use futures_util::StreamExt;
use logsieve_embed::{Embedder, MiniLm};
use logsieve_pipeline::{Config, Pipeline};
use logsieve_server::aggregates::{AggregateStore, Delta};
use logsieve_server::{app, AppState, ServerConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

const SEED: &str = include_str!("../../../data/seed_test.csv");

fn pipeline() -> Arc<Pipeline> {
    static P: OnceLock<Arc<Pipeline>> = OnceLock::new();
    P.get_or_init(|| {
        let cfg = Config::builtin();
        let (dir, options) = (cfg.model.embedding_dir.clone(), cfg.batch_options());
        Arc::new(
            Pipeline::builder(cfg)
                .embedder_loader(move || {
                    Ok(Arc::new(MiniLm::load_default(dir.as_deref(), options)?) as Arc<dyn Embedder>)
                })
                .build()
                .expect("built-in pipeline"),
        )
    })
    .clone()
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn post(path: &str, body: Value, token: Option<&str>) -> Request<Body> {
    let mut r = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(Body::from(body.to_string())).unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

/// The seed file's rows as `/v1/classify` takes them.
fn seed_logs() -> Vec<Value> {
    let mut r = csv::Reader::from_reader(SEED.as_bytes());
    let h = r.headers().unwrap().clone();
    let (s, m) = (
        h.iter().position(|c| c == "source").unwrap(),
        h.iter().position(|c| c == "log_message").unwrap(),
    );
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            json!({"source": rec[s], "log_message": rec[m]})
        })
        .collect()
}

type Counts = BTreeMap<String, u64>;

fn tally(results: &[Value], field: &str) -> Counts {
    let mut m = Counts::new();
    for r in results {
        *m.entry(r[field].as_str().unwrap().to_string()).or_default() += 1;
    }
    m
}

fn as_counts(v: &Value) -> Counts {
    v.as_object()
        .unwrap()
        .iter()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

/// A store that keeps every delta in memory, shared by the "processes"
/// of one test: what it appended is what the next start loads.
#[derive(Clone, Default)]
struct KeptDeltas(Arc<Mutex<Vec<Delta>>>);

impl AggregateStore for KeptDeltas {
    fn load(&mut self, _since: i64, _alerts: usize) -> Result<Delta, String> {
        let mut all = Delta::default();
        for d in self.0.lock().unwrap().iter() {
            all.merge(d.clone());
        }
        Ok(all)
    }
    fn append(&mut self, delta: &Delta) -> Result<(), String> {
        self.0.lock().unwrap().push(delta.clone());
        Ok(())
    }
    fn prune(&mut self, _before: i64, _keep_alerts: usize) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_what_was_classified_by_label_and_method_across_a_restart() {
    let store = KeptDeltas::default();
    let st = AppState::with_store(
        pipeline(),
        ServerConfig::default(),
        None,
        Some(Box::new(store.clone())),
    );
    let a = app(st.clone());
    let (s, empty) = call(&a, get("/v1/stats")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(empty["rows"], 0);

    let logs = seed_logs();
    let (s, out) = call(&a, post("/v1/classify", json!({ "logs": logs }), None)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let results = out["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), logs.len());
    st.recorder.flush();
    let (_, stats) = call(&a, get("/v1/stats?since=-1h")).await;
    assert_eq!(stats["rows"], logs.len() as u64);
    assert_eq!(as_counts(&stats["by_label"]), tally(&results, "target_label"));
    assert_eq!(as_counts(&stats["by_method"]), tally(&results, "method"));
    let cells: u64 = stats["by_source_label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(cells, logs.len() as u64);
    let hist: u64 = stats["confidence"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(hist, logs.len() as u64);
    let alerts = results
        .iter()
        .filter(|r| ["Security Alert", "Critical Error"].contains(&r["target_label"].as_str().unwrap()))
        .count();
    assert_eq!(stats["alerts"].as_array().unwrap().len(), alerts.min(50));

    // One source only.
    let (_, billing) = call(&a, get("/v1/stats?source=BillingSystem")).await;
    let want = logs.iter().filter(|l| l["source"] == "BillingSystem").count() as u64;
    assert_eq!(billing["rows"], want);
    assert!(
        billing["sources"].as_array().unwrap().len() > 1,
        "the picker still lists every source"
    );

    // A bad window is a clear 422.
    let (s, e) = call(&a, get("/v1/stats?since=yesterday")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e["error"]["message"].as_str().unwrap().contains("`since`"), "{e}");

    // "Restart": a new state on the same store sees the same counts.
    drop(a);
    let again = app(AppState::with_store(
        pipeline(),
        ServerConfig::default(),
        None,
        Some(Box::new(store.clone())),
    ));
    let (_, after) = call(&again, get("/v1/stats")).await;
    assert_eq!(after["rows"], stats["rows"]);
    assert_eq!(after["by_label"], stats["by_label"]);
    assert_eq!(after["by_method"], stats["by_method"]);
    assert_eq!(after["templates"], stats["templates"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_rule_or_shows_the_models_view() {
    let a = app(AppState::new(pipeline(), ServerConfig::default(), None));
    let (s, r) = call(
        &a,
        post(
            "/v1/explain",
            json!({"source": "ModernCRM", "log_message": "User User1 logged in."}),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["method"], "rule");
    assert_eq!(r["rule"]["id"], "user-login-logout");
    assert!(r["rule"]["pattern"].as_str().unwrap().contains("logged"));
    assert!(r["model"].is_null());

    let line = "IP 192.168.133.114 blocked due to potential attack";
    let (_, m) = call(
        &a,
        post(
            "/v1/explain",
            json!({"source": "ModernCRM", "log_message": line}),
            None,
        ),
    )
    .await;
    assert_eq!(m["target_label"], "Security Alert", "{m}");
    assert_eq!(m["method"], "model");
    assert_eq!(m["masked"], "IP <IP> blocked due to potential attack");
    assert_eq!(m["template_id"].as_str().unwrap().len(), 16);
    let top = m["model"]["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(top[0]["label"], "Security Alert");
    let p: Vec<f64> = top.iter().map(|t| t["probability"].as_f64().unwrap()).collect();
    assert!(
        p[0] >= p[1] && p[1] >= p[2] && p.iter().sum::<f64>() <= 1.0001,
        "{p:?}"
    );
    let near = m["model"]["nearest"].as_array().unwrap();
    assert!(!near.is_empty());
    let sims: Vec<f64> = near.iter().map(|n| n["similarity"].as_f64().unwrap()).collect();
    assert!(
        sims.windows(2).all(|w| w[0] >= w[1]),
        "most similar first: {sims:?}"
    );
    assert!(near
        .iter()
        .all(|n| !n["text"].as_str().unwrap().is_empty() && n["label"].is_string()));

    let (s, e) = call(&a, post("/v1/explain", json!({"source": "x"}), None)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("log_message"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_streams_an_alert_posted_after_it_opened() {
    let a = app(AppState::new(pipeline(), ServerConfig::default(), None));
    let resp = a.clone().oneshot(get("/v1/tail")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = resp.into_body().into_data_stream();
    let line = "IP 203.0.113.9 blocked due to potential attack";
    let (s, _) = call(
        &a,
        post(
            "/classify-single",
            json!({"source": "Edge", "log_message": line}),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let mut got = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !got.contains("\n\n") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("an event within 30 s")
            .expect("the stream stays open")
            .unwrap();
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(got.starts_with("event: alert\n"), "{got}");
    let data: Value =
        serde_json::from_str(got.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(data["log_message"], line);
    assert_eq!(data["target_label"], "Security Alert");
    assert_eq!(data["source"], "Edge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_the_data_but_not_the_page() {
    let a = app(AppState::new(pipeline(), ServerConfig::default(), Some("s3cret")));
    for path in ["/v1/stats", "/v1/tail"] {
        let (s, _) = call(&a, get(path)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (s, _) = call(
        &a,
        post("/v1/explain", json!({"source": "a", "log_message": "b"}), None),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(
        &a,
        post(
            "/v1/explain",
            json!({"source": "a", "log_message": "User 1 logged in."}),
            Some("s3cret"),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let page = a.clone().oneshot(get("/dashboard")).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = axum::body::to_bytes(page.into_body(), usize::MAX).await.unwrap();
    let html = String::from_utf8(html.to_vec()).unwrap();
    assert!(
        html.contains("/dashboard/assets/chart.umd.js") && !html.contains("https://"),
        "no CDN"
    );
    let js = a
        .clone()
        .oneshot(get("/dashboard/assets/chart.umd.js"))
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    let req = Request::get("/v1/stats")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    let (s, _) = call(&a, req).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tail_does_not_hold_up_a_graceful_shutdown() {
    let st = AppState::new(pipeline(), ServerConfig::default(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(logsieve_server::serve(listener, st, async {
        let _ = stop_rx.await;
    }));
    // A browser's tail: connected, reading, never closing by itself.
    let (open_tx, open_rx) = std::sync::mpsc::channel();
    let reader = tokio::task::spawn_blocking(move || {
        let mut r = ureq::get(format!("{base}/v1/tail")).call().expect("tail");
        open_tx.send(r.status().as_u16()).unwrap();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut r.body_mut().as_reader(), &mut rest);
        rest
    });
    assert_eq!(
        open_rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap(),
        200
    );
    stop_tx.send(()).unwrap();
    let done = tokio::time::timeout(std::time::Duration::from_secs(60), server).await;
    done.expect("the server stops with a tail open")
        .unwrap()
        .expect("clean shutdown");
    reader.await.unwrap();
}
