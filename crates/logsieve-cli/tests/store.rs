//! The decision store as a user meets it: `classify --store` twice in two
//! processes (the second asks the real local LLM nothing), corrections from
//! `logsieve feedback` and from `POST /v1/feedback` on a real `logsieve
//! serve` that is then restarted, and the store's bad input: a file that is
//! not a database, a path nothing can be written to, a damaged store.

#[path = "support/local_llm.rs"]
mod local_llm;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use local_llm::{free_port, LocalLlm};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn logsieve() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_logsieve"));
    for v in [
        "LOGSIEVE_LLM_API_KEY",
        "GROQ_API_KEY",
        "OPENAI_API_KEY",
        "LOGSIEVE_LLM_BASE_URL",
        "LOGSIEVE_LLM_MODEL",
        "LOGSIEVE_CONFIG",
        "LOGSIEVE_STORE",
    ] {
        c.env_remove(v);
    }
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `--stats` JSON line of a run's stderr.
fn stats(out: &Output) -> serde_json::Value {
    text(&out.stderr)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no --stats line in {}", text(&out.stderr)))
}

fn jsonl(out: &[u8]) -> Vec<serde_json::Value> {
    text(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `classify FILE --store STORE --stats` with output as JSON lines.
fn classify_on(store: &Path, input: &Path, extra: &[(&str, &str)]) -> Output {
    let mut c = logsieve();
    for (k, v) in extra {
        c.env(k, v);
    }
    c.args([
        "classify",
        input.to_str().unwrap(),
        "--output-format",
        "jsonl",
        "--stats",
        "--store",
    ])
    .arg(store)
    .output()
    .unwrap()
}

#[test]
fn the_same_file_twice_on_one_store_asks_the_llm_nothing_the_second_time() {
    let Some(server) = LocalLlm::start("smollm2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let input = repo().join("data/seed_test.csv");
    let url = format!("http://127.0.0.1:{}/v1", server.port);
    let env = [
        ("LOGSIEVE_LLM_BASE_URL", url.as_str()),
        ("LOGSIEVE_LLM_MODEL", "smollm2-135m-instruct"),
    ];
    let first = classify_on(&store, &input, &env);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let s1 = stats(&first);
    assert_eq!(s1["llm"]["calls"], 4, "the four LegacyCRM rows: {s1}");
    assert!(s1["encoded_texts"].as_u64().unwrap() > 0);

    let second = classify_on(&store, &input, &env);
    assert!(second.status.success(), "{}", text(&second.stderr));
    let s2 = stats(&second);
    assert_eq!(s2["llm"]["calls"], 0, "{s2}");
    assert_eq!(s2["llm"]["requests"], 0, "{s2}");
    assert_eq!(
        s2["encoded_texts"], 0,
        "the model's decisions came back too: {s2}"
    );
    assert_eq!(s2["store"]["loaded"], 7, "{s2}");
    let (a, b) = (jsonl(&first.stdout), jsonl(&second.stdout));
    assert_eq!(a.len(), 10);
    assert_eq!(b.len(), 10);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (&x["log_message"], &x["target_label"], &x["method"]),
            (&y["log_message"], &y["target_label"], &y["method"])
        );
    }
    let legacy: Vec<_> = b.iter().filter(|r| r["source"] == "LegacyCRM").collect();
    assert_eq!(legacy.len(), 4);
    for r in legacy {
        assert_eq!(r["method"], "llm", "{r}");
        assert!(
            r["detail"]
                .as_str()
                .unwrap()
                .starts_with("template cache hit (stored decision); llm: "),
            "{r}"
        );
    }
}

const CORRECTIONS: &str = "source,log_message,target_label\n\
ModernCRM,IP 192.168.133.114 blocked due to potential attack,critical error\n\
BillingSystem,User 12345 logged in.,Security Alert\n";

#[test]
fn corrections_from_a_file_apply_to_every_line_of_their_template() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    // An unknown label refuses the file, naming the line; nothing is stored.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, format!("{CORRECTIONS}ModernCRM,Disk full,Disk Trouble\n")).unwrap();
    let out = logsieve()
        .args([
            "feedback",
            bad.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad.csv: line 4 column target_label: unknown label `Disk Trouble` (known labels: Critical Error,")
            && err.contains("nothing was stored"),
        "{err}"
    );
    // Without a store there is nowhere to keep them.
    let out = logsieve()
        .args(["feedback", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("feedback needs a decision store"),
        "{}",
        text(&out.stderr)
    );

    let good = dir.path().join("good.csv");
    std::fs::write(&good, CORRECTIONS).unwrap();
    let out = logsieve()
        .args([
            "feedback",
            good.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("2 corrections (2 templates) stored in"));

    let input = dir.path().join("in.csv");
    std::fs::write(
        &input,
        "source,log_message\n\
         ModernCRM,IP 10.0.0.7 blocked due to potential attack\n\
         BillingSystem,User 999 logged in.\n\
         ModernCRM,User 999 logged in.\n",
    )
    .unwrap();
    let out = classify_on(&store, &input, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows = jsonl(&out.stdout);
    let got: Vec<(&str, &str, f64)> = rows
        .iter()
        .map(|r| {
            (
                r["target_label"].as_str().unwrap(),
                r["method"].as_str().unwrap(),
                r["confidence"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("Critical Error", "feedback", 1.0),
            ("Security Alert", "feedback", 1.0), // over the login rule
            ("User Action", "rule", 1.0),        // another source: another template
        ]
    );
    assert_eq!(stats(&out)["by_method"]["feedback"], 2);
}

#[test]
fn a_store_that_is_not_a_database_or_not_writable_is_refused_before_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = repo().join("data/seed_test.csv");
    let notes = dir.path().join("notes.db");
    std::fs::write(&notes, "these are my notes, not a database\n").unwrap();
    let out_file = dir.path().join("out.csv");
    for (store, expect) in [
        (notes.clone(), "notes.db: not a SQLite database"),
        (
            PathBuf::from("/sys/logsieve-test-store.db"),
            "/sys/logsieve-test-store.db: cannot write here",
        ),
        (dir.path().join("no/such/dir/s.db"), "s.db: cannot write here"),
    ] {
        let out = logsieve()
            .args([
                "classify",
                input.to_str().unwrap(),
                "-o",
                out_file.to_str().unwrap(),
                "--store",
            ])
            .arg(&store)
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(expect), "{err}");
        assert!(!out_file.exists(), "nothing is written");
    }
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "these are my notes, not a database\n"
    );
}

#[test]
fn a_damaged_store_never_costs_an_input_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    {
        let s = logsieve_store::Store::open(&store).unwrap();
        let many = (0..3000)
            .map(|i| logsieve_store::StoredDecision {
                source: "Elsewhere".into(),
                template: format!("template {i} {}", "x".repeat(200)),
                label: "Error".into(),
                method: logsieve_store::StoredMethod::Llm,
                confidence: 0.9,
                reason: "stored".into(),
                model_version: "q".into(),
                example: format!("line {i}"),
                count: 1,
            })
            .collect();
        s.record_decisions(many);
        s.flush().unwrap();
        s.read(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))
            .unwrap();
    }
    let mut bytes = std::fs::read(&store).unwrap();
    for b in &mut bytes[100_000..160_000] {
        *b = 0x5A;
    }
    std::fs::write(&store, &bytes).unwrap();
    let input = repo().join("data/seed_test.csv");
    let out = classify_on(&store, &input, &[]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("the database is damaged"), "{err}");
    let rows = jsonl(&out.stdout);
    assert_eq!(rows.len(), 10, "every row comes out");
    let input_text = std::fs::read_to_string(&input).unwrap();
    for (r, line) in rows.iter().zip(input_text.lines().skip(1)) {
        assert!(
            line.contains(r["log_message"].as_str().unwrap()),
            "in order: {r} vs {line}"
        );
        assert!(r["target_label"].is_string());
    }
}

/// `logsieve serve` on a port, with its store; stopped by SIGTERM.
struct Served {
    child: Child,
    base: String,
}

impl Served {
    fn start(store: &Path) -> Served {
        let port = free_port();
        let mut child = logsieve()
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--store",
            ])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 || Instant::now() > deadline {
                panic!("the server did not start: {seen}");
            }
            seen.push_str(&line);
            if line.contains("listening on http://") {
                break;
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in err.lines() {});
        Served {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let mut r = agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(body.to_string())
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}")),
        )
    }

    /// SIGTERM: a graceful stop.
    fn stop(mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

#[test]
fn a_correction_posted_to_the_server_holds_for_its_template_and_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let line = |ip: &str| serde_json::json!({"source": "ModernCRM", "log_message": format!("IP {ip} blocked due to potential attack")});
    let server = Served::start(&store);
    let (status, before) = server.post("/classify-single", line("192.168.1.4"));
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        (before["target_label"].as_str(), before["method"].as_str()),
        (Some("Security Alert"), Some("model"))
    );

    // An unknown label: 422, naming the field and the labels there are.
    let (status, e) = server.post(
        "/v1/feedback",
        serde_json::json!({"source": "ModernCRM", "log_message": "IP 1.2.3.4 blocked due to potential attack", "target_label": "Bad Vibes"}),
    );
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["code"], "validation");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("unknown label `Bad Vibes`") && msg.contains("Critical Error"),
        "{msg}"
    );

    let mut fix = line("10.1.1.1");
    fix["target_label"] = "Critical Error".into();
    let (status, applied) = server.post("/v1/feedback", fix);
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["template"], "IP <IP> blocked due to potential attack");
    assert_eq!(applied["stored"], true);
    let check = |s: &Served| {
        for ip in ["192.168.1.4", "172.16.0.9"] {
            let (status, d) = s.post("/classify-single", line(ip));
            assert_eq!(status, 200, "{d}");
            assert_eq!(d["target_label"], "Critical Error", "{d}");
            assert_eq!(d["method"], "feedback", "{d}");
            assert_eq!(d["confidence"], 1.0, "{d}");
        }
    };
    check(&server);
    server.stop();

    let again = Served::start(&store);
    check(&again);
    again.stop();
}

impl Served {
    fn get(&self, path: &str) -> serde_json::Value {
        let mut r = ureq::get(format!("{}{path}", self.base)).call().unwrap();
        let text = r.body_mut().read_to_string().unwrap();
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"))
    }
}

/// `rows` of data/synthetic_logs.csv from `skip`, as `/v1/classify` takes them.
fn synthetic(skip: usize, rows: usize) -> Vec<serde_json::Value> {
    let mut r = csv::Reader::from_path(repo().join("data/synthetic_logs.csv")).unwrap();
    r.records()
        .skip(skip)
        .take(rows)
        .map(|rec| {
            let rec = rec.unwrap();
            serde_json::json!({"source": &rec[1], "log_message": &rec[2]})
        })
        .collect()
}

type Tally = std::collections::BTreeMap<String, u64>;

fn tally(results: &[serde_json::Value], field: &str, into: &mut Tally) {
    for r in results {
        *into.entry(r[field].as_str().unwrap().to_string()).or_default() += 1;
    }
}

fn nonzero(v: &serde_json::Value) -> Tally {
    v.as_object()
        .unwrap()
        .iter()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

#[test]
fn dashboard_stats_count_every_row_classified_across_restarts_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let (mut labels, mut methods) = (Tally::new(), Tally::new());
    let mut classified = 0u64;
    // Two runs of the server on one store, each classifying its own rows,
    // each stopped by SIGTERM; a third start only reads.
    for (run, skip) in [(1, 0), (2, 300)] {
        let server = Served::start(&store);
        let logs = synthetic(skip, 300);
        let (status, out) = server.post("/v1/classify", serde_json::json!({ "logs": logs }));
        assert_eq!(status, 200, "{out}");
        let results = out["results"].as_array().unwrap();
        assert_eq!(results.len(), logs.len());
        tally(results, "target_label", &mut labels);
        tally(results, "method", &mut methods);
        classified += results.len() as u64;
        server.stop();
        let again = Served::start(&store);
        let stats = again.get("/v1/stats");
        assert_eq!(stats["rows"], classified, "after run {run}: {stats}");
        assert_eq!(nonzero(&stats["by_label"]), labels, "after run {run}");
        assert_eq!(nonzero(&stats["by_method"]), methods, "after run {run}");
        let hist: u64 = stats["confidence"]["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(hist, classified, "the confidence histogram too");
        let templates = stats["templates"].as_object().unwrap();
        assert!(
            templates
                .values()
                .flat_map(|t| t.as_array().unwrap())
                .all(|t| !t["example"].as_str().unwrap().is_empty()),
            "templates keep their example line: {templates:?}"
        );
        let alerts = labels.get("Security Alert").copied().unwrap_or(0)
            + labels.get("Critical Error").copied().unwrap_or(0);
        assert_eq!(
            stats["alerts"].as_array().unwrap().len() as u64,
            alerts.min(50),
            "the alert tail is kept"
        );
        again.stop();
    }
    // The aggregates are in the store file itself, in the documented table.
    let s = logsieve_store::Store::open(&store).unwrap();
    let rows: i64 = s
        .read(|c| c.query_row("SELECT sum(rows) FROM agg_counts", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(rows as u64, classified);
}
