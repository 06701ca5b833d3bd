//! Child processes: spawning, running to completion, and stopping servers without leaks.
//!
//! Job: every process the harness starts must end when its owner says so, when its owner is
//! dropped (also during a panic), and even when the whole test process dies without running
//! any destructor (SIGKILL from a test runner's timeout).
//!
//! Invariants:
//! - **Tied to the test process.** Every child is forked by one long-lived "spawner" thread
//!   and sets `PR_SET_PDEATHSIG = SIGKILL` right before `exec` (after the switch to an
//!   unprivileged user, which would otherwise clear it). The kernel sends that signal when the
//!   forking *thread* exits; the spawner thread only ends with the process, so children die
//!   with the test process and never with some short-lived test thread.
//! - **Own process group.** Servers are group leaders (`process_group(0)`), so a stop can
//!   signal the leader and afterwards SIGKILL whatever else is left in its group.
//! - **Stop = signal, wait with a deadline, SIGKILL, reap.** [`ServerProcess::stop`] sends the
//!   server's graceful-stop signal (plus SIGCONT, so a SIGSTOPped server can act on it), waits
//!   for the leader to exit without reaping it, escalates to SIGKILL at the deadline, then
//!   SIGKILLs the leader's process group *while the leader is still an unreaped zombie* (so its
//!   pid, and with it the group id, cannot have been reused), and only then reaps the leader.
//!   After `stop` returns the pid no longer exists. `stop` is idempotent and runs on drop.
//! - **Bounded client commands.** [`run`] never waits forever: commands get a deadline and
//!   are killed when it passes; the error then says so.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid, User};

use crate::error::{HarnessError, Result};

/// Default deadline for commands run to completion with [`run`].
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// Interval between polls while waiting for a process or a server.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(25);

// ---------------------------------------------------------------------------------------------
// Finding binaries: `strongbox_engines::tools` searches (the product's own search, see
// `pg::pg_bin_dir` and `mariadb::mariadb_tool`); this checks a program in a known folder.
// ---------------------------------------------------------------------------------------------

pub use strongbox_core::process::is_executable;

// ---------------------------------------------------------------------------------------------
// Running as an unprivileged system user
// ---------------------------------------------------------------------------------------------

/// An unprivileged system user to run a server as, because the server refuses to run as root.
#[derive(Debug, Clone)]
pub struct RunAs {
    /// User name, e.g. `postgres`.
    pub user: String,
    /// Its uid.
    pub uid: Uid,
    /// Its primary gid.
    pub gid: Gid,
}

impl RunAs {
    /// When the harness runs as root (`geteuid() == 0`), looks up `user`; otherwise returns
    /// `None` (the server runs as the current user). Never creates users: if `user` is
    /// missing the error says how to get it.
    pub fn when_root(user: &str, server: &str, hint: &str) -> Result<Option<RunAs>> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        match User::from_name(user) {
            Ok(Some(u)) => Ok(Some(RunAs {
                user: user.to_string(),
                uid: u.uid,
                gid: u.gid,
            })),
            Ok(None) => Err(HarnessError::SystemUserMissing {
                user: user.to_string(),
                server: server.to_string(),
                hint: hint.to_string(),
            }),
            Err(e) => Err(HarnessError::sys(
                format!("looking up system user `{user}`"),
                e,
            )),
        }
    }

    /// Looks up `user` if it exists (only meaningful as root); `Ok(None)` if it does not.
    pub fn lookup(user: &str) -> Result<Option<RunAs>> {
        match User::from_name(user) {
            Ok(Some(u)) => Ok(Some(RunAs {
                user: user.to_string(),
                uid: u.uid,
                gid: u.gid,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(HarnessError::sys(
                format!("looking up system user `{user}`"),
                e,
            )),
        }
    }

    /// Makes `cmd` run as this user (primary group only, no supplementary groups).
    pub fn apply(&self, cmd: &mut Command) {
        cmd.uid(self.uid.as_raw()).gid(self.gid.as_raw());
    }

    /// `(uid, gid)` pair for [`crate::tmp::temp_dir_owned_by`].
    pub fn ids(&self) -> (Uid, Gid) {
        (self.uid, self.gid)
    }
}

// ---------------------------------------------------------------------------------------------
// Spawning tied to the test process
// ---------------------------------------------------------------------------------------------

pub use strongbox_core::process::spawn_tied;

// ---------------------------------------------------------------------------------------------
// Running commands to completion
// ---------------------------------------------------------------------------------------------

/// Output of a successful [`run`].
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// Renders a command for error messages (program, arguments, changed environment).
pub fn describe(cmd: &Command) -> String {
    format!("{cmd:?}")
}

/// Runs `cmd` to completion with `stdin` as its standard input, capturing stdout/stderr.
///
/// Fails with [`HarnessError::CommandFailed`] (including both outputs) if it exits
/// unsuccessfully or does not finish within `timeout` (it is then SIGKILLed).
pub fn run(
    what: &str,
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<CommandOutput> {
    let command = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child =
        spawn_tied(cmd).map_err(|e| HarnessError::io(format!("{what}: starting {program}"), e))?;

    let stdin_writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            // A write error (EPIPE) means the command exited early; its status says why.
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }))
        }
        _ => None,
    };
    let stdout_reader = child.stdout.take().map(spawn_reader);
    let stderr_reader = child.stderr.take().map(spawn_reader);

    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(POLL_INTERVAL),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError::io(
                    format!("{what}: waiting for {program}"),
                    e,
                ));
            }
        }
    };
    if let Some(w) = stdin_writer {
        let _ = w.join();
    }
    let stdout = stdout_reader.map(join_reader).unwrap_or_default();
    let stderr = stderr_reader.map(join_reader).unwrap_or_default();

    match status {
        Some(s) if s.success() && !timed_out => Ok(CommandOutput { stdout, stderr }),
        other => Err(HarnessError::CommandFailed {
            what: what.to_string(),
            command,
            status: if timed_out {
                format!("killed after the {timeout:?} deadline")
            } else {
                other.map_or_else(|| "unknown status".to_string(), |s| s.to_string())
            },
            stderr,
            stdout,
        }),
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut pipe: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn join_reader(h: std::thread::JoinHandle<String>) -> String {
    h.join()
        .unwrap_or_else(|_| "(output reader panicked)".to_string())
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

/// The last `lines` lines of the file at `path`, or a note saying why it could not be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// Like [`log_tail`], but only looks at the part of the file after byte `offset` (what a
/// server wrote since it was last started).
pub fn log_tail_since(path: &Path, offset: u64, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let text = String::from_utf8_lossy(&bytes[start..]);
            let all: Vec<&str> = text.lines().collect();
            let first = all.len().saturating_sub(lines);
            all[first..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// Current length of the file at `path` (0 if it does not exist).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Long-running server processes
// ---------------------------------------------------------------------------------------------

/// A long-running server process that is stopped, with its process group, on drop.
#[derive(Debug)]
pub struct ServerProcess {
    server: String,
    child: Option<Child>,
    pid: Pid,
    log: PathBuf,
    stop_signal: Signal,
    grace: Duration,
    exit_status: Option<ExitStatus>,
}

impl ServerProcess {
    /// Spawns `cmd` as the leader of a new process group, tied to the test process.
    ///
    /// `server` names it in messages, `log` is where its output goes (for error messages),
    /// `stop_signal` asks it to shut down gracefully, `grace` is how long to wait for that
    /// before SIGKILL.
    pub fn spawn(
        server: &str,
        mut cmd: Command,
        log: &Path,
        stop_signal: Signal,
        grace: Duration,
    ) -> Result<ServerProcess> {
        cmd.process_group(0);
        let program = cmd.get_program().to_string_lossy().into_owned();
        tracing::debug!(server, command = %describe(&cmd), "starting server");
        let child = spawn_tied(cmd)
            .map_err(|e| HarnessError::io(format!("starting {server} ({program})"), e))?;
        let pid = Pid::from_raw(child.id() as libc::pid_t);
        Ok(ServerProcess {
            server: server.to_string(),
            child: Some(child),
            pid,
            log: log.to_path_buf(),
            stop_signal,
            grace,
            exit_status: None,
        })
    }

    /// The leader's pid (also the process group id).
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Whether the process has been stopped (and reaped) by [`stop`](Self::stop).
    pub fn is_stopped(&self) -> bool {
        self.child.is_none()
    }

    /// Whether the leader has exited (without reaping it).
    pub fn has_exited(&self) -> Result<bool> {
        if self.child.is_none() {
            return Ok(true);
        }
        peek_exited(self.pid)
    }

    /// If the leader has exited on its own, cleans up and returns a
    /// [`HarnessError::ServerExited`] describing it; `Ok(())` while it runs.
    pub fn check_running(&mut self) -> Result<()> {
        if !self.has_exited()? {
            return Ok(());
        }
        let status = self.stop()?;
        Err(HarnessError::ServerExited {
            server: self.server.clone(),
            status: status.map_or_else(|| "already stopped".to_string(), |s| s.to_string()),
            log: self.log.clone(),
            log_tail: log_tail(&self.log, 40),
        })
    }

    /// Sends `signal` to the leader (e.g. SIGKILL or SIGSTOP for fault tests).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        if self.child.is_none() {
            return Err(HarnessError::NotRunning {
                server: self.server.clone(),
            });
        }
        kill(self.pid, signal)
            .map_err(|e| HarnessError::sys(format!("kill -{signal} {}", self.pid), e))
    }

    /// Stops the server: graceful signal, wait up to the grace period, SIGKILL, SIGKILL the
    /// rest of the process group, reap. Idempotent; returns the leader's exit status the
    /// first time (`None` afterwards).
    pub fn stop(&mut self) -> Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let result = self.stop_child(&mut child);
        if result.is_err() {
            // Make sure the wait below cannot block forever.
            let _ = child.kill();
        }
        // Always reap, whatever happened above; the pid is gone afterwards.
        let reaped = child.wait();
        result?;
        let status = reaped
            .map_err(|e| HarnessError::io(format!("reaping {} ({})", self.server, self.pid), e))?;
        self.exit_status = Some(status);
        tracing::debug!(server = %self.server, pid = %self.pid, %status, "server stopped");
        Ok(Some(status))
    }

    fn stop_child(&self, child: &mut Child) -> Result<()> {
        let pid = self.pid;
        debug_assert_eq!(child.id() as libc::pid_t, pid.as_raw());
        if !peek_exited(pid)? {
            let _ = kill(pid, self.stop_signal);
            // A SIGSTOPped server must be continued to act on the stop signal.
            let _ = killpg(pid, Signal::SIGCONT);
            let deadline = Instant::now() + self.grace;
            while !peek_exited(pid)? {
                if Instant::now() >= deadline {
                    tracing::warn!(server = %self.server, %pid, "no graceful exit within {:?}; sending SIGKILL", self.grace);
                    let _ = kill(pid, Signal::SIGKILL);
                    wait_exited_blocking(pid)?;
                    break;
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        // The leader is an unreaped zombie: its pid (= the group id) cannot be reused yet.
        match killpg(pid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(HarnessError::sys(format!("killpg -KILL {pid}"), e)),
        }
    }

    /// Exit status after [`stop`](Self::stop), if it has run.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit_status
    }

    /// Name used in messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Path of the log file the server writes to.
    pub fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            // Nothing else can be done in drop; make the problem visible.
            eprintln!(
                "strongbox-integration: stopping {} failed: {e}",
                self.server
            );
        }
    }
}

/// Whether child `pid` has exited, without reaping it.
fn peek_exited(pid: Pid) -> Result<bool> {
    loop {
        match waitid(
            Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            // Not our child any more: it has been reaped already.
            Err(Errno::ECHILD) => return Ok(true),
            Err(e) => return Err(HarnessError::sys(format!("waitid({pid})"), e)),
        }
    }
}

/// Blocks until child `pid` has exited, without reaping it.
fn wait_exited_blocking(pid: Pid) -> Result<()> {
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) | Err(Errno::ECHILD) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(HarnessError::sys(format!("waitid({pid})"), e)),
        }
    }
}

/// Whether a process with this pid exists (zombies count as existing).
pub fn pid_exists(pid: u32) -> bool {
    !matches!(
        kill(Pid::from_raw(pid as libc::pid_t), None),
        Err(Errno::ESRCH)
    )
}

/// Convenience for building a [`Command`] from a program path and arguments.
pub fn command<I, S>(program: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}
