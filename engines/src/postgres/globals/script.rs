//! Reading the SQL of `pg_dumpall --globals-only` statement by statement, the way the server's
//! own lexer (`scan.l`) and psql read it, so that a restore can leave out whole statements
//! (the `CREATE ROLE` of a role that exists, the attributes of the agent's own role) without
//! ever editing SQL text.
//!
//! Job: [`parse`] cuts the script into statements at the `;` that ends each, knowing every
//! way PostgreSQL quotes: double-quoted identifiers (`""` inside), string literals (`''`
//! inside; backslash escapes in `E'…'`, and in `'…'` while `standard_conforming_strings` is
//! off, which the script's own `SET` statements switch), `B'…'`/`X'…'`, `U&'…'`, dollar
//! quotes (`$tag$…$tag$`), `--` comments to the end of the line and nested `/* */` comments.
//! A name may hold newlines, quotes, semicolons and comment starters: inside its quotes they
//! are text, never a boundary. Each statement comes back whole, with what it is: a role
//! statement carries the role it names, unquoted as the server reads it.
//!
//! Invariants:
//! - **Whole statements or nothing.** The script is read to its end before a caller applies
//!   anything; any doubt (an unterminated quote or comment, a psql command other than
//!   `\restrict`/`\unrestrict`, a backslash outside quotes, a statement that
//!   `pg_dumpall --globals-only` never writes, a role named in a way it never writes) is an
//!   error, so a script that is cut off or not pg_dumpall's is refused, not half applied.
//! - **Only what pg_dumpall writes.** `SET <parameter>` (not `SET ROLE`/`SESSION
//!   AUTHORIZATION`), `CREATE`/`ALTER ROLE`, `CREATE`/`ALTER TABLESPACE`, `COMMENT ON
//!   ROLE`/`TABLESPACE`, `SECURITY LABEL`, `GRANT`, `REVOKE`, and psql's `\restrict` and
//!   `\unrestrict`. A role is named quoted, or bare when it is `[a-z_][a-z0-9_]*`, as
//!   pg_dumpall's `fmtId` writes it; `CURRENT_USER`, `CURRENT_ROLE`, `SESSION_USER` and `ALL`
//!   are recognised as what they mean.

/// What a globals script holds that a restore cannot apply as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobalsError {
    #[error(
        "the globals part is not UTF-8 (byte {offset}): this agent applies only globals \
         dumped in UTF-8, as it dumps them; apply this backup's globals by hand with psql \
         (strongbox backup download), then restore without them"
    )]
    NotUtf8 { offset: usize },
    #[error(
        "the globals part ends inside {what} that starts on line {line}: the part is cut \
         off or not pg_dumpall's output; nothing of it was applied"
    )]
    Unterminated { what: &'static str, line: usize },
    #[error(
        "line {line} of the globals part has a backslash outside quotes inside a statement \
         ({statement}), which pg_dumpall never writes; nothing of it was applied"
    )]
    Backslash { line: usize, statement: String },
    #[error(
        "line {line} of the globals part is the psql command {command}, but pg_dumpall \
         --globals-only writes no psql command other than \\restrict and \\unrestrict; \
         nothing of it was applied - check where this backup came from"
    )]
    PsqlCommand { line: usize, command: String },
    #[error(
        "line {line} of the globals part holds a statement that pg_dumpall --globals-only \
         never writes ({statement}); nothing of it was applied - check where this backup \
         came from"
    )]
    Unexpected { line: usize, statement: String },
    #[error(
        "line {line} of the globals part names a role in a way pg_dumpall never writes \
         ({statement}); nothing of it was applied - check where this backup came from"
    )]
    RoleName { line: usize, statement: String },
    #[error(
        "line {line} of the globals part changes standard_conforming_strings in a way \
         pg_dumpall never writes ({statement}); nothing of it was applied"
    )]
    StandardStrings { line: usize, statement: String },
}

/// A role as a statement names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleRef {
    /// A role by name, as the server reads it (quotes undone, a bare name folded).
    Named(String),
    /// `CURRENT_USER`, `CURRENT_ROLE` or `SESSION_USER`: the role that applies the script.
    Current,
    /// `ALL` (`ALTER ROLE ALL SET …`): every role.
    All,
}

/// What a statement of the globals script is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `\restrict`/`\unrestrict`: psql's guard against commands smuggled into a dump;
    /// nothing for the server.
    PsqlGuard,
    /// `SET …`; `standard_conforming_strings` when it sets that.
    Set { standard_strings: Option<bool> },
    /// `CREATE ROLE <role> …`.
    CreateRole(RoleRef),
    /// `ALTER ROLE <role> …`; `attributes` unless it is `… SET`, `… RESET` or
    /// `… IN DATABASE …` (a setting): attributes include the password and the name.
    AlterRole { role: RoleRef, attributes: bool },
    /// `CREATE TABLESPACE <name> OWNER <owner> LOCATION '…'`: a restore makes the
    /// tablespace under its own folder instead (the location is the source's).
    CreateTablespace { name: String, owner: String },
    /// Any other statement pg_dumpall writes (grants, tablespaces, comments, labels).
    Other,
}

/// One statement of the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    /// The line (from 1) its first token is on.
    pub line: usize,
    /// Its text from its first token to its `;` (included); comments before it are
    /// left out.
    pub text: &'a str,
    pub kind: Kind,
}

/// The statements of `script`, in order (see the module's doc).
pub fn parse(script: &[u8]) -> Result<Vec<Statement<'_>>, GlobalsError> {
    let text = std::str::from_utf8(script).map_err(|e| GlobalsError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut lexer = Lexer {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        standard_strings: true,
        lines: Lines { pos: 0, line: 1 },
    };
    let mut out = Vec::new();
    loop {
        lexer.skip_blank()?;
        let start = lexer.pos;
        let line = lexer.line_at(start);
        let Some(first) = lexer.token()? else {
            return Ok(out);
        };
        match first {
            // An empty statement.
            Token::Semicolon => continue,
            Token::Backslash => {
                let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
                lexer.pos = end;
                let command = text[start..end].trim_end();
                let name = command.split_ascii_whitespace().next().unwrap_or_default();
                if name != "\\restrict" && name != "\\unrestrict" {
                    return Err(GlobalsError::PsqlCommand {
                        line,
                        command: preview(command),
                    });
                }
                out.push(Statement {
                    line,
                    text: command,
                    kind: Kind::PsqlGuard,
                });
                continue;
            }
            _ => {}
        }
        let mut head = vec![first];
        let mut end = lexer.pos;
        loop {
            lexer.skip_blank()?;
            match lexer.token()? {
                None => break,
                Some(Token::Semicolon) => {
                    end = lexer.pos;
                    break;
                }
                Some(Token::Backslash) => {
                    return Err(GlobalsError::Backslash {
                        line,
                        statement: preview(&text[start..lexer.pos]),
                    })
                }
                Some(t) => {
                    if head.len() < HEAD_TOKENS {
                        head.push(t);
                    }
                    end = lexer.pos;
                }
            }
        }
        let statement = &text[start..end];
        let kind = classify(&head).map_err(|why| why.error(line, preview(statement)))?;
        if let Kind::Set {
            standard_strings: Some(on),
        } = kind
        {
            lexer.standard_strings = on;
        }
        out.push(Statement {
            line,
            text: statement,
            kind,
        });
    }
}

/// How many tokens of a statement [`classify`] looks at (more are never kept).
const HEAD_TOKENS: usize = 6;

/// Why a statement was refused, before its line and text are known.
enum Refusal {
    Unexpected,
    RoleName,
    StandardStrings,
}

impl Refusal {
    fn error(self, line: usize, statement: String) -> GlobalsError {
        match self {
            Refusal::Unexpected => GlobalsError::Unexpected { line, statement },
            Refusal::RoleName => GlobalsError::RoleName { line, statement },
            Refusal::StandardStrings => GlobalsError::StandardStrings { line, statement },
        }
    }
}

/// What a statement is, from its first tokens (at most [`HEAD_TOKENS`]).
fn classify(head: &[Token]) -> Result<Kind, Refusal> {
    let word = |i: usize| match head.get(i) {
        Some(Token::Word(w)) => Some(w.as_str()),
        _ => None,
    };
    match (word(0), word(1)) {
        // `SET <parameter> = | TO <value>`, but not the forms that change who runs the
        // rest (`SET ROLE`, `SET SESSION AUTHORIZATION`), which pg_dumpall never writes.
        (Some("set"), Some(parameter)) => {
            let to = matches!(head.get(2), Some(Token::Char('='))) || word(2) == Some("to");
            if !to
                || matches!(
                    parameter,
                    "role" | "session_authorization" | "session" | "local" | "transaction"
                )
            {
                return Err(Refusal::Unexpected);
            }
            if parameter != "standard_conforming_strings" {
                return Ok(Kind::Set {
                    standard_strings: None,
                });
            }
            let value = match head.get(3) {
                Some(Token::Word(v)) | Some(Token::Str(v)) => v.to_ascii_lowercase(),
                _ => String::new(),
            };
            let on = match value.as_str() {
                "on" | "true" => true,
                "off" | "false" => false,
                _ => return Err(Refusal::StandardStrings),
            };
            if head.len() != 4 {
                return Err(Refusal::StandardStrings);
            }
            Ok(Kind::Set {
                standard_strings: Some(on),
            })
        }
        (Some("create"), Some("role")) => Ok(Kind::CreateRole(role(head)?)),
        (Some("alter"), Some("role")) => {
            let role = role(head)?;
            let attributes = !matches!(word(3), Some("set" | "reset" | "in"));
            Ok(Kind::AlterRole { role, attributes })
        }
        // `CREATE TABLESPACE <name> OWNER <role> LOCATION '…'`, as pg_dumpall writes it.
        (Some("create"), Some("tablespace")) => {
            if word(3) != Some("owner") || word(5) != Some("location") {
                return Err(Refusal::Unexpected);
            }
            Ok(Kind::CreateTablespace {
                name: bare_or_quoted(head.get(2))?,
                owner: bare_or_quoted(head.get(4))?,
            })
        }
        (Some("alter"), Some("tablespace")) => Ok(Kind::Other),
        (Some("comment"), Some("on")) if matches!(word(2), Some("role" | "tablespace")) => {
            Ok(Kind::Other)
        }
        (Some("security"), Some("label")) | (Some("grant" | "revoke"), _) => Ok(Kind::Other),
        _ => Err(Refusal::Unexpected),
    }
}

/// A name as pg_dumpall's `fmtId` writes it: quoted, or bare when it is
/// `[a-z_][a-z0-9_]*`.
fn bare_or_quoted(token: Option<&Token>) -> Result<String, Refusal> {
    match token {
        Some(Token::Ident(name)) => Ok(name.clone()),
        Some(Token::Word(w))
            if w.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
        {
            Ok(w.clone())
        }
        _ => Err(Refusal::RoleName),
    }
}

/// The role a `CREATE ROLE`/`ALTER ROLE` statement names: its third token, which a word
/// (or the statement's end) must follow.
fn role(head: &[Token]) -> Result<RoleRef, Refusal> {
    if !matches!(head.get(3), None | Some(Token::Word(_))) {
        return Err(Refusal::RoleName);
    }
    match head.get(2) {
        Some(Token::Ident(name)) => Ok(RoleRef::Named(name.clone())),
        Some(Token::Word(w)) => match w.as_str() {
            "current_user" | "current_role" | "session_user" => Ok(RoleRef::Current),
            "all" => Ok(RoleRef::All),
            // pg_dumpall leaves only these names bare.
            _ if w.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
            {
                Ok(RoleRef::Named(w.clone()))
            }
            _ => Err(Refusal::RoleName),
        },
        _ => Err(Refusal::RoleName),
    }
}

/// The start of `text` for a message: at most 80 characters, escaped (newlines show as
/// `\n`), so a name cannot forge lines of a log or an error.
pub fn preview(text: &str) -> String {
    let cut: String = text.chars().take(80).collect();
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// A token of SQL, as far as cutting statements and classifying them needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare keyword or identifier, its ASCII letters folded to lower case (as the server
    /// folds them).
    Word(String),
    /// A double-quoted identifier, its doubled quotes undone.
    Ident(String),
    /// A `U&"…"` identifier, whose escapes are not undone here: no role is read from it.
    UnicodeIdent,
    /// A string literal of any kind, its content as written between the quotes.
    Str(String),
    /// A number or a parameter (`$1`).
    Number,
    Semicolon,
    /// A backslash outside quotes: a psql command.
    Backslash,
    /// Any other character outside quotes (operators, punctuation).
    Char(char),
}

/// Line numbers of positions met in increasing order.
struct Lines {
    pos: usize,
    line: usize,
}

struct Lexer<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Whether `'…'` takes backslashes literally (`standard_conforming_strings`).
    standard_strings: bool,
    lines: Lines,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

impl Lexer<'_> {
    fn at(&self, i: usize) -> Option<u8> {
        self.bytes.get(self.pos + i).copied()
    }

    fn line_at(&mut self, pos: usize) -> usize {
        let Lines { pos: from, line } = self.lines;
        let line = line + memchr::memchr_iter(b'\n', &self.bytes[from..pos]).count();
        self.lines = Lines { pos, line };
        line
    }

    fn unterminated(&mut self, what: &'static str, start: usize) -> GlobalsError {
        GlobalsError::Unterminated {
            what,
            line: self.line_at(start),
        }
    }

    /// Skips white space and comments (`--` to the end of the line, nested `/* */`).
    fn skip_blank(&mut self) -> Result<(), GlobalsError> {
        loop {
            match (self.at(0), self.at(1)) {
                (Some(b), _) if is_space(b) => self.pos += 1,
                (Some(b'-'), Some(b'-')) => {
                    self.pos = memchr::memchr2(b'\n', b'\r', &self.bytes[self.pos..])
                        .map_or(self.bytes.len(), |i| self.pos + i);
                }
                (Some(b'/'), Some(b'*')) => {
                    let start = self.pos;
                    self.pos += 2;
                    let mut depth = 1;
                    while depth > 0 {
                        match (self.at(0), self.at(1)) {
                            (None, _) => return Err(self.unterminated("a comment", start)),
                            (Some(b'/'), Some(b'*')) => {
                                depth += 1;
                                self.pos += 2;
                            }
                            (Some(b'*'), Some(b'/')) => {
                                depth -= 1;
                                self.pos += 2;
                            }
                            _ => self.pos += 1,
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// The next token; white space and comments must have been skipped.
    fn token(&mut self) -> Result<Option<Token>, GlobalsError> {
        let Some(b) = self.at(0) else {
            return Ok(None);
        };
        let start = self.pos;
        let token = match b {
            b';' => {
                self.pos += 1;
                Token::Semicolon
            }
            b'\\' => {
                self.pos += 1;
                Token::Backslash
            }
            b'"' => {
                self.pos += 1;
                Token::Ident(self.quoted(b'"', false, "a quoted identifier", start)?)
            }
            b'\'' => {
                self.pos += 1;
                let escapes = !self.standard_strings;
                Token::Str(self.quoted(b'\'', escapes, "a string", start)?)
            }
            b'$' => self.dollar(start)?,
            b'0'..=b'9' => {
                self.number();
                Token::Number
            }
            _ if is_ident_start(b) => self.word(start)?,
            _ => {
                // Only ASCII is left: every other byte starts an identifier.
                self.pos += 1;
                Token::Char(char::from(b))
            }
        };
        Ok(Some(token))
    }

    /// The body of a quoted token after its opening `quote`, up to the closing one: a
    /// doubled quote is one quote; with `escapes`, a backslash takes the next byte as it
    /// is. Returns the text inside, doubled quotes undone.
    fn quoted(
        &mut self,
        quote: u8,
        escapes: bool,
        what: &'static str,
        start: usize,
    ) -> Result<String, GlobalsError> {
        let mut content = String::new();
        let mut from = self.pos;
        loop {
            let found = if escapes {
                memchr::memchr2(quote, b'\\', &self.bytes[self.pos..])
            } else {
                memchr::memchr(quote, &self.bytes[self.pos..])
            };
            let Some(i) = found else {
                return Err(self.unterminated(what, start));
            };
            self.pos += i;
            if self.at(0) == Some(b'\\') {
                // The escaped byte is ASCII or starts a character whose other bytes are
                // not ASCII: either way no quote.
                if self.at(1).is_none() {
                    return Err(self.unterminated(what, start));
                }
                self.pos += 2;
                continue;
            }
            if self.at(1) == Some(quote) {
                content.push_str(&self.text[from..=self.pos]);
                self.pos += 2;
                from = self.pos;
                continue;
            }
            content.push_str(&self.text[from..self.pos]);
            self.pos += 1;
            return Ok(content);
        }
    }

    /// A token starting with `$`: a dollar-quoted string (`$$…$$`, `$tag$…$tag$`), a
    /// parameter (`$1`), or a lone `$`.
    fn dollar(&mut self, start: usize) -> Result<Token, GlobalsError> {
        let mut end = self.pos + 1;
        if self.bytes.get(end).is_some_and(|b| b.is_ascii_digit()) {
            while self.bytes.get(end).is_some_and(|b| b.is_ascii_digit()) {
                end += 1;
            }
            self.pos = end;
            return Ok(Token::Number);
        }
        if self.bytes.get(end).copied().is_some_and(is_ident_start) {
            while self
                .bytes
                .get(end)
                .is_some_and(|&b| is_ident_start(b) || b.is_ascii_digit())
            {
                end += 1;
            }
        }
        if self.bytes.get(end) != Some(&b'$') {
            // `$tag` without its closing `$` is a lone `$` (the server then fails).
            self.pos += 1;
            return Ok(Token::Char('$'));
        }
        let delimiter = &self.text[self.pos..=end];
        let body = end + 1;
        match self.text[body..].find(delimiter) {
            Some(i) => {
                self.pos = body + i + delimiter.len();
                Ok(Token::Str(self.text[body..body + i].to_string()))
            }
            None => Err(self.unterminated("a dollar-quoted string", start)),
        }
    }

    /// A number: digits, a fraction, an exponent.
    fn number(&mut self) {
        while self
            .at(0)
            .is_some_and(|b| b.is_ascii_digit() || b == b'.' || b == b'_')
        {
            self.pos += 1;
        }
        let exponent = matches!(self.at(0), Some(b'e' | b'E'))
            && (self.at(1).is_some_and(|b| b.is_ascii_digit())
                || (matches!(self.at(1), Some(b'+' | b'-'))
                    && self.at(2).is_some_and(|b| b.is_ascii_digit())));
        if exponent {
            self.pos += 2;
            while self.at(0).is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
        }
    }

    /// A word, or the string or identifier a one-letter prefix opens: `E'…'` (backslash
    /// escapes), `B'…'`/`X'…'` (up to the next quote), `U&'…'` (doubled quotes, no
    /// escapes), `U&"…"` (doubled quotes). (`N'…'` is the word `n` and a string.)
    fn word(&mut self, start: usize) -> Result<Token, GlobalsError> {
        while self.at(0).is_some_and(is_ident_cont) {
            self.pos += 1;
        }
        let word = self.text[start..self.pos].to_ascii_lowercase();
        match (word.as_str(), self.at(0), self.at(1)) {
            ("e", Some(b'\''), _) => {
                self.pos += 1;
                Ok(Token::Str(self.quoted(b'\'', true, "a string", start)?))
            }
            ("b" | "x", Some(b'\''), _) => {
                self.pos += 1;
                match memchr::memchr(b'\'', &self.bytes[self.pos..]) {
                    Some(i) => {
                        let content = self.text[self.pos..self.pos + i].to_string();
                        self.pos += i + 1;
                        Ok(Token::Str(content))
                    }
                    None => Err(self.unterminated("a bit string", start)),
                }
            }
            ("u", Some(b'&'), Some(b'\'')) => {
                self.pos += 2;
                Ok(Token::Str(self.quoted(b'\'', false, "a string", start)?))
            }
            ("u", Some(b'&'), Some(b'"')) => {
                self.pos += 2;
                self.quoted(b'"', false, "a quoted identifier", start)?;
                Ok(Token::UnicodeIdent)
            }
            _ => Ok(Token::Word(word)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, GlobalsError, Kind, RoleRef, Statement};
    use crate::postgres::globals::tablespace_dir_name;
    use crate::postgres::quote::{quote_ident, quote_literal};

    /// `name` as pg_dumpall's `fmtId` writes it: bare when it is a plain lower-case word,
    /// else double-quoted with quotes doubled.
    fn fmt_id(name: &str) -> String {
        let bare = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if bare {
            name.to_string()
        } else {
            quote_ident(name)
        }
    }

    /// What pg_dumpall 15 writes for a role `name` with a password, a comment, a setting and
    /// a membership; the comment lines carry the name with line breaks made spaces, as
    /// pg_dumpall does since 15.14.
    fn dumped_role(name: &str) -> String {
        let id = fmt_id(name);
        let in_comment = name.replace(['\n', '\r'], " ");
        format!(
            "CREATE ROLE {id};\n\
             ALTER ROLE {id} WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN \
             NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2Vy';\n\
             COMMENT ON ROLE {id} IS {};\n\
             \n--\n-- User Config \"{in_comment}\"\n--\n\n\
             ALTER ROLE {id} SET work_mem TO '8MB';\n\
             GRANT mallory TO {id} GRANTED BY postgres;\n",
            quote_literal(name)
        )
    }

    fn kinds(statements: &[Statement<'_>]) -> Vec<Kind> {
        statements.iter().map(|s| s.kind.clone()).collect()
    }

    fn named(name: &str) -> RoleRef {
        RoleRef::Named(name.to_string())
    }

    /// Checks that the statements of `dumped_role(name)` come back whole, naming `name`.
    fn assert_role_statements(name: &str) {
        let script = dumped_role(name);
        let statements = parse(script.as_bytes()).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(
            kinds(&statements),
            [
                Kind::CreateRole(named(name)),
                Kind::AlterRole {
                    role: named(name),
                    attributes: true
                },
                Kind::Other,
                Kind::AlterRole {
                    role: named(name),
                    attributes: false
                },
                Kind::Other,
            ],
            "{name:?}"
        );
        let id = fmt_id(name);
        assert_eq!(statements[0].text, format!("CREATE ROLE {id};"), "{name:?}");
        assert!(statements[4]
            .text
            .starts_with(&format!("GRANT mallory TO {id} ")));
        // Every statement is a piece of the script, and nothing but comments and white space
        // lies between them.
        let mut rest = script.as_str();
        for s in &statements {
            let at = rest.find(s.text).unwrap();
            assert!(
                rest[..at]
                    .lines()
                    .all(|l| l.trim().is_empty() || l.starts_with("--")),
                "{name:?}: {:?} between statements",
                &rest[..at]
            );
            rest = &rest[at + s.text.len()..];
        }
    }

    #[test]
    fn every_hostile_name_stays_inside_its_statements() {
        let mut names = strongbox_integration::hostile::postgres_names();
        names.extend(
            [
                // The exploit of issue 12: a line edit made its first line SQL.
                ";COPY(SELECT)TO PROGRAM'>/tmp/sbxpw';\nALTER ROLE postgres WITH ",
                "x\";\nCREATE ROLE postgres;\n--",
                "a\nALTER ROLE postgres WITH NOLOGIN",
                "\"",
                "\"\"",
                "';",
                "$$",
                "$a$;$a$",
                "/*",
                "*/;",
                "--",
                "\\",
                "E'",
                "U&\"",
                "\\restrict x\n\\! id",
                "Postgres",
                "select",
            ]
            .map(String::from),
        );
        for name in &names {
            assert_role_statements(name);
        }
    }

    #[test]
    fn random_names_stay_inside_their_statements() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "\"'\\;$-/*\n\r\t aA_1&Ué`#%{}()=,.:".chars().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for _ in 0..5000 {
            let len = rng.gen_range(1..=20);
            let name: String = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            assert_role_statements(&name);
        }
    }

    #[test]
    fn a_real_globals_dump_is_read_statement_by_statement() {
        let script = "--\n-- PostgreSQL database cluster dump\n--\n\n\
            \\restrict XQN9qS8Uw7pzD03Q\n\n\
            SET default_transaction_read_only = off;\n\n\
            SET client_encoding = 'UTF8';\n\
            SET standard_conforming_strings = on;\n\n\
            --\n-- Roles\n--\n\n\
            CREATE ROLE \"a\nb\"\"c\";\n\
            ALTER ROLE \"a\nb\"\"c\" WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$4096:x';\n\
            CREATE ROLE postgres;\n\
            ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;\n\
            CREATE ROLE \"select\";\n\
            COMMENT ON ROLE mallory IS 'hi';\n\n\
            --\n-- User Config \"a b\"\"c\"\n--\n\n\
            ALTER ROLE \"a\nb\"\"c\" SET work_mem TO '1MB';\n\
            ALTER ROLE mallory IN DATABASE postgres SET work_mem TO '9MB';\n\
            GRANT mallory TO \"a\nb\"\"c\" GRANTED BY postgres;\n\
            GRANT SET ON PARAMETER work_mem TO mallory;\n\
            CREATE TABLESPACE ts OWNER postgres LOCATION '/tmp/pgt';\n\n\
            \\unrestrict XQN9qS8Uw7pzD03Q\n\n\
            --\n-- PostgreSQL database cluster dump complete\n--\n\n";
        let statements = parse(script.as_bytes()).unwrap();
        let odd = "a\nb\"c";
        assert_eq!(
            kinds(&statements),
            [
                Kind::PsqlGuard,
                Kind::Set {
                    standard_strings: None
                },
                Kind::Set {
                    standard_strings: None
                },
                Kind::Set {
                    standard_strings: Some(true)
                },
                Kind::CreateRole(named(odd)),
                Kind::AlterRole {
                    role: named(odd),
                    attributes: true
                },
                Kind::CreateRole(named("postgres")),
                Kind::AlterRole {
                    role: named("postgres"),
                    attributes: true
                },
                Kind::CreateRole(named("select")),
                Kind::Other,
                Kind::AlterRole {
                    role: named(odd),
                    attributes: false
                },
                Kind::AlterRole {
                    role: named("mallory"),
                    attributes: false
                },
                Kind::Other,
                Kind::Other,
                Kind::CreateTablespace {
                    name: "ts".into(),
                    owner: "postgres".into()
                },
                Kind::PsqlGuard,
            ]
        );
        assert_eq!(statements[0].text, "\\restrict XQN9qS8Uw7pzD03Q");
        assert_eq!(statements[0].line, 5);
        assert_eq!(statements[4].text, "CREATE ROLE \"a\nb\"\"c\";");
        assert_eq!(statements[4].line, 16);
        assert_eq!(statements[5].line, 18);
    }

    #[test]
    fn a_tablespace_is_read_with_its_name_and_owner() {
        let statements =
            parse(b"CREATE TABLESPACE \"fast;\ndisk\" OWNER \"A b\" LOCATION '/x';\n").unwrap();
        assert_eq!(
            kinds(&statements),
            [Kind::CreateTablespace {
                name: "fast;\ndisk".into(),
                owner: "A b".into()
            }]
        );
        assert!(parse(b"CREATE TABLESPACE ts LOCATION '/x';").is_err());
        assert!(parse(b"CREATE TABLESPACE 'ts' OWNER postgres LOCATION '/x';").is_err());
        assert_eq!(tablespace_dir_name("ts_fast-1", 3), "ts_fast-1");
        assert_eq!(tablespace_dir_name("../etc", 3), "~3");
        assert_eq!(tablespace_dir_name("", 4), "~4");
        assert_eq!(tablespace_dir_name("a/b", 5), "~5");
    }

    #[test]
    fn every_way_of_quoting_is_read_as_the_server_reads_it() {
        let role = |script: &str| -> Vec<Kind> { kinds(&parse(script.as_bytes()).unwrap()) };
        // A string that holds what looks like the end of a statement and a new one.
        assert_eq!(
            role("COMMENT ON ROLE a IS 'x''; ALTER ROLE postgres WITH NOLOGIN; --';"),
            [Kind::Other]
        );
        // Escape strings: a backslash takes the quote after it.
        assert_eq!(
            role("COMMENT ON ROLE a IS E'x\\'; ALTER ROLE b WITH NOLOGIN; --';"),
            [Kind::Other]
        );
        // Standard strings off: plain strings take backslash escapes too, until it is on.
        assert_eq!(
            role(
                "SET standard_conforming_strings = off;\n\
                 COMMENT ON ROLE a IS 'x\\'; ALTER ROLE b WITH NOLOGIN; --';\n\
                 SET standard_conforming_strings = 'on';\n\
                 COMMENT ON ROLE a IS 'x\\';"
            ),
            [
                Kind::Set {
                    standard_strings: Some(false)
                },
                Kind::Other,
                Kind::Set {
                    standard_strings: Some(true)
                },
                Kind::Other,
            ]
        );
        // Bit strings end at the next quote, whatever comes before it.
        assert_eq!(role("COMMENT ON ROLE a IS B'\\';"), [Kind::Other]);
        // Dollar quotes, with and without a tag, and a tag-like text inside.
        assert_eq!(
            role("COMMENT ON ROLE a IS $$x'; ALTER ROLE b;$$; COMMENT ON ROLE a IS $t$ $$ ; $t$;"),
            [Kind::Other, Kind::Other]
        );
        // A `$` inside a word is part of the word, not a dollar quote.
        assert_eq!(
            role("GRANT a$b TO c; GRANT d TO e;"),
            [Kind::Other, Kind::Other]
        );
        // Nested block comments and line comments.
        assert_eq!(
            role("/* a /* b */ ; GRANT x TO y; */ GRANT a TO b; -- ; GRANT c TO d;\nGRANT e TO f;"),
            [Kind::Other, Kind::Other]
        );
        // Bare names fold to lower case; CURRENT_USER is the session's own role.
        assert_eq!(
            role("ALTER ROLE App WITH LOGIN; ALTER ROLE CURRENT_USER WITH NOLOGIN; ALTER ROLE ALL SET x TO 1;"),
            [
                Kind::AlterRole {
                    role: named("app"),
                    attributes: true
                },
                Kind::AlterRole {
                    role: RoleRef::Current,
                    attributes: true
                },
                Kind::AlterRole {
                    role: RoleRef::All,
                    attributes: false
                },
            ]
        );
        // A last statement without its `;`, and empty statements.
        assert_eq!(role(";; GRANT a TO b"), [Kind::Other]);
    }

    #[test]
    fn what_pg_dumpall_never_writes_is_refused_before_anything_applies() {
        let refused = |script: &str| parse(script.as_bytes()).unwrap_err();
        assert!(matches!(
            refused("CREATE ROLE a;\nCOPY (SELECT 1) TO PROGRAM 'id';"),
            GlobalsError::Unexpected { line: 2, .. }
        ));
        assert!(matches!(
            refused("SET ROLE mallory;"),
            GlobalsError::Unexpected { .. }
        ));
        assert!(matches!(
            refused("SET SESSION AUTHORIZATION mallory;"),
            GlobalsError::Unexpected { .. }
        ));
        assert!(matches!(
            refused("ALTER USER postgres WITH NOSUPERUSER;"),
            GlobalsError::Unexpected { .. }
        ));
        assert!(matches!(
            refused("\\! touch /tmp/x\n"),
            GlobalsError::PsqlCommand { line: 1, .. }
        ));
        assert!(matches!(
            refused("GRANT a TO b \\g\n"),
            GlobalsError::Backslash { .. }
        ));
        // A role named in a way whose meaning is not read here.
        assert!(matches!(
            refused("ALTER ROLE U&\"\\0070ostgres\" WITH NOSUPERUSER;"),
            GlobalsError::RoleName { .. }
        ));
        assert!(matches!(
            refused("ALTER ROLE Ünïcode WITH LOGIN;"),
            GlobalsError::RoleName { .. }
        ));
        assert!(matches!(
            refused("SET standard_conforming_strings = maybe;"),
            GlobalsError::StandardStrings { .. }
        ));
        for (script, what) in [
            ("CREATE ROLE \"a;\n", "a quoted identifier"),
            ("COMMENT ON ROLE a IS 'x;\n", "a string"),
            ("COMMENT ON ROLE a IS $q$ x;\n", "a dollar-quoted string"),
            ("GRANT a TO b; /* /* */\n", "a comment"),
        ] {
            assert!(
                matches!(refused(script), GlobalsError::Unterminated { what: w, line: 1 } if w == what),
                "{script:?}"
            );
        }
        assert!(matches!(
            parse(b"CREATE ROLE \"latin1-\xe9t\xe9\";").unwrap_err(),
            GlobalsError::NotUtf8 { offset: 20 }
        ));
    }
}
