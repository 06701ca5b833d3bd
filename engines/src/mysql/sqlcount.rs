//! Counting the rows of each table in a MariaDB/MySQL dump, from the dump stream itself.
//!
//! Job: [`SqlCounter`] is fed the bytes of a `mariadb-dump` stream in pieces of any size and
//! reports every table it creates (`CREATE TABLE`, zero rows until data comes) and the number
//! of rows its `INSERT INTO ... VALUES (...),(...);` statements carry. Counting the stream
//! means the counts describe exactly the dumped data, even while writers keep writing.
//!
//! Invariants:
//! - It lexes SQL as the `mariadb` client does: single- and double-quoted strings with
//!   backslash escapes and doubled quotes, backtick identifiers with doubled backticks,
//!   `-- `/`#` line comments and `/* */` comments (including the versioned `/*!50003 ... */`
//!   and `/*M!… */` ones, which is where dumps put triggers and view placeholders), and the
//!   client's `DELIMITER` command (routines are dumped between `DELIMITER ;;` lines, and their
//!   bodies hold `;` and even `INSERT` statements that are not data).
//! - Names are data: a versioned comment is code to the server, so inside it quotes, line
//!   comments and plain comments are lexed as the server does, and only a `*/` outside them
//!   ends it (`` /*!40000 ALTER TABLE `/* c */` DISABLE KEYS */ `` is one comment). Nothing a
//!   table name holds (quotes, `*/`, `--`, line breaks, `;`) ends a statement, starts a row or
//!   hides the rows of the tables after it.
//! - A row is an opening parenthesis at depth 0 after the `VALUES` keyword of a statement that
//!   *starts* with `INSERT`/`REPLACE ... INTO <table>`; parentheses, quotes, semicolons and
//!   comment markers inside strings never count or end anything.
//! - The result does not depend on how the stream is cut into pieces.
//! - Memory is bounded: only the head of a statement (up to [`MAX_HEAD`] bytes, enough for
//!   `INSERT INTO <table> (<columns>) VALUES`) is kept, never data.

use std::collections::HashMap;

/// Most bytes of a statement's head kept to recognise it.
pub const MAX_HEAD: usize = 64 * 1024;

/// What the lexer says about one byte (or a delayed one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    /// A byte of code, outside strings and comments.
    Code(u8),
    /// An opening quote (`'`, `"` or `` ` ``).
    Open(u8),
    /// A byte inside a quoted string or identifier (raw, escapes included).
    Quoted(u8),
    /// A closing quote.
    Close(u8),
    /// A comment ended (it separates tokens like whitespace).
    Comment,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    Normal,
    /// Saw `-` in code: maybe the start of `-- `.
    Dash,
    /// Saw `--` in code: a comment if whitespace follows.
    DashDash,
    /// Saw `/` in code: maybe the start of `/*`.
    Slash,
    /// Just after `/*`: a versioned comment if `!` or `M!` follows.
    BlockOpen,
    /// Just after `/*M`.
    BlockM,
    LineComment,
    Block,
    /// In a block comment, just after `*`.
    BlockStar,
    /// In a versioned comment, just after a `*` in code: `/` ends the comment.
    VersionedStar,
    Quoted(u8),
    /// After a backslash inside a `'` or `"` string.
    Escape(u8),
    /// After a quote that may close the string or be the first of a doubled quote.
    QuoteEnd(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stmt {
    /// Between statements: skipping whitespace and comments.
    Start,
    /// At a statement's start, matched this many bytes of `delimiter `.
    Keyword(usize),
    /// Reading the argument of the client's `DELIMITER` command, up to the end of the line.
    Command,
    /// Reading the statement's head, before its first parenthesis at depth 0.
    Head,
    /// In the `VALUES` list of an INSERT into table number `.0`.
    Values(usize),
    /// In a statement that carries no rows; waiting for the delimiter.
    Skip,
}

const DELIMITER_KEYWORD: &[u8] = b"delimiter ";

/// Counts tables and rows in a MariaDB/MySQL dump stream. Feed it with [`feed`](Self::feed),
/// then take the result with [`finish`](Self::finish).
#[derive(Debug)]
pub struct SqlCounter {
    lex: Lex,
    /// Inside a versioned comment (`/*! … */`): lexed as code, but its events are a comment's.
    versioned: bool,
    stmt: Stmt,
    delimiter: Vec<u8>,
    delim_matched: usize,
    depth: u32,
    head: Vec<u8>,
    command: Vec<u8>,
    tables: Vec<(String, u64)>,
    index: HashMap<String, usize>,
    /// Stream offset of the first byte fed before the current piece, and of the byte being
    /// lexed.
    base: u64,
    pos: u64,
    /// Where the statement being read started (its first byte of code).
    stmt_start: u64,
    /// Where each complete `USE <database>` statement started.
    uses: Vec<u64>,
}

impl Default for SqlCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl SqlCounter {
    pub fn new() -> SqlCounter {
        SqlCounter {
            lex: Lex::Normal,
            versioned: false,
            stmt: Stmt::Start,
            delimiter: b";".to_vec(),
            delim_matched: 0,
            depth: 0,
            head: Vec::new(),
            command: Vec::new(),
            tables: Vec::new(),
            index: HashMap::new(),
            base: 0,
            pos: 0,
            stmt_start: 0,
            uses: Vec::new(),
        }
    }

    /// The stream offsets where the complete `USE <database>` statements seen so far start
    /// (a dump of one database has one before its tables, and a second one before the final
    /// definitions of its views).
    pub fn use_statements(&self) -> &[u64] {
        &self.uses
    }

    /// Where the statement being read started, while it may still turn out to be a `USE`
    /// (its head starts with `u`): the bytes from there on cannot be told apart yet.
    pub fn open_use_candidate(&self) -> Option<u64> {
        match self.stmt {
            Stmt::Head
                if self
                    .head
                    .first()
                    .is_some_and(|b| b.eq_ignore_ascii_case(&b'u')) =>
            {
                Some(self.stmt_start)
            }
            _ => None,
        }
    }

    /// Feeds the next piece of the stream.
    pub fn feed(&mut self, data: &[u8]) {
        let mut i = 0;
        let base = self.base;
        self.base += data.len() as u64;
        while i < data.len() {
            // Fast path: the bytes of a string in a statement whose strings do not matter.
            if let Lex::Quoted(q) = self.lex {
                if !matches!(self.stmt, Stmt::Head) {
                    let rest = &data[i..];
                    let skip = if q == b'`' {
                        rest.iter().position(|&b| b == q)
                    } else {
                        rest.iter().position(|&b| b == q || b == b'\\')
                    };
                    match skip {
                        Some(0) => {}
                        Some(n) => {
                            i += n;
                            continue;
                        }
                        None => return,
                    }
                }
            }
            let b = data[i];
            self.pos = base + i as u64;
            i += 1;
            if self.stmt == Stmt::Command {
                self.command_byte(b);
                continue;
            }
            self.lex_byte(b);
        }
    }

    /// The tables seen, in order of first appearance, with their row counts.
    pub fn finish(mut self) -> Vec<(String, u64)> {
        // A dangling `-` or `/` at the very end is code; it cannot start a row.
        self.lex = Lex::Normal;
        self.tables
    }

    /// The counts so far (for progress reports).
    pub fn tables(&self) -> &[(String, u64)] {
        &self.tables
    }

    fn command_byte(&mut self, b: u8) {
        if b == b'\n' {
            let arg = String::from_utf8_lossy(&self.command).trim().to_string();
            if let Some(first) = arg.split_whitespace().next() {
                self.delimiter = first.as_bytes().to_vec();
            }
            self.command.clear();
            self.end_statement();
        } else if self.command.len() < 64 {
            self.command.push(b);
        }
    }

    fn lex_byte(&mut self, b: u8) {
        match self.lex {
            Lex::Normal => self.normal_byte(b),
            Lex::Dash => {
                if b == b'-' {
                    self.lex = Lex::DashDash;
                } else {
                    self.lex = Lex::Normal;
                    self.event(Ev::Code(b'-'));
                    self.normal_byte(b);
                }
            }
            Lex::DashDash => {
                if b <= b' ' {
                    if b == b'\n' {
                        self.lex = Lex::Normal;
                        self.event(Ev::Comment);
                    } else {
                        self.lex = Lex::LineComment;
                    }
                } else {
                    self.lex = Lex::Normal;
                    self.event(Ev::Code(b'-'));
                    self.event(Ev::Code(b'-'));
                    self.normal_byte(b);
                }
            }
            Lex::Slash => {
                if b == b'*' {
                    self.lex = Lex::BlockOpen;
                } else {
                    self.lex = Lex::Normal;
                    self.event(Ev::Code(b'/'));
                    self.normal_byte(b);
                }
            }
            Lex::BlockOpen => match b {
                b'!' if !self.versioned => self.open_versioned(),
                b'M' => self.lex = Lex::BlockM,
                b'*' => self.lex = Lex::BlockStar,
                _ => self.lex = Lex::Block,
            },
            Lex::BlockM => match b {
                b'!' if !self.versioned => self.open_versioned(),
                b'*' => self.lex = Lex::BlockStar,
                _ => self.lex = Lex::Block,
            },
            Lex::VersionedStar => {
                if b == b'/' {
                    self.versioned = false;
                    self.lex = Lex::Normal;
                    self.event(Ev::Comment);
                } else {
                    self.lex = Lex::Normal;
                    self.normal_byte(b);
                }
            }
            Lex::LineComment => {
                if b == b'\n' {
                    self.lex = Lex::Normal;
                    self.event(Ev::Comment);
                }
            }
            Lex::Block => {
                if b == b'*' {
                    self.lex = Lex::BlockStar;
                }
            }
            Lex::BlockStar => {
                self.lex = match b {
                    b'/' => {
                        self.lex = Lex::Normal;
                        self.event(Ev::Comment);
                        return;
                    }
                    b'*' => Lex::BlockStar,
                    _ => Lex::Block,
                };
            }
            Lex::Quoted(q) => {
                if b == q {
                    self.lex = Lex::QuoteEnd(q);
                } else {
                    if b == b'\\' && q != b'`' {
                        self.lex = Lex::Escape(q);
                    }
                    self.event(Ev::Quoted(b));
                }
            }
            Lex::Escape(q) => {
                self.lex = Lex::Quoted(q);
                self.event(Ev::Quoted(b));
            }
            Lex::QuoteEnd(q) => {
                if b == q {
                    // A doubled quote stands for one quote character.
                    self.lex = Lex::Quoted(q);
                    self.event(Ev::Quoted(q));
                    self.event(Ev::Quoted(q));
                } else {
                    self.lex = Lex::Normal;
                    self.event(Ev::Close(q));
                    self.normal_byte(b);
                }
            }
        }
    }

    /// After `/*!` or `/*M!`: what follows is code until a `*/` outside quotes and comments.
    fn open_versioned(&mut self) {
        self.versioned = true;
        self.lex = Lex::Normal;
    }

    fn normal_byte(&mut self, b: u8) {
        match b {
            b'*' if self.versioned => self.lex = Lex::VersionedStar,
            b'-' => self.lex = Lex::Dash,
            b'/' => self.lex = Lex::Slash,
            b'#' => self.lex = Lex::LineComment,
            b'\'' | b'"' | b'`' => {
                self.lex = Lex::Quoted(b);
                self.event(Ev::Open(b));
            }
            _ => self.event(Ev::Code(b)),
        }
    }

    fn event(&mut self, ev: Ev) {
        if self.versioned {
            // Inside a versioned comment: the statement sees one comment, when it ends.
            return;
        }
        // The delimiter only counts in code; anything else breaks a partial match.
        let mut ends_statement = false;
        if let Ev::Code(b) = ev {
            if b == self.delimiter[self.delim_matched] {
                self.delim_matched += 1;
                if self.delim_matched == self.delimiter.len() {
                    self.delim_matched = 0;
                    ends_statement = true;
                }
            } else {
                self.delim_matched = usize::from(b == self.delimiter[0]);
            }
        } else {
            self.delim_matched = 0;
        }
        if ends_statement {
            self.end_statement();
            return;
        }
        self.statement_event(ev);
    }

    fn statement_event(&mut self, ev: Ev) {
        match self.stmt {
            Stmt::Start => match ev {
                Ev::Comment => {}
                Ev::Code(b) if b.is_ascii_whitespace() => {}
                Ev::Code(b) if b.eq_ignore_ascii_case(&DELIMITER_KEYWORD[0]) => {
                    self.stmt = Stmt::Keyword(1);
                    self.stmt_start = self.pos;
                }
                _ => {
                    self.stmt = Stmt::Head;
                    self.stmt_start = self.pos;
                    self.head_event(ev);
                }
            },
            Stmt::Keyword(n) => {
                let matches = match ev {
                    Ev::Code(b) if n == DELIMITER_KEYWORD.len() - 1 => b == b' ' || b == b'\t',
                    Ev::Code(b) => b.eq_ignore_ascii_case(&DELIMITER_KEYWORD[n]),
                    _ => false,
                };
                if matches {
                    if n + 1 == DELIMITER_KEYWORD.len() {
                        self.stmt = Stmt::Command;
                        self.command.clear();
                    } else {
                        self.stmt = Stmt::Keyword(n + 1);
                    }
                } else {
                    // Not the client command: what was matched is the head of a statement.
                    self.stmt = Stmt::Head;
                    self.head.extend_from_slice(&DELIMITER_KEYWORD[..n]);
                    self.head_event(ev);
                }
            }
            Stmt::Command => {}
            Stmt::Head => self.head_event(ev),
            Stmt::Values(table) => self.values_event(table, ev),
            Stmt::Skip => {}
        }
    }

    fn head_event(&mut self, ev: Ev) {
        match ev {
            Ev::Code(b'(') => {
                if self.depth == 0 {
                    match classify(&self.head) {
                        Head::Insert(table) => {
                            let t = self.table(table);
                            self.stmt = Stmt::Values(t);
                            self.tables[t].1 += 1;
                            self.depth = 1;
                            self.head.clear();
                            return;
                        }
                        Head::CreateTable(table) => {
                            self.table(table);
                            self.skip();
                            return;
                        }
                        Head::NeedMore => {}
                        Head::Other => {
                            self.skip();
                            return;
                        }
                    }
                }
                self.depth += 1;
                self.push_head(b'(');
            }
            Ev::Code(b')') => {
                self.depth = self.depth.saturating_sub(1);
                self.push_head(b')');
            }
            Ev::Code(b) | Ev::Open(b) | Ev::Quoted(b) | Ev::Close(b) => self.push_head(b),
            Ev::Comment => self.push_head(b' '),
        }
    }

    fn values_event(&mut self, table: usize, ev: Ev) {
        match ev {
            Ev::Code(b'(') => {
                if self.depth == 0 {
                    self.tables[table].1 += 1;
                }
                self.depth += 1;
            }
            Ev::Code(b')') => self.depth = self.depth.saturating_sub(1),
            Ev::Code(b) if self.depth == 0 && !(b == b',' || b.is_ascii_whitespace()) => {
                // e.g. `ON DUPLICATE KEY UPDATE a = VALUES(a)`: no more rows.
                self.skip();
            }
            Ev::Open(_) | Ev::Quoted(_) | Ev::Close(_) if self.depth == 0 => self.skip(),
            _ => {}
        }
    }

    fn push_head(&mut self, b: u8) {
        if self.head.len() >= MAX_HEAD {
            self.skip();
        } else {
            self.head.push(b);
        }
    }

    fn skip(&mut self) {
        self.stmt = Stmt::Skip;
        self.head = Vec::new();
    }

    fn end_statement(&mut self) {
        if self.stmt == Stmt::Head && is_use(&self.head) {
            self.uses.push(self.stmt_start);
        }
        self.stmt = Stmt::Start;
        self.depth = 0;
        self.head.clear();
    }

    fn table(&mut self, name: String) -> usize {
        if let Some(&i) = self.index.get(&name) {
            return i;
        }
        self.tables.push((name.clone(), 0));
        self.index.insert(name, self.tables.len() - 1);
        self.tables.len() - 1
    }
}

/// Most bytes a [`ViewSplit`] keeps of a dump's start (before its first `USE`) and of its
/// views' final definitions.
pub const MAX_DEFERRED: usize = 64 << 20;

/// Splits the stream of `mariadb-dump --databases <one database>` in two, by statements (as
/// [`SqlCounter`] lexes them), so that views may refer to tables of databases loaded later:
/// - what loads now: everything up to the dump's second `USE` statement: the database, its
///   tables and data, triggers, events, routines, and each view as mariadb-dump's stand-in
///   (a view of `NULL` columns that refers to nothing);
/// - what loads once every database is there: the dump's opening statements (its session
///   settings and `CREATE DATABASE IF NOT EXISTS`, everything before its first `USE`), then
///   everything from its second `USE` on: the views' final definitions (`DROP VIEW` and
///   `CREATE VIEW`) and the dump's closing statements, which restore the session settings
///   the opening ones saved.
///
/// A dump without views has one `USE` and nothing is deferred. Only a statement that may
/// still be a `USE` (its head starts with `u`) is held back; every other byte is given out as
/// soon as it is fed.
#[derive(Debug)]
pub struct ViewSplit {
    counter: SqlCounter,
    /// Bytes fed and not given out; they start at stream offset `sent`.
    held: Vec<u8>,
    sent: u64,
    /// The bytes before the first `USE`; None once they outgrew [`MAX_DEFERRED`] (the dump
    /// is then not split).
    prefix: Option<Vec<u8>>,
    /// From the second `USE` on.
    tail: Option<Vec<u8>>,
}

impl Default for ViewSplit {
    fn default() -> Self {
        Self::new()
    }
}

impl ViewSplit {
    pub fn new() -> ViewSplit {
        ViewSplit {
            counter: SqlCounter::new(),
            held: Vec::new(),
            sent: 0,
            prefix: Some(Vec::new()),
            tail: None,
        }
    }

    /// Feeds the next piece of the dump; returns the bytes to load now (maybe none). Fails
    /// when the views' definitions outgrow [`MAX_DEFERRED`].
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<u8>, String> {
        if let Some(tail) = &mut self.tail {
            tail.extend_from_slice(data);
            if tail.len() > MAX_DEFERRED {
                return Err(format!(
                    "the final definitions of its views take more than {} MiB",
                    MAX_DEFERRED >> 20
                ));
            }
            return Ok(Vec::new());
        }
        let before_first_use = self.counter.uses.is_empty();
        self.counter.feed(data);
        if let Some(prefix) = &mut self.prefix {
            if before_first_use {
                prefix.extend_from_slice(data);
            }
            if let Some(&first) = self.counter.uses.first() {
                prefix.truncate(usize::try_from(first).unwrap_or(usize::MAX));
            }
            if prefix.len() > MAX_DEFERRED {
                self.prefix = None;
            }
        }
        self.held.extend_from_slice(data);
        if let (Some(_), Some(&second)) = (&self.prefix, self.counter.uses.get(1)) {
            let tail = self.held.split_off((second - self.sent) as usize);
            self.sent = second;
            self.tail = Some(tail);
            return Ok(std::mem::take(&mut self.held));
        }
        let safe = self
            .counter
            .open_use_candidate()
            .unwrap_or(self.counter.base);
        let now: Vec<u8> = self.held.drain(..(safe - self.sent) as usize).collect();
        self.sent = safe;
        Ok(now)
    }

    /// The last bytes to load now, and what loads once every database is there (None when
    /// the dump has no views).
    pub fn finish(self) -> (Vec<u8>, Option<Vec<u8>>) {
        match (self.prefix, self.tail) {
            (Some(mut script), Some(tail)) => {
                script.extend_from_slice(&tail);
                (self.held, Some(script))
            }
            _ => (self.held, None),
        }
    }
}

/// What the head of a statement (the bytes before a parenthesis at depth 0) is.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// `INSERT ... INTO <table> [(<columns>)] VALUES`: the parenthesis starts the first row.
    Insert(String),
    /// `CREATE [OR REPLACE] TABLE [IF NOT EXISTS] <table>`.
    CreateTable(String),
    /// `INSERT ... INTO <table>` without `VALUES` yet: the parenthesis is a column list.
    NeedMore,
    Other,
}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Ident(String),
    Dot,
    Group,
    Other,
}

fn tokenize(head: &[u8]) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < head.len() {
        let b = head[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if b == b'`' || b == b'"' {
            // A quoted identifier (double quotes under ANSI_QUOTES); doubled quotes inside.
            let q = b;
            let mut name = Vec::new();
            i += 1;
            while i < head.len() {
                if head[i] == q {
                    if head.get(i + 1) == Some(&q) {
                        name.push(q);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                name.push(head[i]);
                i += 1;
            }
            toks.push(Tok::Ident(String::from_utf8_lossy(&name).into_owned()));
        } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80 {
            let start = i;
            while i < head.len()
                && (head[i].is_ascii_alphanumeric()
                    || head[i] == b'_'
                    || head[i] == b'$'
                    || head[i] >= 0x80)
            {
                i += 1;
            }
            toks.push(Tok::Word(
                String::from_utf8_lossy(&head[start..i]).into_owned(),
            ));
        } else if b == b'.' {
            toks.push(Tok::Dot);
            i += 1;
        } else if b == b'(' {
            // A balanced group (column or partition list); its content does not matter, but
            // parentheses inside its quoted names do not count.
            let mut depth = 0usize;
            while i < head.len() {
                match head[i] {
                    q @ (b'`' | b'"' | b'\'') => {
                        i += 1;
                        while i < head.len() {
                            if head[i] == q {
                                if head.get(i + 1) == Some(&q) {
                                    i += 2;
                                    continue;
                                }
                                break;
                            }
                            if head[i] == b'\\' && q != b'`' {
                                i += 1;
                            }
                            i += 1;
                        }
                    }
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            toks.push(Tok::Group);
        } else {
            toks.push(Tok::Other);
            i += 1;
        }
    }
    toks
}

fn is_word(t: Option<&Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
}

/// Reads a table name (`t`, `` `t` ``, `db`.`t`) at `toks[*i..]`; returns the table's part.
fn table_name(toks: &[Tok], i: &mut usize) -> Option<String> {
    let mut name = match toks.get(*i)? {
        Tok::Word(w) | Tok::Ident(w) => w.clone(),
        _ => return None,
    };
    *i += 1;
    while toks.get(*i) == Some(&Tok::Dot) {
        match toks.get(*i + 1)? {
            Tok::Word(w) | Tok::Ident(w) => name = w.clone(),
            _ => return None,
        }
        *i += 2;
    }
    Some(name)
}

/// Whether a statement is `USE <database>`.
fn is_use(head: &[u8]) -> bool {
    let toks = tokenize(head);
    toks.len() == 2
        && is_word(toks.first(), "USE")
        && matches!(toks[1], Tok::Word(_) | Tok::Ident(_))
}

fn classify(head: &[u8]) -> Head {
    let toks = tokenize(head);
    let mut i = 0;
    if is_word(toks.first(), "INSERT") || is_word(toks.first(), "REPLACE") {
        i += 1;
        while ["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE"]
            .iter()
            .any(|w| is_word(toks.get(i), w))
        {
            i += 1;
        }
        if is_word(toks.get(i), "INTO") {
            i += 1;
        }
        let Some(table) = table_name(&toks, &mut i) else {
            return Head::Other;
        };
        if is_word(toks.get(i), "PARTITION") {
            i += 1;
            if toks.get(i).is_none() {
                return Head::NeedMore;
            }
            if toks.get(i) != Some(&Tok::Group) {
                return Head::Other;
            }
            i += 1;
        }
        if toks.get(i).is_none() {
            return Head::NeedMore;
        }
        if toks.get(i) == Some(&Tok::Group) {
            i += 1;
        }
        if (is_word(toks.get(i), "VALUES") || is_word(toks.get(i), "VALUE")) && i + 1 == toks.len()
        {
            return Head::Insert(table);
        }
        return Head::Other;
    }
    if is_word(toks.first(), "CREATE") {
        i += 1;
        if is_word(toks.get(i), "OR") && is_word(toks.get(i + 1), "REPLACE") {
            i += 2;
        }
        if !is_word(toks.get(i), "TABLE") {
            return Head::Other;
        }
        i += 1;
        if is_word(toks.get(i), "IF")
            && is_word(toks.get(i + 1), "NOT")
            && is_word(toks.get(i + 2), "EXISTS")
        {
            i += 3;
        }
        if let Some(table) = table_name(&toks, &mut i) {
            if i == toks.len() {
                return Head::CreateTable(table);
            }
        }
        return Head::Other;
    }
    Head::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(dump: &[u8]) -> Vec<(String, u64)> {
        let mut c = SqlCounter::new();
        c.feed(dump);
        c.finish()
    }

    fn count_in_pieces(dump: &[u8], size: usize) -> Vec<(String, u64)> {
        let mut c = SqlCounter::new();
        for piece in dump.chunks(size) {
            c.feed(piece);
        }
        c.finish()
    }

    fn t(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    }

    /// Real `mariadb-dump` 10.11 output (one row per line), with a trigger, a view, an event
    /// and a procedure whose body inserts rows.
    const MARIADB_10_11: &str = r#"/*M!999999\- enable the sandbox mode */ 
-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: localhost    Database: shop
-- ------------------------------------------------------
-- Server version	10.11.19-MariaDB-0+deb12u1

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET NAMES utf8mb4 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;

--
-- Current Database: `shop`
--

CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` /*!40100 DEFAULT CHARACTER SET latin1 COLLATE latin1_swedish_ci */;

USE `shop`;

--
-- Table structure for table `empty_t`
--

DROP TABLE IF EXISTS `empty_t`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `empty_t` (
  `id` int(11) DEFAULT NULL
) ENGINE=InnoDB DEFAULT CHARSET=latin1 COLLATE=latin1_swedish_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `empty_t`
--

LOCK TABLES `empty_t` WRITE;
/*!40000 ALTER TABLE `empty_t` DISABLE KEYS */;
/*!40000 ALTER TABLE `empty_t` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `t`
--

DROP TABLE IF EXISTS `t`;
CREATE TABLE `t` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `s` text DEFAULT NULL,
  `b` blob DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB AUTO_INCREMENT=4 DEFAULT CHARSET=latin1 COLLATE=latin1_swedish_ci;

LOCK TABLES `t` WRITE;
/*!40000 ALTER TABLE `t` DISABLE KEYS */;
INSERT INTO `t` VALUES
(1,'a\'b\\c;(',0x00FF),
(2,NULL,NULL),
(3,'x\ny','');
/*!40000 ALTER TABLE `t` ENABLE KEYS */;
UNLOCK TABLES;
/*!50003 SET @saved_cs_client      = @@character_set_client */ ;
/*!50003 SET sql_mode              = 'STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION' */ ;
DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 trigger tr before insert on t for each row begin insert into audit values (new.id); set new.s = concat(new.s, '!'); end
*/;;
DELIMITER ;
/*!50003 SET sql_mode              = @saved_sql_mode */ ;

--
-- Temporary table structure for view `v`
--

DROP TABLE IF EXISTS `v`;
/*!50001 DROP VIEW IF EXISTS `v`*/;
SET @saved_cs_client     = @@character_set_client;
SET character_set_client = utf8mb4;
/*!50001 CREATE VIEW `v` AS SELECT
 NULL AS `id` */;
SET character_set_client = @saved_cs_client;

--
-- Dumping events for database 'shop'
--
/*!50106 SET @save_time_zone= @@TIME_ZONE */ ;
/*!50106 DROP EVENT IF EXISTS `ev` */;
DELIMITER ;;
/*!50003 SET @saved_cs_client      = @@character_set_client */ ;;
/*!50106 CREATE*/ /*!50117 DEFINER=`root`@`localhost`*/ /*!50106 EVENT `ev` ON SCHEDULE EVERY 1 DAY STARTS '2026-11-23 14:23:55' ON COMPLETION NOT PRESERVE ENABLE DO delete from t where id < 0 
*/ ;;
/*!50003 SET time_zone             = @saved_time_zone */ ;;
DELIMITER ;

--
-- Dumping routines for database 'shop'
--
/*!50003 DROP PROCEDURE IF EXISTS `p` */;
DELIMITER ;;
CREATE DEFINER=`root`@`localhost` PROCEDURE `p`()
begin insert into t(s) values ('p1'); insert into t(s) values ('p2'), ('p3'); INSERT INTO `t` VALUES (9,'x',NULL); end
;;
DELIMITER ;
/*!50003 SET sql_mode              = @saved_sql_mode */ ;

USE `shop`;
/*!50001 DROP VIEW IF EXISTS `v`*/;
/*!50001 CREATE ALGORITHM=UNDEFINED */
/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */
/*!50001 VIEW `v` AS select `t`.`id` AS `id` from `t` */;
-- Dump completed on 2026-11-23 14:23:53
"#;

    #[test]
    fn counts_a_real_mariadb_dump() {
        let expected = t(&[("empty_t", 0), ("t", 3)]);
        assert_eq!(count(MARIADB_10_11.as_bytes()), expected);
    }

    #[test]
    fn result_does_not_depend_on_piece_sizes() {
        let expected = count(MARIADB_10_11.as_bytes());
        for size in [1, 2, 3, 5, 7, 13, 64, 1000] {
            assert_eq!(
                count_in_pieces(MARIADB_10_11.as_bytes(), size),
                expected,
                "pieces of {size}"
            );
        }
    }

    fn split_in_pieces(dump: &[u8], size: usize) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut split = ViewSplit::new();
        let mut now = Vec::new();
        for piece in dump.chunks(size) {
            now.extend(split.push(piece).unwrap());
        }
        let (rest, views) = split.finish();
        now.extend(rest);
        (now, views)
    }

    /// The views' final definitions wait, with the dump's opening statements; the rest loads
    /// now, whatever the piece sizes.
    #[test]
    fn views_final_definitions_are_split_off_by_statements() {
        let dump = MARIADB_10_11.as_bytes();
        let first = MARIADB_10_11.find("USE `shop`;").unwrap();
        let second = MARIADB_10_11.rfind("USE `shop`;").unwrap();
        assert!(first < second);
        for size in [1, 2, 3, 5, 7, 13, 64, 1000, dump.len()] {
            let (now, views) = split_in_pieces(dump, size);
            assert_eq!(now, &dump[..second], "pieces of {size}");
            let mut want = dump[..first].to_vec();
            want.extend_from_slice(&dump[second..]);
            assert_eq!(views, Some(want), "pieces of {size}");
        }
        // No views: one `USE`, nothing waits. A name or a string holding `USE` is no `USE`.
        let no_views = "CREATE DATABASE `a`;\nUSE `a`;\n\
            CREATE TABLE `USE ``b``;` (x INT);\nINSERT INTO `t` VALUES ('\nUSE `b`;\n');\n\
            /*!50001 USE `c` */;\n-- USE `d`;\nUNLOCK TABLES;\n";
        for size in [1, 4, 1000] {
            assert_eq!(
                split_in_pieces(no_views.as_bytes(), size),
                (no_views.as_bytes().to_vec(), None)
            );
        }
    }

    #[test]
    fn extended_inserts_on_one_line() {
        let dump = b"CREATE TABLE `t` (`a` int, `b` text);\n\
            INSERT INTO `t` VALUES (1,'a'),(2,'b)'),(3,'c\\''),(4,'it''s'),(5,'(('),(6,\"q\\\"(\");\n\
            INSERT INTO `t` VALUES (7,'x');\n";
        assert_eq!(count(dump), t(&[("t", 7)]));
    }

    #[test]
    fn semicolons_comments_and_parens_inside_strings_do_not_count() {
        let dump = b"INSERT INTO `t` VALUES (1,'; INSERT INTO `t` VALUES (9);'),\
            (2,'-- not a comment'),(3,'/* not a comment */'),(4,'# nor this'),(5,'\\\\'),(6,')(');\n";
        assert_eq!(count(dump), t(&[("t", 6)]));
    }

    #[test]
    fn comments_between_and_inside_statements() {
        let dump = b"-- INSERT INTO `x` VALUES (1);\n\
            # INSERT INTO `y` VALUES (1);\n\
            /* INSERT INTO `z` VALUES (1); */\n\
            INSERT /* c */ INTO `t` VALUES /* (not a row) */ (1), -- (nor this)\n (2);\n";
        assert_eq!(count(dump), t(&[("t", 2)]));
    }

    #[test]
    fn negative_numbers_and_nested_parens() {
        let dump =
            b"INSERT INTO `t` VALUES (-1,-2.5,--3),(2,ST_GeomFromText('POINT(1 2)')),((3),(4));";
        assert_eq!(count(dump), t(&[("t", 3)]));
    }

    #[test]
    fn column_lists_modifiers_and_replace() {
        let dump = b"INSERT INTO `t` (`a`, `b`) VALUES (1,2),(3,4);\n\
            INSERT IGNORE INTO `t` VALUES (5,6);\n\
            REPLACE INTO `u` VALUES (1);\n\
            insert into v (a) value (1), (2);\n";
        assert_eq!(count(dump), t(&[("t", 3), ("u", 1), ("v", 2)]));
    }

    #[test]
    fn on_duplicate_key_update_is_not_rows() {
        let dump = b"INSERT INTO `t` VALUES (1,2),(3,4) ON DUPLICATE KEY UPDATE b = VALUES(b);";
        assert_eq!(count(dump), t(&[("t", 2)]));
    }

    #[test]
    fn odd_table_names() {
        let dump = "CREATE TABLE `we``ird name` (a int);\n\
            INSERT INTO `we``ird name` VALUES (1),(2);\n\
            CREATE TABLE IF NOT EXISTS `ünï` (a int);\n\
            CREATE OR REPLACE TABLE `db`.`q` (a int);\n\
            INSERT INTO `db`.`q` VALUES (1);\n";
        assert_eq!(
            count(dump.as_bytes()),
            t(&[("we`ird name", 2), ("ünï", 0), ("q", 1)])
        );
    }

    #[test]
    fn routine_bodies_between_custom_delimiters_are_not_data() {
        let dump = b"DELIMITER //\n\
            CREATE PROCEDURE p() BEGIN INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); END//\n\
            delimiter ;\n\
            INSERT INTO `t` VALUES (3);\n";
        assert_eq!(count(dump), t(&[("t", 1)]));
    }

    #[test]
    fn statements_that_look_alike_are_not_data() {
        let dump = b"DELIMITERS (1);\nDELETE FROM t WHERE a IN (1,2);\n\
            SELECT * FROM t WHERE (1);\nCREATE TEMPORARY TABLE tmp (a int);\n\
            CREATE TABLE `s` LIKE `t`;\nINSERT INTO t SELECT (1);\nCREATE VIEW w AS SELECT (1);\n";
        assert_eq!(count(dump), t(&[]));
    }

    #[test]
    fn old_style_view_placeholders_are_not_tables() {
        let dump = b"/*!50001 CREATE TABLE `v` (\n  `id` tinyint NOT NULL\n) ENGINE=MyISAM */;\n\
            SET character_set_client = @saved_cs_client;\n";
        assert_eq!(count(dump), t(&[]));
    }

    /// Table and column names hold what a dump's lexer cares about: comment markers (also
    /// inside the versioned comments a dump wraps them in), quotes, parentheses, `;`, line
    /// breaks. Each table's rows are still counted, and the tables after it too.
    #[test]
    fn hostile_names_do_not_hide_rows() {
        let names = [
            "/* c */",
            "*/",
            "-- x",
            "# h",
            "a\n-- b; */ ",
            "it's",
            "say \"hi\"",
            "back``tick",
            "$(touch x)",
            "(",
            ";",
            "DELIMITER ;;",
        ];
        let mut dump = String::new();
        for (i, n) in names.iter().enumerate() {
            // In comments, as mariadb-dump writes them, a line break goes on as a comment.
            let c = n.replace('\n', "\n-- ");
            dump.push_str(&format!(
                "--\n-- Table structure for table `{c}`\n--\n\n\
                 /*!40101 SET @saved_cs_client = @@character_set_client */;\n\
                 CREATE TABLE `{n}` (\n  `{n}` int(11) DEFAULT NULL\n);\n\
                 LOCK TABLES `{n}` WRITE;\n\
                 /*!40000 ALTER TABLE `{n}` DISABLE KEYS */;\n\
                 INSERT INTO `{n}` (`{n}`, `(`) VALUES {};\n\
                 /*!40000 ALTER TABLE `{n}` ENABLE KEYS */;\n\
                 UNLOCK TABLES;\n\
                 /*!50003 CREATE*/ /*!50003 TRIGGER `{n}` BEFORE INSERT ON `{n}` FOR EACH ROW \
                 SET @x = '*/ INSERT INTO `t` VALUES (1);' -- */ (2)\n*/;\n",
                vec!["(1,2)"; i + 1].join(",")
            ));
        }
        let unquoted = |n: &str| n.replace("``", "`");
        let expected: Vec<(String, u64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (unquoted(n), i as u64 + 1))
            .collect();
        assert_eq!(count(dump.as_bytes()), expected);
        for size in [1, 2, 3, 7, 64] {
            assert_eq!(
                count_in_pieces(dump.as_bytes(), size),
                expected,
                "pieces of {size}"
            );
        }
    }

    #[test]
    fn versioned_comments_hold_plain_comments() {
        let dump = b"/*!50003 a /* inner */ b */ INSERT INTO `t` VALUES (1);\n\
            /*M!100100 `*/` */ INSERT INTO `t` VALUES (2);\n\
            /**/ INSERT INTO `t` VALUES (3);\n";
        assert_eq!(count(dump), t(&[("t", 3)]));
    }

    #[test]
    fn a_huge_head_is_given_up_not_buffered() {
        let mut dump = b"INSERT INTO `t` (".to_vec();
        dump.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        dump.extend_from_slice(b") VALUES (1);\nINSERT INTO `t` VALUES (2);");
        let mut c = SqlCounter::new();
        c.feed(&dump);
        assert!(c.head.capacity() <= MAX_HEAD + 1024);
        assert_eq!(c.finish(), t(&[("t", 1)]));
    }
}
