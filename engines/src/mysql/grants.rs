//! The grants part: written at backup from `SHOW CREATE USER` and `SHOW GRANTS` (roles,
//! accounts, their global and database grants, then object-level grants under
//! `-- strongbox: after database <hex name>` markers), and read at restore by statements.
//!
//! Invariants: the server's own accounts are left out; the part is split by statements as the
//! server lexes it, never by lines, so a name holding a line break, a `;` or a marker stays
//! inside its statement; a damaged part is refused before anything applies.

use crate::error::{Error, Result};

use super::conn::Endpoint;
use super::lex::{lex, quoted_identifier, skip_quoted, Lexeme};
use super::quote::{quote_ident, unescape_batch, unhex};
use super::{MyTools, SESSION_MODE};

/// Accounts that belong to the server, never carried in the grants part.
const SYSTEM_ACCOUNTS: &[&str] = &["root", "mariadb.sys", "mysql", "PUBLIC", ""];
/// Marks the start of object-level grants to apply after a database is loaded.
const AFTER_DATABASE: &str = "-- strongbox: after database ";

/// Writes the grants part: roles, accounts, their grants; object-level grants last, each
/// group after an [`AFTER_DATABASE`] marker.
pub(super) async fn dump_grants(ep: &Endpoint, tools: &MyTools, service: &str) -> Result<String> {
    let accounts_sql = "SELECT HEX(User), HEX(Host), is_role FROM mysql.user ORDER BY User, Host";
    let rows = match ep.query(tools, accounts_sql).await {
        Ok(rows) => rows,
        // MySQL has no is_role column.
        Err(_) => {
            ep.query(
                tools,
                "SELECT HEX(User), HEX(Host), 'N' FROM mysql.user ORDER BY User, Host",
            )
            .await?
        }
    };
    struct Account {
        user: String,
        host: String,
        role: bool,
    }
    let mut accounts = Vec::new();
    for r in rows {
        if r.len() < 3 {
            continue;
        }
        let user = unhex(&r[0])?;
        if SYSTEM_ACCOUNTS.contains(&user.as_str()) {
            continue;
        }
        accounts.push(Account {
            user,
            host: unhex(&r[1])?,
            role: r[2] == "Y",
        });
    }
    // One client run; each account's answers follow a marker row. --force goes on past
    // accounts the server cannot show (e.g. host names while skip-name-resolve is on): the
    // script only reads (SELECT and SHOW), and every name in it is quoted, so an error ends
    // one statement and can start none. SESSION_MODE first: the server then quotes names in
    // its answers with backquotes.
    let mut script = String::from(SESSION_MODE);
    for (i, a) in accounts.iter().enumerate() {
        script.push_str(&format!("SELECT '#strongbox# {i}';\n"));
        if a.role {
            script.push_str(&format!("SHOW GRANTS FOR {};\n", quote_ident(&a.user)));
        } else {
            let who = format!("{}@{}", quote_ident(&a.user), quote_ident(&a.host));
            script.push_str(&format!(
                "SHOW CREATE USER {who};\nSHOW GRANTS FOR {who};\n"
            ));
        }
    }
    script.push_str("SELECT '#strongbox# end';\n");
    let mut cmd = ep.client(tools)?;
    cmd.args(["-N", "-B", "--force"]);
    let out = cmd.capture_with_input(script.as_bytes()).await?;
    if !out.stdout.lines().any(|l| l == "#strongbox# end") {
        return Err(ep.client_error(&out.stderr));
    }
    if !out.success {
        tracing::warn!(service, problems = %out.stderr, "some accounts could not be read and are left out of the grants part");
    }
    let mut lines_of: Vec<Vec<String>> = vec![Vec::new(); accounts.len()];
    let mut current: Option<usize> = None;
    for line in out.stdout.lines() {
        if let Some(rest) = line.strip_prefix("#strongbox# ") {
            current = rest.parse::<usize>().ok();
            continue;
        }
        if let Some(i) = current {
            if let Some(slot) = lines_of.get_mut(i) {
                slot.push(unescape_batch(line));
            }
        }
    }

    let mut roles = Vec::new();
    let mut users = Vec::new();
    let mut grants = Vec::new();
    let mut after: Vec<(String, String)> = Vec::new();
    for (a, lines) in accounts.iter().zip(lines_of) {
        if lines.is_empty() {
            continue;
        }
        if a.role {
            roles.push(format!(
                "CREATE ROLE IF NOT EXISTS {};",
                quote_ident(&a.user)
            ));
        }
        for l in lines {
            if let Some(rest) = l.strip_prefix("CREATE USER ") {
                let rest = rest.strip_prefix("IF NOT EXISTS ").unwrap_or(rest);
                users.push(format!("CREATE USER IF NOT EXISTS {rest};"));
            } else if let Some(db) = object_grant_database(&l) {
                after.push((db, format!("{l};")));
            } else {
                grants.push(format!("{l};"));
            }
        }
    }
    let mut sql = String::from(
        "-- strongbox-agent: roles, accounts and grants of a MariaDB server.\n\
         -- Object-level grants (tables, columns, routines) come last, each group after the\n\
         -- database it needs: load this whole file after every database's dump (and its\n\
         -- views). Names may hold line breaks: load it with `mariadb --binary-mode`, and\n\
         -- split it by statements, never by lines.\n",
    );
    sql.push_str(SESSION_MODE);
    for l in roles.iter().chain(&users).chain(&grants) {
        sql.push_str(l);
        sql.push('\n');
    }
    after.sort_by(|a, b| a.0.cmp(&b.0));
    let mut last_db: Option<&str> = None;
    for (db, l) in &after {
        if last_db != Some(db.as_str()) {
            sql.push_str(&format!("{AFTER_DATABASE}{}\n", hex::encode(db)));
            last_db = Some(db);
        }
        sql.push_str(l);
        sql.push('\n');
    }
    tracing::info!(service, accounts = accounts.len(), "grants dumped");
    Ok(sql)
}

/// The database of an object-level grant (`GRANT ... ON [PROCEDURE|FUNCTION|PACKAGE [BODY]]
/// db.obj TO ...` where obj is not `*`); None for global, database, role and proxy grants.
fn object_grant_database(line: &str) -> Option<String> {
    if !line.starts_with("GRANT ") {
        return None;
    }
    // Find " ON " outside quotes.
    let b = line.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    let mut on_at = None;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'`' || c == b'\'' => quote = Some(c),
            None if b[i..].starts_with(b" ON ") => {
                on_at = Some(i + 4);
                break;
            }
            None => {}
        }
        i += 1;
    }
    let mut rest = line[on_at?..].trim_start();
    for kw in ["PROCEDURE ", "FUNCTION ", "PACKAGE BODY ", "PACKAGE "] {
        if let Some(r) = rest.strip_prefix(kw) {
            rest = r.trim_start();
            break;
        }
    }
    let (db, after) = read_identifier(rest)?;
    let after = after.strip_prefix('.')?;
    if after.starts_with('*') {
        return None;
    }
    Some(db)
}

/// Reads a backquoted or bare identifier at the start of `s`; returns it and the rest.
fn read_identifier(s: &str) -> Option<(String, &str)> {
    if let Some(body) = s.strip_prefix('`') {
        quoted_identifier(body, '`')
    } else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        if end == 0 || s[..end] == *"*" {
            return None;
        }
        Some((s[..end].to_string(), &s[end..]))
    }
}

/// One piece of a grants part.
#[derive(Debug, PartialEq, Eq)]
enum GrantsItem {
    /// An [`AFTER_DATABASE`] marker between statements: the database whose object-level
    /// grants follow.
    After(String),
    /// One statement, with its `;`.
    Statement(String),
}

/// Splits a grants part into statements and markers, lexing it as the server does under
/// [`SESSION_MODE`]: backquoted names with doubled backquotes, strings in `'` or `"` with
/// backslash escapes and doubled quotes, `-- `, `#` and `/* */` comments (`/*! */` ones are
/// code, quotes in them included). A marker counts only as a comment line between
/// statements: inside a name it is part of the name. Other comments between statements are
/// dropped.
fn grants_items(text: &str) -> Result<Vec<GrantsItem>> {
    let damaged = |what: &str| {
        Error::Other(format!(
            "the grants part {what}: it is damaged or was not made by strongbox-agent; \
             restore without it or from another backup"
        ))
    };
    let b = text.as_bytes();
    let mut items = Vec::new();
    // Where the statement being read started, once it has.
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            b'`' | b'\'' | b'"' => {
                start.get_or_insert(i);
                i = skip_quoted(b, i)
                    .ok_or_else(|| damaged("ends inside a quoted name or string"))?;
                continue;
            }
            b'-' if next == Some(b'-')
                && b.get(i + 2)
                    .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control()) =>
            {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| i + n);
                if start.is_none() {
                    if let Some(hex_name) = text[i..end].trim_end().strip_prefix(AFTER_DATABASE) {
                        let db = hex::decode(hex_name.trim())
                            .ok()
                            .and_then(|bytes| String::from_utf8(bytes).ok())
                            .ok_or_else(|| {
                                damaged("has a marker whose database is not hex of UTF-8")
                            })?;
                        items.push(GrantsItem::After(db));
                    }
                }
                i = end;
                continue;
            }
            b'#' => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| i + n);
                continue;
            }
            b'/' if next == Some(b'*') => {
                if matches!(b.get(i + 2), Some(b'!' | b'M')) {
                    // A versioned comment is code to the server: its quotes are lexed as
                    // quotes, and its `*/` is just more code.
                    start.get_or_insert(i);
                    i += 2;
                    continue;
                }
                let end = text[i + 2..]
                    .find("*/")
                    .ok_or_else(|| damaged("ends inside a comment"))?;
                i += 2 + end + 2;
                continue;
            }
            b';' => {
                if let Some(s) = start.take() {
                    items.push(GrantsItem::Statement(text[s..=i].to_string()));
                }
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                start.get_or_insert(i);
            }
        }
        i += 1;
    }
    if start.is_some() {
        return Err(damaged("ends inside a statement (no `;`)"));
    }
    Ok(items)
}

/// A grants part as what loads now and the object grants waiting for a database (in order),
/// leaving out the statements that name one of the accounts in `skip`.
pub(super) fn split_grants(
    text: &str,
    skip: &[(String, String)],
) -> Result<(String, Vec<(String, String)>)> {
    let mut now = String::new();
    let mut waiting: Vec<(String, String)> = Vec::new();
    for item in grants_items(text)? {
        match item {
            GrantsItem::After(db) => waiting.push((db, String::new())),
            GrantsItem::Statement(sql) => {
                if names_account(&sql, skip) {
                    continue;
                }
                let out = match waiting.last_mut() {
                    Some((_, group)) => group,
                    None => &mut now,
                };
                out.push_str(&sql);
                out.push('\n');
            }
        }
    }
    Ok((now, waiting))
}

/// Whether `statement` names one of `accounts` (user, host) as `user@host`, each side a
/// backquoted name, a string or a bare word, compared after unquoting.
fn names_account(statement: &str, accounts: &[(String, String)]) -> bool {
    let tokens = account_tokens(statement);
    tokens.windows(3).any(|w| match w {
        [Tok::Name(user), Tok::At, Tok::Name(host)] => {
            accounts.iter().any(|(u, h)| u == user && h == host)
        }
        _ => false,
    })
}

/// A token of a statement, as far as [`names_account`] cares.
#[derive(Debug, PartialEq, Eq)]
enum Tok {
    /// A backquoted name or a string (unquoted), or a bare word.
    Name(String),
    At,
    /// Any other punctuation.
    Other,
}

fn account_tokens(statement: &str) -> Vec<Tok> {
    lex(statement)
        .into_iter()
        .map(|l| match l {
            Lexeme::Word(n) | Lexeme::Quoted(_, n) => Tok::Name(n),
            Lexeme::At => Tok::At,
            Lexeme::Dot | Lexeme::Other => Tok::Other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_grants_are_recognised() {
        let g = |l: &str| object_grant_database(l);
        assert_eq!(
            g("GRANT SELECT ON `shop`.`t` TO `app`@`%`"),
            Some("shop".into())
        );
        assert_eq!(
            g("GRANT SELECT (`id`), INSERT (`a`) ON `sh``op`.`t` TO `app`@`%`"),
            Some("sh`op".into())
        );
        assert_eq!(
            g("GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `app`@`%`"),
            Some("shop".into())
        );
        assert_eq!(g("GRANT ALL PRIVILEGES ON `shop`.* TO `app`@`%`"), None);
        assert_eq!(
            g("GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*AB'"),
            None
        );
        assert_eq!(g("GRANT `rr` TO `app`@`%`"), None);
        assert_eq!(g("GRANT PROXY ON ``@`%` TO `root`@`localhost`"), None);
        assert_eq!(g("GRANT SELECT ON `a ON b`.* TO `x`@`%`"), None);
        assert_eq!(g("SET DEFAULT ROLE `rr` FOR `app`@`%`"), None);
    }
    #[test]
    fn grants_split_by_database() {
        let text = "CREATE USER IF NOT EXISTS `a`@`%`;\nGRANT USAGE ON *.* TO `a`@`%`;\n\
            -- strongbox: after database 73686f70\nGRANT SELECT ON `shop`.`t` TO `a`@`%`;\n\
            -- strongbox: after database 78\nGRANT SELECT ON `x`.`u` TO `a`@`%`;\n";
        let (now, waiting) = split_grants(text, &[]).unwrap();
        assert_eq!(
            now,
            "CREATE USER IF NOT EXISTS `a`@`%`;\nGRANT USAGE ON *.* TO `a`@`%`;\n"
        );
        assert_eq!(
            waiting,
            vec![
                (
                    "shop".to_string(),
                    "GRANT SELECT ON `shop`.`t` TO `a`@`%`;\n".to_string()
                ),
                (
                    "x".to_string(),
                    "GRANT SELECT ON `x`.`u` TO `a`@`%`;\n".to_string()
                )
            ]
        );
    }
    #[test]
    fn the_agents_own_account_is_left_out_of_the_grants() {
        let text = "CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*A';\n\
            CREATE USER IF NOT EXISTS `agent`@`localhost` IDENTIFIED BY PASSWORD '*B';\n\
            GRANT RELOAD ON *.* TO `agent`@`localhost`;\n\
            GRANT PROXY ON 'agent'@'localhost' TO `app`@`%`;\n\
            GRANT SELECT ON *.* TO `agent`@`%`;\n\
            GRANT SELECT ON *.* TO `a``agent`@`localhost`;\n";
        let me = [("agent".to_string(), "localhost".to_string())];
        assert_eq!(
            split_grants(text, &me).unwrap().0,
            "CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*A';\n\
             GRANT SELECT ON *.* TO `agent`@`%`;\n\
             GRANT SELECT ON *.* TO `a``agent`@`localhost`;\n"
        );
    }
    /// Names with line breaks, markers, `;`, comment starters and quotes stay inside their
    /// statement: nothing of them becomes a marker, a statement or a skipped line.
    #[test]
    fn hostile_names_stay_inside_their_statement() {
        let evil = "x\n-- strongbox: after database 78\nGRANT ALL ON *.* TO x;\n# ;";
        let q = quote_ident(evil);
        let me = [("agent".to_string(), "localhost".to_string())];
        let text = format!(
            "-- header\n{SESSION_MODE}CREATE ROLE IF NOT EXISTS {q};\n\
             CREATE USER IF NOT EXISTS {q}@`%` IDENTIFIED BY PASSWORD '*A;\\'\n-- ';\n\
             GRANT {q} TO {q}@`%`;\n\
             CREATE USER IF NOT EXISTS `agent\n`@`localhost`;\n\
             GRANT SELECT ON *.* TO `y`@`x\n``agent``@``localhost`;\n\
             {AFTER_DATABASE}{}\nGRANT SELECT ON {q}.{q} TO {q}@`%`;\n\
             /* a comment; */ /*!40101 SET @a = 1 */;\n",
            hex::encode(evil)
        );
        let (now, waiting) = split_grants(&text, &me).unwrap();
        assert_eq!(
            now,
            format!(
                "{SESSION_MODE}CREATE ROLE IF NOT EXISTS {q};\n\
                 CREATE USER IF NOT EXISTS {q}@`%` IDENTIFIED BY PASSWORD '*A;\\'\n-- ';\n\
                 GRANT {q} TO {q}@`%`;\n\
                 CREATE USER IF NOT EXISTS `agent\n`@`localhost`;\n\
                 GRANT SELECT ON *.* TO `y`@`x\n``agent``@``localhost`;\n"
            )
        );
        assert_eq!(
            waiting,
            vec![(
                evil.to_string(),
                format!("GRANT SELECT ON {q}.{q} TO {q}@`%`;\n/*!40101 SET @a = 1 */;\n")
            )]
        );
        // Accounts are compared unquoted, whatever the quotes.
        let evil_me = [(evil.to_string(), "%".to_string())];
        let (now, waiting) = split_grants(&text, &evil_me).unwrap();
        assert_eq!(
            now,
            format!(
                "{SESSION_MODE}CREATE ROLE IF NOT EXISTS {q};\n\
                 CREATE USER IF NOT EXISTS `agent\n`@`localhost`;\n\
                 GRANT SELECT ON *.* TO `y`@`x\n``agent``@``localhost`;\n"
            )
        );
        assert_eq!(waiting[0].1, "/*!40101 SET @a = 1 */;\n");
        assert!(names_account(
            "GRANT PROXY ON 'it\\'s\\n'@\"h\" TO x",
            &[("it's\n".into(), "h".into())]
        ));
    }
    #[test]
    fn damaged_grants_parts_are_refused() {
        for text in [
            "GRANT SELECT ON *.* TO `a`@`%`",
            "GRANT SELECT ON *.* TO `a@`%`;\n",
            "CREATE USER 'a\\';\n",
            "/* open;\n",
            "-- strongbox: after database zz\nGRANT SELECT ON *.* TO `a`@`%`;\n",
        ] {
            let err = split_grants(text, &[]).unwrap_err().to_string();
            assert!(err.contains("damaged"), "{text:?}: {err}");
        }
    }
}
