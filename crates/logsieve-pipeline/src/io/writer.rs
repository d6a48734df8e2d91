//! Output: the input row as it came, plus `target_label`, `method`,
//! `confidence` and `detail`. CSV in → CSV out (original bytes kept), JSON
//! lines in → JSON lines out (the object's text kept byte for byte, the
//! output columns spliced in); text in → JSON lines.

use std::io::Write;

use super::{InputRow, JsonObject, Payload, OUTPUT_COLUMNS};
use crate::decision::Decision;

pub trait RowWriter {
    fn write(&mut self, row: &InputRow, d: &Decision) -> std::io::Result<()>;
    fn finish(&mut self) -> std::io::Result<()>;
    /// After a chunk's rows are written, the rows and their decisions (one
    /// each, in order), moved: a writer that keeps them (the dashboard's
    /// aggregates, a report) takes them without copying. The default drops
    /// them.
    fn written(&mut self, rows: Vec<InputRow>, decisions: Vec<Decision>) {
        let _ = (rows, decisions);
    }
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
        w.write_record(&cols).map_err(csv_io)?;
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
        self.w.write_record(&fields).map_err(csv_io)?;
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// A CSV error as an I/O error, keeping the kind of an underlying I/O
/// failure (a closed pipe must still read as `BrokenPipe`).
fn csv_io(e: csv::Error) -> std::io::Error {
    if !e.is_io_error() {
        return std::io::Error::other(e);
    }
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => std::io::Error::other(format!("{other:?}")),
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
        match &row.payload {
            Payload::Json(obj) => write_spliced(&mut self.w, obj, d)?,
            _ => serde_json::to_writer(&mut self.w, &JsonRow { row, d })?,
        }
        self.w.write_all(b"\n")
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// A decision's value for output column `i`, as JSON text.
fn column_json(d: &Decision, i: usize) -> String {
    let v = match i {
        0 => serde_json::to_string(&d.target_label),
        1 => serde_json::to_string(d.method.as_str()),
        2 => serde_json::to_string(&((d.confidence as f64 * 10000.0).round() / 10000.0)),
        _ => serde_json::to_string(&d.detail),
    };
    v.expect("strings and finite numbers serialise")
}

/// The object's own text with the output columns' values replaced where it
/// has them (every occurrence) and the others appended after its last value.
fn write_spliced<W: Write>(w: &mut W, obj: &JsonObject, d: &Decision) -> std::io::Result<()> {
    let text = obj.text.as_str();
    let mut written = [false; 4];
    let mut pos = 0;
    for (k, r) in &obj.fields {
        if let Some(i) = OUTPUT_COLUMNS.iter().position(|c| c == k) {
            w.write_all(&text.as_bytes()[pos..r.start])?;
            w.write_all(column_json(d, i).as_bytes())?;
            pos = r.end;
            written[i] = true;
        }
    }
    w.write_all(&text.as_bytes()[pos..obj.insert_at])?;
    let mut first = obj.fields.is_empty();
    for (i, done) in written.into_iter().enumerate() {
        if !done {
            if !first {
                w.write_all(b",")?;
            }
            first = false;
            write!(w, "\"{}\":{}", OUTPUT_COLUMNS[i], column_json(d, i))?;
        }
    }
    w.write_all(&text.as_bytes()[obj.insert_at..])
}

/// One output object for a row that was not a JSON object, serialised
/// straight from the row and the decision: `line`, `source`, `log_message`
/// (or `line`, `raw`) then the output columns.
struct JsonRow<'a> {
    row: &'a InputRow,
    d: &'a Decision,
}

impl JsonRow<'_> {
    fn put<M: serde::ser::SerializeMap>(&self, m: &mut M, column: usize) -> Result<(), M::Error> {
        let d = self.d;
        let name = OUTPUT_COLUMNS[column];
        match column {
            0 => m.serialize_entry(name, &d.target_label),
            1 => m.serialize_entry(name, d.method.as_str()),
            2 => m.serialize_entry(name, &((d.confidence as f64 * 10000.0).round() / 10000.0)),
            _ => m.serialize_entry(name, &d.detail),
        }
    }
}

impl serde::Serialize for JsonRow<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match &self.row.payload {
            Payload::Raw(text) => {
                m.serialize_entry("line", &self.row.line)?;
                m.serialize_entry("raw", text)?;
            }
            Payload::Csv(_) | Payload::Text | Payload::Json(_) => {
                m.serialize_entry("line", &self.row.line)?;
                m.serialize_entry("source", &self.row.source)?;
                m.serialize_entry("log_message", &self.row.message)?;
            }
        }
        for i in 0..OUTPUT_COLUMNS.len() {
            self.put(&mut m, i)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Method;

    fn decision() -> Decision {
        Decision {
            target_label: "User Action".into(),
            method: Method::Rule,
            confidence: 1.0,
            detail: "rule login".into(),
            template: None,
        }
    }

    fn write_one(row: &InputRow) -> String {
        let mut out = Vec::new();
        JsonlWriter::new(&mut out).write(row, &decision()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_json_row_keeps_its_field_order_and_output_columns_replace_in_place() {
        let obj =
            JsonObject::parse(r#"{"ts":1,"target_label":"old","source":"A","log_message":"m \"q\""}"#.into())
                .unwrap()
                .unwrap();
        let row = InputRow::new(3, "A".into(), "m \"q\"".into(), Payload::Json(obj));
        assert_eq!(
            write_one(&row),
            "{\"ts\":1,\"target_label\":\"User Action\",\"source\":\"A\",\"log_message\":\"m \\\"q\\\"\",\
             \"method\":\"rule\",\"confidence\":1.0,\"detail\":\"rule login\"}\n"
        );
    }

    #[test]
    fn a_json_row_passes_through_byte_for_byte() {
        let text = r#" {"n":123456789012345678901234567890, "z":-0,"a":1,"a":2 ,"detail":null} "#;
        let obj = JsonObject::parse(text.into()).unwrap().unwrap();
        let row = InputRow::new(1, String::new(), String::new(), Payload::Json(obj));
        assert_eq!(
            write_one(&row),
            " {\"n\":123456789012345678901234567890, \"z\":-0,\"a\":1,\"a\":2 ,\"detail\":\"rule login\",\
             \"target_label\":\"User Action\",\"method\":\"rule\",\"confidence\":1.0} \n"
        );
        let empty = JsonObject::parse("{}".into()).unwrap().unwrap();
        let row = InputRow::new(1, String::new(), String::new(), Payload::Json(empty));
        assert!(
            write_one(&row).starts_with("{\"target_label\":"),
            "{}",
            write_one(&row)
        );
    }

    #[test]
    fn a_text_line_becomes_line_source_message_and_the_output_columns() {
        let row = InputRow::new(7, "web".into(), "GET /x 200".into(), Payload::Text);
        assert_eq!(
            write_one(&row),
            "{\"line\":7,\"source\":\"web\",\"log_message\":\"GET /x 200\",\"target_label\":\"User Action\",\
             \"method\":\"rule\",\"confidence\":1.0,\"detail\":\"rule login\"}\n"
        );
    }
}
