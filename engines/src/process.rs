//! Running the engines' tools (`pg_dump`, `psql`, `mariadb-dump`, `initdb`, ...) as child
//! processes, and the unprivileged system users that provisioned servers run as.
//!
//! Invariants:
//! - **Clean, explicit environment.** Every tool starts with an empty environment plus `PATH`,
//!   `LC_ALL=C` and exactly the variables its engine sets (`PGHOST`, `PGPASSWORD`,
//!   `MYSQL_PWD`, ...). Nothing the agent inherited (a stray `PGPASSFILE`, `MYSQL_HOST`, ...)
//!   can redirect a tool. A streaming tool runs through coreutils' `stdbuf` when it is
//!   installed, which adds its own `LD_PRELOAD` and `_STDBUF_O` (a 1 MiB stdout buffer).
//!   Passwords travel only in the environment: never as an argument,
//!   never in an error (errors carry the tool's name, exit status and stderr, which the tools
//!   do not fill with passwords) and never in a log line ([`ToolCommand`]'s `Debug` omits
//!   environment values).
//! - **Bounded error output.** Only the last [`STDERR_TAIL`] bytes of a tool's stderr are kept;
//!   a non-zero exit becomes `Error::Tool { tool, status, stderr }`.
//! - **No orphans from the agent's side.** Every child is `kill_on_drop`: dropping a streaming
//!   dump (its reader and `finish`) before the tool ended kills the tool. The exception is
//!   [`ToolCommand::spawn_detached`], used to start servers that must outlive the agent: it
//!   starts them in their own session through a shell that exits at once, so they are never
//!   the agent's children.
//! - **Input errors never look like success.** When the stream fed into a tool's stdin fails,
//!   the tool is killed *before* its stdin is closed, so a loader never commits half a part
//!   believing it reached the end.
//! - **Servers never run as root.** When the agent runs as root, [`SystemUser::when_root`]
//!   names the unprivileged user a server must run as (`postgres`, `mysql`); the user is never
//!   created here, and its absence is an error that says how to create it.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// How much of a tool's stderr is kept for its error message.
pub const STDERR_TAIL: usize = 4096;

/// `PATH` for tools when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---------------------------------------------------------------------------------------------
// System users
// ---------------------------------------------------------------------------------------------

/// An unprivileged system user a provisioned server runs as (the agent runs as root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl SystemUser {
    /// When the agent runs as root (`geteuid() == 0`): the existing system user `name`, which
    /// `server` must run as. Otherwise `None`: servers run as the agent's own user.
    pub fn when_root(name: &str, server: &str) -> Result<Option<SystemUser>> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Some(SystemUser {
                name: name.to_string(),
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            })),
            Ok(None) => Err(Error::Other(format!(
                "the agent runs as root, and {server} refuses to (or must not) run as root, but \
                 the system user `{name}` it should run as does not exist: install the {server} \
                 server package (which creates it) or create it with \
                 `useradd --system --user-group {name}`"
            ))),
            Err(e) => Err(Error::Other(format!(
                "looking up the system user `{name}`: {e}"
            ))),
        }
    }

    /// Gives `path` (not recursively) to this user and its group.
    pub fn chown(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(|source| Error::Io {
            what: "giving the folder to the server's system user (chown)",
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks that this user can reach `dir`: every existing ancestor must be searchable by
    /// it (owner, group or other execute bit). The error names the folder to fix.
    pub fn check_can_reach(&self, dir: &Path) -> Result<()> {
        let mut ancestors: Vec<&Path> = dir.ancestors().skip(1).collect();
        ancestors.reverse();
        for a in ancestors {
            if a.as_os_str().is_empty() {
                continue;
            }
            let Ok(meta) = std::fs::metadata(a) else {
                continue;
            };
            let mode = meta.mode();
            let ok = if meta.uid() == self.uid {
                mode & 0o100 != 0
            } else if meta.gid() == self.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !ok {
                return Err(Error::Other(format!(
                    "the system user `{}` cannot reach {}: {} (mode {:o}, owner uid {}) is not \
                     searchable by it; allow it (e.g. `chmod o+x {}`) or choose a data root \
                     that `{}` can reach",
                    self.name,
                    dir.display(),
                    a.display(),
                    mode & 0o7777,
                    meta.uid(),
                    a.display(),
                    self.name
                )));
            }
        }
        Ok(())
    }
}

/// Creates `dir` (and its parents) for a fresh server: it must not exist or be empty. It gets
/// mode 0700 and belongs to `owner` when given.
pub fn create_server_dir(dir: &Path, owner: Option<&SystemUser>) -> Result<()> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
            what: "listing the restore folder",
            path: dir.to_path_buf(),
            source,
        })?;
        if entries.next().is_some() {
            return Err(Error::Other(format!(
                "the restore folder {} is not empty: a restore always provisions a fresh server; \
                 choose another folder or remove it",
                dir.display()
            )));
        }
    } else {
        strongbox_core::private::create_dir_all(dir)
            .map_err(|e| Error::Other(format!("creating the restore folder: {e}")))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        Error::Io {
            what: "restricting the restore folder to mode 0700",
            path: dir.to_path_buf(),
            source,
        }
    })?;
    if let Some(user) = owner {
        user.check_can_reach(dir)?;
        user.chown(dir)?;
    }
    Ok(())
}

/// Writes `secret` plus a newline to `path`, created with mode 0600 (never readable by others,
/// not even for an instant). Fails if the file exists.
pub fn write_secret_file(path: &Path, secret: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::Io {
        what: "writing the password file",
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(secret.as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)?;
    f.sync_all().map_err(io)
}

/// A fresh random password: 24 random bytes as 48 hex digits (safe in any quoting).
pub fn random_password() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// A tool to run, with a clean environment. Build it, then run it with one of the `spawn_*`,
/// `output*` or `run_with_input` methods.
#[derive(Clone)]
pub struct ToolCommand {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(String, OsString)>,
    dir: Option<PathBuf>,
    user: Option<SystemUser>,
    tool: String,
}

impl std::fmt::Debug for ToolCommand {
    // Environment values may be passwords: show the names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolCommand")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.envs.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("user", &self.user.as_ref().map(|u| &u.name))
            .finish()
    }
}

impl ToolCommand {
    /// `program` with an empty environment plus `PATH` and `LC_ALL=C`, stdin from /dev/null.
    pub fn new(program: &Path) -> ToolCommand {
        let tool = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.display().to_string());
        ToolCommand {
            program: program.to_path_buf(),
            args: Vec::new(),
            envs: vec![
                (
                    "PATH".into(),
                    std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
                ),
                ("LC_ALL".into(), "C".into()),
            ],
            dir: None,
            user: None,
            tool,
        }
    }

    /// The tool's name as errors show it (e.g. `pg_dump`).
    pub fn tool(&self) -> &str {
        &self.tool
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// Sets one environment variable (also the way passwords are handed over).
    pub fn env(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Self {
        self.envs.retain(|(k, _)| k != key);
        self.envs
            .push((key.to_string(), value.as_ref().to_os_string()));
        self
    }

    pub fn current_dir(&mut self, dir: &Path) -> &mut Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Runs the tool as `user` (primary group only; supplementary groups are dropped) when
    /// given.
    pub fn run_as(&mut self, user: Option<&SystemUser>) -> &mut Self {
        self.user = user.cloned();
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        if let Some(u) = &self.user {
            cmd.uid(u.uid).gid(u.gid);
        }
        cmd
    }

    /// [`Self::command`] for a tool whose stdout is a large stream: through coreutils'
    /// `stdbuf` where it is installed, so the tool's stdio writes the pipe in pieces of
    /// [`PIPE_BYTES`] rather than 4 KiB (pg_dump makes 250,000 `write` calls a GB otherwise).
    fn stream_command(&self) -> Command {
        let Some(stdbuf) = stdbuf() else {
            return self.command();
        };
        let mut wrapped = self.clone();
        wrapped.program = stdbuf.to_path_buf();
        wrapped.args = [
            OsString::from(format!("--output={PIPE_BYTES}")),
            self.program.clone().into_os_string(),
        ]
        .into_iter()
        .chain(self.args.iter().cloned())
        .collect();
        wrapped.command()
    }

    /// Starts the tool with its stdout as a stream. Read `stdout` to its end, then await
    /// [`Exit::wait`].
    pub fn spawn_stream(self) -> Result<Streaming> {
        let mut child = self.spawn(self.stream_command())?;
        let stdout = take_pipe(&mut child.stdout, &self.tool, "stdout")?;
        widen_pipe(&stdout);
        let stderr = collect_stderr(&mut child);
        Ok(Streaming {
            stdout,
            exit: Exit {
                child,
                stderr,
                stdout: None,
                tool: self.tool,
            },
        })
    }

    /// Starts the tool with a pipe to its stdin; its stdout is collected (see
    /// [`Feeding::finish`]).
    pub fn spawn_with_stdin(self) -> Result<Feeding> {
        let mut cmd = self.command();
        cmd.stdin(Stdio::piped());
        let mut child = self.spawn(cmd)?;
        let stdin = take_pipe(&mut child.stdin, &self.tool, "stdin")?;
        let stdout = child.stdout.take().map(|mut out| {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = out.read_to_end(&mut buf).await;
                buf
            })
        });
        let stderr = collect_stderr(&mut child);
        Ok(Feeding {
            stdin,
            exit: Exit {
                child,
                stderr,
                stdout,
                tool: self.tool,
            },
        })
    }

    /// Runs the tool to completion and returns its stdout (lossily decoded).
    pub async fn output(self) -> Result<String> {
        self.spawn_with_stdin()?.finish().await
    }

    /// Runs the tool with `input` (e.g. SQL text) on its stdin and returns its stdout.
    pub async fn output_with_input(self, input: &[u8]) -> Result<String> {
        self.run_with_input(input).await
    }

    /// Runs the tool with everything `input` yields on its stdin, and returns its stdout.
    /// Fails with the tool's error if it fails (also when it stops reading early), and with
    /// [`Error::Stream`] if `input` fails (the tool is killed first).
    pub async fn run_with_input<R: AsyncRead + Unpin>(self, input: R) -> Result<String> {
        self.run_with_filtered_input(input, |_| true).await
    }

    /// Like [`run_with_input`](Self::run_with_input), but drops the lines of `input` for
    /// which `keep_line` (given a whole line, with its `\n`) says false.
    pub async fn run_with_filtered_input<R, F>(self, input: R, keep_line: F) -> Result<String>
    where
        R: AsyncRead + Unpin,
        F: Fn(&[u8]) -> bool,
    {
        let tool = self.tool.clone();
        let mut feeding = self.spawn_with_stdin()?;
        match copy_filtered(input, &mut feeding.stdin, keep_line).await {
            Ok(()) => feeding.finish().await,
            Err(FeedError::Closed) => match feeding.finish().await {
                Err(e) => Err(e),
                Ok(_) => Err(Error::Other(format!(
                    "`{tool}` exited successfully before it read all of its input"
                ))),
            },
            Err(FeedError::Input(source)) => {
                feeding.abort().await;
                Err(Error::Stream {
                    what: format!("reading the data to feed into `{tool}`"),
                    source,
                })
            }
        }
    }

    /// Runs the tool to completion and returns its status and output whatever the status
    /// (for tools that report findings through their exit code, like `pg_amcheck`). Fails
    /// only when the tool cannot run.
    pub async fn capture(self) -> Result<Captured> {
        self.capture_with_input(b"").await
    }

    /// [`capture`](Self::capture) with `input` on the tool's stdin.
    pub async fn capture_with_input(self, input: &[u8]) -> Result<Captured> {
        let Feeding { mut stdin, exit } = self.spawn_with_stdin()?;
        // A tool that exits without reading its input is not an error here: its status says.
        let _ = stdin.write_all(input).await;
        let _ = stdin.shutdown().await;
        drop(stdin);
        exit.wait_capture().await
    }

    /// Starts a server that must outlive the agent: `sh -c` puts it in the background, in a
    /// new session, with stdin from /dev/null and stdout/stderr appended to `log`, and exits
    /// at once. Returns the server's pid. The server is never the agent's child.
    pub async fn spawn_detached(self, log: &Path) -> Result<u32> {
        let mut sh = self.clone();
        sh.program = PathBuf::from("/bin/sh");
        sh.args = vec![
            "-c".into(),
            r#"log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!"#.into(),
            "sh".into(),
            log.as_os_str().to_os_string(),
            self.program.as_os_str().to_os_string(),
        ];
        sh.args.extend(self.args.iter().cloned());
        let mut cmd = sh.command();
        // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = sh.spawn(cmd)?;
        let stdout = child.stdout.take();
        let stderr = collect_stderr(&mut child);
        let stdout = stdout.map(|mut out| {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = out.read_to_end(&mut buf).await;
                buf
            })
        });
        let out = Exit {
            child,
            stderr,
            stdout,
            tool: self.tool.clone(),
        }
        .wait()
        .await?;
        out.trim().parse::<u32>().map_err(|_| {
            Error::Other(format!(
                "starting `{}` in the background printed no pid (got {:?}); see {}",
                self.tool,
                out.trim(),
                log.display()
            ))
        })
    }

    fn spawn(&self, mut cmd: Command) -> Result<Child> {
        tracing::debug!(command = ?self, "running tool");
        cmd.spawn().map_err(|source| Error::Spawn {
            tool: self.tool.clone(),
            source,
        })
    }
}

/// Room in a dump's pipe: the default 64 KiB stalls the tool whenever the reader pauses to
/// cut, hash or seal a chunk, and wakes the reader for every few KiB written.
const PIPE_BYTES: libc::c_int = 1 << 20;

/// coreutils' `stdbuf`, found once on the agent's `PATH`.
fn stdbuf() -> Option<&'static Path> {
    static STDBUF: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    STDBUF
        .get_or_init(|| {
            let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
            std::env::split_paths(&path)
                .map(|dir| dir.join("stdbuf"))
                .find(|p| {
                    p.metadata()
                        .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
                })
        })
        .as_deref()
}

/// Grows a pipe to [`PIPE_BYTES`] where the system allows (best effort: a smaller pipe only
/// costs speed).
fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: F_SETPIPE_SZ on a descriptor we own changes only the pipe's buffer size.
    let r = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
    if r < 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not widen a dump pipe");
    }
}

fn take_pipe<T>(pipe: &mut Option<T>, tool: &str, which: &'static str) -> Result<T> {
    pipe.take().ok_or_else(|| missing_pipe(tool, which))
}

fn missing_pipe(tool: &str, which: &str) -> Error {
    Error::Other(format!("`{tool}` was started without a {which} pipe"))
}

fn collect_stderr(child: &mut Child) -> Option<JoinHandle<Vec<u8>>> {
    child.stderr.take().map(|err| tokio::spawn(read_tail(err)))
}

/// Reads `r` to its end, keeping only the last [`STDERR_TAIL`] bytes.
async fn read_tail<R: AsyncRead + Unpin>(mut r: R) -> Vec<u8> {
    let mut tail: VecDeque<u8> = VecDeque::with_capacity(STDERR_TAIL);
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend(&buf[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..excess);
            }
        }
    }
    tail.into()
}

/// The end of a tool's stderr as text for an error message.
fn stderr_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        "(it wrote nothing to stderr)".to_string()
    } else if bytes.len() >= STDERR_TAIL {
        format!("...{text}")
    } else {
        text.to_string()
    }
}

/// A tool whose stdout is being streamed.
pub struct Streaming {
    pub stdout: ChildStdout,
    pub exit: Exit,
}

/// A running tool: wait for it to end, or kill it (dropping it kills it too).
pub struct Exit {
    child: Child,
    stderr: Option<JoinHandle<Vec<u8>>>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    tool: String,
}

impl Exit {
    /// The tool's pid while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// Waits for the tool; a non-zero exit (or death by a signal) is `Error::Tool` with the
    /// end of its stderr. Returns its stdout when it was collected (else empty).
    pub async fn wait(mut self) -> Result<String> {
        let status = self.child.wait().await.map_err(|source| Error::Spawn {
            tool: self.tool.clone(),
            source,
        })?;
        let stderr = match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let stdout = match self.stdout.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => Vec::new(),
        };
        if status.success() {
            if !stderr.is_empty() {
                tracing::debug!(tool = %self.tool, stderr = %String::from_utf8_lossy(&stderr).trim(), "tool succeeded with messages");
            }
            Ok(String::from_utf8_lossy(&stdout).into_owned())
        } else {
            Err(Error::Tool {
                tool: self.tool.clone(),
                status: status.to_string(),
                stderr: stderr_text(&stderr),
            })
        }
    }

    /// Waits for the tool and returns its status and output, successful or not.
    pub async fn wait_capture(mut self) -> Result<Captured> {
        let status = self.child.wait().await.map_err(|source| Error::Spawn {
            tool: self.tool.clone(),
            source,
        })?;
        let stderr = match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let stdout = match self.stdout.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(Captured {
            tool: self.tool.clone(),
            success: status.success(),
            status: status.to_string(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: stderr_text(&stderr),
        })
    }

    /// Kills the tool and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A finished tool's status and output.
#[derive(Debug)]
pub struct Captured {
    pub tool: String,
    pub success: bool,
    /// e.g. `exit status: 2`.
    pub status: String,
    pub stdout: String,
    /// The end of its stderr (see [`STDERR_TAIL`]), or a note that it wrote none.
    pub stderr: String,
}

impl Captured {
    /// `Ok(stdout)` on success, else the tool's error.
    pub fn into_result(self) -> Result<String> {
        if self.success {
            Ok(self.stdout)
        } else {
            Err(Error::Tool {
                tool: self.tool,
                status: self.status,
                stderr: self.stderr,
            })
        }
    }
}

/// A tool being fed through its stdin.
pub struct Feeding {
    pub stdin: ChildStdin,
    exit: Exit,
}

impl Feeding {
    /// Closes stdin and waits for the tool (see [`Exit::wait`]); returns its stdout.
    pub async fn finish(self) -> Result<String> {
        let Feeding { mut stdin, exit } = self;
        let _ = stdin.shutdown().await;
        drop(stdin);
        exit.wait().await
    }

    /// Kills the tool *before* closing its stdin, so it cannot take a cut-off input for a
    /// complete one.
    pub async fn abort(self) {
        let Feeding { stdin, exit } = self;
        exit.kill().await;
        drop(stdin);
    }
}

/// Why feeding a tool stopped early.
#[derive(Debug)]
pub enum FeedError {
    /// Reading the input failed.
    Input(std::io::Error),
    /// The tool closed its stdin (it exited): its exit status says why.
    Closed,
}

/// Copies `input` into `out`, dropping the lines for which `keep_line` says false. Lines are
/// only looked at while short (filters match statements like `CREATE ROLE postgres;`); a
/// longer line passes as it comes. A write error means the tool stopped reading.
async fn copy_filtered<R, W, F>(mut input: R, out: &mut W, keep_line: F) -> Result<(), FeedError>
where
    R: AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
    F: Fn(&[u8]) -> bool,
{
    const MAX_LOOK: usize = 4096;
    const BLOCK: usize = 64 * 1024;
    let mut buf = vec![0u8; BLOCK];
    // Bytes to write, flushed in blocks (dumps have many short lines).
    let mut pending: Vec<u8> = Vec::with_capacity(2 * BLOCK);
    // The start of the current line while it may still be dropped.
    let mut line: Vec<u8> = Vec::new();
    let mut passing_long_line = false;
    loop {
        let n = input.read(&mut buf).await.map_err(FeedError::Input)?;
        if n == 0 {
            break;
        }
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let (piece, end_of_line) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..=i], true),
                None => (rest, false),
            };
            rest = &rest[piece.len()..];
            if passing_long_line {
                pending.extend_from_slice(piece);
            } else {
                line.extend_from_slice(piece);
                if end_of_line {
                    if keep_line(&line) {
                        pending.extend_from_slice(&line);
                    }
                    line.clear();
                } else if line.len() > MAX_LOOK {
                    pending.extend_from_slice(&line);
                    line.clear();
                    passing_long_line = true;
                }
            }
            if end_of_line {
                passing_long_line = false;
            }
        }
        if pending.len() >= BLOCK {
            write(out, &pending).await?;
            pending.clear();
        }
    }
    if !line.is_empty() && keep_line(&line) {
        pending.extend_from_slice(&line);
    }
    write(out, &pending).await?;
    out.flush().await.map_err(|_| FeedError::Closed)
}

async fn write<W: tokio::io::AsyncWrite + Unpin>(
    out: &mut W,
    data: &[u8],
) -> Result<(), FeedError> {
    out.write_all(data).await.map_err(|_| FeedError::Closed)
}

// ---------------------------------------------------------------------------------------------
// Ports and processes that are not our children
// ---------------------------------------------------------------------------------------------

/// A TCP port that is free on `listen` right now (the OS picks it: bind to port 0). Another
/// process may take it before the server binds it; callers retry with a new one.
pub fn free_port(listen: &str) -> Result<u16> {
    let listener = std::net::TcpListener::bind((listen, 0)).map_err(|source| Error::Stream {
        what: format!("finding a free TCP port on {listen} (is it an address of this host?)"),
        source,
    })?;
    let port = listener
        .local_addr()
        .map_err(|source| Error::Stream {
            what: format!("reading the port bound on {listen}"),
            source,
        })?
        .port();
    Ok(port)
}

/// The last `lines` lines of a log file, or a note why it could not be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// Whether process `pid` exists and is not a zombie (a server that exited but whose parent,
/// e.g. a container's init, has not reaped it yet counts as gone).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // Format: `pid (comm) S ...`; comm may contain spaces and parentheses.
            match stat.rfind(')') {
                Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
                None => true,
            }
        }
        Err(_) => false,
    }
}

/// The command line of process `pid` (arguments joined by spaces), if readable.
pub fn process_cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn environment_is_clean_and_explicit() {
        let mut cmd = ToolCommand::new(Path::new("/usr/bin/env"));
        cmd.env("PGPASSWORD", "s3cret");
        let dbg = format!("{cmd:?}");
        assert!(!dbg.contains("s3cret"), "Debug shows a password: {dbg}");
        let out = cmd.output().await.unwrap();
        let mut names: Vec<&str> = out.lines().filter_map(|l| l.split('=').next()).collect();
        names.sort();
        assert_eq!(names, ["LC_ALL", "PATH", "PGPASSWORD"], "{out}");
        assert!(out.contains("PGPASSWORD=s3cret"));
    }

    /// A streaming tool sees the same environment, plus `stdbuf`'s own where it exists.
    #[tokio::test]
    async fn a_streaming_tool_runs_with_a_large_stdout_buffer() {
        let mut cmd = ToolCommand::new(Path::new("/usr/bin/env"));
        cmd.env("PGPASSWORD", "s3cret");
        let mut streaming = cmd.spawn_stream().unwrap();
        let mut out = String::new();
        streaming.stdout.read_to_string(&mut out).await.unwrap();
        streaming.exit.wait().await.unwrap();
        let mut names: Vec<&str> = out.lines().filter_map(|l| l.split('=').next()).collect();
        names.sort();
        if stdbuf().is_some() {
            assert_eq!(
                names,
                ["LC_ALL", "LD_PRELOAD", "PATH", "PGPASSWORD", "_STDBUF_O"],
                "{out}"
            );
            assert!(out.contains(&format!("_STDBUF_O={PIPE_BYTES}")), "{out}");
        } else {
            assert_eq!(names, ["LC_ALL", "PATH", "PGPASSWORD"], "{out}");
        }
    }

    #[tokio::test]
    async fn failure_is_a_tool_error_with_the_end_of_stderr() {
        let mut cmd = ToolCommand::new(Path::new("/bin/sh"));
        cmd.arg("-c")
            .arg("i=0; while [ $i -lt 2000 ]; do echo \"line $i\" >&2; i=$((i+1)); done; echo last-words >&2; exit 3");
        let err = cmd.output().await.unwrap_err();
        match &err {
            Error::Tool {
                tool,
                status,
                stderr,
            } => {
                assert_eq!(tool, "sh");
                assert!(status.contains('3'), "{status}");
                assert!(stderr.ends_with("last-words"), "{stderr}");
                assert!(stderr.len() <= STDERR_TAIL + 3, "{}", stderr.len());
                assert!(!stderr.contains("line 0\n"));
            }
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let cmd = ToolCommand::new(Path::new("/nonexistent/pg_dump"));
        match cmd.output().await.unwrap_err() {
            Error::Spawn { tool, .. } => assert_eq!(tool, "pg_dump"),
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[tokio::test]
    async fn dropping_a_stream_kills_the_tool() {
        let cmd = ToolCommand::new(Path::new("/usr/bin/yes"));
        let mut streaming = cmd.spawn_stream().unwrap();
        let pid = streaming.exit.id().unwrap();
        let mut buf = [0u8; 1024];
        streaming.stdout.read_exact(&mut buf).await.unwrap();
        drop(streaming);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "yes ({pid}) still runs"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn failing_input_kills_the_tool_and_says_so() {
        struct Failing(bool);
        impl AsyncRead for Failing {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                if self.0 {
                    return std::task::Poll::Ready(Err(std::io::Error::other(
                        "chunk fetch failed",
                    )));
                }
                self.0 = true;
                buf.put_slice(b"partial input\n");
                std::task::Poll::Ready(Ok(()))
            }
        }
        let cmd = ToolCommand::new(Path::new("/bin/cat"));
        match cmd.run_with_input(Failing(false)).await.unwrap_err() {
            Error::Stream { source, .. } => assert!(source.to_string().contains("chunk fetch")),
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[tokio::test]
    async fn filter_drops_whole_lines_only() {
        let input: &[u8] =
            b"CREATE ROLE postgres;\nALTER ROLE postgres;\nCREATE ROLE app;\nno newline";
        let mut out: Vec<u8> = Vec::new();
        copy_filtered(input, &mut out, |l| l != b"CREATE ROLE postgres;\n")
            .await
            .unwrap();
        assert_eq!(out, b"ALTER ROLE postgres;\nCREATE ROLE app;\nno newline");
    }

    #[test]
    fn secret_files_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        write_secret_file(&p, "abc").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write_secret_file(&p, "abc").is_err(), "must not overwrite");
        assert_eq!(random_password().len(), 48);
    }
}
