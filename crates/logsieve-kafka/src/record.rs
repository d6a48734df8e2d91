//! One Kafka record in, one row out: a record's value read as a JSON object
//! (`source`, `log_message`, other fields kept byte for byte) or as plain
//! text, and the output value written from the row and its decision by the
//! same writer `classify` uses for JSON lines.

use logsieve_pipeline::io::{InputRow, JsonlReader, JsonlWriter, Payload, RowReader, RowWriter};
use logsieve_pipeline::Decision;

use crate::config::RecordFormat;

/// The record header that names a text record's source.
pub const SOURCE_HEADER: &str = "source";

/// Read a record's value as a row. `line` is the record's offset (it is
/// the `line` field of text and unreadable records' output). A row that
/// cannot be classified (no value, not JSON, not an object, no string
/// `log_message`) comes back `unreadable` with the reason in `note`.
pub fn row_from_value(
    format: RecordFormat,
    value: Option<&[u8]>,
    source_header: Option<&[u8]>,
    default_source: Option<&str>,
    offset: i64,
) -> InputRow {
    let line = u64::try_from(offset).unwrap_or(0);
    let header_source = source_header.map(|s| String::from_utf8_lossy(s).trim().to_string());
    let source = header_source.or_else(|| default_source.map(str::to_string));
    let Some(value) = value else {
        let mut row = InputRow::new(
            line,
            source.unwrap_or_default(),
            String::new(),
            Payload::Raw(String::new()),
        );
        row.unreadable = true;
        row.note = "the record has no value (a tombstone)".into();
        return row;
    };
    match format {
        RecordFormat::Text => {
            let mut text = value;
            while let [rest @ .., b'\n' | b'\r'] = text {
                text = rest;
            }
            let message = String::from_utf8_lossy(text);
            let bad = matches!(message, std::borrow::Cow::Owned(_));
            let mut row = InputRow::new(
                line,
                source.unwrap_or_default(),
                message.into_owned(),
                Payload::Text,
            );
            if bad {
                row.note = "invalid UTF-8, replaced with U+FFFD".into();
            }
            row
        }
        RecordFormat::Jsonl => {
            // One record is one object: line breaks between its tokens are
            // whitespace (JSON strings cannot hold raw ones).
            let owned;
            let value = if value.iter().any(|b| matches!(b, b'\n' | b'\r')) {
                owned = value
                    .iter()
                    .map(|&b| if matches!(b, b'\n' | b'\r') { b' ' } else { b })
                    .collect::<Vec<u8>>();
                &owned[..]
            } else {
                value
            };
            let mut reader = JsonlReader::new(value, source);
            let mut row = match reader.next_row() {
                Some(Ok(row)) => row,
                Some(Err(e)) => {
                    let mut row =
                        InputRow::new(line, String::new(), String::new(), Payload::Raw(String::new()));
                    row.unreadable = true;
                    row.note = e.message;
                    row
                }
                None => {
                    let mut row =
                        InputRow::new(line, String::new(), String::new(), Payload::Raw(String::new()));
                    row.unreadable = true;
                    row.note = "empty value, expected a JSON object".into();
                    row
                }
            };
            // The reader numbers lines within its input: one line here.
            row.note = row
                .note
                .replace("line 1: ", "")
                .replace("line 1 column ", "column ")
                .replace("blank line", "blank value");
            row.line = line;
            row
        }
    }
}

/// The output value for a row and its decision (one JSON object, no line break).
pub fn output_value(row: &InputRow, d: &Decision, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    JsonlWriter::new(&mut *buf).write(row, d)?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use logsieve_pipeline::Method;

    fn label(d: &str) -> Decision {
        Decision {
            target_label: d.into(),
            method: Method::Rule,
            confidence: 1.0,
            detail: "rule r".into(),
            template: None,
        }
    }

    #[test]
    fn json_records_keep_their_fields_and_gain_the_label() {
        let v = br#"{"id": 7, "source":"ModernCRM",
  "log_message":"User User1 logged in.","big":123456789012345678901234567890}"#;
        let row = row_from_value(RecordFormat::Jsonl, Some(v), None, None, 42);
        assert!(!row.unreadable, "{}", row.note);
        assert_eq!(
            (row.source.as_str(), row.message.as_str()),
            ("ModernCRM", "User User1 logged in.")
        );
        let mut out = Vec::new();
        output_value(&row, &label("User Action"), &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("123456789012345678901234567890") && s.contains(r#""id": 7"#),
            "{s}"
        );
        let j: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(j["target_label"], "User Action");
        assert_eq!(j["method"], "rule");
    }

    #[test]
    fn bad_records_say_why_without_a_line_number() {
        for (v, why) in [
            (&b"{not json"[..], "invalid JSON"),
            (b"[1,2]", "expected a JSON object, found an array"),
            (br#"{"log_message": 5}"#, "`log_message` is a number"),
            (br#"{"source":"a"}"#, "no `log_message`"),
            (b"", "empty value"),
            (b"  ", "blank value"),
        ] {
            let row = row_from_value(RecordFormat::Jsonl, Some(v), None, None, 3);
            assert!(row.unreadable, "{v:?}");
            assert!(
                row.note.contains(why) && !row.note.contains("line 1"),
                "{v:?}: {}",
                row.note
            );
        }
        let row = row_from_value(RecordFormat::Jsonl, None, None, None, 3);
        assert!(row.unreadable && row.note.contains("tombstone"));
    }

    #[test]
    fn text_records_take_their_source_from_the_header() {
        let row = row_from_value(
            RecordFormat::Text,
            Some(b"disk full\n"),
            Some(b"nova"),
            Some("dflt"),
            9,
        );
        assert_eq!((row.source.as_str(), row.message.as_str()), ("nova", "disk full"));
        let row = row_from_value(RecordFormat::Text, Some(b"\xff ok"), None, Some("dflt"), 9);
        assert_eq!(row.source, "dflt");
        assert!(row.note.contains("UTF-8") && !row.unreadable);
        let mut out = Vec::new();
        output_value(&row, &label("Error"), &mut out).unwrap();
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["line"], 9);
        assert_eq!(j["source"], "dflt");
    }
}
