//! Loading a dump past the statements that fail: the client with `--force`, whose error
//! output names each failed statement, read back as failed objects.
//!
//! Invariants: only dumps load this way (every script of ours stops at its first error); a
//! client error (the connection lost) fails the whole load; the error output kept is bounded.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::FailedObject;

use super::conn::Endpoint;
use super::lex::{lex, Lexeme};
use super::quote::quote_ident;
use super::{MyTools, MAX_PACKET};

/// Most bytes of the client's error output kept from one forced load.
const MAX_LOAD_ERRORS: usize = 4 << 20;
/// Most characters of a failed statement shown.
const STATEMENT_SHOWN: usize = 300;

/// The client loading a database's dump with `--force`: a statement that fails (an object
/// that cannot come back) is reported and the client goes on with the next one. Only dumps
/// are loaded this way; every script of ours stops at its first error. `--skip-reconnect`: a
/// lost connection is not papered over, and it fails the load (as any client error does).
pub(super) struct Forced {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

impl Forced {
    pub(super) fn start(tools: &MyTools, ep: &Endpoint) -> Result<Forced> {
        let program = tools.client()?;
        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg("--no-defaults")
            .args(&ep.args)
            .args([
                "--connect-timeout=10",
                "--binary-mode",
                MAX_PACKET,
                "--force",
                "--skip-reconnect",
            ])
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(pw) = &ep.password {
            cmd.env("MYSQL_PWD", pw);
        }
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            tool: "mariadb".into(),
            source,
        })?;
        let stdin = child.stdin.take();
        let mut err = child.stderr.take();
        let stderr = tokio::spawn(async move {
            let mut kept = Vec::new();
            if let Some(err) = err.as_mut() {
                let mut buf = [0u8; 8192];
                loop {
                    match err.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let room = MAX_LOAD_ERRORS.saturating_sub(kept.len());
                            kept.extend_from_slice(&buf[..n.min(room)]);
                        }
                    }
                }
            }
            kept
        });
        Ok(Forced {
            child,
            stdin,
            stderr,
        })
    }

    /// Writes `data` to the client; false when it stopped reading.
    pub(super) async fn write(&mut self, data: &[u8]) -> bool {
        match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(data).await.is_ok(),
            None => false,
        }
    }

    /// Ends the input and waits: the statements that failed, each with its error. A client
    /// error (the connection lost, a client that failed without saying which statement) is
    /// an error of the whole load.
    pub(super) async fn finish(mut self) -> Result<Vec<FailedObject>> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        let status = self.child.wait().await.map_err(|source| Error::Spawn {
            tool: "mariadb".into(),
            source,
        })?;
        let stderr = (&mut self.stderr).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&stderr);
        let (failed, client_error) = parse_forced_errors(&text);
        if client_error || (!status.success() && failed.is_empty()) {
            let tail = text.len().saturating_sub(4096);
            let tail = text
                .char_indices()
                .find(|(i, _)| *i >= tail)
                .map_or(0, |(i, _)| i);
            return Err(Error::Tool {
                tool: "mariadb".into(),
                status: status.to_string(),
                stderr: text[tail..].trim().to_string(),
            });
        }
        if stderr.len() >= MAX_LOAD_ERRORS {
            let mut failed = failed;
            failed.push(FailedObject {
                name: "more statements".into(),
                reason: format!(
                    "the client's errors outgrew the {} MiB kept: more statements failed",
                    MAX_LOAD_ERRORS >> 20
                ),
            });
            return Ok(failed);
        }
        Ok(failed)
    }

    /// Kills the client before its input ends, so it cannot take a cut-off dump for a
    /// whole one.
    pub(super) async fn abort(mut self) {
        let _ = self.child.kill().await;
        drop(self.stdin.take());
    }
}

/// The failed statements in the error output of `mariadb --force` (each one as the client
/// shows it: the statement between lines of dashes, a blank line, then
/// `ERROR <code> (<state>) at line <n>: <message>`), each as what it was to create or fill
/// ([`statement_object`]) and `<error>; statement: <its start>`, and whether a client error
/// (`ERROR 2xxx`: the connection, not a statement) was among them.
fn parse_forced_errors(text: &str) -> (Vec<FailedObject>, bool) {
    const DASHES: &str = "--------------\n";
    const END: &str = "\n--------------\n\nERROR ";
    let mut failed = Vec::new();
    let mut client_error = false;
    let mut rest = text;
    while !rest.is_empty() {
        let (statement, error_line, next) = if let Some(body) = rest.strip_prefix(DASHES) {
            match body.find(END) {
                Some(at) => {
                    let after = &body[at + END.len() - "ERROR ".len()..];
                    let eol = after.find('\n').map_or(after.len(), |n| n + 1);
                    (Some(&body[..at]), &after[..eol], &after[eol..])
                }
                None => {
                    let eol = rest.find('\n').map_or(rest.len(), |n| n + 1);
                    (None, &rest[..eol], &rest[eol..])
                }
            }
        } else {
            let eol = rest.find('\n').map_or(rest.len(), |n| n + 1);
            (None, &rest[..eol], &rest[eol..])
        };
        rest = next;
        let error_line = error_line.trim();
        let Some(code) = error_line.strip_prefix("ERROR ") else {
            continue;
        };
        if code.starts_with('2') {
            client_error = true;
        }
        let mut reason = error_line.to_string();
        let mut name = "a statement".to_string();
        if let Some(statement) = statement {
            let statement = statement.trim();
            name = statement_object(statement);
            let mut head: String = statement.chars().take(STATEMENT_SHOWN).collect();
            if head.len() < statement.len() {
                head.push_str("...");
            }
            reason.push_str(&format!("; statement: {head}"));
        }
        failed.push(FailedObject { name, reason });
    }
    (failed, client_error)
}

/// What a dump's statement creates or fills, to name a failed object: its kind and
/// (backquoted) name, e.g. ``VIEW `big_orders` ``, ``TABLE DATA `t` `` (an `INSERT`),
/// ``TRIGGER `db`.`tr` ``; else `statement <first word>`. Keywords are bare words only:
/// a quoted name or a string never counts as one.
fn statement_object(statement: &str) -> String {
    #[derive(PartialEq)]
    enum T {
        Word(String),
        Name(String),
        Dot,
        Other,
    }
    let toks: Vec<T> = lex(statement)
        .into_iter()
        .map(|l| match l {
            Lexeme::Word(w) => T::Word(w),
            Lexeme::Quoted(b'`', n) => T::Name(n),
            Lexeme::Dot => T::Dot,
            Lexeme::Quoted(..) | Lexeme::At | Lexeme::Other => T::Other,
        })
        .collect();
    let word = |t: Option<&T>, w: &str| matches!(t, Some(T::Word(x)) if x.eq_ignore_ascii_case(w));
    let kinds = [
        ("VIEW", "VIEW"),
        ("TABLE", "TABLE"),
        ("INTO", "TABLE DATA"),
        ("PROCEDURE", "PROCEDURE"),
        ("FUNCTION", "FUNCTION"),
        ("TRIGGER", "TRIGGER"),
        ("EVENT", "EVENT"),
        ("SEQUENCE", "SEQUENCE"),
        ("DATABASE", "DATABASE"),
    ];
    for (at, t) in toks.iter().enumerate() {
        let Some((_, kind)) = kinds.iter().find(|(k, _)| word(Some(t), k)) else {
            continue;
        };
        let mut j = at + 1;
        if word(toks.get(j), "IF") {
            j += if word(toks.get(j + 1), "NOT") { 3 } else { 2 };
        }
        let mut parts = Vec::new();
        while let Some(T::Word(n) | T::Name(n)) = toks.get(j) {
            parts.push(quote_ident(n));
            if toks.get(j + 1) != Some(&T::Dot) {
                break;
            }
            j += 2;
        }
        if !parts.is_empty() {
            return format!("{kind} {}", parts.join("."));
        }
    }
    match toks.iter().find_map(|t| match t {
        T::Word(w) if !w.bytes().all(|c| c.is_ascii_digit()) => Some(w.to_uppercase()),
        _ => None,
    }) {
        Some(w) => format!("statement {w}"),
        None => "a statement".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_load_errors_name_their_statements() {
        let text = "--------------\n/*!50001 VIEW `v` AS select 1 from `b`.`t` */\n\
            --------------\n\nERROR 1146 (42S02) at line 38: Table 'b.t' doesn't exist\n\
            --------------\nINSERT INTO `x\n--------------\n` VALUES (1)\n--------------\n\n\
            ERROR 1142 (42000) at line 40: INSERT command denied\n";
        let (failed, client) = parse_forced_errors(text);
        assert!(!client);
        let failed: Vec<(&str, &str)> = failed
            .iter()
            .map(|f| (f.name.as_str(), f.reason.as_str()))
            .collect();
        assert_eq!(
            failed,
            [
                (
                    "VIEW `v`",
                    "ERROR 1146 (42S02) at line 38: Table 'b.t' doesn't exist; statement: \
                     /*!50001 VIEW `v` AS select 1 from `b`.`t` */"
                ),
                (
                    "TABLE DATA `x\n--------------\n`",
                    "ERROR 1142 (42000) at line 40: INSERT command denied; statement: \
                     INSERT INTO `x\n--------------\n` VALUES (1)"
                ),
            ]
        );
        for (statement, object) in [
            (
                "/*!50003 CREATE*/ /*!50017 DEFINER=`view`@`localhost`*/ /*!50003 trigger a.tr before insert on t",
                "TRIGGER `a`.`tr`",
            ),
            ("CREATE TABLE IF NOT EXISTS `TABLE` (x INT)", "TABLE `TABLE`"),
            ("CREATE DEFINER=`root`@`%` PROCEDURE `p`()", "PROCEDURE `p`"),
            ("SET @a = 'VIEW x'", "statement SET"),
        ] {
            assert_eq!(statement_object(statement), object, "{statement}");
        }
        let (failed, client) =
            parse_forced_errors("ERROR 2013 (HY000) at line 9: Lost connection to server\n");
        assert!(client);
        assert_eq!(failed.len(), 1);
        let long = format!(
            "--------------\nINSERT INTO `t` VALUES {}\n--------------\n\nERROR 1 (x) at line 1: e\n",
            "(1),".repeat(1000)
        );
        let (failed, _) = parse_forced_errors(&long);
        assert!(
            failed[0].reason.ends_with("...") && failed[0].reason.len() < STATEMENT_SHOWN + 100
        );
    }
}
