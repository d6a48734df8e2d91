//! The `logsieve` binary as a user runs it: real model weights, real files,
//! stdin and stdout. One test per bad-input case the README promises.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

#[path = "support/seed.rs"]
mod seed;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_logsieve"));
    // Tests decide for themselves whether an LLM is reachable.
    for v in [
        "LOGSIEVE_LLM_API_KEY",
        "GROQ_API_KEY",
        "OPENAI_API_KEY",
        "LOGSIEVE_LLM_BASE_URL",
        "LOGSIEVE_LLM_MODEL",
        "LOGSIEVE_CONFIG",
    ] {
        c.env_remove(v);
    }
    c
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run with `stdin` as input; returns the output.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("logsieve runs");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parse CSV output into header + rows.
fn csv_rows(out: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::ReaderBuilder::new().flexible(false).from_reader(out);
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

fn col(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

#[test]
fn seed_sample_upload_is_labelled_in_order() {
    let path = repo().join("data/seed_test.csv");
    let out = bin().args(["classify", path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (h, rows) = csv_rows(&out.stdout);
    assert_eq!(
        h,
        [
            "source",
            "log_message",
            "target_label",
            "method",
            "confidence",
            "detail"
        ]
    );
    assert_eq!(rows.len(), 10);
    let (label, method, msg) = (col(&h, "target_label"), col(&h, "method"), col(&h, "log_message"));
    // The loose quoting is read as Python's skipinitialspace does.
    assert_eq!(rows[0][msg], "IP 192.168.133.114 blocked due to potential attack");
    assert_eq!(rows[0][label], "Security Alert");
    assert_eq!(rows[1][msg], "User 12345 logged in.");
    assert_eq!(
        (rows[1][label].as_str(), rows[1][method].as_str()),
        ("User Action", "rule")
    );
    assert_eq!(rows[2][label], "System Notification");
    assert_eq!(rows[3][label], "System Notification");
    assert_eq!(
        (rows[4][label].as_str(), rows[4][method].as_str()),
        ("HTTP Status", "model")
    );
    assert_eq!(rows[5][label], "Security Alert");
    for r in &rows[6..] {
        assert_eq!(r[0], "LegacyCRM");
        assert_eq!((r[label].as_str(), r[method].as_str()), ("Unclassified", "none"));
        assert!(
            r[col(&h, "detail")].contains("llm stage off: no API key"),
            "{r:?}"
        );
    }
}

#[test]
fn missing_log_message_column_is_fatal_and_named() {
    let out = run(&["classify"], b"source,message\nA,hello\n");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("<stdin>: line 1: the header has no `log_message` column (columns: source, message)"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn empty_file_is_fatal() {
    let out = run(&["classify", "--format", "csv"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("line 1: empty input"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn header_only_gives_header_only_and_a_warning() {
    let out = run(&["classify"], b"source,log_message\n");
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        "source,log_message,target_label,method,confidence,detail\n"
    );
    assert!(text(&out.stderr).contains("no rows after the header"));
}

#[test]
fn ragged_rows_are_kept_and_flagged() {
    let out = run(
        &["classify"],
        b"source,log_message\nA\nB,User User1 logged in.,surplus\nC,Backup completed successfully.\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (h, rows) = csv_rows(&out.stdout);
    assert_eq!(rows.len(), 3);
    let (d, l) = (col(&h, "detail"), col(&h, "target_label"));
    assert_eq!(rows[0][l], "Unclassified");
    assert!(
        rows[0][d].contains("line 2: 1 fields, header has 2"),
        "{:?}",
        rows[0]
    );
    assert_eq!(rows[1][l], "User Action");
    assert!(
        rows[1][d].contains("line 3: 3 fields, header has 2; extra fields: [\"surplus\"]"),
        "{:?}",
        rows[1]
    );
    assert_eq!(rows[2][l], "System Notification");
    assert_eq!(rows[2][d], "rule backup-completed");
}

#[test]
fn invalid_utf8_is_classified_flagged_and_kept_byte_for_byte() {
    let out = run(
        &["classify"],
        b"source,log_message\nA,User User7 logged out. \xff\xfe\n",
    );
    assert!(out.status.success());
    assert!(
        out.stdout.windows(3).any(|w| w == b". \xff"),
        "original bytes kept"
    );
    let s = text(&out.stdout);
    assert!(s.contains("User Action,rule"), "{s}");
    assert!(s.contains("line 2 column log_message: invalid UTF-8"), "{s}");
}

#[test]
fn unterminated_quote_writes_earlier_rows_then_fails_naming_the_place() {
    let out = run(
        &["classify"],
        b"source,log_message\nA,Backup completed successfully.\nB, \"never closed\nC,more\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let (h, rows) = csv_rows(&out.stdout);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][col(&h, "target_label")], "System Notification");
    assert_eq!(rows[1][col(&h, "method")], "none");
    assert!(rows[1][col(&h, "detail")].contains("line 3 column 4: unterminated quoted field"));
    assert!(
        text(&out.stderr).contains("line 3 column 4: unterminated quoted field"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_one_megabyte_line_is_classified_and_written_whole() {
    let mut input = b"source,log_message\nA,User User9 logged in. ".to_vec();
    input.extend(std::iter::repeat_n(b'x', 1 << 20));
    input.extend(b"\nB,Disk cleanup completed successfully.\n");
    let out = run(&["classify"], &input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (h, rows) = csv_rows(&out.stdout);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0][col(&h, "log_message")].len(),
        "User User9 logged in. ".len() + (1 << 20)
    );
    assert_eq!(rows[0][col(&h, "target_label")], "User Action");
    assert!(rows[0][col(&h, "detail")].contains("the first 65536 were classified"));
    assert_eq!(rows[1][col(&h, "target_label")], "System Notification");
}

#[test]
fn empty_message_is_unclassified_with_reason() {
    let out = run(&["classify"], b"source,log_message\nA,\nB,   \n");
    assert!(out.status.success());
    let (h, rows) = csv_rows(&out.stdout);
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r[col(&h, "method")], "none");
        assert_eq!(r[col(&h, "detail")], "empty log_message");
    }
}

#[test]
fn jsonl_keeps_other_fields_and_reports_bad_lines() {
    let input = b"{\"id\":1,\"source\":\"ModernCRM\",\"log_message\":\"User User3 logged in.\"}\n\n{broken\n[1,2]\n{\"source\":\"X\"}\n";
    let out = run(&["classify"], input);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every line is a row, the blank one included.
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["id"], 1);
    assert_eq!(lines[0]["target_label"], "User Action");
    let keys: Vec<&String> = lines[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "source",
            "log_message",
            "target_label",
            "method",
            "confidence",
            "detail"
        ]
    );
    assert_eq!(lines[1]["raw"], "");
    assert!(lines[1]["detail"]
        .as_str()
        .unwrap()
        .contains("line 2: blank line"));
    assert_eq!(lines[2]["raw"], "{broken");
    assert!(lines[2]["detail"]
        .as_str()
        .unwrap()
        .starts_with("line 3 column 2: invalid JSON"));
    assert!(lines[3]["detail"]
        .as_str()
        .unwrap()
        .contains("line 4: expected a JSON object, found an array"));
    assert!(lines[4]["detail"]
        .as_str()
        .unwrap()
        .contains("line 5: the object has no `log_message`"));
    assert!(lines.iter().skip(1).all(|l| l["method"] == "none"));
}

#[test]
fn text_lines_take_their_source_from_the_flag() {
    let out = run(
        &["classify", "--format", "text", "--source", "LegacyCRM"],
        b"User User1 logged in.\nsomething odd\n",
    );
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    // LegacyCRM is routed to the LLM, so even a rule-shaped line skips the rules.
    assert_eq!(lines[0]["source"], "LegacyCRM");
    assert_eq!(lines[0]["line"], 1);
    assert_eq!(lines[0]["method"], "none");
    let out = run(
        &["classify", "--format", "text", "--source", "ModernCRM"],
        b"User User1 logged in.\n",
    );
    assert!(text(&out.stdout).contains("\"method\":\"rule\""));
}

#[test]
fn no_progress_bar_when_piped_and_output_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.csv");
    let out = run(
        &["classify", "-o", out_path.to_str().unwrap()],
        b"source,log_message\nA,Backup completed successfully.\n",
    );
    assert!(out.status.success());
    // A progress bar redraws with carriage returns and escape codes; piped, there is none.
    assert!(
        !out.stderr.iter().any(|&b| b == b'\r' || b == 0x1b),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(&out_path).unwrap();
    assert!(written.ends_with(
        "A,Backup completed successfully.,System Notification,rule,1.0000,rule backup-completed\n"
    ));
}

#[test]
fn a_bad_rules_file_names_rule_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("r.toml");
    std::fs::write(&rules, "[[rule]]\nid = \"ok\"\npattern = 'a'\nlabel = \"X\"\n\n[[rule]]\nid = \"bad\"\npattern = '(x'\nlabel = \"X\"\n").unwrap();
    let out = run(
        &["--rules", rules.to_str().unwrap(), "classify"],
        b"source,log_message\nA,b\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("r.toml:7: rule `bad`: invalid pattern"), "{err}");
}

/// Run `logsieve ARGS` (no input) and insist that it succeeds.
fn ok(args: &[&str]) -> Output {
    let out = bin().args(args).output().unwrap();
    assert!(out.status.success(), "logsieve {args:?}: {}", text(&out.stderr));
    out
}

/// `logsieve COMMAND --data DATA --out OUT` (train, mine-rules), which must succeed.
fn on_labelled(command: &str, data: &Path, out: &Path) -> Output {
    ok(&[
        command,
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

fn eval_json(args: &[&str]) -> serde_json::Value {
    let data = repo().join("data/synthetic_logs.csv");
    let mut all = vec!["eval", "--data", data.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    serde_json::from_slice(&ok(&all).stdout).unwrap()
}

#[test]
fn built_in_model_scores_the_held_out_seed_split() {
    let r = eval_json(&["--split", "test"]);
    assert_eq!(r["rows"], 481);
    let f1 = r["macro_f1_learnable"].as_f64().unwrap();
    assert!(f1 >= 0.99, "macro F1 over learnable labels {f1}");
    let model = r["by_method"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == "model")
        .unwrap();
    assert!(model["accuracy"].as_f64().unwrap() >= 0.99, "{model}");
    let rule = r["by_method"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == "rule")
        .unwrap();
    assert_eq!(rule["accuracy"], 1.0);
}

#[test]
fn train_writes_an_artifact_that_classify_uses() {
    // A small labelled file: two sources' worth of model-stage rows.
    let dir = tempfile::tempdir().unwrap();
    let data = seed::seed_subset(
        dir.path(),
        &["Resource Usage", "Critical Error", "User Action"],
        120,
    );
    let model = dir.path().join("model");
    // The hybrid model (the default): every row trains it, rule-claimed ones
    // too, and the label prototypes make all nine labels learnable.
    let out = on_labelled("train", &data, &model);
    let report = text(&out.stdout);
    assert!(report.contains("model fitted on 96 rows"), "{report}");
    assert!(report.contains("confusion matrix"), "{report}");
    let art: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("classifier.json")).unwrap()).unwrap();
    assert_eq!(art["format"], "logsieve-classifier");
    assert_eq!(art["format_version"], 3);
    assert_eq!(art["embedding"]["weights_sha256"], logsieve_embed::MODEL_SHA256);
    assert_eq!(art["model"]["kind"], "hybrid");
    assert_eq!(art["model"]["labels"].as_array().unwrap().len(), 9);
    assert!(model.join("bank.safetensors").is_file());
    assert_eq!(art["training"]["data_files"][0]["rows"], 120);
    let classify = |model: &Path| {
        let out = run(
            &["--model", model.to_str().unwrap(), "classify"],
            b"source,log_message\nA,nova.compute.claims [req-1] [instance: x] Total memory: 2048 MB, used: 512.00 MB\n",
        );
        assert!(out.status.success());
        text(&out.stdout)
    };
    assert!(
        classify(&model).contains("Resource Usage,model"),
        "{}",
        classify(&model)
    );
    // The linear model (`--kind linear`) sees only what rules and routes leave.
    let linear = dir.path().join("linear");
    let out = ok(&[
        "train",
        "--kind",
        "linear",
        "--data",
        data.to_str().unwrap(),
        "--out",
        linear.to_str().unwrap(),
    ]);
    assert!(text(&out.stdout).contains("confusion matrix"));
    let art: serde_json::Value =
        serde_json::from_slice(&std::fs::read(linear.join("classifier.json")).unwrap()).unwrap();
    let labels: Vec<&str> = art["model"]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    // User Action rows here are all claimed by rules, so the model never sees that label.
    assert_eq!(labels, ["Critical Error", "Resource Usage"]);
    assert!(
        classify(&linear).contains("Resource Usage,model"),
        "{}",
        classify(&linear)
    );
}

#[test]
fn model_info_reports_the_cache() {
    let out = bin().args(["model", "info"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model_id"], "sentence-transformers/all-MiniLM-L6-v2");
    assert!(Path::new(v["cache_dir"].as_str().unwrap()).is_absolute());
}

#[test]
fn templates_per_line_keeps_order_and_groups_repeats() {
    let input = b"Connection from 10.0.0.1 closed\nVM Started\nConnection from 10.0.0.2 closed\nVM Paused\n";
    let out = run(&["templates", "--per-line"], input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines
            .iter()
            .map(|l| l["line"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(lines[0]["template_id"], lines[2]["template_id"]);
    assert_eq!(lines[2]["template"], "Connection from <IP> closed");
    assert_eq!(lines[2]["parameters"], serde_json::json!(["10.0.0.2"]));
    assert_ne!(
        lines[1]["template_id"], lines[3]["template_id"],
        "VM Started and VM Paused stay apart"
    );
}

#[test]
fn templates_table_counts_and_snapshot_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("miner.json");
    let out = run(
        &["templates", "--json", "--snapshot", snap.to_str().unwrap()],
        b"job 1 done\njob 2 done\njob 3 done\ndisk full\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &list.as_array().unwrap()[0];
    assert_eq!(first["template"], "job <NUM> done");
    assert_eq!(first["count"], 3);
    // Restoring the snapshot continues counting on the same templates.
    let out = run(
        &["templates", "--json", "--restore", snap.to_str().unwrap()],
        b"job 4 done\n",
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap()[0]["count"], 4);
    // A damaged snapshot is a clear error naming the file.
    std::fs::write(&snap, "{\"format_version\": 99}").unwrap();
    let out = run(&["templates", "--restore", snap.to_str().unwrap()], b"x\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("miner.json"), "{}", text(&out.stderr));
}

#[test]
fn mined_rules_load_and_are_precise_on_held_out_rows() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("mined.toml");
    let out = on_labelled("mine-rules", &repo().join("data/synthetic_logs.csv"), &rules);
    let report = text(&out.stdout);
    assert!(report.contains("precision 1.0000"), "{report}");
    let toml = std::fs::read_to_string(&rules).unwrap();
    assert!(toml.contains("# support "), "support in comments");
    // The mined file is usable as the rules stage.
    let out = run(
        &["--rules", rules.to_str().unwrap(), "classify"],
        b"source,log_message\nA,Backup completed successfully.\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(",rule,"), "{}", text(&out.stdout));
}

#[test]
fn templates_max_templates_caps_the_miner_and_reports_evictions() {
    let input: String = (0..50)
        .map(|i| {
            format!(
                "w{}x starts w{}y now\n",
                "abcdefghij"
                    .chars()
                    .nth(i % 10)
                    .unwrap()
                    .to_string()
                    .repeat(i / 10 + 1),
                i
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("miner.json");
    let out = run(
        &[
            "templates",
            "--json",
            "--max-templates",
            "7",
            "--snapshot",
            snap.to_str().unwrap(),
        ],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 7);
    let err = text(&out.stderr);
    assert!(
        err.contains("50 lines, 7 templates, 43 evicted (max_templates 7)"),
        "{err}"
    );
    // The snapshot keeps the cap: restored, it goes on evicting.
    let out = run(
        &["templates", "--json", "--restore", snap.to_str().unwrap()],
        b"brand new line here\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("7 templates, 44 evicted"),
        "{}",
        text(&out.stderr)
    );
    // Without the flag nothing is evicted, and the summary says nothing of it.
    let out = run(&["templates", "--json"], input.as_bytes());
    let err = text(&out.stderr);
    assert!(
        err.contains("50 lines, 50 templates, ") && !err.contains("evicted"),
        "{err}"
    );
}

#[test]
fn a_closed_output_pipe_ends_the_run_quietly_with_zero() {
    // `logsieve classify big.csv | head -1`: the reader goes away early.
    let dir = tempfile::tempdir().unwrap();
    for (name, header, row) in [
        (
            "big.csv",
            "source,log_message\n",
            "ModernCRM,User User1 logged in.\n",
        ),
        (
            "big.jsonl",
            "",
            "{\"source\":\"ModernCRM\",\"log_message\":\"User User1 logged in.\"}\n",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{header}{}", row.repeat(200_000))).unwrap();
        let mut child = bin()
            .args(["classify", path.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 64];
        std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {:?} {}",
            out.status,
            text(&out.stderr)
        );
        assert!(
            !text(&out.stderr).contains("Broken pipe"),
            "{name}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn templates_sniffs_json_lines_on_stdin_as_classify_does() {
    let input = b"{\"log_message\": \"job 1 done\"}\n{\"log_message\": \"job 2 done\"}\n";
    let out = run(&["templates", "--json"], input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["template"], "job <NUM> done", "{list}");
    assert_eq!(list[0]["count"], 2);
}

#[test]
fn templates_eval_prints_ga_pa_and_fga_per_system() {
    // Two labelled systems, scored by hand. Sys1: every group right; one
    // template keeps a user name the truth has as a variable (PA 4/5).
    // Sys2: the truth keeps `job_1` and `job_2` apart, the miner masks
    // them into one template: those two lines are wrong in GA and PA, and
    // one of two mined groups (of three true ones) is right: FGA 0.4.
    let dir = tempfile::tempdir().unwrap();
    let write = |system: &str, rows: &str| {
        let d = dir.path().join(system);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            d.join(format!("{system}_2k.log_structured.csv")),
            format!("LineId,Content,EventId,EventTemplate\n{rows}"),
        )
        .unwrap();
    };
    write(
        "Sys1",
        "1,Connection from 10.0.0.1 closed,E1,Connection from <*> closed\n\
         2,Connection from 10.0.0.2 closed,E1,Connection from <*> closed\n\
         3,VM Started,E2,VM Started\n\
         4,VM Paused,E3,VM Paused\n\
         5,User alice logged in,E4,User <*> logged in\n",
    );
    write(
        "Sys2",
        "1,job job_1 done,E1,job job_1 done\n2,job job_2 done,E2,job job_2 done\n3,all clear,E3,all clear\n",
    );
    let d = dir.path().to_str().unwrap();
    let out = run(&["templates", "--eval", d], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows[0],
        [
            "system",
            "half",
            "lines",
            "events",
            "templates",
            "GA",
            "PA",
            "FGA"
        ]
    );
    assert_eq!(
        rows[1],
        ["Sys1", "-", "5", "4", "4", "1.000", "0.800", "1.000"],
        "{table}"
    );
    assert_eq!(
        rows[2],
        ["Sys2", "-", "3", "3", "2", "0.333", "0.333", "0.400"],
        "{table}"
    );
    assert_eq!(rows[3], ["mean", "(2)", "0.667", "0.567", "0.700"], "{table}");
    assert_eq!(rows.len(), 4, "{table}");

    let out = run(&["templates", "--eval", d, "--systems", "Sys2", "--json"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["systems"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["systems"][0]["system"], "Sys2");
    assert_eq!(v["systems"][0]["templates"], 2);
    assert!(
        (v["means"]["mean"]["fga"].as_f64().unwrap() - 0.4).abs() < 1e-9,
        "{v}"
    );

    // A file without the truth's template column, and an unknown system.
    write("Sys3", "");
    std::fs::write(
        dir.path().join("Sys3/Sys3_2k.log_structured.csv"),
        "LineId,Content,EventId\n1,a,E1\n",
    )
    .unwrap();
    let out = run(&["templates", "--eval", d], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("Sys3_2k.log_structured.csv") && err.contains("no `EventTemplate` column"),
        "{err}"
    );
    let out = run(&["templates", "--eval", d, "--systems", "Nope"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no system `Nope`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn mine_rules_masks_with_the_configured_masking_rules() {
    // The configuration names masking rules that do not exist: mine-rules
    // must read them (and fail naming them), not fall back to the built-in set.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[templates]\nmasking = \"no-such-masking.toml\"\n").unwrap();
    let out = bin()
        .args([
            "--config",
            config.to_str().unwrap(),
            "mine-rules",
            "--data",
            repo().join("data/synthetic_logs.csv").to_str().unwrap(),
            "--out",
            dir.path().join("m.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no-such-masking.toml"),
        "{}",
        text(&out.stderr)
    );
}

// ---- issue 12: nothing lost, nothing let in ----

fn jsonl_input(n: usize) -> String {
    (1..=n)
        .map(|i| {
            format!("{{\"source\":\"ModernCRM\",\"log_message\":\"User User{i} logged in.\",\"n\":{i}}}\n")
        })
        .collect()
}

#[test]
fn case1_output_naming_the_input_is_refused_or_safe() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("s.jsonl");
    let original = jsonl_input(5000);
    std::fs::write(&input, &original).unwrap();
    std::os::unix::fs::symlink(&input, dir.path().join("link.jsonl")).unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let runs: [(Vec<String>, bool); 4] = [
        (
            vec!["classify".into(), p("s.jsonl"), "-o".into(), p("s.jsonl")],
            false,
        ),
        (
            vec!["classify".into(), p("s.jsonl"), "-o".into(), p("link.jsonl")],
            false,
        ),
        (
            vec![
                "classify".into(),
                p("s.jsonl"),
                "--format".into(),
                "text".into(),
                "--source".into(),
                "A".into(),
                "-o".into(),
                p("s.jsonl"),
            ],
            false,
        ),
        // Through stdin: `logsieve classify -o s.jsonl < s.jsonl`.
        (vec!["classify".into(), "-o".into(), p("s.jsonl")], true),
    ];
    for (args, via_stdin) in runs {
        let mut cmd = bin();
        cmd.args(&args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if via_stdin {
            cmd.stdin(std::fs::File::open(&input).unwrap());
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("is the input file"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(&input).unwrap(),
            original,
            "{args:?} changed the input"
        );
    }
    // CSV too, and the input is untouched.
    let csv = dir.path().join("s.csv");
    std::fs::write(&csv, "source,log_message\nA,\"User User1 logged in.\"\n").unwrap();
    let out = bin()
        .args(["classify", csv.to_str().unwrap(), "-o", csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        "source,log_message\nA,\"User User1 logged in.\"\n"
    );
}

/// Bytes written to a pipe that its reader has not taken yet.
fn unread(stdin: &std::process::ChildStdin) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    unsafe { libc::ioctl(stdin.as_raw_fd(), libc::FIONREAD, &mut n) };
    n
}

/// Start `classify --format text -o target` on a pipe, feed it `rows`
/// lines, and wait until it has read them all (the pipe stays open).
fn started_on_a_pipe(target: &Path, rows: usize) -> (std::process::Child, std::process::ChildStdin) {
    let mut child = bin()
        .args(["classify", "--format", "text", "--source", "ModernCRM", "-o"])
        .arg(target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 1..=rows {
        writeln!(stdin, "User User{i} logged in.").unwrap();
    }
    stdin.flush().unwrap();
    for _ in 0..600 {
        if unread(&stdin) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Taken from the pipe; give the reader a moment to turn the bytes into rows.
    std::thread::sleep(std::time::Duration::from_millis(500));
    (child, stdin)
}

#[test]
fn case2_an_interrupted_run_never_leaves_a_truncated_file_that_looks_finished() {
    let dir = tempfile::tempdir().unwrap();
    // SIGINT: the rows read are finished and kept under `<target>.partial`, exit 130.
    let target = dir.path().join("out.jsonl");
    std::fs::write(&target, "old\n").unwrap();
    let (child, stdin) = started_on_a_pipe(&target, 3);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("interrupted"), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "old\n",
        "the target was touched"
    );
    let partial = std::fs::read_to_string(dir.path().join("out.jsonl.partial")).unwrap();
    assert!(partial.ends_with('\n'), "{partial}");
    let rows: Vec<serde_json::Value> = partial
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{partial}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["line"], i as u64 + 1);
        assert_eq!(r["target_label"], "User Action");
    }

    // SIGTERM does the same.
    let target = dir.path().join("term.jsonl");
    let (child, stdin) = started_on_a_pipe(&target, 2);
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(!target.exists());
    let partial = std::fs::read_to_string(dir.path().join("term.jsonl.partial")).unwrap();
    assert_eq!(partial.lines().count(), 2);

    // SIGKILL: nothing can be finished, and the target is as it was.
    let target = dir.path().join("killed.jsonl");
    std::fs::write(&target, "old\n").unwrap();
    let (mut child, stdin) = started_on_a_pipe(&target, 3);
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "old\n");
    assert!(!dir.path().join("killed.jsonl.partial").exists());
    // A new target is not created either.
    let target = dir.path().join("new.jsonl");
    let (mut child, stdin) = started_on_a_pipe(&target, 3);
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(!target.exists());

    // A finished run puts the whole file in place.
    let target = dir.path().join("done.jsonl");
    let out = run(
        &[
            "classify",
            "--format",
            "text",
            "--source",
            "ModernCRM",
            "-o",
            target.to_str().unwrap(),
        ],
        b"User User1 logged in.\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&target).unwrap().lines().count(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".done.jsonl"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn case7_json_lines_pass_through_byte_for_byte() {
    let input = concat!(
        "{\"source\":\"ModernCRM\",\"log_message\":\"User User1 logged in.\",\"big\":123456789012345678901234567890,\"z\":-0,\"d\":1,\"d\":2, \"f\" : 1.50}\n",
        "\n",
        "{\"source\":\"A\",\"log_message\":7}\n",
        "{\"source\":\"A\",\"log_message\":true}\n",
        "{\"source\":\"A\",\"log_message\":{\"x\":1}}\n",
        "{\"source\":\"A\",\"log_message\":null}\n",
    );
    let out = run(&["classify"], input.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 6, "{s}");
    assert!(
        lines[0].starts_with(
            "{\"source\":\"ModernCRM\",\"log_message\":\"User User1 logged in.\",\"big\":123456789012345678901234567890,\"z\":-0,\"d\":1,\"d\":2, \"f\" : 1.50,\"target_label\":\"User Action\""
        ),
        "{}",
        lines[0]
    );
    let v: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(v[1]["method"], "none");
    assert!(v[1]["detail"].as_str().unwrap().contains("line 2: blank line"));
    for (row, kind) in [(2, "a number"), (3, "a boolean"), (4, "an object"), (5, "null")] {
        assert_eq!(v[row]["method"], "none", "{}", lines[row]);
        assert!(
            v[row]["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("`log_message` is {kind}, expected a string")),
            "{}",
            lines[row]
        );
    }
    assert!(
        text(&out.stderr).contains("5 of 6 rows were flagged"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn case8_two_log_message_columns_are_an_error_naming_both() {
    let out = run(
        &["classify"],
        b"source,log_message,note,Log_Message\nA,User User1 logged in.,x,other\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "the header has 2 `log_message` columns (column 2 `log_message`, column 4 `Log_Message`)"
        ),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// The built-in model on lines it was not trained on: a real system's
/// lines get the taxonomy's labels, and a line like nothing it knows comes
/// out Unclassified saying it is unfamiliar (with the similarity), not a
/// confident guess.
#[test]
fn the_builtin_model_labels_unseen_lines_and_sets_unfamiliar_ones_apart() {
    let input = "Accepted password for fztu from 119.137.62.142 port 49116 ssh2\n\
                 User alice changed her password\n\
                 The 'LegacyExport' endpoint is deprecated and will be removed in v5.0\n\
                 qwerty uiop asdf\n";
    let out = run(
        &["classify", "--format", "text", "--source", "Laptop"],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let labels: Vec<&str> = rows.iter().map(|r| r["target_label"].as_str().unwrap()).collect();
    assert_eq!(
        labels,
        [
            "User Action",
            "User Action",
            "Deprecation Warning",
            "Unclassified"
        ],
        "{rows:?}"
    );
    let detail = rows[3]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("model unsure: unfamiliar line (similarity 0."),
        "{detail}"
    );
    assert_eq!(rows[3]["method"], "none");
}
