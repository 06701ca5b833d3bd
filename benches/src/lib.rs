//! Benchmarks live in benches/; this library holds what several of them share.

pub mod fleet;
pub mod sessions;

use std::time::{Duration, Instant};

use strongbox_integration::cluster::ClusterOptions;

/// A test cluster with the coordinators' own timing defaults (a 100 ms Raft tick, controllers
/// every 5 s), not the harness's, which are tuned for fast elections in tests.
pub fn cluster_options() -> ClusterOptions {
    ClusterOptions {
        raft_tick: Duration::from_millis(100),
        controller_interval: Duration::from_secs(5),
        ..ClusterOptions::default()
    }
}

/// Flushes what earlier steps left dirty, so a timed side starts from a clean page cache
/// (neither side pays for the other's writeback).
pub fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// CPU time the whole machine spent busy (user, nice, system, irq, softirq), from
/// `/proc/stat`; zero where that cannot be read.
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse::<u64>().ok())
                .enumerate()
                // user nice system idle iowait irq softirq steal ...
                .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6))
                .map(|(_, v)| v)
                .sum()
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// A timed side of a comparison: its wall time and the machine's busy CPU time meanwhile.
pub struct Timed {
    pub wall: Duration,
    pub cpu: Duration,
}

/// Starts timing after a [`settle`]; [`Timer::stop`] gives the [`Timed`].
pub struct Timer {
    start: Instant,
    busy: Duration,
}

impl Timer {
    pub fn start() -> Timer {
        settle();
        Timer {
            start: Instant::now(),
            busy: machine_busy(),
        }
    }

    pub fn stop(self) -> Timed {
        Timed {
            wall: self.start.elapsed(),
            cpu: machine_busy().saturating_sub(self.busy),
        }
    }
}

impl std::fmt::Display for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>7.2}s (cpu {:>6.2}s)",
            self.wall.as_secs_f64(),
            self.cpu.as_secs_f64()
        )
    }
}
