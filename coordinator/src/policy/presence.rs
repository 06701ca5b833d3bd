//! Whether a host's agent is there: what backups, restores and the scheduler ask before they
//! give a host work, and what `host list` shows.
//!
//! An agent's presence comes from its session, not from a write per heartbeat (issue 17,
//! point 2: heartbeats that change nothing write nothing). The catalog records a host's open
//! session and the node that serves it (`HostSession`), and when each node last answered the
//! leader's clock ask (`Tick.answered`, every 15 s). A host is **connected** while its session
//! is open on a node seen within [`NODE_SEEN_MS`]; before its node was ever seen (a region's
//! first moments) or with no session recorded, while its last recorded change (registration,
//! a session opening, new members) is within [`ALIVE_MS`]. The node serving a session
//! ends it when the agent goes quiet ([`crate::api::session`]), and a node that restarts ends
//! the sessions it recorded before, each after the agent's grace period: then the host is
//! **away**. A host whose session's node is gone is **silent**.
//!
//! Invariant: a pure function of records and a time; it never reads a clock or the catalog.

use std::collections::HashMap;

use strongbox_proto::catalog::HostRecord;

/// A host with no session on a known node counts as there when it changed within this long.
pub const ALIVE_MS: u64 = 3 * 60 * 1000;

/// A session counts while its node answered the leader's clock ask within this long: four
/// asks, so one lost tick does not make a fleet silent, and a dead node's hosts are silent
/// within a minute.
pub const NODE_SEEN_MS: u64 = 60 * 1000;

/// Whether a host's agent is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Its session is open on node `node` (0: no session recorded, but it registered lately).
    Connected { node: u64 },
    /// Its session ended and its agent did not come back within the grace period.
    Away { since_unix_ms: u64 },
    /// No session on a live node and no recorded change since `since_unix_ms`: the agent or
    /// the node serving it is down, or cut off.
    Silent { since_unix_ms: u64 },
}

impl Presence {
    pub fn is_connected(self) -> bool {
        matches!(self, Presence::Connected { .. })
    }
}

/// What presence is judged with: when each node was last seen (ms since the epoch, by node
/// id; `Catalog::nodes_seen`), and the clock skew allowed between the node that judges and
/// the leader that stamped the records (0 in the leader's own decisions).
#[derive(Debug, Clone, Default)]
pub struct Presences {
    pub nodes_seen: HashMap<u64, u64>,
    pub slack_ms: u64,
}

impl Presences {
    /// The presence of `h`'s agent at `now`.
    pub fn of(&self, h: &HostRecord, now: u64) -> Presence {
        if h.away_since_unix_ms != 0 {
            return Presence::Away {
                since_unix_ms: h.away_since_unix_ms,
            };
        }
        let within = |t: u64, ms: u64| now.saturating_sub(t) < ms + self.slack_ms;
        let node_seen = (h.session_node != 0 && !h.session_id.is_empty())
            .then(|| self.nodes_seen.get(&h.session_node).copied())
            .flatten()
            .unwrap_or(0);
        if node_seen != 0 {
            // The node is known: it alone says whether the session counts.
            return if within(node_seen, NODE_SEEN_MS) {
                Presence::Connected {
                    node: h.session_node,
                }
            } else {
                Presence::Silent {
                    since_unix_ms: node_seen,
                }
            };
        }
        if within(h.updated_unix_ms, ALIVE_MS) {
            return Presence::Connected {
                node: if h.session_id.is_empty() {
                    0
                } else {
                    h.session_node
                },
            };
        }
        Presence::Silent {
            since_unix_ms: node_seen.max(h.updated_unix_ms),
        }
    }

    pub fn connected(&self, h: &HostRecord, now: u64) -> bool {
        self.of(h, now).is_connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 100 * ALIVE_MS;

    fn host(session_node: u64, updated: u64, away: u64) -> HostRecord {
        HostRecord {
            name: "db-1".into(),
            session_id: if session_node == 0 {
                String::new()
            } else {
                "s1".into()
            },
            session_node,
            updated_unix_ms: updated,
            away_since_unix_ms: away,
            ..Default::default()
        }
    }

    fn presences(seen: &[(u64, u64)]) -> Presences {
        Presences {
            nodes_seen: seen.iter().copied().collect(),
            slack_ms: 0,
        }
    }

    #[test]
    fn a_session_on_a_live_node_is_connected_however_old_the_last_write() {
        let p = presences(&[(2, NOW - 1000)]);
        assert_eq!(p.of(&host(2, 1, 0), NOW), Presence::Connected { node: 2 });
    }

    #[test]
    fn a_session_on_a_node_not_seen_lately_is_silent_since_the_node_was_seen() {
        let p = presences(&[(2, NOW - NODE_SEEN_MS - 1)]);
        assert_eq!(
            p.of(&host(2, 5, 0), NOW),
            Presence::Silent {
                since_unix_ms: NOW - NODE_SEEN_MS - 1
            }
        );
        // Even when the session opened a moment ago: the node is known, and gone.
        assert_eq!(
            p.of(&host(2, NOW - 10, 0), NOW),
            Presence::Silent {
                since_unix_ms: NOW - NODE_SEEN_MS - 1
            }
        );
        // A node never seen: silent since the host's last change.
        assert_eq!(
            presences(&[]).of(&host(3, 5, 0), NOW),
            Presence::Silent { since_unix_ms: 5 }
        );
    }

    #[test]
    fn a_recent_change_counts_before_any_node_was_seen() {
        // A region's first minute: no tick yet, a session just opened.
        assert_eq!(
            presences(&[]).of(&host(3, NOW - 10, 0), NOW),
            Presence::Connected { node: 3 }
        );
        assert_eq!(
            presences(&[]).of(&host(0, NOW - 10, 0), NOW),
            Presence::Connected { node: 0 }
        );
        assert!(!presences(&[]).connected(&host(0, NOW - ALIVE_MS, 0), NOW));
    }

    #[test]
    fn away_wins_over_everything() {
        let p = presences(&[(2, NOW)]);
        assert_eq!(
            p.of(&host(2, NOW, 7), NOW),
            Presence::Away { since_unix_ms: 7 }
        );
    }

    #[test]
    fn the_slack_allows_for_a_judge_whose_clock_runs_ahead() {
        let mut p = presences(&[(2, NOW - NODE_SEEN_MS - 10)]);
        assert!(!p.connected(&host(2, 1, 0), NOW));
        p.slack_ms = 60_000;
        assert!(p.connected(&host(2, 1, 0), NOW));
    }
}
