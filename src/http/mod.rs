//! The HTTP gateway: the original system's REST API (same paths, bodies and
//! answer shapes), API docs, health, Prometheus metrics and a status page.
//! Every endpoint is one or a few `engine::Engine` calls, the same ones the
//! Flight SQL service makes; nothing here runs SQL itself.

mod admin;
mod auth;
mod budget;
mod docs;
mod error;
mod exports;
mod extract;
mod json_out;
mod modify;
mod query;
mod results;
mod status_page;
mod tables;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::FutureExt;

use crate::auth::Auth;
use crate::engine::{CallContext, Caller, Engine, MonthId};
pub use error::{ApiError, ApiResult};

/// Largest request body (batch parameter rows).
const MAX_BODY: usize = 64 << 20;

pub struct AppState {
    pub engine: Arc<Engine>,
    /// Where Flight SQL listens, as a client's URI (`grpc://` or
    /// `grpc+tls://`), named in answers that point there.
    pub flight_uri: String,
    /// Bytes of JSON one answer may hold.
    pub result_limit: usize,
    results: results::ResultStore,
    /// Bytes of JSON all answers being built may hold together.
    json: Arc<budget::JsonBudget>,
    /// Users and tokens (`None`: no authentication).
    pub auth: Option<Arc<Auth>>,
    /// Web origins allowed besides the server's own.
    pub origins: auth::Origins,
}

impl AppState {
    pub fn new(
        engine: Arc<Engine>,
        flight_uri: String,
        result_limit: usize,
        auth: Option<Arc<Auth>>,
        origins: Vec<String>,
    ) -> AppState {
        AppState {
            auth,
            origins: auth::Origins(origins),
            engine,
            flight_uri,
            result_limit,
            // Stored results together may hold four answers of the largest
            // size, and at least 256 MB.
            results: results::ResultStore::new(result_limit.saturating_mul(4).max(256 << 20)),
            // Answers being built at once: four of the largest size.
            json: budget::JsonBudget::new(result_limit.saturating_mul(4)),
        }
    }
}

impl AppState {
    /// Bytes of the JSON budget held now and at most since start.
    pub fn json_usage(&self) -> (usize, usize) {
        self.json.usage()
    }
}

type Shared = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(admin::root))
        .route("/health", get(admin::health))
        .route("/metrics", get(admin::metrics))
        .route("/status", get(status_page::page))
        .route("/status/data", get(status_page::data))
        .route("/api/v1/query/async", post(query::query_async))
        .route("/api/v1/query", post(query::query_stored))
        .route("/api/v1/query/result/{query_id}", get(query::query_result))
        .route("/api/v1/modify/async", post(modify::modify_async))
        .route(
            "/api/v1/tables",
            post(tables::create_table).get(tables::list_tables),
        )
        .route(
            "/api/v1/tables/{table_name}/schema",
            get(tables::table_schema),
        )
        .route("/api/v1/nodes", get(admin::nodes))
        .route("/api/v1/months", get(admin::months))
        .route("/api/v1/files", get(admin::files))
        .route("/api/v1/export", post(exports::export))
        .route("/api/v1/exports", get(exports::list))
        .route("/api/v1/exports/{name}", get(exports::download))
        .route("/api/v1/sync", post(admin::sync))
        .route("/api/v1/verify", post(admin::verify))
        .route("/api/v1/token", post(auth::token))
        .route("/api/v1/sessions", get(admin::sessions))
        .route(
            "/api/v1/sessions/{session}",
            axum::routing::delete(admin::kill_session),
        )
        .merge(docs::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Outermost last: observe → CORS (answers preflights) → the
        // browser guard → authentication → the handler.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::guard_browser,
        ))
        .layer(state.origins.cors())
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(cfg) => {
            let listener = crate::tls::TlsListener::new(listener, cfg)?;
            let app = router(state).into_make_service_with_connect_info::<Peer>();
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            let app = router(state).into_make_service_with_connect_info::<Peer>();
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// The client's address, for the access log (plain TCP or TLS).
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(s: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Peer {
        Peer(*s.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for Peer
{
    fn connect_info(s: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Peer {
        Peer(*s.remote_addr())
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint (see /docs)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint (see /docs)",
    )
}

/// Counts every request (endpoint = the route's path pattern), times it,
/// and turns a panic in a handler into a 500 JSON error instead of a
/// dropped connection.
async fn observe(req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = Instant::now();
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map(|c| c.0 .0);
    let mut access =
        crate::access_log::Entry::new("http", format!("{} {endpoint}", req.method()), peer);
    access.month = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("month="))
            .map(str::to_string)
    });
    let run = crate::access_log::scope(Arc::clone(&access.note), next.run(req));
    let resp = match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%endpoint, panic = %what, "handler panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {what}"),
            )
            .into_response()
        }
    };
    crate::metrics::get().request("http", &endpoint, resp.status().as_str(), started.elapsed());
    let headers = resp.headers();
    access.node = headers
        .get("x-duckflock-node")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(n) = http_body::Body::size_hint(resp.body()).exact() {
        access.bytes = n;
    }
    access.finish(resp.status().as_str());
    resp
}

/// The engine call context of a request: its month and the
/// read-your-writes token header.
fn context(who: &Caller, headers: &HeaderMap, month: Option<String>) -> CallContext {
    if let (Some(n), Some(m)) = (crate::access_log::current(), &month) {
        n.set_month(m);
    }
    CallContext {
        month,
        caller: who.clone(),
        token: headers
            .get(crate::flight::TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        ..CallContext::default()
    }
}

/// The month a request names (body first, then `?month=`), checked.
fn month_of(body: Option<&str>, query: Option<&str>) -> ApiResult<Option<String>> {
    match body.or(query) {
        Some(m) => {
            let id: MonthId = m.parse().map_err(ApiError::from)?;
            Ok(Some(id.to_string()))
        }
        None => Ok(None),
    }
}

/// The call context of a request naming `body` / `query` as its month, and
/// the month it resolves to (the current month when it names none).
fn resolve(
    state: &AppState,
    who: &Caller,
    headers: &HeaderMap,
    body: Option<&str>,
    query: Option<&str>,
) -> ApiResult<(CallContext, String)> {
    let ctx = context(who, headers, month_of(body, query)?);
    let month = state.engine.resolve_month(&ctx)?.to_string();
    Ok((ctx, month))
}

/// The parameter row of a single statement (`params`), as Arrow; none for
/// a missing or empty list.
fn params_of(
    params: Option<Vec<serde_json::Value>>,
) -> ApiResult<Vec<arrow::record_batch::RecordBatch>> {
    match params {
        Some(p) if !p.is_empty() => {
            crate::json_params::params_from_json(&[p]).map_err(ApiError::bad_request)
        }
        _ => Ok(Vec::new()),
    }
}

/// The answer's timestamp (UTC, microseconds).
fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A JSON answer with the `x-duckflock-token` / `x-duckflock-node` headers.
fn answer(status: StatusCode, body: Vec<u8>, token: Option<&str>, node: Option<&str>) -> Response {
    crate::metrics::get().streamed("http", 0, body.len() as u64);
    if let Some(n) = crate::access_log::current() {
        n.add_bytes(body.len() as u64);
    }
    let mut resp = (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    for (name, value) in [
        (crate::flight::TOKEN_HEADER, token),
        ("x-duckflock-node", node),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// [`answer`] whose body keeps `held` (its share of the JSON budget) until
/// the connection takes it.
fn answer_held(
    status: StatusCode,
    body: Vec<u8>,
    token: Option<&str>,
    node: Option<&str>,
    held: budget::Held,
) -> Response {
    let mut resp = answer(status, Vec::new(), token, node);
    let len = body.len();
    let chunk = futures::stream::once(async move {
        let _held = held;
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(body))
    });
    *resp.body_mut() = axum::body::Body::from_stream(chunk);
    if let Ok(v) = HeaderValue::from_str(&len.to_string()) {
        resp.headers_mut()
            .insert(axum::http::header::CONTENT_LENGTH, v);
    }
    crate::metrics::get().streamed("http", 0, len as u64);
    if let Some(n) = crate::access_log::current() {
        n.add_bytes(len as u64);
    }
    resp
}

fn json_bytes(v: &impl serde::Serialize) -> ApiResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        )
    })
}
