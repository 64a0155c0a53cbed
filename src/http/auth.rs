//! Who is calling over HTTP, and from where: the same Basic or Bearer
//! credentials as Flight SQL (`crate::auth`), the caller put into the
//! request's extensions for the handlers (extractor [`Who`]), and the
//! browser guard: a POST body must be JSON, and a request from a web page
//! of another origin is refused unless `--http-allow-origin` names it.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::Refusal;
use crate::engine::Caller;

use super::error::ApiError;
use super::{AppState, Shared};

/// The caller of a request (nobody when the middleware did not run: every
/// engine call then refuses).
pub struct Who(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Who(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_default()))
    }
}

/// Paths anyone may call: load balancers probe health without credentials.
fn open_path(path: &str) -> bool {
    path == "/health"
}

/// Authenticates every request but the open paths.
pub async fn authenticate(State(state): Shared, mut req: Request, next: Next) -> Response {
    if state.auth.is_some() && open_path(req.uri().path()) {
        return next.run(req).await;
    }
    match crate::auth::sign_in(state.auth.as_ref(), &mut req).await {
        Ok(_) => next.run(req).await,
        Err(r) => refused(&r),
    }
}

/// 401 with a challenge (429 while the user is locked out).
fn refused(r: &Refusal) -> Response {
    let mut resp = match r {
        Refusal::TooMany { retry_after, .. } => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, r.message())
                .with("retry_after_s", json!(retry_after))
                .into_response()
        }
        _ => ApiError::new(StatusCode::UNAUTHORIZED, r.message()).into_response(),
    };
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Basic realm=\"duckflock\", charset=\"UTF-8\", Bearer realm=\"duckflock\"",
        ),
    );
    resp
}

/// Origins allowed besides the server's own (`--http-allow-origin`).
#[derive(Debug, Clone, Default)]
pub struct Origins(pub Vec<String>);

impl Origins {
    /// CORS for the allowed origins: preflights answered, credentials and
    /// the duckflock headers allowed, the answer headers exposed.
    pub fn cors(&self) -> CorsLayer {
        let list: Vec<HeaderValue> = self
            .0
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("x-duckflock-month"),
                header::HeaderName::from_static("x-duckflock-token"),
            ])
            .expose_headers([
                header::HeaderName::from_static("x-duckflock-token"),
                header::HeaderName::from_static("x-duckflock-node"),
            ])
            .allow_credentials(true)
    }
}

/// Refuses what a web page of another site could send: a request with a
/// foreign `Origin` (browsers send it on every cross-origin POST), and a
/// POST body that is not JSON (a "simple" cross-origin request needs no
/// preflight only with a form or text content type).
pub async fn guard_browser(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let same = origin
            .split_once("://")
            .is_some_and(|(_, rest)| !host.is_empty() && rest == host);
        let allowed = state.origins.0.iter().any(|o| o == origin);
        if !same && !allowed {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "requests from web pages of {origin} are not allowed (start the server with --http-allow-origin {origin} to allow them)"
                ),
            )
            .into_response();
        }
    }
    if req.method() == Method::POST && has_body(&req) {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| {
                let t = t.trim().to_ascii_lowercase();
                t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
            });
        if !json {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a request body must be JSON sent as Content-Type: application/json",
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn has_body(req: &Request) -> bool {
    let h = req.headers();
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// `POST /api/v1/token`: a bearer token for the caller (Basic credentials,
/// or a token that is still valid), usable on both front doors.
pub async fn token(State(state): Shared, req: Request) -> Result<Response, ApiError> {
    let Some(auth) = state.auth.as_ref() else {
        return Err(ApiError::bad_request(
            "this server has no users (--users): no token is needed",
        ));
    };
    let issued = match req.extensions().get::<crate::auth::Issued>() {
        Some(i) => i.clone(),
        None => {
            let caller = req
                .extensions()
                .get::<Caller>()
                .cloned()
                .unwrap_or_default();
            let p = caller.principal().ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "authentication required")
            })?;
            auth.issue(p)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        }
    };
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_default();
    let expires = chrono::DateTime::from_timestamp(issued.expires_at as i64, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    Ok(axum::Json(json!({
        "status": "success",
        "token": issued.token,
        "expires_at": expires,
        "user": caller.user(),
        "role": caller.principal().map(|p| p.role.as_str()),
    }))
    .into_response())
}
