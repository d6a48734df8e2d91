//! Templates as text: the parameters of a line under a template, a template
//! split into literal text and variables, and a template as a regex.

use super::*;

/// The raw text of `line` under each variable (`<*>`, `<NUM>`, ...) of
/// `template`, in order; `None` when the line does not fit the template.
/// Runs of whitespace in the line match the single spaces of the template.
pub fn extract_parameters(template: &str, line: &str) -> Option<Vec<String>> {
    let re = template_regex(template, "(.*?)", true);
    let re = regex::Regex::new(&re).ok()?;
    let caps = re.captures(line.trim())?;
    Some(
        caps.iter()
            .skip(1)
            .map(|m| m.map_or(String::new(), |m| m.as_str().to_string()))
            .collect(),
    )
}

/// Splits a template into literal text and variables.
pub(crate) fn template_pieces(template: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut lit_start = 0;
    let mut i = 0;
    let bytes = template.as_bytes();
    while i < bytes.len() {
        if bytes[i] == b'<' {
            if let Some(end) = template[i + 1..].find('>') {
                let name = &template[i + 1..i + 1 + end];
                if name == "*" || crate::is_placeholder_name(name) {
                    if lit_start < i {
                        pieces.push(Piece::Literal(&template[lit_start..i]));
                    }
                    pieces.push(Piece::Var(&template[i..i + end + 2]));
                    i += end + 2;
                    lit_start = i;
                    continue;
                }
            }
        }
        i += 1;
    }
    if lit_start < template.len() {
        pieces.push(Piece::Literal(&template[lit_start..]));
    }
    pieces
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Literal(&'a str),
    Var(&'a str),
}

/// A regex for `template`: literal text escaped, spaces as `\s+`, each
/// variable as `var` (a group). Anchored when `anchored`.
pub(crate) fn template_regex(template: &str, var: &str, anchored: bool) -> String {
    template_regex_with(template, anchored, |_| Cow::Borrowed(var))
}

pub(crate) fn template_regex_with<'a>(
    template: &str,
    anchored: bool,
    mut var: impl FnMut(usize) -> Cow<'a, str>,
) -> String {
    let mut re = String::new();
    if anchored {
        re.push('^');
    }
    let mut k = 0;
    for piece in template_pieces(template) {
        match piece {
            Piece::Literal(text) => {
                let mut first = true;
                for part in text.split(' ') {
                    if !first {
                        re.push_str(r"\s+");
                    }
                    first = false;
                    re.push_str(&regex::escape(part));
                }
            }
            Piece::Var(_) => {
                re.push_str(&var(k));
                k += 1;
            }
        }
    }
    if anchored {
        re.push('$');
    }
    re
}
