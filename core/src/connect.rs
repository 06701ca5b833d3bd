//! Reaching a region's coordinators from an agent or the CLI: one lazily connected mTLS
//! channel per node, and calls that move on to the next node when one is down or leaving.
//!
//! Invariants: every channel is mutual TLS with the fleet CA, and checks the node's
//! certificate against the host part of its address; only failures that say nothing reached
//! the service (unavailable, cancelled, timed out) are retried elsewhere, so a call that the
//! service refused is never repeated; retries stop at the deadline with the last error.

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
        loop {
            let (i, address, channel) = self.current();
            match call(channel).await {
                Ok(v) => return Ok(v),
                Err(s) if is_retryable(&s) && start.elapsed() < self.deadline => {
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
