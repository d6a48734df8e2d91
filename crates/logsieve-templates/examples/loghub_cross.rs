//! Cross-half tuning of the miner's settings on loghub-2k: the ten systems
//! are split into two fixed halves (`HALF_A`, `HALF_B`); the settings are
//! tuned on one half (grid search, best mean GA, then best mean PA, then
//! nearest the defaults) and scored on the other, then the other way
//! round. Prints GA, PA and FGA per scored system, both rounds, and the
//! defaults on every system.
//!
//! cargo run --release -p logsieve-templates --example loghub_cross -- ../shared/datasets/loghub-2k

use std::path::PathBuf;

use logsieve_templates::{Evaluation, Labelled, Masker, MinerConfig, HALF_A, HALF_B};

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "../shared/datasets/loghub-2k".into()),
    );
    let load = |system: &str| {
        let path = dir.join(system).join(format!("{system}_2k.log_structured.csv"));
        (
            system.to_string(),
            Labelled::read_loghub(&path).unwrap_or_else(|e| panic!("{e}")),
        )
    };
    let a: Vec<(String, Labelled)> = HALF_A.iter().map(|s| load(s)).collect();
    let b: Vec<(String, Labelled)> = HALF_B.iter().map(|s| load(s)).collect();
    let masker = Masker::builtin();
    let defaults = MinerConfig::default();
    let mut grid = Vec::new();
    for similarity in [0.4, 0.5, 0.6, 0.7] {
        for word_variable_after in [2, 3, 4, 5] {
            for variadic_min_anchor in [2, 3, 4] {
                for variadic_max_span in [2, 4, 6] {
                    for word_variable_distinct in [0, 4, 6, 8] {
                        grid.push(MinerConfig {
                            similarity,
                            word_variable_after,
                            word_variable_distinct,
                            variadic_min_anchor,
                            variadic_max_span,
                            ..defaults.clone()
                        });
                    }
                }
            }
        }
    }
    let distance = |c: &MinerConfig| {
        ((c.similarity - defaults.similarity).abs() * 10.0).round() as usize
            + c.word_variable_after.abs_diff(defaults.word_variable_after)
            + c.variadic_min_anchor.abs_diff(defaults.variadic_min_anchor)
            + c.variadic_max_span.abs_diff(defaults.variadic_max_span) / 2
            + c.word_variable_distinct.abs_diff(defaults.word_variable_distinct) / 2
    };
    let score = |half: &[(String, Labelled)], c: &MinerConfig| -> Vec<Evaluation> {
        half.iter().map(|(_, l)| l.evaluate(c, &masker)).collect()
    };
    let mean = |v: &[Evaluation], f: fn(&Evaluation) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let mut all = Vec::new();
    for (name, tune, test) in [("A -> B", &a, &b), ("B -> A", &b, &a)] {
        let scored: Vec<(&MinerConfig, f64, f64)> = grid
            .iter()
            .map(|c| {
                let s = score(tune, c);
                (c, mean(&s, |e| e.ga), mean(&s, |e| e.pa))
            })
            .collect();
        let best = scored
            .iter()
            .copied()
            .max_by(|x, y| {
                (x.1, x.2)
                    .partial_cmp(&(y.1, y.2))
                    .unwrap()
                    .then(distance(y.0).cmp(&distance(x.0)))
            })
            .expect("the grid is not empty");
        println!(
            "round {name}: tuned on {:?}: mean GA {:.3} PA {:.3} with similarity {} word_variable_after {} word_variable_distinct {} variadic_min_anchor {} variadic_max_span {}",
            tune.iter().map(|t| &t.0).collect::<Vec<_>>(),
            best.1,
            best.2,
            best.0.similarity,
            best.0.word_variable_after,
            best.0.word_variable_distinct,
            best.0.variadic_min_anchor,
            best.0.variadic_max_span
        );
        // How much the tuning half constrains each setting: the values
        // among the settings that reach the best scores.
        let top: Vec<&MinerConfig> = scored
            .iter()
            .filter(|x| x.1 == best.1 && x.2 == best.2)
            .map(|x| x.0)
            .collect();
        let values = |f: fn(&MinerConfig) -> String| {
            let mut v: Vec<String> = top.iter().map(|c| f(c)).collect();
            v.sort();
            v.dedup();
            v.join("|")
        };
        println!(
            "  {} of {} settings reach it: similarity {} word_variable_after {} word_variable_distinct {} variadic_min_anchor {} variadic_max_span {}",
            top.len(),
            grid.len(),
            values(|c| c.similarity.to_string()),
            values(|c| c.word_variable_after.to_string()),
            values(|c| c.word_variable_distinct.to_string()),
            values(|c| c.variadic_min_anchor.to_string()),
            values(|c| c.variadic_max_span.to_string())
        );
        let s = score(test, best.0);
        for ((system, _), e) in test.iter().zip(&s) {
            println!(
                "  scored {system:<10} GA {:.3} PA {:.3} FGA {:.3}",
                e.ga, e.pa, e.fga
            );
            all.push((system.clone(), e.clone()));
        }
        println!(
            "  scored mean      GA {:.3} PA {:.3} FGA {:.3}",
            mean(&s, |e| e.ga),
            mean(&s, |e| e.pa),
            mean(&s, |e| e.fga)
        );
    }
    let held: Vec<Evaluation> = all.iter().map(|x| x.1.clone()).collect();
    let worst = all
        .iter()
        .min_by(|x, y| x.1.ga.partial_cmp(&y.1.ga).unwrap())
        .expect("ten systems");
    println!(
        "cross-half (each system scored with settings tuned on the other half): mean GA {:.3} PA {:.3} FGA {:.3}; lowest GA {} {:.3}",
        mean(&held, |e| e.ga),
        mean(&held, |e| e.pa),
        mean(&held, |e| e.fga),
        worst.0,
        worst.1.ga
    );
    let d: Vec<Evaluation> = a
        .iter()
        .chain(&b)
        .map(|(_, l)| l.evaluate(&defaults, &masker))
        .collect();
    println!(
        "defaults on all ten: mean GA {:.3} PA {:.3} FGA {:.3}",
        mean(&d, |e| e.ga),
        mean(&d, |e| e.pa),
        mean(&d, |e| e.fga)
    );
}
