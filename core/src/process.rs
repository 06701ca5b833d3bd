//! Child processes tied to this process: the kernel kills them (SIGKILL) if this process dies,
//! so a crashed test, CLI demo or agent leaves no server behind; and finding programs.
//!
//! Invariants: every tied child is forked by one long-lived thread (PR_SET_PDEATHSIG fires when
//! the *thread* that forked the child exits, so pool threads must not fork them); a child whose
//! parent died between fork and prctl exits at once instead of living on untied.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{mpsc, Mutex, OnceLock};

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> Option<&'static Mutex<mpsc::Sender<SpawnJob>>> {
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<SpawnJob>>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnJob>();
            let started = std::thread::Builder::new()
                .name("strongbox-spawner".into())
                .spawn(move || {
                    // Lives as long as the process: the static sender is never dropped.
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                });
            match started {
                Ok(_) => Some(Mutex::new(tx)),
                Err(e) => {
                    tracing::warn!("could not start the spawner thread ({e}); children will not be tied to this process");
                    None
                }
            }
        })
        .as_ref()
}

/// Spawns `cmd` so that the child is SIGKILLed by the kernel if this process dies.
///
/// The caller configures stdio, user, process group etc. on `cmd` beforehand.
pub fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe functions prctl(2) and getppid(2); it does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let Some(spawner) = spawner() else {
        return cmd.spawn();
    };
    let (reply_tx, reply_rx) = mpsc::channel();
    {
        let tx = spawner.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(mpsc::SendError((mut cmd, _))) = tx.send((cmd, reply_tx)) {
            // The spawner thread is gone (cannot normally happen); spawn here instead.
            return cmd.spawn();
        }
    }
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread died"))?
}

/// Whether `path` is a regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The first of `names` found on `PATH`, then in `extra_dirs` (in order).
pub fn find_program(names: &[&str], extra_dirs: &[&str]) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(extra_dirs.iter().map(PathBuf::from));
    for name in names {
        for dir in &dirs {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}
