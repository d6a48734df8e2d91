//! The dashboard's aggregates in the SQLite decision store (tables
//! `agg_*`, migration 2 of `logsieve_store::schema::MIGRATIONS`).
//!
//! Each [`AggregateStore::append`] (about once a second while lines come
//! in) is one job on the store's writer thread: the whole delta is upserted
//! inside the writer's next transaction, under a savepoint so a failing
//! delta leaves nothing half written. Nothing is written per row. `load`
//! reads on the store's reading connection; `prune` (every minute) drops
//! what is older than the retention, folds per-minute rows older than a day
//! into per-hour ones (as the in-memory aggregates do) and keeps the newest
//! alerts only.

use std::sync::Arc;

use logsieve_pipeline::Method;
use logsieve_store::rusqlite::{self, params, Transaction};
use logsieve_store::Store;

use crate::aggregates::{
    AggregateStore, Alert, Delta, SieveCounts, TemplateInfo, COARSE_SECS, CONFIDENCE_BINS, FINE_SECS,
};

/// [`AggregateStore`] on an open decision store.
pub struct SqliteAggregates {
    store: Arc<Store>,
    /// Alerts kept: the `alerts` of the last [`AggregateStore::load`]
    /// (the recorder's alert capacity); each append trims the table to it.
    keep_alerts: usize,
}

impl SqliteAggregates {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            keep_alerts: crate::aggregates::RecorderConfig::default().alert_capacity,
        }
    }
}

fn method_static(m: &str) -> Option<&'static str> {
    Method::ALL.iter().map(|m| m.as_str()).find(|s| *s == m)
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("aggregates in {what}: {e}")
}

fn trim_alerts(tx: &Transaction<'_>, keep: usize) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM agg_alerts WHERE id <= (SELECT id FROM agg_alerts ORDER BY id DESC LIMIT 1 OFFSET ?1)",
        [keep as i64],
    )?;
    Ok(())
}

fn write_delta(tx: &Transaction<'_>, d: &Delta, keep_alerts: usize) -> rusqlite::Result<()> {
    let mut s = tx.prepare_cached(
        "INSERT INTO agg_counts (minute, source, label, method, rows) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO UPDATE SET rows = rows + excluded.rows",
    )?;
    for ((minute, source, label, method), n) in &d.counts {
        s.execute(params![minute, source, label, method, *n as i64])?;
    }
    let mut s = tx.prepare_cached(
        "INSERT INTO agg_confidence (minute, source, bin, rows) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO UPDATE SET rows = rows + excluded.rows",
    )?;
    for ((minute, source), h) in &d.confidence {
        for (bin, n) in h.iter().enumerate().filter(|(_, n)| **n > 0) {
            s.execute(params![minute, source, bin as i64, *n as i64])?;
        }
    }
    let mut s = tx.prepare_cached(
        "INSERT INTO agg_templates (hour, source, label, template_id, rows) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO UPDATE SET rows = rows + excluded.rows",
    )?;
    for ((hour, source, label, id), n) in &d.templates {
        s.execute(params![hour, source, label, id, *n as i64])?;
    }
    let mut s = tx.prepare_cached(
        "INSERT INTO agg_template_text (template_id, template, example) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
    )?;
    for (id, t) in &d.template_info {
        s.execute(params![id, t.template, t.example])?;
    }
    let mut s = tx.prepare_cached(
        "INSERT INTO agg_sieve (minute, cache_hits, cache_misses, llm_calls, llm_failed_calls,
                                llm_answered_calls, llm_latency_ms_total)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT DO UPDATE SET
            cache_hits = cache_hits + excluded.cache_hits,
            cache_misses = cache_misses + excluded.cache_misses,
            llm_calls = llm_calls + excluded.llm_calls,
            llm_failed_calls = llm_failed_calls + excluded.llm_failed_calls,
            llm_answered_calls = llm_answered_calls + excluded.llm_answered_calls,
            llm_latency_ms_total = llm_latency_ms_total + excluded.llm_latency_ms_total",
    )?;
    for (minute, c) in &d.sieve {
        s.execute(params![
            minute,
            c.cache_hits as i64,
            c.cache_misses as i64,
            c.llm_calls as i64,
            c.llm_failed_calls as i64,
            c.llm_answered_calls as i64,
            c.llm_latency_ms_total as i64
        ])?;
    }
    let mut s = tx.prepare_cached(
        "INSERT INTO agg_alerts (at_ms, source, log_message, target_label, method, confidence, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    // Only the newest `keep_alerts` can be kept; the table is trimmed to
    // them at once, so a burst of alerts never grows the file.
    for a in &d.alerts[d.alerts.len().saturating_sub(keep_alerts)..] {
        s.execute(params![
            a.at_ms,
            a.source,
            a.log_message,
            a.target_label,
            a.method,
            a.confidence as f64,
            a.detail
        ])?;
    }
    if !d.alerts.is_empty() {
        trim_alerts(tx, keep_alerts)?;
    }
    Ok(())
}

/// Run `f` under a savepoint of `tx`: all of it or none of it.
fn all_or_nothing(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    tx.execute_batch("SAVEPOINT agg")?;
    match f(tx) {
        Ok(()) => tx.execute_batch("RELEASE agg"),
        Err(e) => {
            let _ = tx.execute_batch("ROLLBACK TO agg; RELEASE agg");
            Err(e)
        }
    }
}

fn load(c: &rusqlite::Connection, since: i64, alerts: usize) -> rusqlite::Result<Delta> {
    let mut d = Delta::default();
    let mut s = c.prepare("SELECT minute, source, label, method, rows FROM agg_counts WHERE minute >= ?1")?;
    let mut rows = s.query([since])?;
    while let Some(r) = rows.next()? {
        let method: String = r.get(3)?;
        // A method this build does not know (a newer build wrote it) is
        // left out rather than invented.
        let Some(method) = method_static(&method) else {
            continue;
        };
        *d.counts
            .entry((r.get(0)?, r.get(1)?, r.get(2)?, method))
            .or_default() += r.get::<_, i64>(4)? as u64;
    }
    let mut s = c.prepare("SELECT minute, source, bin, rows FROM agg_confidence WHERE minute >= ?1")?;
    let mut rows = s.query([since])?;
    while let Some(r) = rows.next()? {
        let bin: i64 = r.get(2)?;
        if !(0..CONFIDENCE_BINS as i64).contains(&bin) {
            continue;
        }
        d.confidence
            .entry((r.get(0)?, r.get(1)?))
            .or_insert([0; CONFIDENCE_BINS])[bin as usize] += r.get::<_, i64>(3)? as u64;
    }
    let hour = since.div_euclid(COARSE_SECS) * COARSE_SECS;
    let mut s =
        c.prepare("SELECT hour, source, label, template_id, rows FROM agg_templates WHERE hour >= ?1")?;
    let mut rows = s.query([hour])?;
    while let Some(r) = rows.next()? {
        *d.templates
            .entry((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            .or_default() += r.get::<_, i64>(4)? as u64;
    }
    let mut s = c.prepare(
        "SELECT template_id, template, example FROM agg_template_text
         WHERE template_id IN (SELECT template_id FROM agg_templates WHERE hour >= ?1)",
    )?;
    let mut rows = s.query([hour])?;
    while let Some(r) = rows.next()? {
        d.template_info.insert(
            r.get(0)?,
            TemplateInfo {
                template: r.get(1)?,
                example: r.get(2)?,
            },
        );
    }
    let mut s = c.prepare(
        "SELECT minute, cache_hits, cache_misses, llm_calls, llm_failed_calls, llm_answered_calls,
                llm_latency_ms_total
         FROM agg_sieve WHERE minute >= ?1",
    )?;
    let mut rows = s.query([since])?;
    while let Some(r) = rows.next()? {
        let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
        d.sieve.insert(
            r.get(0)?,
            SieveCounts {
                cache_hits: n(1)?,
                cache_misses: n(2)?,
                llm_calls: n(3)?,
                llm_failed_calls: n(4)?,
                llm_answered_calls: n(5)?,
                llm_latency_ms_total: n(6)?,
            },
        );
    }
    let mut s = c.prepare(
        "SELECT at_ms, source, log_message, target_label, method, confidence, detail FROM agg_alerts
         WHERE at_ms >= ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let mut rows = s.query(params![since.saturating_mul(1000), alerts as i64])?;
    while let Some(r) = rows.next()? {
        d.alerts.push(Alert {
            at_ms: r.get(0)?,
            source: r.get(1)?,
            log_message: r.get(2)?,
            target_label: r.get(3)?,
            method: r.get(4)?,
            confidence: r.get::<_, f64>(5)? as f32,
            detail: r.get(6)?,
        });
    }
    d.alerts.reverse();
    Ok(d)
}

fn prune(tx: &Transaction<'_>, before: i64, keep_alerts: usize, fine_before: i64) -> rusqlite::Result<()> {
    let hour = before.div_euclid(COARSE_SECS) * COARSE_SECS;
    tx.execute("DELETE FROM agg_counts WHERE minute < ?1", [before])?;
    tx.execute("DELETE FROM agg_confidence WHERE minute < ?1", [before])?;
    tx.execute("DELETE FROM agg_templates WHERE hour < ?1", [hour])?;
    tx.execute("DELETE FROM agg_sieve WHERE minute < ?1", [before])?;
    tx.execute(
        "DELETE FROM agg_template_text
         WHERE template_id NOT IN (SELECT template_id FROM agg_templates)",
        [],
    )?;
    tx.execute(
        "DELETE FROM agg_alerts WHERE at_ms < ?1",
        [before.saturating_mul(1000)],
    )?;
    trim_alerts(tx, keep_alerts)?;
    // Per-minute rows older than a day fold into their hour's row.
    let h = COARSE_SECS;
    tx.execute(
        &format!(
            "INSERT INTO agg_counts (minute, source, label, method, rows)
             SELECT minute - minute % {h}, source, label, method, SUM(rows) FROM agg_counts
             WHERE minute < ?1 AND minute % {h} != 0 GROUP BY 1, 2, 3, 4
             ON CONFLICT DO UPDATE SET rows = rows + excluded.rows"
        ),
        [fine_before],
    )?;
    tx.execute(
        &format!("DELETE FROM agg_counts WHERE minute < ?1 AND minute % {h} != 0"),
        [fine_before],
    )?;
    tx.execute(
        &format!(
            "INSERT INTO agg_confidence (minute, source, bin, rows)
             SELECT minute - minute % {h}, source, bin, SUM(rows) FROM agg_confidence
             WHERE minute < ?1 AND minute % {h} != 0 GROUP BY 1, 2, 3
             ON CONFLICT DO UPDATE SET rows = rows + excluded.rows"
        ),
        [fine_before],
    )?;
    tx.execute(
        &format!("DELETE FROM agg_confidence WHERE minute < ?1 AND minute % {h} != 0"),
        [fine_before],
    )?;
    tx.execute(
        &format!(
            "INSERT INTO agg_sieve (minute, cache_hits, cache_misses, llm_calls, llm_failed_calls,
                                    llm_answered_calls, llm_latency_ms_total)
             SELECT minute - minute % {h}, SUM(cache_hits), SUM(cache_misses), SUM(llm_calls),
                    SUM(llm_failed_calls), SUM(llm_answered_calls), SUM(llm_latency_ms_total)
             FROM agg_sieve WHERE minute < ?1 AND minute % {h} != 0 GROUP BY 1
             ON CONFLICT DO UPDATE SET
                cache_hits = cache_hits + excluded.cache_hits,
                cache_misses = cache_misses + excluded.cache_misses,
                llm_calls = llm_calls + excluded.llm_calls,
                llm_failed_calls = llm_failed_calls + excluded.llm_failed_calls,
                llm_answered_calls = llm_answered_calls + excluded.llm_answered_calls,
                llm_latency_ms_total = llm_latency_ms_total + excluded.llm_latency_ms_total"
        ),
        [fine_before],
    )?;
    tx.execute(
        &format!("DELETE FROM agg_sieve WHERE minute < ?1 AND minute % {h} != 0"),
        [fine_before],
    )?;
    Ok(())
}

impl AggregateStore for SqliteAggregates {
    fn load(&mut self, since: i64, alerts: usize) -> Result<Delta, String> {
        self.keep_alerts = alerts;
        self.store
            .read(|c| load(c, since, alerts))
            .map_err(|e| err(&self.store.path().display().to_string(), e))
    }

    fn append(&mut self, delta: &Delta) -> Result<(), String> {
        if delta.is_empty() && delta.template_info.is_empty() {
            return Ok(());
        }
        let (d, keep) = (delta.clone(), self.keep_alerts);
        // Queued for the writer's next transaction; a failure is logged
        // and counted by the store (`Store::write_errors`, the next flush).
        self.store.execute(Box::new(move |tx| {
            all_or_nothing(tx, |tx| write_delta(tx, &d, keep))
        }));
        Ok(())
    }

    fn prune(&mut self, before: i64, keep_alerts: usize) -> Result<(), String> {
        let fine_before = crate::aggregates::now_ms() / 1000 - FINE_SECS;
        self.store.execute(Box::new(move |tx| {
            all_or_nothing(tx, |tx| prune(tx, before, keep_alerts, fine_before))
        }));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        self.store
            .flush()
            .map_err(|e| err(&self.store.path().display().to_string(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregates::Aggregates;

    fn alert(at_ms: i64, n: usize) -> Alert {
        Alert {
            at_ms,
            source: "sys".into(),
            log_message: format!("disk failure {n}"),
            target_label: "Critical Error".into(),
            method: "rule".into(),
            confidence: 1.0,
            detail: "r1".into(),
        }
    }

    fn delta(minute: i64, n: u64) -> Delta {
        let mut d = Delta::default();
        d.counts
            .insert((minute, "sys".into(), "Error".into(), "model"), n);
        let mut h = [0; CONFIDENCE_BINS];
        h[9] = n;
        d.confidence.insert((minute, "sys".into()), h);
        let hour = minute - minute % COARSE_SECS;
        d.templates
            .insert((hour, "sys".into(), "Error".into(), "t1".into()), n);
        d.template_info.insert(
            "t1".into(),
            TemplateInfo {
                template: "disk <NUM> failed".into(),
                example: "disk 3 failed".into(),
            },
        );
        d.add_sieve(
            minute,
            &SieveCounts {
                cache_hits: n,
                llm_calls: 1,
                llm_latency_ms_total: 40,
                ..Default::default()
            },
        );
        d
    }

    #[test]
    fn what_is_appended_loads_back_added_up_and_pruning_keeps_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path().join("s.db")).unwrap());
        let mut a = SqliteAggregates::new(store.clone());
        let now = crate::aggregates::now_ms() / 1000;
        let minute = now - now % 60;
        let mut d1 = delta(minute, 3);
        d1.alerts = (0..5).map(|i| alert(minute * 1000 + i, i as usize)).collect();
        a.append(&d1).unwrap();
        a.append(&delta(minute, 4)).unwrap();
        // Two days ago: kept by a week's retention, folded into its hour.
        let old = minute - 2 * 86_400 + 120;
        a.append(&delta(old, 2)).unwrap();
        a.flush().unwrap();

        let got = a.load(now - 7 * 86_400, 3).unwrap();
        // The load set the alerts kept to 3: a burst of 5 more keeps 3 rows.
        let burst = Delta {
            alerts: (10..15).map(|i| alert(minute * 1000 + i, i as usize)).collect(),
            ..Default::default()
        };
        a.append(&burst).unwrap();
        a.flush().unwrap();
        let kept: i64 = store
            .read(|c| c.query_row("SELECT count(*) FROM agg_alerts", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(kept, 3);
        assert_eq!(got.counts[&(minute, "sys".into(), "Error".into(), "model")], 7);
        assert_eq!(got.confidence[&(minute, "sys".into())][9], 7);
        assert_eq!(got.sieve[&minute].cache_hits, 7);
        assert_eq!(got.sieve[&minute].llm_latency_ms_total, 80);
        assert_eq!(got.template_info["t1"].example, "disk 3 failed");
        let msgs: Vec<&str> = got.alerts.iter().map(|a| a.log_message.as_str()).collect();
        assert_eq!(
            msgs,
            ["disk failure 2", "disk failure 3", "disk failure 4"],
            "the newest 3, oldest first"
        );

        // Prune at one day of retention: the two-day-old rows go, and the
        // alert table keeps the newest 2.
        a.prune(now - 86_400, 2).unwrap();
        a.flush().unwrap();
        let got = a.load(0, 100).unwrap();
        assert!(got.counts.keys().all(|k| k.0 == minute), "{:?}", got.counts);
        assert_eq!(got.alerts.len(), 2);
        let rows: i64 = store
            .read(|c| c.query_row("SELECT count(*) FROM agg_counts", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(rows, 1);

        // With a week's retention the two-day-old minute folds into its hour.
        a.append(&delta(old, 2)).unwrap();
        a.prune(now - 7 * 86_400, 2).unwrap();
        a.flush().unwrap();
        let got = a.load(0, 100).unwrap();
        let old_hour = old - old % COARSE_SECS;
        assert_eq!(got.counts[&(old_hour, "sys".into(), "Error".into(), "model")], 2);
        assert!(!got
            .counts
            .contains_key(&(old, "sys".into(), "Error".into(), "model")));

        // The same shape the in-memory aggregates merge.
        let mut agg = Aggregates::new(10);
        agg.merge(got);
        assert_eq!(agg.alerts.len(), 2);
    }
}
