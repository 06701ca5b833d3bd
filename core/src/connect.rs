//! Reaching a region's coordinators from an agent or the CLI: one lazily connected mTLS
//! channel per node, and calls that move on to the next node when one is down or leaving.
//!
//! Invariants: every channel is mutual TLS with the fleet CA, and checks the node's
//! certificate against the host part of its address; only failures that say nothing reached
//! the service (unavailable, cancelled, timed out) are retried elsewhere, so a call that the
//! service refused is never repeated; retries stop at the deadline with the last error, or
//! as soon as no node could be reached at all (refused, timed out, unresolved, or a failed TLS
//! handshake: [`connect_failure`]), naming each address and why, instead of "transport error"
//! after half a minute.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{Error, Result};
use crate::tls::TlsFiles;

pub struct Coordinators {
    addresses: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
    deadline: Duration,
    /// Give up as soon as no node can be reached at all (an operator at a terminal), rather
    /// than retry until the deadline (an agent riding out a region's restart).
    give_up_when_unreached: bool,
    /// In that mode, each node's connection is made first, within [`CONNECT_WITHIN`], before
    /// any request is sent on it (a request sent to a frozen node could not be retried safely
    /// elsewhere): the connected channel of each node, once made.
    endpoints: Vec<Endpoint>,
    connected: Vec<tokio::sync::OnceCell<Channel>>,
}

/// The host part of `HOST:PORT` (brackets of an IPv6 literal removed).
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A lazily connected channel to one node.
pub fn channel(tls: &TlsFiles, address: &str) -> Result<Channel> {
    Ok(endpoint(tls, address)?.connect_lazy())
}

/// How long a connection (TCP, TLS and HTTP/2 handshakes) may take before the node counts as
/// not answering: a node frozen with its port open accepts TCP and never finishes TLS.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(5);

fn endpoint(tls: &TlsFiles, address: &str) -> Result<Endpoint> {
    let endpoint = Endpoint::from_shared(format!("https://{address}"))
        .map_err(|_| Error::Config(format!("{address:?} is not HOST:PORT")))?
        .tls_config(tls.client_config(host_of(address))?)
        .map_err(|e| Error::Config(format!("TLS for {address}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_keepalive(Some(Duration::from_secs(20)))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
    Ok(endpoint)
}

/// Whether a failure means the call did not reach a working service (try another node).
pub fn is_retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded
    ) || (s.code() == Code::Unknown && s.message().contains("transport"))
}

/// What a failed TLS handshake says, found in a failed call's error chain: a node certificate
/// this process refuses (expired, signed by another CA, not naming the address), or an alert
/// the node sent about this process's certificate. `None` when the failure was not TLS.
pub fn tls_failure(s: &Status) -> Option<String> {
    std::error::Error::source(s).and_then(tls_failure_in)
}

/// As [`tls_failure`], for any error and its sources (a failed connect, say).
pub fn tls_failure_in(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(e) = next {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return Some(describe_tls(tls));
        }
        next = e.source();
    }
    None
}

fn describe_tls(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("the node's certificate expired ({e}): the node needs a new one")
        }
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            format!("the node's certificate is not valid yet ({e}): check both machines' clocks")
        }
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "the node's certificate is not signed by this fleet's CA ({e}): check the CA file"
        ),
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "the node's certificate does not name the address dialed ({e}): dial the name or \
             address its certificate was issued for"
        ),
        E::AlertReceived(A::CertificateExpired) => {
            "the node refused this certificate: it expired; issue a new one".into()
        }
        E::AlertReceived(
            a @ (A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::AccessDenied
            | A::CertificateRequired),
        ) => format!(
            "the node refused this certificate ({a:?}): is it issued by this region's fleet CA, \
             and not expired?"
        ),
        other => format!("TLS: {other}"),
    }
}

/// Why a call never reached a node: the connection itself failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreached {
    /// Nothing listens at the address (connection refused).
    Refused,
    /// No answer within the connect timeout.
    TimedOut,
    /// The name does not resolve, or no route to it.
    Unresolved(String),
    /// The TLS handshake failed ([`tls_failure`]): a trust problem, not an outage.
    Tls(String),
}

impl std::fmt::Display for Unreached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreached::Refused => write!(f, "nothing listens there (connection refused)"),
            Unreached::TimedOut => write!(f, "no answer (timed out)"),
            Unreached::Unresolved(why) => write!(f, "cannot be reached ({why})"),
            Unreached::Tls(why) => write!(f, "the TLS handshake failed: {why}"),
        }
    }
}

/// Why a failed call never reached its node, when the connection itself failed; `None` when
/// the node was reached (it may still have been unavailable, e.g. electing a leader).
pub fn connect_failure(s: &Status) -> Option<Unreached> {
    std::error::Error::source(s).and_then(unreached_in)
}

/// As [`connect_failure`], for any error and its sources (a failed connect, say).
pub fn unreached_in(e: &(dyn std::error::Error + 'static)) -> Option<Unreached> {
    if let Some(tls) = tls_failure_in(e) {
        return Some(Unreached::Tls(tls));
    }
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused => return Some(Unreached::Refused),
                K::TimedOut => return Some(Unreached::TimedOut),
                K::HostUnreachable | K::NetworkUnreachable => {
                    return Some(Unreached::Unresolved(io.to_string()))
                }
                _ => {}
            }
        }
        let text = e.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return Some(Unreached::Unresolved(text));
        }
        if text.contains("timed out") {
            return Some(Unreached::TimedOut);
        }
        next = e.source();
    }
    None
}

/// The error of a call no node could be reached for: each address and why;
/// `UNAUTHENTICATED` when every failure was a TLS handshake (trust, not an outage).
fn all_unreached(
    addresses: &[String],
    unreached: &std::collections::BTreeMap<usize, Unreached>,
) -> Status {
    let each: Vec<String> = unreached
        .iter()
        .map(|(n, why)| format!("{}: {why}", addresses[*n]))
        .collect();
    let msg = format!("no coordinator could be reached; {}", each.join("; "));
    if unreached.values().all(|w| matches!(w, Unreached::Tls(_))) {
        Status::unauthenticated(msg)
    } else {
        Status::unavailable(msg)
    }
}

impl Coordinators {
    /// Channels to every address (nothing is dialed until the first call).
    pub fn new(tls: &TlsFiles, addresses: &[String], deadline: Duration) -> Result<Self> {
        if addresses.is_empty() {
            return Err(Error::Config(
                "no coordinator address: give at least one HOST:PORT".into(),
            ));
        }
        let endpoints = addresses
            .iter()
            .map(|a| endpoint(tls, a))
            .collect::<Result<Vec<_>>>()?;
        let channels = endpoints.iter().map(|e| e.connect_lazy()).collect();
        Ok(Coordinators {
            addresses: addresses.to_vec(),
            channels,
            current: AtomicUsize::new(0),
            deadline,
            give_up_when_unreached: false,
            connected: endpoints
                .iter()
                .map(|_| tokio::sync::OnceCell::new())
                .collect(),
            endpoints,
        })
    }

    /// Node `i`'s connected channel, connecting within [`CONNECT_WITHIN`] if not yet.
    async fn connected(&self, i: usize) -> std::result::Result<Channel, Unreached> {
        self.connected[i]
            .get_or_try_init(|| async {
                match tokio::time::timeout(CONNECT_WITHIN, self.endpoints[i].connect()).await {
                    Ok(Ok(ch)) => Ok(ch),
                    Ok(Err(e)) => Err(unreached_in(&e).unwrap_or(Unreached::Unresolved(
                        std::error::Error::source(&e)
                            .map_or_else(|| e.to_string(), |s| s.to_string()),
                    ))),
                    Err(_) => Err(Unreached::TimedOut),
                }
            })
            .await
            .cloned()
    }

    /// Calls end as soon as no node can be reached at all, naming each address and why.
    pub fn give_up_when_unreached(mut self) -> Self {
        self.give_up_when_unreached = true;
        self
    }

    /// The node in use now: (index, address, channel).
    pub fn current(&self) -> (usize, &str, Channel) {
        let i = self.current.load(Ordering::Relaxed) % self.channels.len();
        (i, &self.addresses[i], self.channels[i].clone())
    }

    /// Moves on from node `from` to the next one (no-op if another caller moved already).
    pub fn rotate(&self, from: usize) {
        let _ = self.current.compare_exchange(
            from,
            (from + 1) % self.channels.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Runs `call` on the current node; on a retryable failure moves to the next node and
    /// tries again (with a short backoff once every node was tried) until the deadline.
    pub async fn call<T, F, Fut>(&self, what: &str, mut call: F) -> std::result::Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>>,
    {
        let start = Instant::now();
        let mut attempt = 0usize;
        // Nodes that could not be reached at all in this call, with why.
        let mut unreached: std::collections::BTreeMap<usize, Unreached> = Default::default();
        loop {
            let (i, address, mut channel) = self.current();
            if self.give_up_when_unreached {
                match self.connected(i).await {
                    Ok(ch) => channel = ch,
                    Err(why) => {
                        tracing::debug!(what, node = address, why = %why, "could not reach the node");
                        unreached.insert(i, why);
                        if unreached.len() == self.channels.len() {
                            return Err(all_unreached(&self.addresses, &unreached));
                        }
                        self.rotate(i);
                        continue;
                    }
                }
            }
            match call(channel).await {
                Ok(v) => return Ok(v),
                Err(s) if is_retryable(&s) => {
                    match connect_failure(&s) {
                        Some(why) => {
                            tracing::debug!(what, node = address, why = %why, "could not reach the node");
                            unreached.insert(i, why);
                            // No node reachable at all: say so now, naming each, rather than
                            // retry until the deadline (a node restarting is one of several).
                            if self.give_up_when_unreached && unreached.len() == self.channels.len()
                            {
                                return Err(all_unreached(&self.addresses, &unreached));
                            }
                        }
                        None => {
                            unreached.remove(&i);
                        }
                    }
                    if start.elapsed() >= self.deadline {
                        return Err(s);
                    }
                    tracing::debug!(what, node = address, error = %s.message(), "retrying on another coordinator");
                    self.rotate(i);
                    attempt += 1;
                    if attempt.is_multiple_of(self.channels.len()) {
                        let backoff = Duration::from_millis(
                            200 * (attempt / self.channels.len()).min(10) as u64,
                        );
                        tokio::time::sleep(backoff).await;
                    }
                }
                Err(s) => return Err(s),
            }
        }
    }
}
