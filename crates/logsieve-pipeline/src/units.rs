//! Training units for the hybrid model: each distinct (encoder text, label)
//! of a source once, with its vector and line count, and the label
//! prototypes as units of their own. Texts are embedded once however many
//! lines, folds or held-out sources use them.

use std::collections::HashMap;

use logsieve_embed::{EmbedError, Embedder};
use logsieve_linear::hybrid::Unit;

use crate::labelled::LabelledRow;
use crate::labels::LabelSpec;

/// The group prototype units belong to (never a calibration fold).
pub const PROTOTYPE_GROUP: &str = "(prototype)";

/// Vectors of distinct texts.
#[derive(Debug, Default)]
pub struct VectorCache {
    map: HashMap<String, Vec<f32>>,
}

impl VectorCache {
    /// Embed every text not yet cached (once each).
    pub fn fill<'a>(
        &mut self,
        e: &dyn Embedder,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), EmbedError> {
        let mut todo: Vec<&str> = texts.into_iter().filter(|t| !self.map.contains_key(*t)).collect();
        todo.sort_unstable();
        todo.dedup();
        for chunk in todo.chunks(512) {
            let v = e.embed(chunk)?;
            for (t, v) in chunk.iter().zip(v) {
                self.map.insert((*t).to_string(), v);
            }
        }
        Ok(())
    }

    pub fn get(&self, text: &str) -> &[f32] {
        self.map
            .get(text)
            .map(Vec::as_slice)
            .expect("text embedded before use")
    }
}

/// One unit per distinct (text, label) among `rows` (text: the encoder's
/// input), in first-seen order.
///
/// Its group (what a calibration fold holds out together) is its source,
/// except that sources sharing any text are one group: the seed's synthetic
/// applications repeat each other's templates, and a fold that held out one
/// of them while training on its twins would teach the calibrator that new
/// systems are easy. Real systems share no templates and stay apart.
///
/// (Measured: keeping the seed out of calibration instead, so the calibrator
/// learns from real systems alone, raised ECE leave-one-system-out from
/// 0.095 to 0.182: eight real systems are too few to calibrate on.)
pub fn units_of<'a>(
    rows: impl IntoIterator<Item = (&'a LabelledRow, &'a str)>,
    vectors: &VectorCache,
) -> Vec<Unit> {
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut first_source: HashMap<&str, &str> = HashMap::new();
    let mut groups = SourceGroups::default();
    let mut out: Vec<Unit> = Vec::new();
    for (r, text) in rows {
        let src = r.source.as_str();
        groups.add(src);
        match first_source.get(text) {
            Some(&other) if other != src => groups.join(other, src),
            Some(_) => {}
            None => {
                first_source.insert(text, src);
            }
        }
        let key = (text, r.label.as_str());
        match index.get(&key) {
            Some(&i) => out[i].lines += 1,
            None => {
                index.insert(key, out.len());
                out.push(Unit {
                    text: text.to_string(),
                    vector: vectors.get(text).to_vec(),
                    label: r.label.clone(),
                    group: src.to_string(),
                    lines: 1,
                });
            }
        }
    }
    for u in &mut out {
        u.group = groups.root(&u.group).to_string();
    }
    out
}

/// Sources joined by shared texts (union-find; a group is named by its
/// first-seen source).
#[derive(Debug, Default)]
struct SourceGroups<'a> {
    order: HashMap<&'a str, usize>,
    parent: Vec<usize>,
    names: Vec<&'a str>,
}

impl<'a> SourceGroups<'a> {
    fn add(&mut self, s: &'a str) {
        if !self.order.contains_key(s) {
            self.order.insert(s, self.names.len());
            self.parent.push(self.names.len());
            self.names.push(s);
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn join(&mut self, a: &str, b: &str) {
        let (ra, rb) = (self.find(self.order[a]), self.find(self.order[b]));
        // The earlier source names the group.
        let (keep, child) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[child] = keep;
    }

    fn root(&mut self, s: &str) -> &'a str {
        let r = self.find(self.order[s]);
        self.names[r]
    }
}

/// The prototypes of `labels` as units; `texts` are their encoder texts in
/// the same order.
pub fn prototype_units(labels: &[LabelSpec], texts: &[String], vectors: &VectorCache) -> Vec<Unit> {
    labels
        .iter()
        .flat_map(|l| l.prototypes.iter().map(move |p| (l, p)))
        .zip(texts)
        .map(|((l, _), t)| Unit {
            text: t.clone(),
            vector: vectors.get(t).to_vec(),
            label: l.name.clone(),
            group: PROTOTYPE_GROUP.into(),
            lines: 1,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(source: &str, message: &str, label: &str) -> LabelledRow {
        LabelledRow {
            line: 0,
            source: source.into(),
            message: message.into(),
            label: label.into(),
        }
    }

    /// Two synthetic apps that repeat a template are one calibration group
    /// (joined through a third); a real system that shares nothing stays apart.
    #[test]
    fn sources_sharing_a_text_are_one_group() {
        let rows = [
            row("CRM", "user <NUM> logged in", "User Action"),
            row("HR", "disk full", "Resource Usage"),
            row("Billing", "user <NUM> logged in", "User Action"),
            row("HR", "payment failed", "Workflow Error"),
            row("Billing", "payment failed", "Workflow Error"),
            row("HDFS", "block received", "System Notification"),
        ];
        let mut cache = VectorCache::default();
        for r in &rows {
            cache.map.insert(r.message.clone(), vec![1.0]);
        }
        let units = units_of(rows.iter().map(|r| (r, r.message.as_str())), &cache);
        let group: HashMap<&str, &str> = units
            .iter()
            .map(|u| (u.text.as_str(), u.group.as_str()))
            .collect();
        assert_eq!(units.len(), 4);
        assert_eq!(group["user <NUM> logged in"], "CRM");
        assert_eq!(group["disk full"], "CRM");
        assert_eq!(group["payment failed"], "CRM");
        assert_eq!(group["block received"], "HDFS");
        assert_eq!(
            units.iter().find(|u| u.text == "payment failed").unwrap().lines,
            2
        );
    }
}
