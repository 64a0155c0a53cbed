//! Counts and times every Flight call for `/metrics` and writes its access
//! log line: endpoint = the gRPC method (`DoGet`, `GetFlightInfo`, …),
//! status = the gRPC code, taken from the response headers (an immediate
//! error) or the trailers at the end of the stream; the duration runs until
//! the response body ends, so a `DoGet` is timed until its last batch.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use crate::access_log::{self, Entry};

#[derive(Clone, Default)]
pub struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService { inner }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
}

impl<S, B, RB> Service<http::Request<B>> for MetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = http::Response<ObservedBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let endpoint = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let started = Instant::now();
        let mut access = Entry::new("flight", endpoint.clone(), peer(&req));
        access.month = header(req.headers(), "x-duckflock-month")
            .or_else(|| header(req.headers(), "x-duckflock-months"));
        let note = std::sync::Arc::clone(&access.note);
        let fut = access_log::scope(note, self.inner.call(req));
        Box::pin(async move {
            let resp = fut.await?;
            let status = grpc_status(resp.headers());
            access.node = header(resp.headers(), "x-duckflock-node");
            Ok(resp.map(|inner| ObservedBody {
                inner: Box::pin(inner),
                record: Some(Record {
                    endpoint,
                    started,
                    status,
                    access,
                }),
            }))
        })
    }
}

/// The client's address (plain TCP or TLS).
fn peer<B>(req: &http::Request<B>) -> Option<std::net::SocketAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}

/// The gRPC code in `grpc-status`, by name.
fn grpc_status(headers: &HeaderMap) -> Option<String> {
    let code: i32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(format!("{:?}", tonic::Code::from(code)))
}

struct Record {
    endpoint: String,
    started: Instant,
    status: Option<String>,
    access: Entry,
}

impl Record {
    fn finish(self, fallback: &str) {
        let status = self.status.as_deref().unwrap_or(fallback);
        crate::metrics::get().request("flight", &self.endpoint, status, self.started.elapsed());
        self.access.finish(status);
    }
}

/// A response body that records the call when it ends (or is dropped:
/// the client went away).
pub struct ObservedBody<B> {
    inner: Pin<Box<B>>,
    record: Option<Record>,
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(r) = this.record.as_mut() {
                    if let Some(d) = frame.data_ref() {
                        r.access.bytes += d.remaining() as u64;
                    }
                    if let Some(s) = frame.trailers_ref().and_then(grpc_status) {
                        r.status = Some(s);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(r) = this.record.take() {
                    r.finish("Internal");
                }
            }
            Poll::Ready(None) => {
                if let Some(r) = this.record.take() {
                    r.finish("Ok");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            // Ended early: a status seen so far, else the client left.
            r.finish("Cancelled");
        }
    }
}
