//! `GET /v1/stats` (the aggregates as JSON, for a time range and a source)
//! and `GET /v1/tail` (new Security Alert / Critical Error lines as
//! server-sent events). [`summarise`] turns [`Aggregates`] into the answer;
//! `logsieve report` uses it too, so the page and the report agree.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::aggregates::{Aggregates, Alert, SieveCounts, ALERTS_LISTED, CONFIDENCE_BINS, TOP_TEMPLATES};
use crate::openapi::ErrorBody;
use crate::{AppError, AppState};

/// The range and source a stats answer covers.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Start: Unix seconds, or relative to now as `-15m`, `-6h`, `-7d`. Default: everything kept.
    pub since: Option<String>,
    /// End: the same forms. Default: now.
    pub until: Option<String>,
    /// Only this source's lines (the cascade-wide figures — cache, LLM — stay whole).
    pub source: Option<String>,
}

/// A resolved window: Unix seconds, `until` exclusive.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub since: i64,
    pub until: i64,
    pub source: Option<String>,
    /// When the window was asked for (bucket lengths depend on age).
    pub now: i64,
}

/// Parse `since`/`until` (`what` names the parameter in the error).
fn parse_time(v: &str, what: &str, now: i64) -> Result<i64, AppError> {
    let v = v.trim();
    let bad = || {
        AppError::validation(format!(
            "query parameter `{what}`: `{v}` is not Unix seconds or a relative time such as -15m, -6h, -7d"
        ))
    };
    if let Some(rel) = v.strip_prefix('-') {
        let (num, unit) = rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len()));
        let n: i64 = num.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" | "" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(bad()),
        };
        return Ok(now - n.saturating_mul(secs));
    }
    v.parse::<i64>().map_err(|_| bad())
}

impl StatsQuery {
    pub fn window(&self, now: i64) -> Result<Window, AppError> {
        let since = match &self.since {
            Some(s) if !s.trim().is_empty() => parse_time(s, "since", now)?,
            _ => i64::MIN,
        };
        let until = match &self.until {
            Some(s) if !s.trim().is_empty() => parse_time(s, "until", now)?,
            _ => i64::MAX,
        };
        if since > until {
            return Err(AppError::validation(format!(
                "query parameter `since` ({since}) is after `until` ({until})"
            )));
        }
        Ok(Window {
            since,
            until,
            source: self.source.clone().filter(|s| !s.is_empty()),
            now,
        })
    }
}

/// The aggregates for a window.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsOut {
    /// The window, Unix seconds (null: unbounded).
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub source: Option<String>,
    /// Lines counted in the window.
    pub rows: u64,
    pub by_label: BTreeMap<String, u64>,
    /// `rule`, `model`, `llm`, `none`.
    pub by_method: BTreeMap<String, u64>,
    /// Every source seen in the window (ignoring the source filter), for a picker.
    pub sources: Vec<String>,
    /// Every label in the window.
    pub labels: Vec<String>,
    /// One point per minute that has lines, oldest first.
    pub series: Vec<MinutePoint>,
    /// Lines per source and label.
    pub by_source_label: Vec<SourceLabel>,
    pub confidence: Histogram,
    /// The most frequent templates of each label.
    pub templates: BTreeMap<String, Vec<TemplateCount>>,
    pub sieve: Sieve,
    /// The newest alert lines in the window, newest first (at most 50).
    pub alerts: Vec<Alert>,
    /// Alert lines the server keeps.
    pub alert_capacity: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MinutePoint {
    /// Start of the bucket, Unix seconds.
    pub minute: i64,
    /// Its length: 60, or 3600 for counts older than a day (kept per hour).
    pub seconds: i64,
    pub rows: u64,
    pub by_label: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceLabel {
    pub source: String,
    pub label: String,
    pub rows: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Histogram {
    /// Lower edges of the bins (0, 0.1, … 0.9; the last bin includes 1.0).
    pub edges: Vec<f32>,
    pub counts: Vec<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateCount {
    pub template_id: String,
    pub template: String,
    /// The first line seen with this template.
    pub example: String,
    pub rows: u64,
}

/// How lines were decided, cascade-wide.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sieve {
    pub totals: SieveCounts,
    /// Rows decided from the template cache / all rows that looked it up.
    pub cache_hit_rate: Option<f64>,
    /// Mean latency of answered LLM calls, milliseconds.
    pub llm_mean_latency_ms: Option<f64>,
    /// Lines per second over the window's buckets that have lines.
    pub lines_per_second: f64,
    /// Lines per second in the busiest bucket.
    pub peak_lines_per_second: f64,
    /// LLM calls, failures and latency per minute, oldest first.
    pub llm_series: Vec<LlmPoint>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LlmPoint {
    pub minute: i64,
    pub calls: u64,
    pub failed_calls: u64,
    pub mean_latency_ms: Option<f64>,
}

fn bounded(v: i64) -> Option<i64> {
    (v != i64::MIN && v != i64::MAX).then_some(v)
}

/// The answer for `w`.
pub fn summarise(a: &Aggregates, w: &Window) -> StatsOut {
    let d = &a.data;
    let in_time = |t: i64| t >= w.since && t < w.until;
    let in_source = |s: &str| w.source.as_deref().is_none_or(|x| x == s);
    let mut sources = BTreeSet::new();
    let mut by_label: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_method: BTreeMap<String, u64> = ["rule", "model", "llm", "none"]
        .iter()
        .map(|m| (m.to_string(), 0))
        .collect();
    let mut minutes: BTreeMap<i64, MinutePoint> = BTreeMap::new();
    let mut cells: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut rows = 0;
    for ((minute, source, label, method), &n) in &d.counts {
        if !in_time(*minute) {
            continue;
        }
        sources.insert(source.clone());
        if !in_source(source) {
            continue;
        }
        rows += n;
        *by_label.entry(label.clone()).or_default() += n;
        *by_method.entry(method.to_string()).or_default() += n;
        let p = minutes.entry(*minute).or_insert_with(|| MinutePoint {
            minute: *minute,
            seconds: crate::aggregates::bucket_secs(*minute, w.now),
            rows: 0,
            by_label: BTreeMap::new(),
        });
        p.rows += n;
        *p.by_label.entry(label.clone()).or_default() += n;
        *cells.entry((source.clone(), label.clone())).or_default() += n;
    }
    let mut hist = [0u64; CONFIDENCE_BINS];
    for ((minute, source), h) in &d.confidence {
        if in_time(*minute) && in_source(source) {
            for (a, b) in hist.iter_mut().zip(h) {
                *a += b;
            }
        }
    }
    // Templates are kept per hour: an hour counts when it overlaps the window.
    let mut per_template: HashMap<(&str, &str), u64> = HashMap::new();
    for ((hour, source, label, id), &n) in &d.templates {
        if *hour + 3600 > w.since && *hour < w.until && in_source(source) {
            *per_template.entry((label.as_str(), id.as_str())).or_default() += n;
        }
    }
    let mut templates: BTreeMap<String, Vec<TemplateCount>> = BTreeMap::new();
    for ((label, id), n) in per_template {
        let info = d.template_info.get(id);
        templates
            .entry(label.to_string())
            .or_default()
            .push(TemplateCount {
                template_id: id.to_string(),
                template: info.map(|i| i.template.clone()).unwrap_or_default(),
                example: info.map(|i| i.example.clone()).unwrap_or_default(),
                rows: n,
            });
    }
    for v in templates.values_mut() {
        v.sort_by(|a, b| {
            b.rows
                .cmp(&a.rows)
                .then_with(|| a.template_id.cmp(&b.template_id))
        });
        v.truncate(TOP_TEMPLATES);
    }
    let mut totals = SieveCounts::default();
    let mut llm_series = Vec::new();
    for (minute, c) in &d.sieve {
        if !in_time(*minute) {
            continue;
        }
        totals.cache_hits += c.cache_hits;
        totals.cache_misses += c.cache_misses;
        totals.llm_calls += c.llm_calls;
        totals.llm_failed_calls += c.llm_failed_calls;
        totals.llm_answered_calls += c.llm_answered_calls;
        totals.llm_latency_ms_total += c.llm_latency_ms_total;
        if c.llm_calls > 0 {
            llm_series.push(LlmPoint {
                minute: *minute,
                calls: c.llm_calls,
                failed_calls: c.llm_failed_calls,
                mean_latency_ms: (c.llm_answered_calls > 0)
                    .then(|| c.llm_latency_ms_total as f64 / c.llm_answered_calls as f64),
            });
        }
    }
    let looked_up = totals.cache_hits + totals.cache_misses;
    let peak = minutes
        .values()
        .map(|p| p.rows as f64 / p.seconds.max(1) as f64)
        .fold(0.0, f64::max);
    let covered: i64 = minutes.values().map(|p| p.seconds).sum();
    let labels = by_label.keys().cloned().collect();
    let alerts = a
        .alerts
        .iter()
        .rev()
        .filter(|x| in_time(x.at_ms.div_euclid(1000)) && in_source(&x.source))
        .take(ALERTS_LISTED)
        .cloned()
        .collect();
    StatsOut {
        since: bounded(w.since),
        until: bounded(w.until),
        source: w.source.clone(),
        rows,
        by_label,
        by_method,
        sources: sources.into_iter().collect(),
        labels,
        sieve: Sieve {
            totals,
            cache_hit_rate: (looked_up > 0).then(|| totals.cache_hits as f64 / looked_up as f64),
            llm_mean_latency_ms: (totals.llm_answered_calls > 0)
                .then(|| totals.llm_latency_ms_total as f64 / totals.llm_answered_calls as f64),
            lines_per_second: if covered == 0 {
                0.0
            } else {
                rows as f64 / covered as f64
            },
            peak_lines_per_second: peak,
            llm_series,
        },
        series: minutes.into_values().collect(),
        by_source_label: cells
            .into_iter()
            .map(|((source, label), rows)| SourceLabel { source, label, rows })
            .collect(),
        confidence: Histogram {
            edges: (0..CONFIDENCE_BINS)
                .map(|i| i as f32 / CONFIDENCE_BINS as f32)
                .collect(),
            counts: hist.to_vec(),
        },
        templates,
        alerts,
        alert_capacity: a.alert_capacity,
    }
}

/// `GET /v1/stats`: what was classified, by minute, source, label and method.
#[utoipa::path(get, path = "/v1/stats", tag = "dashboard", security(("bearer" = [])),
    params(StatsQuery),
    responses(
        (status = 200, description = "The aggregates for the window", body = StatsOut),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 422, description = "A bad `since` or `until`", body = ErrorBody),
    ))]
pub async fn stats(
    State(st): State<Arc<AppState>>,
    q: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<StatsOut>, AppError> {
    let Query(q) = q.map_err(|e| AppError::validation(format!("query string: {}", e.body_text())))?;
    let w = q.window(crate::aggregates::now_ms() / 1000)?;
    Ok(Json(st.recorder.with(|a| summarise(a, &w))))
}

/// `GET /v1/tail`: a server-sent event `alert` (an [`Alert`] as JSON) for
/// each new Security Alert or Critical Error line; a comment every 15 s
/// keeps the connection open; `event: lagged` (data: how many) when this
/// client fell behind and alerts were skipped. The stream ends when the
/// server shuts down.
#[utoipa::path(get, path = "/v1/tail", tag = "dashboard", security(("bearer" = [])),
    responses(
        (status = 200, description = "text/event-stream: `event: alert`, `data:` an Alert as JSON", content_type = "text/event-stream", body = Alert),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
    ))]
pub async fn tail(State(st): State<Arc<AppState>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = st.recorder.subscribe();
    let closing = st.closing.subscribe();
    let stream = futures_util::stream::unfold((rx, closing), |(mut rx, mut closing)| async move {
        if *closing.borrow() {
            return None;
        }
        let got = tokio::select! {
            got = rx.recv() => got,
            // The server is shutting down (or gone): end the stream.
            _ = closing.changed() => return None,
        };
        let ev = match got {
            Ok(a) => Event::default()
                .event("alert")
                .json_data(&*a)
                .unwrap_or_else(|_| Event::default().comment("unserialisable alert")),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                Event::default().event("lagged").data(n.to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(ev), (rx, closing)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregates::{Delta, RowRef};
    use logsieve_pipeline::{Decision, Method};
    use logsieve_templates::Masker;

    fn d(label: &str, method: Method, c: f32) -> Decision {
        Decision {
            target_label: label.into(),
            method,
            confidence: c,
            detail: "x".into(),
            template: None,
        }
    }

    #[test]
    fn counts_split_by_window_and_source_and_templates_group_lines() {
        let m = Masker::builtin();
        let mut a = Aggregates::new(10);
        let rows = [
            ("A", "User 1 logged in", d("User Action", Method::Rule, 1.0)),
            ("A", "User 2 logged in", d("User Action", Method::Rule, 1.0)),
            (
                "B",
                "IP 10.0.0.1 blocked",
                d("Security Alert", Method::Model, 0.93),
            ),
        ];
        let mut delta = Delta::default();
        delta.add_rows(
            120_000,
            rows.iter().map(|(s, msg, d)| RowRef {
                source: s,
                message: msg,
                decision: d.into(),
            }),
            &m,
        );
        let mut later = Delta::default();
        later.add_rows(
            600_000,
            std::iter::once(RowRef {
                source: "A",
                message: "disk full",
                decision: (&rows[2].2).into(),
            }),
            &m,
        );
        a.merge(delta);
        a.merge(later);
        let all = summarise(&a, &StatsQuery::default().window(1000).unwrap());
        assert_eq!(all.rows, 4);
        assert_eq!(all.by_label["User Action"], 2);
        assert_eq!(all.by_label["Security Alert"], 2);
        assert_eq!(all.by_method["rule"], 2);
        assert_eq!(all.by_method["llm"], 0);
        assert_eq!(all.series.len(), 2);
        assert_eq!(all.confidence.counts[9], 4);
        assert_eq!(all.alerts.len(), 2);
        assert_eq!(all.alerts[0].log_message, "disk full", "newest first");
        let ua = &all.templates["User Action"];
        assert_eq!(ua.len(), 1, "both logins mask to one template: {ua:?}");
        assert_eq!((ua[0].rows, ua[0].example.as_str()), (2, "User 1 logged in"));
        let q = StatsQuery {
            since: Some("100".into()),
            until: Some("200".into()),
            source: Some("A".into()),
        };
        let some = summarise(&a, &q.window(1000).unwrap());
        assert_eq!(some.rows, 2);
        assert_eq!(some.sources, ["A", "B"]);
        assert_eq!(some.by_source_label.len(), 1);
    }

    /// A decision that carries the cascade's masked text is counted under
    /// it (the line is not masked again); one without is masked here.
    #[test]
    fn the_cascades_template_is_used_when_the_decision_carries_one() {
        let m = Masker::builtin();
        let mut carried = d("Error", Method::Model, 0.9);
        carried.template = Some(std::sync::Arc::from("replica <*> lagging"));
        let plain = d("Error", Method::Rule, 1.0);
        let mut delta = Delta::default();
        delta.add_rows(
            60_000,
            [
                RowRef {
                    source: "S",
                    message: "replica 7 lagging",
                    decision: (&carried).into(),
                },
                RowRef {
                    source: "S",
                    message: "replica 9 lagging",
                    decision: (&carried).into(),
                },
                RowRef {
                    source: "S",
                    message: "disk 4 failed",
                    decision: (&plain).into(),
                },
            ],
            &m,
        );
        let mut a = Aggregates::new(10);
        a.merge(delta);
        let all = summarise(&a, &StatsQuery::default().window(1000).unwrap());
        let mut t: Vec<(String, u64)> = all.templates["Error"]
            .iter()
            .map(|t| (t.template.clone(), t.rows))
            .collect();
        t.sort();
        assert_eq!(
            t,
            [
                (m.mask("disk 4 failed").into_owned(), 1),
                ("replica <*> lagging".to_string(), 2),
            ]
        );
    }

    #[test]
    fn old_minutes_fold_into_hours_and_totals_stay() {
        let m = Masker::builtin();
        let mut a = Aggregates::new(10);
        let dec = d("Error", Method::Model, 0.7);
        for minute in [0i64, 1, 2, 61] {
            let mut delta = Delta::default();
            delta.add_rows(
                minute * 60_000,
                std::iter::once(RowRef {
                    source: "S",
                    message: "x",
                    decision: (&dec).into(),
                }),
                &m,
            );
            delta.add_sieve(
                minute * 60,
                &crate::aggregates::SieveCounts {
                    cache_hits: 1,
                    ..Default::default()
                },
            );
            a.merge(delta);
        }
        let now = 10 * 86_400;
        a.coarsen(now - crate::aggregates::FINE_SECS);
        assert_eq!(a.data.counts.len(), 2, "two hours: {:?}", a.data.counts);
        assert_eq!(a.data.confidence.len(), 2);
        assert_eq!(a.data.sieve.len(), 2);
        let w = StatsQuery::default().window(now).unwrap();
        let s = summarise(&a, &w);
        assert_eq!(s.rows, 4);
        assert_eq!(s.sieve.totals.cache_hits, 4);
        assert_eq!(
            s.series.iter().map(|p| p.seconds).collect::<Vec<_>>(),
            [3600, 3600]
        );
        assert_eq!(s.series[0].rows, 3);
        assert_eq!(s.confidence.counts[7], 4);
    }

    #[test]
    fn bad_times_are_named() {
        let q = StatsQuery {
            since: Some("yesterday".into()),
            ..Default::default()
        };
        let e = q.window(0).unwrap_err().to_string();
        assert!(e.contains("`since`") && e.contains("yesterday"), "{e}");
        let q = StatsQuery {
            since: Some("-2h".into()),
            until: Some("-3h".into()),
            ..Default::default()
        };
        assert!(q.window(100_000).is_err());
        let q = StatsQuery {
            since: Some("-15m".into()),
            ..Default::default()
        };
        assert_eq!(q.window(10_000).unwrap().since, 10_000 - 900);
    }

    #[test]
    fn the_alert_ring_keeps_the_newest() {
        let m = Masker::builtin();
        let mut a = Aggregates::new(2);
        let dec = d("Critical Error", Method::Model, 0.9);
        for (i, msg) in ["one", "two", "three"].iter().enumerate() {
            let mut delta = Delta::default();
            delta.add_rows(
                i as i64 * 1000,
                std::iter::once(RowRef {
                    source: "S",
                    message: msg,
                    decision: (&dec).into(),
                }),
                &m,
            );
            a.merge(delta);
        }
        let got: Vec<_> = a.alerts.iter().map(|x| x.log_message.as_str()).collect();
        assert_eq!(got, ["two", "three"]);
        a.prune(2);
        assert_eq!(a.alerts.len(), 1, "older than the retention: gone");
    }
}
