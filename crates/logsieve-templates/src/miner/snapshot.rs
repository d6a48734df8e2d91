//! Snapshots: the miner's state as versioned JSON (format 2, still reading
//! 1), written and restored with the file named in every error.

use super::*;

/// The snapshot format this version writes; it also reads version 1
/// (written before `max_templates`: no last-match ticks, nothing evicted).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;
/// The oldest snapshot format this version reads.
pub(super) const OLDEST_SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// Why a snapshot could not be written or read. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{file}: cannot read or write snapshot: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a valid template snapshot (corrupted or truncated?): {message}")]
    Corrupt { file: String, message: String },
    #[error(
        "{file}: snapshot format_version {found} is not supported (this build reads versions {oldest} to {supported})"
    )]
    Version {
        file: String,
        found: u64,
        oldest: u32,
        supported: u32,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    format_version: u32,
    config: MinerConfig,
    next_id: u64,
    templates: Vec<SnapshotTemplate>,
    /// Ids of templates merged into others: `[old, current]`.
    #[serde(default)]
    merged: Vec<(u64, u64)>,
    /// Sibling templates still waiting for enough distinct words.
    #[serde(default)]
    siblings: Vec<SnapshotSiblings>,
    /// The last tick handed out (version 2; 0 in version 1).
    #[serde(default)]
    tick: u64,
    /// Templates evicted so far (version 2; 0 in version 1).
    #[serde(default)]
    evicted: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotTemplate {
    id: u64,
    count: u64,
    tokens: Vec<String>,
    /// Tick of the last match, the LRU order (version 2; 0 in version 1,
    /// where ties go to the older id).
    #[serde(default)]
    last_used: u64,
}

/// Templates kept apart for one word at `position`, and the distinct words
/// seen there so far.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotSiblings {
    position: u32,
    skeleton: Vec<String>,
    templates: Vec<u64>,
    values: Vec<String>,
}

impl Miner {
    /// The snapshot as JSON text: `format_version`, the configuration, the
    /// templates with their counts, the ids of merged templates, and the
    /// sibling templates still waiting for enough distinct words, so a
    /// restored miner goes on exactly where this one is.
    pub fn to_json(&self) -> String {
        let inner = self.read();
        let mut templates: Vec<SnapshotTemplate> = inner
            .clusters
            .iter()
            .filter(|cl| cl.alive)
            .map(|cl| SnapshotTemplate {
                id: cl.id,
                count: cl.count.load(Ordering::Relaxed),
                last_used: cl.last_used.load(Ordering::Relaxed),
                tokens: cl
                    .tokens
                    .iter()
                    .map(|&t| inner.strings[t as usize].to_string())
                    .collect(),
            })
            .collect();
        templates.sort_by_key(|t| t.id);
        let mut merged: Vec<(u64, u64)> = inner
            .by_id
            .iter()
            .map(|(&id, &ix)| (id, inner.clusters[ix as usize].id))
            .filter(|(id, cur)| id != cur)
            .collect();
        merged.sort();
        let text = |ids: &[u32]| -> Vec<String> {
            ids.iter()
                .map(|&t| inner.strings[t as usize].to_string())
                .collect()
        };
        let mut siblings: Vec<SnapshotSiblings> = inner
            .siblings
            .iter()
            .map(|((position, skeleton), sib)| SnapshotSiblings {
                position: *position,
                skeleton: text(skeleton),
                templates: sib
                    .clusters
                    .iter()
                    .filter(|&&c| c != TOMB && inner.clusters[c as usize].alive)
                    .map(|&c| inner.clusters[c as usize].id)
                    .collect(),
                values: text(&sib.values),
            })
            .filter(|s| !s.templates.is_empty())
            .collect();
        siblings.sort_by(|a, b| (a.position, &a.skeleton).cmp(&(b.position, &b.skeleton)));
        let snap = Snapshot {
            format_version: SNAPSHOT_FORMAT_VERSION,
            config: self.config.clone(),
            next_id: inner.next_id,
            templates,
            merged,
            siblings,
            tick: inner.tick.load(Ordering::Relaxed),
            evicted: inner.evicted,
        };
        serde_json::to_string_pretty(&snap).expect("snapshot serialises")
    }

    /// Writes a snapshot to `path` (through a temporary file and a rename,
    /// so a crash never leaves half a snapshot).
    pub fn save(&self, path: &Path) -> Result<(), SnapshotError> {
        let file = path.display().to_string();
        let io = |source| SnapshotError::Io {
            file: file.clone(),
            source,
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_json()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a snapshot written by [`Miner::save`]; the masker is not part
    /// of the snapshot and must be the one used when it was written.
    pub fn load(path: &Path, masker: Masker) -> Result<Self, SnapshotError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Io {
            file: file.clone(),
            source,
        })?;
        Self::from_json(&text, &file, masker)
    }

    /// Parses snapshot JSON; `file` names it in errors.
    pub fn from_json(text: &str, file: &str, masker: Masker) -> Result<Self, SnapshotError> {
        let corrupt = |message: String| SnapshotError::Corrupt {
            file: file.to_string(),
            message,
        };
        // Check the version before the shape, so a future format gets the
        // right message rather than "unknown field".
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
        let version = value
            .get("format_version")
            .ok_or_else(|| corrupt("missing `format_version`".into()))?
            .as_u64()
            .ok_or_else(|| corrupt("`format_version` is not a whole number".into()))?;
        if !(OLDEST_SNAPSHOT_FORMAT_VERSION as u64..=SNAPSHOT_FORMAT_VERSION as u64).contains(&version) {
            return Err(SnapshotError::Version {
                file: file.to_string(),
                found: version,
                oldest: OLDEST_SNAPSHOT_FORMAT_VERSION,
                supported: SNAPSHOT_FORMAT_VERSION,
            });
        }
        let snap: Snapshot = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        let invalid = |message: String| SnapshotError::Invalid {
            file: file.to_string(),
            message,
        };
        if !(snap.config.similarity > 0.0 && snap.config.similarity <= 1.0) {
            return Err(invalid(format!(
                "config.similarity {} is not in (0, 1]",
                snap.config.similarity
            )));
        }
        let mut inner = Inner::new(snap.config.max_templates);
        for t in &snap.templates {
            if t.tokens.is_empty() {
                return Err(invalid(format!("template {} has no tokens", t.id)));
            }
            if inner.by_id.contains_key(&t.id) {
                return Err(invalid(format!("template id {} appears twice", t.id)));
            }
            if t.tokens.iter().filter(|s| *s == VARIADIC_STORED).count() > 1 {
                return Err(invalid(format!(
                    "template {} has more than one variadic `<**>`",
                    t.id
                )));
            }
            if t.id >= snap.next_id {
                return Err(invalid(format!(
                    "template id {} is not below next_id {}",
                    t.id, snap.next_id
                )));
            }
            let tokens: Vec<u32> = t.tokens.iter().map(|s| inner.intern(s)).collect();
            let ix = inner.insert_cluster(t.id, tokens, t.count);
            inner.clusters[ix as usize].last_used = AtomicU64::new(t.last_used);
        }
        for &(old, cur) in &snap.merged {
            let Some(&ix) = inner.by_id.get(&cur) else {
                return Err(invalid(format!(
                    "merged template {old} points at unknown template {cur}"
                )));
            };
            if old >= snap.next_id || inner.clusters[ix as usize].id == old {
                return Err(invalid(format!("merged template id {old} is invalid")));
            }
            inner.by_id.insert(old, ix);
            inner.clusters[ix as usize].aliases.push(old);
        }
        for sib in &snap.siblings {
            let mut clusters = Vec::with_capacity(sib.templates.len());
            for id in &sib.templates {
                let Some(&ix) = inner.by_id.get(id) else {
                    return Err(invalid(format!("siblings name unknown template {id}")));
                };
                clusters.push(ix);
            }
            if sib.position as usize >= sib.skeleton.len() {
                return Err(invalid(format!(
                    "sibling position {} is past the end of its template",
                    sib.position
                )));
            }
            let skeleton: Vec<u32> = sib.skeleton.iter().map(|t| inner.intern(t)).collect();
            let values: Vec<u32> = sib.values.iter().map(|t| inner.intern(t)).collect();
            let key = (sib.position, skeleton);
            for &c in &clusters {
                inner.clusters[c as usize].groups.push(key.clone());
            }
            inner.siblings.insert(key, Siblings { clusters, values });
        }
        inner.next_id = snap.next_id;
        let last = snap.templates.iter().map(|t| t.last_used).max().unwrap_or(0);
        inner.tick = AtomicU64::new(snap.tick.max(last));
        inner.evicted = snap.evicted;
        if inner.cap > 0 {
            inner.rebuild_lru();
            inner.enforce_cap(UNKNOWN);
        }
        Ok(Miner {
            config: snap.config,
            masker,
            inner: RwLock::new(inner),
        })
    }
}
