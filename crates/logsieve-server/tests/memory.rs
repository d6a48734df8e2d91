//! Issue 12, case 3, measured: a small gzip body that inflates to one huge
//! line must not make the server hold the line. A counting allocator (the
//! only test in this binary, so nothing else allocates meanwhile) records
//! the peak of live heap bytes while such requests go through `/classify`
//! (raw and multipart) and `/v1/logs`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use logsieve_pipeline::{Config, Pipeline};
use logsieve_server::ServerConfig;
use logsieve_server::{app, AppState};
use tower::ServiceExt;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new > l.size() {
                grew(new - l.size());
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

#[path = "support/fixed.rs"]
mod fixed;
use fixed::Fixed;

const MIB: usize = 1 << 20;

/// gzip of `head`, `mib` MiB of `x`, `tail`.
fn bomb(head: &str, mib: usize, tail: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(head.as_bytes()).unwrap();
    let block = vec![b'x'; MIB];
    for _ in 0..mib {
        e.write_all(&block).unwrap();
    }
    e.write_all(tail.as_bytes()).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case3_a_small_gzip_body_inflating_to_one_huge_line_takes_bounded_memory() {
    let pipeline = Pipeline::builder(Config::builtin())
        .embedder(Arc::new(Fixed))
        .build()
        .unwrap();
    let app = app(AppState::new(Arc::new(pipeline), ServerConfig::default(), None));
    let csv = bomb(
        "source,log_message\nModernCRM,User User1 logged in. ",
        32,
        "\nB,Disk cleanup completed successfully.\n",
    );
    let ndjson = bomb(
        r#"{"source":"ModernCRM","log_message":""#,
        64,
        "\"}\n{\"source\":\"A\",\"log_message\":\"User User1 logged in.\"}\n",
    );
    let boundary = "XmemBOUNDARYx";
    let multipart = bomb(
        &format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.csv\"\r\n\r\nsource,log_message\nModernCRM,User User1 logged in. "
        ),
        32,
        &format!("\nB,Disk cleanup completed successfully.\n\r\n--{boundary}--\r\n"),
    );
    assert!(csv.len() + ndjson.len() + multipart.len() < 2 * MIB);
    let requests = [
        ("/classify", "text/csv".to_string(), csv),
        ("/v1/logs", "application/x-ndjson".to_string(), ndjson),
        (
            "/classify",
            format!("multipart/form-data; boundary={boundary}"),
            multipart,
        ),
    ];
    // Warm: the first request of each kind allocates lazily built things once.
    let small = bomb("source,log_message\nA,User User1 logged in.", 0, "\n");
    let r = app
        .clone()
        .oneshot(
            Request::post("/classify")
                .header(header::CONTENT_TYPE, "text/csv")
                .header(header::CONTENT_ENCODING, "gzip")
                .body(Body::from(small))
                .unwrap(),
        )
        .await
        .unwrap();
    axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();

    for (path, ct, body) in requests {
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, ct)
            .header(header::CONTENT_ENCODING, "gzip")
            .body(Body::from(body))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let out = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("over the limit").count(), 1, "{path}: {text:.300}");
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        eprintln!(
            "{path}: peak {:.1} MiB above the baseline",
            peak as f64 / MIB as f64
        );
        assert!(
            peak < 16 * MIB,
            "{path}: {:.1} MiB held for a request whose line is {} MiB",
            peak as f64 / MIB as f64,
            if path == "/v1/logs" { 64 } else { 32 }
        );
    }
}
