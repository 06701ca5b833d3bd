//! One statement of ours or of a dump as the server reads it: quoted names and strings
//! (doubled quotes, backslash escapes in strings), bare words and punctuation. What the grants
//! part's reader and the forced load's error names look at.
//!
//! Invariant: a quote, `@`, `.` or keyword inside a quoted name or string is text, never a
//! token of its own.

/// The index just after the quoted name or string that opens at `b[open]`: the quote doubled
/// stands for itself, and in strings (not in backquoted names) a backslash escapes the next
/// byte. None when it does not end.
pub(super) fn skip_quoted(b: &[u8], open: usize) -> Option<usize> {
    let q = b[open];
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            c if c == q => {
                if b.get(i + 1) == Some(&q) {
                    i += 2;
                    continue;
                }
                return Some(i + 1);
            }
            b'\\' if q != b'`' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// A lexeme of one statement, as the server reads it: what `account_tokens` (the grants part's
/// reader) and `statement_object` (the forced load's error names) look at.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Lexeme {
    /// A bare word (keyword or name).
    Word(String),
    /// The text inside quotes `q` (`` ` ``, `'` or `"`), unquoted.
    Quoted(u8, String),
    At,
    Dot,
    /// Any other punctuation.
    Other,
}

pub(super) fn lex(statement: &str) -> Vec<Lexeme> {
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    let b = statement.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'`' | b'\'' | b'"') {
            // An unterminated quote runs to the end (grants_items refuses those anyway).
            let end = skip_quoted(b, i).unwrap_or(b.len() + 1);
            let body = &statement[i + 1..end - 1];
            out.push(Lexeme::Quoted(c, unquote(body, c)));
            i = end;
        } else if is_word(c) {
            let end = b[i..]
                .iter()
                .position(|&c| !is_word(c))
                .map_or(b.len(), |n| i + n);
            out.push(Lexeme::Word(statement[i..end].to_string()));
            i = end;
        } else {
            match c {
                b'@' => out.push(Lexeme::At),
                b'.' => out.push(Lexeme::Dot),
                c if c.is_ascii_whitespace() => {}
                _ => out.push(Lexeme::Other),
            }
            i += 1;
        }
    }
    out
}

/// The text inside quotes `q`: doubled quotes stand for one, and in strings the server's
/// backslash escapes are undone.
fn unquote(body: &str, q: u8) -> String {
    let q = q as char;
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c == q && chars.peek() == Some(&q) {
            chars.next();
            out.push(q);
        } else if c == '\\' && q != '`' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('0') => out.push('\0'),
                Some('b') => out.push('\u{8}'),
                Some('Z') => out.push('\u{1a}'),
                Some(e @ ('%' | '_')) => {
                    out.push('\\');
                    out.push(e);
                }
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// An identifier quoted with `quote` (`"` in PostgreSQL, a backquote in MariaDB) at the start of
/// `s` (just after the opening quote), the quote doubled inside it; returns the name and the
/// rest after the closing quote.
pub(super) fn quoted_identifier(body: &str, quote: char) -> Option<(String, &str)> {
    let mut name = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            let rest = &body[i + c.len_utf8()..];
            if rest.starts_with(quote) {
                name.push(quote);
                chars.next();
                continue;
            }
            return Some((name, rest));
        }
        name.push(c);
    }
    None
}
