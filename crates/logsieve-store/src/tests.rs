use super::*;

fn decision(template: &str, label: &str, method: StoredMethod, version: &str) -> StoredDecision {
    StoredDecision {
        source: "Svc".into(),
        template: template.into(),
        label: label.into(),
        method,
        confidence: 0.9,
        reason: format!("{} said so", method.as_str()),
        model_version: version.into(),
        example: format!("{template} (as logged)"),
        count: 2,
    }
}

#[test]
fn decisions_survive_reopening_and_a_new_model_drops_only_the_models() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), schema::latest_version());
        s.record_decisions(vec![
            decision("a <NUM>", "Error", StoredMethod::Model, "m1"),
            decision("b", "Security Alert", StoredMethod::Llm, "qwen"),
            decision("c", "User Action", StoredMethod::Feedback, ""),
        ]);
        s.flush().unwrap();
    }
    let s = Store::open(&path).unwrap();
    let same = s.load_decisions("m1", 100);
    assert!(same.error.is_none());
    let keys: Vec<&str> = same.decisions.iter().map(|d| d.template.as_str()).collect();
    // The most important last: model, then LLM, then the person's.
    assert_eq!(keys, ["a <NUM>", "b", "c"]);
    assert_eq!(
        same.decisions[1],
        decision("b", "Security Alert", StoredMethod::Llm, "qwen")
    );
    let other = s.load_decisions("m2", 100);
    let keys: Vec<&str> = other.decisions.iter().map(|d| d.template.as_str()).collect();
    assert_eq!(keys, ["b", "c"]);
    assert_eq!(other.stale_model, 1);
    // The limit keeps the most important.
    let one = s.load_decisions("m1", 1);
    assert_eq!(one.decisions.len(), 1);
    assert_eq!(one.decisions[0].method, StoredMethod::Feedback);
}

#[test]
fn a_correction_is_not_overwritten_by_the_model_or_the_llm() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("s.db")).unwrap();
    s.record_decisions(vec![decision("x", "User Action", StoredMethod::Feedback, "")]);
    s.record_decisions(vec![decision("x", "Error", StoredMethod::Llm, "qwen")]);
    s.record_decisions(vec![decision("x", "Error", StoredMethod::Model, "m1")]);
    s.flush().unwrap();
    let got = s.decisions_by(StoredMethod::Feedback, 0.0).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].label, "User Action");
    assert_eq!(got[0].count, 6, "the lines are counted whoever decided");
    // Another correction does replace it.
    s.record_decisions(vec![decision("x", "Error", StoredMethod::Feedback, "")]);
    s.flush().unwrap();
    assert_eq!(
        s.decisions_by(StoredMethod::Feedback, 0.0).unwrap()[0].label,
        "Error"
    );
    assert_eq!(
        s.counts().unwrap(),
        Counts {
            model: 0,
            llm: 0,
            feedback: 1
        }
    );
}

#[test]
fn hits_add_to_the_count_and_jobs_of_other_modules_run_in_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("s.db")).unwrap();
    s.record_decisions(vec![decision("t", "Error", StoredMethod::Llm, "q")]);
    s.record_hits(vec![Hit {
        source: "Svc".into(),
        template: "t".into(),
        lines: 40,
    }]);
    s.execute(Box::new(|tx| {
        tx.execute_batch("CREATE TABLE IF NOT EXISTS other (n INTEGER); INSERT INTO other VALUES (7);")
    }));
    s.flush().unwrap();
    assert_eq!(s.decisions_by(StoredMethod::Llm, 0.5).unwrap()[0].count, 42);
    assert!(s.decisions_by(StoredMethod::Llm, 0.95).unwrap().is_empty());
    let n: i64 = s
        .read(|c| c.query_row("SELECT n FROM other", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(n, 7);
    // A failing job is reported by the next flush, and the writer goes on.
    s.execute(Box::new(|tx| tx.execute_batch("INSERT INTO nowhere VALUES (1)")));
    let e = s.flush().unwrap_err().to_string();
    assert!(e.contains("no such table: nowhere"), "{e}");
    assert_eq!(s.write_errors(), 1);
    s.record_hits(vec![Hit {
        source: "Svc".into(),
        template: "t".into(),
        lines: 1,
    }]);
    s.flush().unwrap();
}

#[test]
fn a_file_that_is_not_a_database_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "source,log_message\nA,b\n".repeat(100)).unwrap();
    let e = Store::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::NotADatabase { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("notes.txt") && msg.contains("not a SQLite database"),
        "{msg}"
    );
    // And it is left as it was.
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .starts_with("source,log_message"));
}

#[test]
fn a_store_where_nothing_can_be_written_is_refused_by_name() {
    // /sys refuses new files to everyone, root included.
    let e = Store::open("/sys/logsieve-store-test.db").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StoreError::NotWritable { .. }), "{msg}");
    assert!(
        msg.contains("/sys/logsieve-store-test.db") && msg.contains("cannot write here"),
        "{msg}"
    );
    let e = Store::open("/nonexistent-dir/x/store.db").unwrap_err();
    let cause = std::error::Error::source(&e)
        .map(|c| c.to_string())
        .unwrap_or_default();
    assert!(e.to_string().contains("cannot write here"), "{e}");
    assert!(cause.contains("No such file or directory"), "{cause}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(Store::open(&path).unwrap());
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", schema::latest_version() + 1)
        .unwrap();
    drop(c);
    let e = Store::open(&path).unwrap_err().to_string();
    assert!(e.contains("newer than this build"), "{e}");
}

#[test]
fn a_damaged_store_gives_back_what_it_can_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let s = Store::open(&path).unwrap();
        let many: Vec<StoredDecision> = (0..3000)
            .map(|i| {
                decision(
                    &format!("template {i} {}", "x".repeat(200)),
                    "Error",
                    StoredMethod::Llm,
                    "q",
                )
            })
            .collect();
        s.record_decisions(many);
        s.flush().unwrap();
        s.read(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))
            .unwrap();
    }
    // Overwrite pages in the middle of the file with garbage.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 200_000);
    for b in &mut bytes[100_000..140_000] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let _ = std::fs::remove_file(dir.path().join("s.db-wal"));
    let s = Store::open(&path).expect("the header is intact, so it opens");
    let loaded = s.load_decisions("q", usize::MAX);
    let e = loaded.error.expect("the damage is reported");
    assert!(e.is_corrupt(), "{e:?}");
    assert!(e.to_string().contains("damaged"), "{e}");
    assert!(loaded.decisions.len() < 3000);
}
