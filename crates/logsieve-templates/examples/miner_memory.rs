//! Peak memory and CPU time of the miner on a file of lines, with a
//! template cap: the bounded-memory figure without the CLI around it.
//!
//! python3 scripts/distinct_lines.py 1000000 > lines.txt
//! cargo run --release -p logsieve-templates --example miner_memory -- lines.txt [MAX_TEMPLATES]
//!
//! Prints lines, templates, evictions, CPU seconds of the mining thread and
//! the process's peak RSS (VmHWM) after mining, reading the file line by
//! line (the file is not held in memory).

use std::io::BufRead;

use logsieve_templates::{Masker, Miner, MinerConfig, Scratch};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().expect("usage: miner_memory FILE [MAX_TEMPLATES]");
    let cap: usize = args.get(1).map_or(10_000, |s| s.parse().expect("MAX_TEMPLATES"));
    let config = MinerConfig {
        max_templates: cap,
        ..MinerConfig::default()
    };
    let miner = Miner::new(config, Masker::builtin());
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut scratch = Scratch::default();
    let cpu0 = cpu_seconds();
    let mut lines = 0u64;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.unwrap_or_else(|e| panic!("{path}: line {}: {e}", lines + 1));
        miner.add_with(&line, &mut scratch);
        lines += 1;
    }
    let cpu = cpu_seconds() - cpu0;
    println!(
        "lines {lines} max_templates {cap} templates {} evicted {} cpu_s {cpu:.2} peak_rss_mb {:.1}",
        miner.len(),
        miner.evicted(),
        peak_rss_kb() as f64 / 1024.0
    );
}

/// CPU time of this thread (Linux: utime + stime from /proc, 10 ms ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Peak resident set size of the process (Linux `VmHWM`), in KiB.
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
