//! What every subcommand shares: the config file and the flags that
//! override it, building the pipeline (the one place that reads the files
//! the configuration names, and the environment), input and output
//! opening, peak memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use logsieve_embed::{BatchOptions, EmbedError, Embedder, Engine, MiniLm};
use logsieve_linear::Artifact;
use logsieve_llm::ApiKey;
use logsieve_pipeline::{Config, Pipeline, PipelineBuilder, Store};
use logsieve_rules::Rules;
use logsieve_templates::Masker;

#[derive(Debug, Args, Clone)]
pub struct ConfigArgs {
    /// Configuration file (TOML). Default: the built-in config/default.toml.
    #[arg(long, env = "LOGSIEVE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Rules file (TOML), overriding the config.
    #[arg(long, global = true)]
    pub rules: Option<PathBuf>,
    /// Trained classifier directory (from `logsieve train`), overriding the
    /// config. One trained with --fine-tune brings its own encoder
    /// (DIR/encoder, checked against the sha256 it recorded), used instead
    /// of --model-dir and the cache.
    #[arg(long, global = true)]
    pub model: Option<PathBuf>,
    /// Local copy of all-MiniLM-L6-v2, instead of the cache.
    #[arg(long, env = "LOGSIEVE_MODEL_DIR", global = true)]
    pub model_dir: Option<PathBuf>,
    /// Model-stage confidence threshold (0–1), overriding the config and the classifier.
    #[arg(long, global = true)]
    pub threshold: Option<f32>,
    /// OpenAI-compatible base URL for the LLM stage (e.g. http://localhost:11434/v1 for Ollama).
    #[arg(long, env = "LOGSIEVE_LLM_BASE_URL", global = true)]
    pub llm_base_url: Option<String>,
    /// Chat model for the LLM stage.
    #[arg(long, env = "LOGSIEVE_LLM_MODEL", global = true)]
    pub llm_model: Option<String>,
}

/// The configuration file's text and where it came from; each crate reads
/// its own tables from it (the cascade's `Config`, the server's
/// `[server]`, the templates command's `max_templates`).
pub struct ConfigFile {
    pub text: String,
    pub path: PathBuf,
}

impl ConfigFile {
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        Ok(logsieve_pipeline::config::parse_toml(&self.text, &self.path)?)
    }
}

impl ConfigArgs {
    /// The `--config` file's text, or the built-in configuration's.
    pub fn file(&self) -> Result<ConfigFile> {
        Ok(match &self.config {
            Some(p) => ConfigFile {
                text: std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?,
                path: p.clone(),
            },
            None => ConfigFile {
                text: logsieve_pipeline::config::DEFAULT_CONFIG_TOML.to_string(),
                path: PathBuf::from("<built-in config/default.toml>"),
            },
        })
    }

    /// The cascade's configuration, with the flags applied.
    pub fn load(&self) -> Result<Config> {
        let file = self.file()?;
        let mut cfg = Config::from_toml(&file.text, &file.path)?;
        if let Some(r) = &self.rules {
            cfg.rules.path = Some(r.clone());
        }
        if let Some(m) = &self.model {
            cfg.model.classifier = Some(m.clone());
        }
        if let Some(d) = &self.model_dir {
            cfg.model.embedding_dir = Some(d.clone());
        }
        // `LOGSIEVE_LLM_BASE_URL` and `LOGSIEVE_LLM_MODEL` arrive through
        // these flags (clap reads the environment for them), nowhere else.
        if let Some(u) = &self.llm_base_url {
            cfg.llm.base_url = u.clone();
        }
        if let Some(m) = &self.llm_model {
            cfg.llm.model = m.clone();
        }
        if let Some(t) = self.threshold {
            anyhow::ensure!((0.0..=1.0).contains(&t), "--threshold {t} is outside 0..1");
            cfg.model.threshold = Some(t);
        }
        Ok(cfg)
    }

    pub fn pipeline(&self) -> Result<Pipeline> {
        Ok(builder(self.load()?)?.build()?)
    }

    /// A pipeline keeping its decisions in `store` (when there is one).
    pub fn pipeline_on(&self, store: Option<Arc<Store>>) -> Result<Pipeline> {
        pipeline_with_store(self.load()?, store)
    }
}

/// `--store PATH`: the decision store a command keeps decisions in.
#[derive(Debug, Args, Clone, Default)]
pub struct StoreArgs {
    /// Decision store (SQLite): decisions are read from it on start and
    /// written to it, so a later run (or a restarted server) asks the model
    /// and the LLM nothing they already answered [config: store.path].
    #[arg(long, env = "LOGSIEVE_STORE")]
    pub store: Option<PathBuf>,
}

impl StoreArgs {
    /// The store's path: the flag, else the configuration's `[store] path`.
    pub fn path(&self, config: &Config) -> Option<PathBuf> {
        self.store.clone().or_else(|| config.store.path.clone())
    }

    /// Open the store the flag or the configuration names, if any.
    pub fn open(&self, config: &Config) -> Result<Option<Arc<Store>>> {
        self.path(config).map(|p| open_store(&p)).transpose()
    }
}

/// Open (or create) a decision store; errors say what is wrong with it.
pub fn open_store(path: &std::path::Path) -> Result<Arc<Store>> {
    Ok(Arc::new(Store::open(path)?))
}

/// A pipeline from `config` on `store`; warns on stderr when the store
/// could be read only in part (the run goes on: no row is lost to it).
pub fn pipeline_with_store(config: Config, store: Option<Arc<Store>>) -> Result<Pipeline> {
    let mut b = builder(config)?;
    if let Some(s) = store {
        b = b.store(s);
    }
    let p = b.build()?;
    if let Some((_, status)) = p.store() {
        if let Some(e) = &status.error {
            eprintln!(
                "warning: {e}; going on with the {} decisions read (new decisions are still written where possible)",
                status.loaded
            );
        }
    }
    Ok(p)
}

/// A pipeline builder with everything `config` names loaded: rules,
/// classifier artifact, masking rules, the encoder (on first use, fetched
/// into the cache when no local copy is named), and the LLM API key from the
/// environment.
pub fn builder(config: Config) -> Result<PipelineBuilder> {
    let mut b = Pipeline::builder(config.clone());
    if let Some(p) = &config.rules.path {
        b = b.rules(Rules::from_path(p)?);
    }
    let mut artifact = None;
    if let Some(p) = &config.model.classifier {
        let a = Artifact::load(p)?;
        b = b.artifact(&a).model_version(artifact_version(p)?);
        artifact = Some((p.as_path(), a));
    }
    b = b.masker(masker(&config)?);
    let source = EncoderSource::of(&config, artifact.as_ref().map(|(p, a)| (*p, a)));
    let options = config.batch_options();
    b = b
        .embedder_loader(move || Ok(Arc::new(source.load(options, Engine::default())?) as Arc<dyn Embedder>));
    Ok(b.llm_api_key(ApiKey::from_env().map(|(key, _)| key)))
}

/// Where the encoder comes from: the fine-tuned encoder a classifier
/// carries (`train --fine-tune`), its weights checked against the sha256 the
/// classifier recorded; else `--model-dir` (`model.embedding_dir`); else the
/// cache (fetched on first use).
#[derive(Debug, Clone, Default)]
pub struct EncoderSource {
    pub dir: Option<PathBuf>,
    /// The weights' sha256 the encoder must have (a fine-tuned encoder).
    pub sha256: Option<String>,
}

impl EncoderSource {
    /// The encoder for `config` and the classifier artifact it names (as
    /// loaded from the path).
    pub fn of(config: &Config, artifact: Option<(&std::path::Path, &Artifact)>) -> Self {
        if let Some((path, a)) = artifact {
            if let Some(dir) = a.encoder_dir(path) {
                return Self {
                    dir: Some(dir),
                    sha256: Some(a.embedding.weights_sha256.clone()),
                };
            }
        }
        Self {
            dir: config.model.embedding_dir.clone(),
            sha256: None,
        }
    }

    pub fn load(&self, options: BatchOptions, engine: Engine) -> Result<MiniLm, EmbedError> {
        match (&self.dir, &self.sha256) {
            (Some(dir), Some(sha)) => MiniLm::load_verified(dir, options, engine, sha),
            (dir, _) => MiniLm::load_default_with(dir.as_deref(), options, engine),
        }
    }
}

/// [`EncoderSource::of`] the configuration, reading the classifier it names.
pub fn encoder_source(config: &Config) -> Result<EncoderSource> {
    Ok(match &config.model.classifier {
        Some(p) => EncoderSource::of(config, Some((p.as_path(), &Artifact::load(p)?))),
        None => EncoderSource::of(config, None),
    })
}

/// A trained classifier's version for the decision store: the sha256 of its
/// classifier.json (a retrained model is another version).
fn artifact_version(p: &std::path::Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let file = if p.is_dir() {
        p.join(logsieve_linear::artifact::FILE_NAME)
    } else {
        p.to_path_buf()
    };
    let bytes = std::fs::read(&file).with_context(|| format!("{}: cannot read", file.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes))[..16].to_string())
}

/// The masking rules the configuration names, or the built-in set.
pub fn masker(config: &Config) -> Result<Masker> {
    Ok(match &config.templates.masking {
        Some(p) => Masker::from_path(p)?,
        None => Masker::builtin(),
    })
}

/// An opened input: the reader, its size when known, its file name when it has one.
pub type OpenedInput = (Box<dyn BufRead>, Option<u64>, Option<String>);

/// Open a file, or stdin for `-`/nothing.
pub fn open_input(path: Option<&PathBuf>) -> Result<OpenedInput> {
    match path {
        Some(p) if p.as_os_str() != "-" => {
            let f = File::open(p).with_context(|| format!("{}: cannot open", p.display()))?;
            let len = f.metadata().ok().map(|m| m.len());
            Ok((
                Box::new(BufReader::with_capacity(256 * 1024, f)),
                len,
                Some(p.display().to_string()),
            ))
        }
        _ => Ok((Box::new(BufReader::new(std::io::stdin())), None, None)),
    }
}

/// Peak resident memory of this process in bytes (Linux), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// Resident set size now (Linux only).
pub fn rss_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

fn proc_status_bytes(key: &str) -> Option<u64> {
    let mut s = String::new();
    File::open("/proc/self/status")
        .ok()?
        .read_to_string(&mut s)
        .ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU seconds the calling thread has run (Linux's scheduler statistics,
/// in nanoseconds; time the hypervisor gave to other guests is not in it,
/// so it is steadier than wall time on a shared machine).
pub fn thread_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// CPU seconds this process has used, all threads, user + system (Linux;
/// /proc reports in USER_HZ = 100 ticks per second).
pub fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

pub fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Labelled data and the stratified split, as `train`, `eval` and
/// `mine-rules` take them.
#[derive(Debug, Args, Clone)]
pub struct LabelledArgs {
    /// Labelled CSV: source, log_message, target_label (other columns
    /// ignored). Repeat to use several files; each is split on its own.
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Share of rows held out by the stratified split.
    #[arg(long, default_value_t = logsieve_linear::split::DEFAULT_TEST_FRACTION)]
    pub test_fraction: f64,
    /// Seed of the stratified split.
    #[arg(long, default_value_t = logsieve_linear::split::DEFAULT_SEED)]
    pub seed: u64,
}

/// One labelled file as read.
pub struct LabelledFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub rows: Vec<logsieve_pipeline::labelled::LabelledRow>,
}

/// Read one labelled file; errors name it.
pub fn read_labelled_file(path: &std::path::Path) -> Result<LabelledFile> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let rows = logsieve_pipeline::labelled::read_labelled(bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(LabelledFile {
        path: path.to_path_buf(),
        bytes,
        rows,
    })
}

impl LabelledArgs {
    /// Every file with its bytes and rows.
    pub fn read_each(&self) -> Result<Vec<LabelledFile>> {
        self.data.iter().map(|p| read_labelled_file(p)).collect()
    }

    /// The rows of every file, in order.
    pub fn read(&self) -> Result<Vec<logsieve_pipeline::labelled::LabelledRow>> {
        Ok(self.read_each()?.into_iter().flat_map(|f| f.rows).collect())
    }
}

/// One line on what the LLM stage cost, for stderr after a run that asked it
/// anything: calls, failures, prompt tokens per call (and how many the
/// server had cached), latency, and where the adaptive concurrency went.
pub fn llm_summary(pipeline: &Pipeline) -> Option<String> {
    let s = pipeline.llm().stats();
    if s.calls == 0 {
        return None;
    }
    let tokens = if s.calls_with_usage > 0 {
        format!(
            ", {:.0} prompt tokens/call ({:.0}% from the server's cache), {:.0} answer tokens/call",
            s.prompt_tokens_per_call(),
            100.0 * s.cached_prompt_tokens as f64 / s.prompt_tokens.max(1) as f64,
            s.completion_tokens as f64 / s.calls_with_usage as f64
        )
    } else {
        String::new()
    };
    Some(format!(
        "llm: {} calls for {} rows ({} failed calls, {} rows unanswered){tokens}; latency p50 {:.1}s p99 {:.1}s; \
         concurrency {} now, {} at most; {} calls waited on a busy server; response_format {}",
        s.calls,
        s.requests,
        s.failed_calls,
        s.failures,
        s.latency_ms_p50 as f64 / 1000.0,
        s.latency_ms_p99 as f64 / 1000.0,
        s.concurrency_limit,
        s.concurrency_peak,
        s.queued_calls,
        s.response_format.as_str(),
    ))
}
