//! Mines rules from a labelled CSV (`source`, `log_message`, `target_label`
//! columns, as in synthetic_logs.csv) and prints them as rules TOML.
//!
//! cargo run --release -p logsieve-templates --example mine_rules -- ../shared/datasets/synthetic_logs.csv [MIN_SUPPORT]

use logsieve_templates::{mine_rules, rules_to_toml, MineOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().expect("usage: mine_rules FILE.csv [MIN_SUPPORT]");
    let min_support = args
        .get(1)
        .map_or(5, |s| s.parse().expect("MIN_SUPPORT is a number"));
    let mut rd = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let headers = rd.headers().unwrap().clone();
    let col = |n: &str| {
        headers
            .iter()
            .position(|h| h == n)
            .unwrap_or_else(|| panic!("{path}: no `{n}` column"))
    };
    let (s, m, l) = (col("source"), col("log_message"), col("target_label"));
    let records: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    let rows: Vec<(&str, &str, &str)> = records.iter().map(|r| (&r[s], &r[m], &r[l])).collect();
    let rules = mine_rules(
        &rows,
        &MineOptions {
            min_support,
            ..Default::default()
        },
    );
    print!("{}", rules_to_toml(&rules));
}
