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
pub const MIGRATIONS: &[Migration] = &[Migration {
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
}];

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
