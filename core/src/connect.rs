//! Reaching a region's coordinators from an agent or the CLI: one lazily connected mTLS
//! channel per node, and calls that move on to the next node when one is down or leaving.
//!
//! Invariants: every channel is mutual TLS with the fleet CA, and checks the node's
//! certificate against the host part of its address; only failures that say nothing reached
//! the service (unavailable, cancelled, timed out) are retried elsewhere, so a call that the
//! service refused is never repeated; retries stop at the deadline with the last error, or
//! as soon as every node failed the TLS handshake (a certificate problem does not heal by
//! waiting), with what the handshake said ([`tls_failure`]) instead of "transport error".

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
}

/// The host part of `HOST:PORT` (brackets of an IPv6 literal removed).
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A lazily connected channel to one node.
pub fn channel(tls: &TlsFiles, address: &str) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("https://{address}"))
        .map_err(|_| Error::Config(format!("{address:?} is not HOST:PORT")))?
        .tls_config(tls.client_config(host_of(address))?)
        .map_err(|e| Error::Config(format!("TLS for {address}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_keepalive(Some(Duration::from_secs(20)))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
    Ok(endpoint.connect_lazy())
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

impl Coordinators {
    /// Channels to every address (nothing is dialed until the first call).
    pub fn new(tls: &TlsFiles, addresses: &[String], deadline: Duration) -> Result<Self> {
        if addresses.is_empty() {
            return Err(Error::Config(
                "no coordinator address: give at least one HOST:PORT".into(),
            ));
        }
        let channels = addresses
            .iter()
            .map(|a| channel(tls, a))
            .collect::<Result<Vec<_>>>()?;
        Ok(Coordinators {
            addresses: addresses.to_vec(),
            channels,
            current: AtomicUsize::new(0),
            deadline,
        })
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
        let mut handshakes_failed = std::collections::BTreeSet::new();
        loop {
            let (i, address, channel) = self.current();
            match call(channel).await {
                Ok(v) => return Ok(v),
                Err(s) if is_retryable(&s) => {
                    if let Some(why) = tls_failure(&s) {
                        tracing::debug!(what, node = address, why, "TLS handshake failed");
                        handshakes_failed.insert(i);
                        if handshakes_failed.len() == self.channels.len()
                            || start.elapsed() >= self.deadline
                        {
                            return Err(Status::unauthenticated(format!(
                                "the TLS handshake with {address} failed: {why}"
                            )));
                        }
                        self.rotate(i);
                        continue;
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
