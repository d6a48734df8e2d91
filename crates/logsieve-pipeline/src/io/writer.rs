//! Output: the input row as it came, plus `target_label`, `method`,
//! `confidence` and `detail`. CSV in → CSV out (original bytes kept), JSON
//! lines in → JSON lines out (field order kept); text in → JSON lines.

use std::io::Write;

use super::{InputRow, Payload, OUTPUT_COLUMNS};
use crate::decision::Decision;

pub trait RowWriter {
    fn write(&mut self, row: &InputRow, d: &Decision) -> std::io::Result<()>;
    fn finish(&mut self) -> std::io::Result<()>;
}

fn confidence(d: &Decision) -> String {
    format!("{:.4}", d.confidence)
}

/// CSV output. The header is the input's, with the output columns replaced
/// in place where the input has them, else appended.
pub struct CsvWriter<W: Write> {
    w: csv::Writer<W>,
    width: usize,
    /// Position of each output column in the written record.
    slots: [usize; 4],
}

impl<W: Write> CsvWriter<W> {
    /// `header`: the input's columns (`None` for non-CSV input, which is
    /// written as `line,source,log_message`).
    pub fn new(out: W, header: Option<&[String]>) -> std::io::Result<Self> {
        let mut w = csv::WriterBuilder::new().flexible(false).from_writer(out);
        let mut cols: Vec<String> = header
            .map(|h| h.to_vec())
            .unwrap_or_else(|| vec!["line".into(), "source".into(), "log_message".into()]);
        let width = cols.len();
        let mut slots = [0; 4];
        for (k, name) in OUTPUT_COLUMNS.iter().enumerate() {
            slots[k] = match cols.iter().position(|c| c == name) {
                Some(i) => {
                    tracing::warn!(
                        column = name,
                        "the input already has this column; its values are replaced"
                    );
                    i
                }
                None => {
                    cols.push(name.to_string());
                    cols.len() - 1
                }
            };
        }
        w.write_record(&cols)?;
        Ok(Self { w, width, slots })
    }
}

impl<W: Write> RowWriter for CsvWriter<W> {
    fn write(&mut self, row: &InputRow, d: &Decision) -> std::io::Result<()> {
        let mut fields: Vec<Vec<u8>> = match &row.payload {
            Payload::Csv(rec) => rec.iter().take(self.width).map(<[u8]>::to_vec).collect(),
            Payload::Json(_) | Payload::Raw(_) | Payload::Text => vec![
                row.line.to_string().into_bytes(),
                row.source.clone().into_bytes(),
                match &row.payload {
                    Payload::Raw(r) => r.clone().into_bytes(),
                    _ => row.message.clone().into_bytes(),
                },
            ],
        };
        fields.resize(self.width, Vec::new());
        let total = self.slots.iter().copied().max().unwrap_or(0).max(self.width - 1) + 1;
        fields.resize(total, Vec::new());
        let values = [
            d.target_label.clone(),
            d.method.as_str().to_string(),
            confidence(d),
            d.detail.clone(),
        ];
        for (slot, v) in self.slots.iter().zip(values) {
            fields[*slot] = v.into_bytes();
        }
        self.w.write_record(&fields)?;
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// JSON lines output.
pub struct JsonlWriter<W: Write> {
    w: W,
}

impl<W: Write> JsonlWriter<W> {
    pub fn new(w: W) -> Self {
        Self { w }
    }
}

impl<W: Write> RowWriter for JsonlWriter<W> {
    fn write(&mut self, row: &InputRow, d: &Decision) -> std::io::Result<()> {
        use serde_json::Value;
        let mut obj = match &row.payload {
            Payload::Json(m) => m.clone(),
            Payload::Raw(text) => {
                let mut m = serde_json::Map::new();
                m.insert("line".into(), Value::from(row.line));
                m.insert("raw".into(), Value::from(text.clone()));
                m
            }
            Payload::Csv(_) | Payload::Text => {
                let mut m = serde_json::Map::new();
                m.insert("line".into(), Value::from(row.line));
                m.insert("source".into(), Value::from(row.source.clone()));
                m.insert("log_message".into(), Value::from(row.message.clone()));
                m
            }
        };
        obj.insert("target_label".into(), Value::from(d.target_label.clone()));
        obj.insert("method".into(), Value::from(d.method.as_str()));
        obj.insert(
            "confidence".into(),
            Value::from((d.confidence as f64 * 10000.0).round() / 10000.0),
        );
        obj.insert("detail".into(), Value::from(d.detail.clone()));
        serde_json::to_writer(&mut self.w, &Value::Object(obj))?;
        self.w.write_all(b"\n")
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}
