//! Names and values into the places PostgreSQL reads them: SQL identifiers and literals,
//! libpq connection strings, `postgresql.conf` values; and names read from the server as
//! bytes, back into text or into a message.
//!
//! Invariant: whatever a name holds, what comes out is read back as that one name (or value),
//! never as syntax; a value that cannot be written safely is an error.

use crate::error::{Error, Result};

/// `name` as an SQL identifier (`my"db` → `"my""db"`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as an SQL string literal, right whatever `standard_conforming_strings` is: as the
/// server's own `quote_literal`, a value with a backslash becomes `E'…'` with backslashes
/// doubled.
pub fn quote_literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// `value` as a quoted value of `postgresql.conf` (backslash escapes, doubled quotes). A
/// value cannot hold a line break there: that is an error.
pub(super) fn conf_literal(value: &str) -> Result<String> {
    if value.contains(['\n', '\r', '\0']) {
        return Err(Error::Other(format!(
            "{value:?} cannot be written into postgresql.conf (it holds a line break); choose \
             a listen address and data root without one"
        )));
    }
    Ok(format!(
        "'{}'",
        value.replace('\\', "\\\\").replace('\'', "''")
    ))
}

/// A libpq connection string naming only the database, for `--dbname=`: safe for any name
/// (`-d <name>` would take a name starting with `-` for an option, and a name with `=` or
/// `postgresql://` for a connection string; the value inside quotes is never expanded).
pub(super) fn dbname_conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A name read from the server as bytes (see `name_bytes` in `catalog.rs`): the name, or its
/// bytes when they are not UTF-8.
pub(super) fn utf8_name(bytes: Vec<u8>) -> std::result::Result<String, Vec<u8>> {
    String::from_utf8(bytes).map_err(|e| e.into_bytes())
}

/// A name's bytes for a message: printable ASCII as it is, every other byte `\xNN`, in
/// double quotes (`"latin1-\xe9t\xe9"`).
pub(super) fn escaped(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("my\"db"), "\"my\"\"db\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        // A backslash: an escape string, right whatever standard_conforming_strings is.
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
        assert_eq!(dbname_conninfo("a b'c\\"), "dbname='a b\\'c\\\\'");
        assert_eq!(dbname_conninfo("--host=x"), "dbname='--host=x'");
        assert_eq!(conf_literal("/tmp/it's\\x").unwrap(), "'/tmp/it''s\\\\x'");
        assert!(conf_literal("a\nb").is_err());
        assert_eq!(escaped(b"latin1-\xe9t\xe9"), "\"latin1-\\xe9t\\xe9\"");
    }
}
