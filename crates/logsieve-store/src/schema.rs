//! The database's schema, as an ordered list of migrations numbered by
//! SQLite's `PRAGMA user_version`.
//!
//! One list for the whole database, whichever module owns a table: to add
//! tables (the dashboard's aggregates, say), append a [`Migration`] with the
//! next version to [`MIGRATIONS`]. Never edit or reorder one that has
//! shipped: a store already at that version would not run it again.

/// One step of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The `user_version` the database has after this step (1, 2, …, in order).
    pub version: u32,
    /// What it adds, for error messages.
    pub name: &'static str,
    /// The statements (one transaction with the version bump).
    pub sql: &'static str,
}

/// Every migration, in order. Append only.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "decisions: template-cache decisions by the model, the LLM and people",
        sql: "
CREATE TABLE decisions (
    source        TEXT    NOT NULL,
    -- the masked text: with the source, the template cache's key
    template      TEXT    NOT NULL,
    label         TEXT    NOT NULL,
    method        TEXT    NOT NULL CHECK (method IN ('model', 'llm', 'feedback')),
    confidence    REAL    NOT NULL,
    -- the decision's detail (the model's runner-up, the LLM's reason, who corrected it)
    reason        TEXT    NOT NULL,
    -- what decided: the classifier version (method model), the LLM's model name (llm), '' (feedback)
    model_version TEXT    NOT NULL,
    -- one line with this template, as logged
    example       TEXT    NOT NULL,
    first_seen    INTEGER NOT NULL,  -- Unix seconds
    last_seen     INTEGER NOT NULL,  -- Unix seconds
    -- lines seen with this template (counted in batches, so a little behind while running)
    count         INTEGER NOT NULL,
    PRIMARY KEY (source, template)
) WITHOUT ROWID;
CREATE INDEX decisions_by_method ON decisions (method, model_version);
",
    },
    Migration {
        version: 2,
        name: "agg_*: the dashboard's aggregates (crates/logsieve-server/src/agg_store.rs)",
        sql: "
-- lines per minute (per hour once older than a day) x source x label x method
CREATE TABLE agg_counts (
    minute INTEGER NOT NULL,  -- bucket start, Unix seconds
    source TEXT    NOT NULL,
    label  TEXT    NOT NULL,
    method TEXT    NOT NULL,
    rows   INTEGER NOT NULL,
    PRIMARY KEY (minute, source, label, method)
) WITHOUT ROWID;
-- confidence histogram: bin 0 is [0, 0.1), ... bin 9 is [0.9, 1.0]
CREATE TABLE agg_confidence (
    minute INTEGER NOT NULL,
    source TEXT    NOT NULL,
    bin    INTEGER NOT NULL,
    rows   INTEGER NOT NULL,
    PRIMARY KEY (minute, source, bin)
) WITHOUT ROWID;
-- lines per hour x source x label x template
CREATE TABLE agg_templates (
    hour        INTEGER NOT NULL,
    source      TEXT    NOT NULL,
    label       TEXT    NOT NULL,
    template_id TEXT    NOT NULL,
    rows        INTEGER NOT NULL,
    PRIMARY KEY (hour, source, label, template_id)
) WITHOUT ROWID;
-- a template's masked text and the first line seen with it
CREATE TABLE agg_template_text (
    template_id TEXT PRIMARY KEY,
    template    TEXT NOT NULL,
    example     TEXT NOT NULL
) WITHOUT ROWID;
-- what the template cache and the LLM did per minute
CREATE TABLE agg_sieve (
    minute               INTEGER PRIMARY KEY,
    cache_hits           INTEGER NOT NULL,
    cache_misses         INTEGER NOT NULL,
    llm_calls            INTEGER NOT NULL,
    llm_failed_calls     INTEGER NOT NULL,
    llm_answered_calls   INTEGER NOT NULL,
    llm_latency_ms_total INTEGER NOT NULL
);
-- the newest Security Alert / Critical Error lines, oldest first by id
CREATE TABLE agg_alerts (
    id           INTEGER PRIMARY KEY,
    at_ms        INTEGER NOT NULL,  -- Unix milliseconds
    source       TEXT    NOT NULL,
    log_message  TEXT    NOT NULL,
    target_label TEXT    NOT NULL,
    method       TEXT    NOT NULL,
    confidence   REAL    NOT NULL,
    detail       TEXT    NOT NULL
);
",
    },
    Migration {
        version: 3,
        name: "follow_positions: where `classify --follow` left each file (src/positions.rs)",
        sql: "
CREATE TABLE follow_positions (
    -- the followed file's absolute path
    path    TEXT    NOT NULL PRIMARY KEY,
    -- which file was there (a rotated-in file has another inode)
    dev     INTEGER NOT NULL,
    ino     INTEGER NOT NULL,
    -- the byte after the last line written out
    offset  INTEGER NOT NULL,
    updated INTEGER NOT NULL  -- Unix seconds
) WITHOUT ROWID;
",
    },
];

/// The version a database has once every migration has run.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "migration `{}`", m.name);
        }
    }
}
