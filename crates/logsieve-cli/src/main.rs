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
/// thread and freed by the aggregator thread costs no lock (glibc's malloc
/// took 9 % of the warm replay's time and more with the dashboard on).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
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
