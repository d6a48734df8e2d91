//! Prints each input line (stdin) masked with the built-in rules: a quick
//! way to check masking on a new log format.
//!
//! head -5 ../shared/datasets/loghub-2k/BGL/BGL_2k.log | cargo run -p logsieve-templates --example mask_lines

use std::io::BufRead;

fn main() {
    let masker = logsieve_templates::Masker::builtin();
    for line in std::io::stdin().lock().lines() {
        println!("{}", masker.mask(&line.expect("readable stdin")));
    }
}
