//! Names and values into MariaDB's SQL (backquoted identifiers, hex literals), and the
//! client's batch output back into text.
//!
//! Invariant: whatever a name holds, it reaches SQL only backquoted (backquotes doubled) or as
//! hex digits compared with `HEX(column)`, which mean the same in every `sql_mode`.

use crate::error::{Error, Result};

/// `name` as an identifier (`` my`db `` → `` `my``db` ``). Backquotes mean the same in every
/// `sql_mode`, and nothing but a backquote is special inside them.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `value`'s UTF-8 bytes as uppercase hex digits in a string literal, to compare with
/// `HEX(column)`: nothing in it is special in any `sql_mode`.
pub(super) fn hex_literal(value: &str) -> String {
    format!("'{}'", hex::encode_upper(value))
}

/// Undoes the escaping of the client's batch mode (`\\`, `\t`, `\n`, `\0`).
pub(super) fn unescape_batch(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Decodes a `HEX()` column.
pub(super) fn unhex(field: &str) -> Result<String> {
    let bytes = hex::decode(field.trim()).map_err(|_| {
        Error::Other(format!(
            "the server returned {field:?} where hex digits were expected"
        ))
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::conn::parse_rows;

    #[test]
    fn batch_fields_are_unescaped() {
        assert_eq!(unescape_batch(r"a\tb\nc\\d\0"), "a\tb\nc\\d\0");
        assert_eq!(
            parse_rows("1\tx\\ty\n\n2\tz\n"),
            vec![vec!["1", "x\ty"], vec!["2", "z"]]
        );
    }
}
