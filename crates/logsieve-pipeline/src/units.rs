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
/// input), in first-seen order; its group is the first source it came from,
/// so a template many sources share is one unit, not one per source.
pub fn units_of<'a>(
    rows: impl IntoIterator<Item = (&'a LabelledRow, &'a str)>,
    vectors: &VectorCache,
) -> Vec<Unit> {
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut out: Vec<Unit> = Vec::new();
    for (r, text) in rows {
        let key = (text, r.label.as_str());
        match index.get(&key) {
            Some(&i) => out[i].lines += 1,
            None => {
                index.insert(key, out.len());
                out.push(Unit {
                    text: text.to_string(),
                    vector: vectors.get(text).to_vec(),
                    label: r.label.clone(),
                    group: r.source.clone(),
                    lines: 1,
                });
            }
        }
    }
    out
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
