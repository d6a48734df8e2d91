//! `logsieve`: parse the command line, run the subcommand, print the error
//! chain and exit non-zero on failure. A closed output pipe
//! (`logsieve classify big.csv | head`) ends the run quietly with 0, as Unix
//! tools do.

mod cmd;
mod common;
mod finetune;
mod follow;
mod interrupt;
mod output;

use clap::Parser;

/// mimalloc: per-thread free lists, so a string allocated by the classify
/// thread and freed by the aggregator thread costs no lock (with the
/// dashboard on, glibc's allocator went from 13.9 % to 18.9 % of a warm
/// replay's samples; docs/notes/dash.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's number for `mi_option_purge_delay` (`mi_option_e` in its
/// mimalloc.h; the Rust bindings name only v2's options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Return freed memory to the system at once: mimalloc's default 10 ms
/// delay holds about 27 MB more at peak on `classify` (231 → 204 MB; glibc
/// 187 MB). Options read only at mimalloc's start (arena commit) cannot be
/// set here; `MIMALLOC_PURGE_DELAY` set by the user wins.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores a value in mimalloc's option table.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

fn main() {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOGSIEVE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) if is_broken_pipe(&e) => std::process::exit(0),
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::exit(1);
        }
    }
}

/// Whether the error comes from writing to a reader that has gone away.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
