//! Property tests over the readers (CSV, JSON lines, text), run end to end
//! through the streaming loop and the writers with a stand-in classifier:
//! for arbitrary bytes nothing panics and every record comes out, in
//! order, with a label or a reason; for well-formed records the rows out
//! are the records in. With a line limit, no row carries more than it.

use logsieve_pipeline::io::{self, CsvWriter, Format, JsonlWriter, ReaderOptions, RowWriter};
use logsieve_pipeline::run::{classify_stream_with, RunSummary};
use logsieve_pipeline::{Config, Decision, Item, Method};
use proptest::prelude::*;

/// Classify everything as "X" by a rule, so any `none` row is an unreadable one.
fn stub(items: &[Item]) -> Result<Vec<Decision>, std::io::Error> {
    Ok(items
        .iter()
        .map(|_| Decision {
            target_label: "X".into(),
            method: Method::Rule,
            confidence: 1.0,
            detail: "stub".into(),
            template: None,
        })
        .collect())
}

/// Run `input` through reader, loop and writer; the summary and the output
/// (`None` when the reader refused the input up front).
fn run(input: &[u8], format: Format, out: Format, limit: Option<usize>) -> Option<(RunSummary, Vec<u8>)> {
    let mut config = Config::builtin();
    config.input.chunk_rows = 7;
    let options = ReaderOptions {
        max_line_bytes: limit,
    };
    let mut reader = io::reader_with(input, format, Some("S".into()), options).ok()?;
    let mut buf = Vec::new();
    let summary = {
        let mut writer: Box<dyn RowWriter> = match out {
            Format::Csv => Box::new(CsvWriter::new(&mut buf, reader.header()).unwrap()),
            _ => Box::new(JsonlWriter::new(&mut buf)),
        };
        classify_stream_with(&config, reader.as_mut(), writer.as_mut(), |_| {}, stub)
            .expect("writing to memory")
    };
    Some((summary, buf))
}

/// The lines of `input` as a line reader sees them.
fn lines(input: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    if v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

fn json_rows(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8(out.to_vec())
        .expect("output is UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Each row has a label, and a reason when no stage decided it.
fn check_decided(rows: &[serde_json::Value]) {
    for r in rows {
        assert!(r["target_label"].as_str().is_some_and(|l| !l.is_empty()), "{r}");
        if r["method"] == "none" {
            assert!(r["detail"].as_str().is_some_and(|d| !d.is_empty()), "{r}");
        } else {
            assert_eq!(r["target_label"], "X", "{r}");
        }
    }
}

/// Bytes with a bias toward what the readers care about.
fn messy() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => prop::sample::select(b"abc ,\"\n\r{}[]:\\0-9".to_vec()),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..400)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn text_every_line_is_one_row_in_order(input in messy(), limit in prop::option::of(1usize..40)) {
        let (summary, out) = run(&input, Format::Text, Format::Jsonl, limit).expect("text never refuses");
        let rows = json_rows(&out);
        let want = lines(&input);
        prop_assert_eq!(rows.len(), want.len());
        prop_assert_eq!(summary.rows as usize, want.len());
        check_decided(&rows);
        for (i, (r, l)) in rows.iter().zip(&want).enumerate() {
            prop_assert_eq!(r["line"].as_u64(), Some(i as u64 + 1));
            let msg = r["log_message"].as_str().unwrap();
            match limit {
                None => {
                    let mut l = l.to_vec();
                    while l.last() == Some(&b'\r') { l.pop(); }
                    prop_assert_eq!(msg, String::from_utf8_lossy(&l));
                }
                Some(n) => prop_assert!(msg.len() <= n.max(4) * 3, "{} > {}", msg.len(), n),
            }
        }
    }

    #[test]
    fn jsonl_every_line_is_one_row_in_order(input in messy(), limit in prop::option::of(1usize..40)) {
        let (summary, out) = run(&input, Format::Jsonl, Format::Jsonl, limit).expect("JSON lines never refuse");
        let rows = json_rows(&out);
        prop_assert_eq!(rows.len(), lines(&input).len());
        prop_assert_eq!(summary.rows as usize, rows.len());
        check_decided(&rows);
        for r in &rows {
            if let Some(raw) = r.get("raw") {
                if let Some(n) = limit {
                    prop_assert!(raw.as_str().unwrap().len() <= n * 3);
                }
            }
        }
    }

    #[test]
    fn csv_never_panics_and_rows_come_out_in_order(body in messy(), limit in prop::option::of(20usize..60)) {
        let mut input = b"source,log_message\n".to_vec();
        input.extend_from_slice(&body);
        for out_format in [Format::Csv, Format::Jsonl] {
            let Some((summary, out)) = run(&input, Format::Csv, out_format, limit) else {
                // Only the header can be refused, and it is fine here.
                panic!("refused a good header");
            };
            let n = match out_format {
                Format::Csv => {
                    let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(out.as_slice());
                    // Original bytes are written back, invalid UTF-8 included.
                    let recs: Vec<csv::ByteRecord> = r.byte_records().map(|x| x.expect("valid CSV out")).collect();
                    for rec in &recs {
                        // target_label, method, confidence, detail at the end.
                        prop_assert!(!rec[2].is_empty());
                        if &rec[3] == b"none" { prop_assert!(!rec[5].is_empty()); }
                    }
                    recs.len()
                }
                _ => {
                    let rows = json_rows(&out);
                    check_decided(&rows);
                    let lines: Vec<u64> = rows.iter().map(|r| r["line"].as_u64().unwrap()).collect();
                    // In order (a bare `\r` ends a record without starting a line, so two rows can share one).
                    prop_assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{:?}", lines);
                    if let Some(n) = limit {
                        for r in &rows {
                            prop_assert!(r["log_message"].as_str().unwrap().len() <= n * 3); // U+FFFD for a bad byte
                        }
                    }
                    rows.len()
                }
            };
            prop_assert_eq!(n as u64, summary.rows);
        }
    }

    #[test]
    fn csv_records_in_are_rows_out(records in prop::collection::vec(("[A-Za-z0-9]{0,6}", any::<String>()), 0..20)) {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["source", "log_message"]).unwrap();
        for (s, m) in &records {
            w.write_record([s, m]).unwrap();
        }
        let input = w.into_inner().unwrap();
        let (summary, out) = run(&input, Format::Csv, Format::Csv, None).unwrap();
        let mut r = csv::Reader::from_reader(out.as_slice());
        let recs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        let want: Vec<&(String, String)> = records.iter().collect();
        prop_assert_eq!(summary.rows as usize, want.len());
        prop_assert_eq!(recs.len(), want.len());
        for (rec, (s, m)) in recs.iter().zip(want) {
            prop_assert_eq!(&rec[0], s.as_str());
            prop_assert_eq!(&rec[1], m.as_str());
        }
    }

    #[test]
    fn json_records_in_are_rows_out_byte_for_byte(records in prop::collection::vec((any::<String>(), any::<String>(), any::<i64>()), 0..20)) {
        let input: String = records
            .iter()
            .map(|(s, m, n)| format!("{{\"n\":{n},\"source\":{},\"log_message\":{}, \"x\" : -0}}\n", serde_json::to_string(s).unwrap(), serde_json::to_string(m).unwrap()))
            .collect();
        let (summary, out) = run(input.as_bytes(), Format::Jsonl, Format::Jsonl, None).unwrap();
        let out = String::from_utf8(out).unwrap();
        prop_assert_eq!(summary.rows as usize, records.len());
        for (line_in, line_out) in input.lines().zip(out.lines()) {
            // The input object, unchanged, then the four columns.
            prop_assert!(line_out.starts_with(&line_in[..line_in.len() - 1]), "{} / {}", line_in, line_out);
            let v: serde_json::Value = serde_json::from_str(line_out).unwrap();
            prop_assert_eq!(&v["target_label"], "X");
        }
    }
}
