//! What `logsieve stream` shows on `--metrics-port`: `/metrics`
//! (Prometheus text: records in and out, dead letters, rebalances,
//! consumer lag per partition from librdkafka's statistics, records in
//! flight, backpressure waits) and `/health` (200 while the consume loop
//! turns, 503 when it has stalled (60 s) or stopped on an error).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

/// The loop is unhealthy when it has not turned for this long.
const STALL: Duration = Duration::from_secs(60);

pub struct Metrics {
    registry: Registry,
    pub records_in: IntCounter,
    pub records_out: IntCounter,
    pub dlq: IntCounter,
    pub rebalances: IntCounter,
    pub delivery_errors: IntCounter,
    pub backpressure_waits: IntCounter,
    pub commits: IntCounter,
    pub commit_errors: IntCounter,
    pub in_flight: IntGauge,
    pub assigned_partitions: IntGauge,
    pub lag: IntGaugeVec,
    pub lag_total: IntGauge,
    pub resident_bytes: IntGauge,
    started: Instant,
    /// Milliseconds since `started` when the loop last turned.
    heartbeat_ms: AtomicU64,
    /// Why the loop stopped, when it stopped on an error.
    failed: Mutex<Option<String>>,
    /// The consumer has an assignment (or had one).
    pub joined: AtomicBool,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    r.expect("metric definitions are static and valid")
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let lag = must(IntGaugeVec::new(
            Opts::new(
                "logsieve_stream_consumer_lag",
                "Records behind the partition's high watermark (librdkafka statistics).",
            ),
            &["topic", "partition"],
        ));
        must(registry.register(Box::new(lag.clone())));
        Arc::new(Self {
            records_in: counter("logsieve_stream_records_in_total", "Records consumed."),
            records_out: counter(
                "logsieve_stream_records_out_total",
                "Labelled records acknowledged by the broker on the output topic.",
            ),
            dlq: counter(
                "logsieve_stream_dlq_total",
                "Records acknowledged on the dead-letter topic.",
            ),
            rebalances: counter(
                "logsieve_stream_rebalances_total",
                "Consumer group rebalances (assign and revoke).",
            ),
            delivery_errors: counter(
                "logsieve_stream_delivery_errors_total",
                "Output records the broker did not acknowledge.",
            ),
            backpressure_waits: counter(
                "logsieve_stream_backpressure_waits_total",
                "Times consuming paused because the producer queue was full.",
            ),
            commits: counter("logsieve_stream_commits_total", "Offset commits that succeeded."),
            commit_errors: counter(
                "logsieve_stream_commit_errors_total",
                "Offset commits that failed.",
            ),
            in_flight: gauge(
                "logsieve_stream_in_flight",
                "Records produced and not yet acknowledged (their offsets are not stored).",
            ),
            assigned_partitions: gauge(
                "logsieve_stream_assigned_partitions",
                "Input partitions assigned to this process.",
            ),
            lag_total: gauge(
                "logsieve_stream_consumer_lag_total",
                "Consumer lag summed over the assigned partitions.",
            ),
            resident_bytes: gauge(
                "logsieve_stream_resident_memory_bytes",
                "Resident set size of this process.",
            ),
            lag,
            registry,
            started: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            failed: Mutex::new(None),
            joined: AtomicBool::new(false),
        })
    }

    /// The consume loop turned.
    pub fn beat(&self) {
        self.heartbeat_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn fail(&self, why: String) {
        *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// Lag per assigned partition, from a statistics event.
    pub fn set_lag(&self, stats: &rdkafka::Statistics) {
        self.lag.reset();
        let mut total = 0;
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                // -1: the internal "unassigned" partition; lag -1: not known yet.
                if *p < 0 || part.consumer_lag < 0 {
                    continue;
                }
                self.lag
                    .with_label_values(&[topic.as_str(), &p.to_string()])
                    .set(part.consumer_lag);
                total += part.consumer_lag;
            }
        }
        self.lag_total.set(total);
    }

    pub fn render(&self) -> String {
        if let Some(rss) = resident_bytes() {
            self.resident_bytes.set(rss as i64);
        }
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }

    /// (healthy, JSON body) for `/health`.
    pub fn health(&self) -> (bool, serde_json::Value) {
        let since = self.started.elapsed().as_millis() as u64 - self.heartbeat_ms.load(Ordering::Relaxed);
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let stalled = since > STALL.as_millis() as u64;
        let ok = failed.is_none() && !stalled;
        let status = match (&failed, stalled) {
            (Some(_), _) => "failed",
            (None, true) => "stalled",
            _ => "ok",
        };
        (
            ok,
            serde_json::json!({
                "status": status,
                "error": failed,
                "joined": self.joined.load(Ordering::Relaxed),
                "assigned_partitions": self.assigned_partitions.get(),
                "records_in": self.records_in.get(),
                "records_out": self.records_out.get(),
                "dlq": self.dlq.get(),
                "in_flight": self.in_flight.get(),
                "consumer_lag": self.lag_total.get(),
                "ms_since_loop": since,
            }),
        )
    }
}

/// Resident set size now (Linux).
pub fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render())
}

async fn health(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let (ok, body) = m.health();
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

pub fn app(m: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(m)
}

/// Bind `addr` now (so a taken port is an error at start) and serve on a
/// thread of its own until the process ends. Returns the bound address.
pub fn serve(m: Arc<Metrics>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("stream-metrics".into())
        .spawn(move || {
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        if let Err(e) = axum::serve(l, app(m)).await {
                            tracing::error!(error = %e, "metrics server stopped");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "metrics listener"),
                }
            })
        })?;
    Ok(bound)
}
