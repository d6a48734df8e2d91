//! Labelled data for `train` and `eval`: CSV with `source`, `log_message`
//! and `target_label` (the seed dataset's shape), read with the same
//! forgiving reader as `classify`; rows that cannot be used are errors
//! naming their line, since a silently shorter training set is a bug.

use std::io::BufRead;

use crate::io::{CsvReader, InputError, RowReader};

#[derive(Debug, Clone)]
pub struct LabelledRow {
    pub line: u64,
    pub source: String,
    pub message: String,
    pub label: String,
}

pub fn read_labelled<R: BufRead>(input: R) -> Result<Vec<LabelledRow>, InputError> {
    let mut rdr = CsvReader::new(input, None)?;
    let label_col = rdr
        .columns()
        .iter()
        .position(|h| h.eq_ignore_ascii_case("target_label"))
        .ok_or_else(|| {
            InputError::new(
                1,
                format!(
                    "the header has no `target_label` column (columns: {})",
                    rdr.columns().join(", ")
                ),
            )
        })?;
    let mut out = Vec::new();
    while let Some(row) = rdr.next_row() {
        let row = row?;
        if row.unreadable {
            return Err(InputError::new(row.line, row.note));
        }
        let label = match &row.payload {
            crate::io::Payload::Csv(rec) => rec
                .get(label_col)
                .map(|b| String::from_utf8_lossy(b).trim().to_string()),
            _ => None,
        }
        .filter(|l| !l.is_empty())
        .ok_or_else(|| InputError {
            line: row.line,
            column: Some("target_label".into()),
            message: "missing label".into(),
        })?;
        out.push(LabelledRow {
            line: row.line,
            source: row.source,
            message: row.message,
            label,
        });
    }
    if out.is_empty() {
        return Err(InputError::new(1, "no labelled rows after the header"));
    }
    Ok(out)
}
