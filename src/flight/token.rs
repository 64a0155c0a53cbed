//! The `x-duckflock-token` response header. Flight SQL handlers for updates
//! and EndTransaction return plain values (arrow-flight builds the response),
//! so the handler records the token in a task-local slot and this tower
//! layer, which wraps every call, copies it into the response headers.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;
use tower::{Layer, Service};

/// Header carrying the read-your-writes token of a write.
pub const TOKEN_HEADER: &str = "x-duckflock-token";

tokio::task_local! {
    static WRITE_TOKEN: RefCell<Option<String>>;
}

/// Records the token of the write this call made (no-op outside the layer).
pub fn set(token: Option<String>) {
    if let Some(t) = token {
        let _ = WRITE_TOKEN.try_with(|c| *c.borrow_mut() = Some(t));
    }
}

#[derive(Clone, Default)]
pub struct TokenLayer;

impl<S> Layer<S> for TokenLayer {
    type Service = TokenService<S>;
    fn layer(&self, inner: S) -> TokenService<S> {
        TokenService { inner }
    }
}

#[derive(Clone)]
pub struct TokenService<S> {
    inner: S,
}

impl<S, B, RB> Service<http::Request<B>> for TokenService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(WRITE_TOKEN.scope(RefCell::new(None), async move {
            let mut resp = fut.await?;
            let token = WRITE_TOKEN.with(|c| c.borrow().clone());
            if let Some(v) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
                resp.headers_mut().insert(TOKEN_HEADER, v);
            }
            Ok(resp)
        }))
    }
}
