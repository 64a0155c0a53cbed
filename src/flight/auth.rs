//! Authentication of every Flight call: a tower layer in front of the
//! Flight SQL service turns the `authorization` header (Basic or Bearer)
//! into the engine's [`Caller`], carried in the request's extensions, and
//! answers a Basic sign-in with `authorization: Bearer <token>`. Without a
//! users file every caller is the anonymous admin (the server then only
//! listens on loopback unless `--insecure`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::HeaderValue;
use tonic::Status;
use tower::{Layer, Service};

use crate::auth::{Auth, Issued, Refusal};
use crate::engine::Caller;

#[derive(Clone)]
pub struct AuthLayer {
    auth: Option<Arc<Auth>>,
}

impl AuthLayer {
    pub fn new(auth: Option<Arc<Auth>>) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Auth>>,
}

/// The caller of a Flight call, as the layer found it (nobody if the layer
/// did not run, which every engine call refuses).
pub fn caller_of<T>(req: &tonic::Request<T>) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_default()
}

/// The token a Basic sign-in in this call was issued (for Handshake).
pub fn issued_of<T>(req: &tonic::Request<T>) -> Option<Issued> {
    req.extensions().get::<Issued>().cloned()
}

pub fn refusal_status(r: &Refusal) -> Status {
    Status::unauthenticated(r.message())
}

impl<S, B, RB> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone that was made ready is the one that serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            match crate::auth::sign_in(auth.as_ref(), &mut req).await {
                Ok(issued) => {
                    let mut resp = inner.call(req).await?;
                    if let Some(v) = issued
                        .and_then(|i| HeaderValue::from_str(&format!("Bearer {}", i.token)).ok())
                    {
                        resp.headers_mut().insert(http::header::AUTHORIZATION, v);
                    }
                    Ok(resp)
                }
                Err(r) => {
                    tracing::info!(reason = %r.message(), "flight call refused");
                    Ok(refusal_status(&r).into_http())
                }
            }
        })
    }
}
