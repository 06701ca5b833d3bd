//! Hostile names: database, role, table and file names an attacker who may create them would
//! pick so that strongbox turns them into options of a tool or into SQL text.
//!
//! Job: one corpus that every engine test runs through every tool invocation (dump, count,
//! check, restore, in-place), so that a new tool call is tested against the same attacks.
//! The corpus is the kinds of issue 12, kind 1: a leading `-` (an option), newlines, quotes of
//! every kind, backslashes, shell syntax (`$(…)`, backticks, `;`), SQL comment starters, names
//! at the engines' length limits, and non-UTF-8 bytes where an engine allows them.
//!
//! Invariant: every name here is one a user with only `CREATE DATABASE` (or `CREATEROLE`) can
//! make on the engine it is offered for; [`mariadb_names`] keeps within MariaDB's 64-character
//! identifiers, [`postgres_names`] within PostgreSQL's 63 bytes.

/// A file a successful shell injection of the corpus would create; tests assert it is absent.
pub const PWNED_FILE: &str = "/tmp/strongbox-pwned";

/// Names valid as PostgreSQL identifiers (at most 63 bytes, no NUL), each hostile in one way.
pub fn postgres_names() -> Vec<String> {
    let mut names: Vec<String> = common().into_iter().filter(|n| n.len() <= 63).collect();
    // The longest name PostgreSQL keeps (63 bytes), starting with an option.
    names.push(format!("-{}", "x".repeat(62)));
    // Multi-byte characters up to the limit.
    names.push("é".repeat(31));
    names
}

/// Names valid as MariaDB database and table names (at most 64 characters, no trailing space,
/// no NUL), each hostile in one way.
pub fn mariadb_names() -> Vec<String> {
    let mut names: Vec<String> = common()
        .into_iter()
        .filter(|n| n.chars().count() <= 64 && !n.ends_with(' '))
        .collect();
    names.push(format!("-{}", "x".repeat(63)));
    names
}

fn common() -> Vec<String> {
    [
        // Options: the example of issue 12 (all databases, host 127.0.0.2) and its relatives.
        "-Ah2130706434",
        "--all-databases",
        "--host=127.0.0.2",
        "-e",
        "--",
        "-",
        // Line breaks: a line-based edit turns the second line into SQL.
        "a\nDROP TABLE x; --",
        "line\r\nbreak",
        // Quotes of every kind, doubled and unbalanced.
        "it's",
        "say \"hi\"",
        "back`tick",
        "''; SELECT 1; --",
        "\"; SELECT 1; --",
        // Backslashes (MariaDB escapes with them; PostgreSQL's standard strings do not).
        "back\\slash",
        "trail\\",
        // Shell syntax.
        "$(touch /tmp/strongbox-pwned)",
        "`touch /tmp/strongbox-pwned`",
        "a;touch /tmp/strongbox-pwned",
        "a|b&c>d<e",
        // SQL comment and psql meta-command starters.
        "/* c */",
        "# hash",
        "\\! touch /tmp/strongbox-pwned",
        // Glob and format characters.
        "*?[a]%s%n{}",
        // Spaces.
        " lead space",
        "tab\there",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// A name with bytes that are not UTF-8, for engines that allow them (PostgreSQL with
/// `SQL_ASCII` encoding keeps identifiers as bytes). Given as bytes, not `String`.
pub fn non_utf8_name() -> Vec<u8> {
    b"latin1-\xe9t\xe9".to_vec()
}
