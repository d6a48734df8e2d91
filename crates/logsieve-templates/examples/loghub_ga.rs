//! Grouping accuracy (GA), parsing accuracy (PA) and the F1 of grouping
//! (FGA) of the template miner on loghub-2k, beside Drain's published GA,
//! and its warm throughput. One configuration for every system.
//!
//! cargo run --release -p logsieve-templates --example loghub_ga -- ../shared/datasets/loghub-2k
//!     [--lines N] [--only SYSTEM] [--half A|B] [--errors SYSTEM [--raw]] [--no-throughput]
//!     [--config MINER_JSON] [--shuffle SEED]
//!     [--threads N]  (raw log l/s: N threads sharing one miner, in total)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use logsieve_templates::{
    grouping_accuracy, normalize_template, Labelled, Masker, Miner, MinerConfig, Scratch, HALF_A, HALF_B,
};

const SYSTEMS: [(&str, f64); 10] = [
    ("HDFS", 0.998),
    ("Hadoop", 0.948),
    ("Spark", 0.920),
    ("Zookeeper", 0.967),
    ("BGL", 0.963),
    ("HPC", 0.887),
    ("Windows", 0.997),
    ("Android", 0.911),
    ("Apache", 1.000),
    ("OpenSSH", 0.788),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(
        args.first()
            .map(String::as_str)
            .unwrap_or("../shared/datasets/loghub-2k"),
    );
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let total_lines: usize = flag("--lines").map_or(1_000_000, |s| s.parse().expect("--lines N"));
    let errors_for = flag("--errors");
    let no_tput = args.iter().any(|a| a == "--no-throughput");
    // For experiments only: the reported figures use the defaults.
    let config: MinerConfig = flag("--config").map_or_else(MinerConfig::default, |j| {
        serde_json::from_str(&j).expect("--config JSON")
    });

    println!(
        "{:<10} {:>6} {:>6} {:>6} {:>6} {:>5} | {:>11} {:>11} | {:>11} {:>11} {:>5} | {:>11}",
        "system",
        "GA",
        "PA",
        "FGA",
        "Drain",
        "tpls",
        "Content",
        "(wall)",
        "raw log",
        "(wall)",
        "tpls",
        "raw: mask"
    );
    let (mut sum, mut sum_drain, mut sum_pa, mut sum_fga, mut n) = (0.0, 0.0, 0.0, 0.0, 0usize);
    let only = flag("--only");
    let half: Option<&[&str]> = flag("--half").map(|h| match h.as_str() {
        "A" => &HALF_A[..],
        "B" => &HALF_B[..],
        _ => panic!("--half A|B"),
    });
    let shuffle = flag("--shuffle");
    let threads: usize = flag("--threads").map_or(1, |s| s.parse().expect("--threads N"));
    for (system, drain) in SYSTEMS {
        if only.as_deref().is_some_and(|o| o != system) || half.is_some_and(|h| !h.contains(&system)) {
            continue;
        }
        let path = dir.join(system).join(format!("{system}_2k.log_structured.csv"));
        let mut labelled = Labelled::read_loghub(&path).unwrap_or_else(|e| panic!("{e}"));
        if let Some(seed) = &shuffle {
            // Online mining depends on order: `--shuffle SEED` checks how much.
            let mut state: u64 = seed.parse::<u64>().expect("--shuffle SEED") ^ 0x9E37_79B9_7F4A_7C15;
            for i in (1..labelled.contents.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let j = (state % (i as u64 + 1)) as usize;
                labelled.contents.swap(i, j);
                labelled.events.swap(i, j);
                labelled.templates.swap(i, j);
            }
        }
        if args.iter().any(|a| a == "--raw-lines") {
            // Mine the raw `X_2k.log` lines (headers and all) instead of
            // the Content column; the truth is the same line's event.
            let raw_path = dir.join(system).join(format!("{system}_2k.log"));
            let raw =
                std::fs::read_to_string(&raw_path).unwrap_or_else(|e| panic!("{}: {e}", raw_path.display()));
            labelled.contents = raw.lines().map(str::to_string).collect();
            assert_eq!(labelled.contents.len(), labelled.events.len(), "{system}");
        }
        let mut scores = labelled.evaluate(&config, &Masker::builtin());
        if args.iter().any(|a| a == "--raw-lines") {
            // The true templates are of the Content column: PA says nothing here.
            scores.pa = f64::NAN;
        }
        let (contents, events) = (&labelled.contents, &labelled.events);
        let miner = Miner::new(config.clone(), Masker::builtin());
        let ids: Vec<u64> = contents.iter().map(|l| miner.add(l).template_id).collect();
        let ids: Vec<u64> = ids.iter().map(|&i| miner.resolve(i).unwrap()).collect();
        let ga = grouping_accuracy(&ids, events);
        assert_eq!(ga, scores.ga);
        sum += ga;
        sum_pa += scores.pa;
        sum_fga += scores.fga;
        sum_drain += drain;
        n += 1;

        if errors_for.as_deref() == Some(system) {
            print_errors(&miner, contents, &ids, events);
            print_pa_errors(&miner, contents, &ids, &labelled.templates);
        }

        let mut raw_templates = 0;
        let mut mask_only = Rate::default();
        let (warm_content, warm_raw) = if no_tput {
            (Rate::default(), Rate::default())
        } else {
            let raw_path = dir.join(system).join(format!("{system}_2k.log"));
            let raw =
                std::fs::read_to_string(&raw_path).unwrap_or_else(|e| panic!("{}: {e}", raw_path.display()));
            let raw: Vec<&str> = raw.lines().collect();
            (
                throughput(
                    &miner,
                    &contents.iter().map(String::as_str).collect::<Vec<_>>(),
                    total_lines,
                ),
                {
                    let m = Miner::new(config.clone(), Masker::builtin());
                    let t = if threads > 1 {
                        shared_throughput(&m, &raw, total_lines, threads)
                    } else {
                        throughput(&m, &raw, total_lines)
                    };
                    mask_only = mask_throughput(m.masker(), &raw, total_lines);
                    raw_templates = m.len();
                    if errors_for.as_deref() == Some(system) && args.iter().any(|a| a == "--raw") {
                        for t in m.templates() {
                            println!("raw template {} n={}: {}", t.id, t.count, t.template);
                        }
                    }
                    t
                },
            )
        };
        println!(
            "{:<10} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>5} | {:>11.0} {:>11.0} | {:>11.0} {:>11.0} {:>5} | {:>11.0}",
            system,
            ga,
            scores.pa,
            scores.fga,
            drain,
            miner.len(),
            warm_content.cpu,
            warm_content.wall,
            warm_raw.cpu,
            warm_raw.wall,
            raw_templates,
            mask_only.cpu
        );
    }
    let n = n.max(1) as f64;
    println!(
        "{:<10} {:>6.3} {:>6.3} {:>6.3} {:>6.3}",
        "average",
        sum / n,
        sum_pa / n,
        sum_fga / n,
        sum_drain / n
    );
    if !no_tput {
        println!(
            "lines/s of the warm miner (mask + mine), one thread, per CPU-second of that thread and (wall);\n\
             `raw: mask` is masking alone. Content = the Content column, raw log = the X_2k.log lines."
        );
    }
}

/// Lines per second of a warm miner (one thread): one pass to learn, then
/// replays until `total` lines have been added.
fn throughput(miner: &Miner, lines: &[&str], total: usize) -> Rate {
    let mut scratch = Scratch::default();
    for l in lines {
        miner.add_with(l, &mut scratch);
    }
    let rounds = total.div_ceil(lines.len()).max(1);
    let clock = Clock::start();
    let mut acc = 0u64;
    for _ in 0..rounds {
        for l in lines {
            acc = acc.wrapping_add(miner.add_with(l, &mut scratch).template_id);
        }
    }
    std::hint::black_box(acc);
    clock.rate(rounds * lines.len())
}

/// Lines per second by the wall clock, and per second of CPU time of the
/// measuring thread (what one core does, even on a busy machine).
#[derive(Clone, Copy, Default)]
struct Rate {
    wall: f64,
    cpu: f64,
}

struct Clock {
    wall: Instant,
    cpu: Option<f64>,
}

impl Clock {
    fn start() -> Self {
        Clock {
            wall: Instant::now(),
            cpu: thread_cpu_seconds(),
        }
    }

    fn rate(&self, lines: usize) -> Rate {
        let wall = lines as f64 / self.wall.elapsed().as_secs_f64();
        let cpu = match (self.cpu, thread_cpu_seconds()) {
            (Some(a), Some(b)) if b > a => lines as f64 / (b - a),
            _ => f64::NAN,
        };
        Rate { wall, cpu }
    }
}

/// CPU time of this thread (Linux: utime + stime from /proc, 10 ms ticks).
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Lines per second of `threads` threads sharing one warm miner, all
/// together (each adds `total / threads` lines).
fn shared_throughput(miner: &Miner, lines: &[&str], total: usize, threads: usize) -> Rate {
    let mut scratch = Scratch::default();
    for l in lines {
        miner.add_with(l, &mut scratch);
    }
    let rounds = (total / threads).div_ceil(lines.len()).max(1);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut scratch = Scratch::default();
                let mut acc = 0u64;
                for _ in 0..rounds {
                    for l in lines {
                        acc = acc.wrapping_add(miner.add_with(l, &mut scratch).template_id);
                    }
                }
                std::hint::black_box(acc);
            });
        }
    });
    let wall = (threads * rounds * lines.len()) as f64 / start.elapsed().as_secs_f64();
    Rate { wall, cpu: f64::NAN }
}

/// Lines per second of masking alone (one thread).
fn mask_throughput(masker: &Masker, lines: &[&str], total: usize) -> Rate {
    let mut out = String::new();
    let rounds = total.div_ceil(lines.len()).max(1);
    let clock = Clock::start();
    let mut acc = 0usize;
    for _ in 0..rounds {
        for l in lines {
            masker.mask_into(l, &mut out);
            acc = acc.wrapping_add(out.len());
        }
    }
    std::hint::black_box(acc);
    clock.rate(rounds * lines.len())
}

fn print_errors(miner: &Miner, contents: &[String], ids: &[u64], events: &[String]) {
    // For each true event that is not mined as exactly one group: show its groups.
    let mut by_event: BTreeMap<&str, BTreeMap<u64, Vec<usize>>> = BTreeMap::new();
    let mut by_pred: BTreeMap<u64, BTreeMap<&str, usize>> = BTreeMap::new();
    for (i, (p, e)) in ids.iter().zip(events).enumerate() {
        by_event.entry(e).or_default().entry(*p).or_default().push(i);
        *by_pred.entry(*p).or_default().entry(e).or_default() += 1;
    }
    for (e, groups) in &by_event {
        let bad = groups.len() > 1 || groups.keys().any(|p| by_pred[p].len() > 1);
        if !bad {
            continue;
        }
        println!(
            "--- event {e}: {} lines in {} mined groups",
            groups.values().map(Vec::len).sum::<usize>(),
            groups.len()
        );
        for (p, lines) in groups {
            let t = miner.template(*p).unwrap();
            println!(
                "   [{p}] n={} shared_with={:?}\n      tpl: {}\n      ex : {}",
                lines.len(),
                by_pred[p].keys().filter(|k| *k != e).collect::<Vec<_>>(),
                t.template,
                contents[lines[0]]
            );
        }
    }
}

fn print_pa_errors(miner: &Miner, contents: &[String], ids: &[u64], truth: &[String]) {
    // Each (mined template, true template) pair whose texts differ, once.
    let mut seen: BTreeMap<(u64, &str), usize> = BTreeMap::new();
    for (i, (p, t)) in ids.iter().zip(truth).enumerate() {
        let mined = miner.template(*p).unwrap().template;
        if normalize_template(&mined) != normalize_template(t) {
            seen.entry((*p, t)).or_insert(i);
        }
    }
    for ((p, t), i) in seen {
        println!(
            "--- PA [{p}]\n   mined: {}\n   truth: {t}\n   ex   : {}",
            miner.template(p).unwrap().template,
            contents[i]
        );
    }
}
