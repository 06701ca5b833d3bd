//! What the node counts for `/metrics` beyond the Raft status: gRPC calls by method and code
//! (a tower layer around every service).
//!
//! Invariants: label values come from a closed set (the four strongbox services' methods, or
//! `other`), so a client sending odd paths cannot grow the label space; a call is counted once,
//! when its response headers are ready. A unary call's code is exact; a streaming call that
//! fails after its headers counts as `Ok`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: String,
    pub code: String,
}

#[derive(Default)]
pub struct Metrics {
    pub rpcs: Family<RpcLabels, Counter>,
}

const SERVICES: [&str; 4] = [
    "strongbox.v1.AgentService",
    "strongbox.v1.OperatorService",
    "strongbox.v1.ClusterService",
    "strongbox.v1.RegionService",
];

/// `Service/Method` for a known service and a plausible method name, else `other`.
fn method_label(path: &str) -> String {
    let known = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(svc, m)| {
            SERVICES.contains(svc)
                && !m.is_empty()
                && m.len() <= 40
                && m.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    match known {
        Some((svc, m)) => format!("{}/{m}", svc.trim_start_matches("strongbox.v1.")),
        None => "other".into(),
    }
}

impl Metrics {
    fn record(&self, path: &str, code: tonic::Code) {
        let method = if code == tonic::Code::Unimplemented {
            "other".into()
        } else {
            method_label(path)
        };
        self.rpcs
            .get_or_create(&RpcLabels {
                method,
                code: format!("{code:?}"),
            })
            .inc();
    }
}

/// Counts every call of the services it wraps.
#[derive(Clone)]
pub struct RpcLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcCount<S>;
    fn layer(&self, inner: S) -> RpcCount<S> {
        RpcCount {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcCount<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RpcCount<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            let code = match &out {
                // A call that failed before its body carries its status in the headers
                // (trailers-only); one that succeeded has no status there.
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse::<i32>().ok())
                    .map(tonic::Code::from)
                    .unwrap_or(tonic::Code::Ok),
                Err(_) => tonic::Code::Unavailable,
            };
            metrics.record(&path, code);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::method_label;

    #[test]
    fn labels_are_a_closed_set() {
        assert_eq!(
            method_label("/strongbox.v1.AgentService/UploadChunk"),
            "AgentService/UploadChunk"
        );
        assert_eq!(method_label("/strongbox.v1.Evil/X"), "other");
        assert_eq!(method_label("/strongbox.v1.AgentService/a-b"), "other");
        assert_eq!(method_label("/"), "other");
        assert_eq!(
            method_label(&format!("/strongbox.v1.AgentService/{}", "a".repeat(80))),
            "other"
        );
    }
}
