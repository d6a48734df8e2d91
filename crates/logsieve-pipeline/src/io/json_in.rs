//! JSON lines input: one object per line with `source` and `log_message`.
//!
//! The object is not re-serialised on the way out: the reader keeps the
//! line's text and where each top-level value sits in it, and the writer
//! splices the output columns into that text. So `123456789012345678901234567890`,
//! `-0`, duplicate keys and the spacing come out exactly as they came in.
//! Every line is a row: a blank line, a line that is not an object, and an
//! object whose `log_message` is missing, repeated or not a string are
//! written unclassified with the reason.

use std::io::BufRead;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{clipped_note, read_line, InputError, InputRow, Payload, ReaderOptions, RowReader, BAD_UTF8};

/// A JSON object as read: the line's text and the place of each top-level value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonObject {
    /// The line as read (without its line ending).
    pub text: String,
    /// Each key (unescaped) and the byte range of its value in `text`, in order,
    /// duplicates included.
    pub fields: Vec<(String, Range<usize>)>,
    /// Where new fields go: after the last value, or after `{` when there is none.
    pub insert_at: usize,
}

impl JsonObject {
    /// Parse `text` as one JSON value. `Ok(Err(kind))` when it is valid JSON
    /// but not an object (`kind`: "an array", "null", …).
    pub fn parse(text: String) -> Result<Result<JsonObject, &'static str>, serde_json::Error> {
        let raw: &RawValue = serde_json::from_str(&text)?;
        let body = raw.get();
        let kind = match body.as_bytes().first() {
            Some(b'{') => None,
            Some(b'[') => Some("an array"),
            Some(b'"') => Some("a string"),
            Some(b't' | b'f') => Some("a boolean"),
            Some(b'n') => Some("null"),
            _ => Some("a number"),
        };
        if let Some(kind) = kind {
            return Ok(Err(kind));
        }
        let base = text.as_ptr() as usize;
        let open = body.as_ptr() as usize - base;
        let Entries(entries) = serde_json::from_str(body)?;
        let fields: Vec<(String, Range<usize>)> = entries
            .into_iter()
            .map(|(k, v)| {
                let start = v.get().as_ptr() as usize - base;
                (k, start..start + v.get().len())
            })
            .collect();
        let insert_at = fields.last().map(|(_, r)| r.end).unwrap_or(open + 1);
        Ok(Ok(JsonObject {
            text,
            fields,
            insert_at,
        }))
    }

    /// The raw text of each value under `key`.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, r)| &self.text[r.clone()])
    }
}

/// The top-level entries of an object, values borrowed as raw text.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// What a raw JSON value is, for messages.
fn kind_of(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// JSON lines: one object per line with `source` and `log_message`.
pub struct JsonlReader<R> {
    input: R,
    default_source: Option<String>,
    line: u64,
    buf: Vec<u8>,
    options: ReaderOptions,
}

impl<R: BufRead> JsonlReader<R> {
    pub fn new(input: R, default_source: Option<String>) -> Self {
        Self {
            input,
            default_source,
            line: 0,
            buf: Vec::new(),
            options: ReaderOptions::default(),
        }
    }

    pub fn with_options(mut self, options: ReaderOptions) -> Self {
        self.options = options;
        self
    }

    /// Fill in `row` from an object: its message, its source, or why not.
    fn read_object(&self, row: &mut InputRow, obj: &JsonObject) {
        let line = row.line;
        let messages: Vec<&str> = obj.values("log_message").collect();
        match messages.as_slice() {
            [] => {
                row.unreadable = true;
                row.add_note(format!("line {line}: the object has no `log_message`"));
            }
            [m] if m.starts_with('"') => match serde_json::from_str::<String>(m) {
                Ok(m) => row.message = m,
                Err(e) => {
                    row.unreadable = true;
                    row.add_note(format!("line {line}: `log_message`: {e}"));
                }
            },
            [m] => {
                row.unreadable = true;
                row.add_note(format!(
                    "line {line}: `log_message` is {}, expected a string",
                    kind_of(m)
                ));
            }
            many => {
                row.unreadable = true;
                row.add_note(format!(
                    "line {line}: the object has `log_message` {} times; expected one",
                    many.len()
                ));
            }
        }
        let sources: Vec<&str> = obj.values("source").collect();
        let source = match sources.as_slice() {
            [] => None,
            [s] if s.starts_with('"') => serde_json::from_str::<String>(s).ok(),
            [s] if *s == "null" => None,
            [s] => {
                row.add_note(format!(
                    "line {line}: `source` is {}; its JSON text is used",
                    kind_of(s)
                ));
                Some(s.to_string())
            }
            many => {
                row.unreadable = true;
                row.add_note(format!(
                    "line {line}: the object has `source` {} times; expected one",
                    many.len()
                ));
                None
            }
        };
        row.source = source
            .or_else(|| self.default_source.clone())
            .unwrap_or_default()
            .trim()
            .to_string();
    }
}

impl<R: BufRead> RowReader for JsonlReader<R> {
    fn next_row(&mut self) -> Option<Result<InputRow, InputError>> {
        let l = match read_line(&mut self.input, &mut self.buf, self.options.max_line_bytes) {
            Err(e) => return Some(Err(InputError::new(self.line + 1, format!("read error: {e}")))),
            Ok(None) => return None,
            Ok(Some(l)) => l,
        };
        self.line += 1;
        let line = self.line;
        let mut row = InputRow::new(line, String::new(), String::new(), Payload::Text);
        if l.bad_utf8 {
            row.add_note(format!("line {line}: {BAD_UTF8}"));
        }
        if let (Some(total), Some(limit)) = (l.clipped, self.options.max_line_bytes) {
            row.unreadable = true;
            row.add_note(format!(
                "{}; a cut JSON line cannot be read, so it is not classified",
                clipped_note(line, total, limit)
            ));
            row.payload = Payload::Raw(l.text);
            return Some(Ok(row));
        }
        if l.text.trim().is_empty() {
            row.unreadable = true;
            row.add_note(format!("line {line}: blank line, expected a JSON object"));
            row.payload = Payload::Raw(l.text);
            return Some(Ok(row));
        }
        match JsonObject::parse(l.text) {
            Err(e) => {
                row.unreadable = true;
                row.add_note(format!("line {line} column {}: invalid JSON: {e}", e.column()));
                // The text was moved into the parser; read it again from the buffer.
                row.payload = Payload::Raw(String::from_utf8_lossy(&self.buf).into_owned());
            }
            Ok(Err(kind)) => {
                row.unreadable = true;
                row.add_note(format!("line {line}: expected a JSON object, found {kind}"));
                row.payload = Payload::Raw(String::from_utf8_lossy(&self.buf).into_owned());
            }
            Ok(Ok(obj)) => {
                self.read_object(&mut row, &obj);
                row.payload = Payload::Json(obj);
            }
        }
        Some(Ok(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(input: &str) -> Vec<InputRow> {
        let mut r = JsonlReader::new(input.as_bytes(), None);
        std::iter::from_fn(|| r.next_row()).map(Result::unwrap).collect()
    }

    #[test]
    fn values_are_located_in_the_text() {
        let o = JsonObject::parse(r#" {"a": 1e400, "a":-0 ,"b":{"c":[1]}} "#.into())
            .unwrap()
            .unwrap();
        let vals: Vec<&str> = o.fields.iter().map(|(_, r)| &o.text[r.clone()]).collect();
        assert_eq!(vals, ["1e400", "-0", r#"{"c":[1]}"#]);
        assert_eq!(&o.text[o.insert_at..], "} ");
        let empty = JsonObject::parse("{ }".into()).unwrap().unwrap();
        assert_eq!(empty.insert_at, 1);
    }

    #[test]
    fn every_line_is_a_row_with_a_reason_when_unreadable() {
        let r = rows("{\"source\":\"A\",\"log_message\":\"x\"}\n\n null\n{\"log_message\":5}\n{\"log_message\":\"a\",\"log_message\":\"b\"}\n");
        assert_eq!(r.len(), 5);
        assert!(!r[0].unreadable && r[0].message == "x" && r[0].source == "A");
        assert!(
            r[1].unreadable && r[1].note.contains("blank line"),
            "{}",
            r[1].note
        );
        assert!(r[2].note.contains("found null"), "{}", r[2].note);
        assert!(r[3].note.contains("`log_message` is a number"), "{}", r[3].note);
        assert!(r[4].note.contains("`log_message` 2 times"), "{}", r[4].note);
    }
}
