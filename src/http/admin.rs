//! API info, health, metrics, node status, months and sync.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::auth::Who;
use super::error::ApiResult;
use super::extract::{optional_body, Params};
use super::query::MonthParam;
use super::{answer, json_bytes, resolve, timestamp, Shared};

/// API info and the endpoint list.
#[utoipa::path(get, path = "/", tag = "info",
    responses((status = 200, description = "`{message, version, endpoints, status_page, docs, flight_sql}`")))]
pub async fn root(State(state): Shared) -> ApiResult<Response> {
    let body = json!({
        "message": "duckflock: DuckDB over Arrow Flight SQL, with the original REST API",
        "version": env!("CARGO_PKG_VERSION"),
        "status_page": "/status",
        "docs": "/docs",
        "openapi": "/openapi.json",
        "metrics": "/metrics",
        "flight_sql": state.flight_uri.clone(),
        "endpoints": {
            "health": "GET /health",
            "status": "GET /status",
            "docs": "GET /docs",
            "openapi": "GET /openapi.json",
            "metrics": "GET /metrics",
            "query_async": "POST /api/v1/query/async",
            "query": "POST /api/v1/query",
            "query_result": "GET /api/v1/query/result/{query_id}",
            "modify_async": "POST /api/v1/modify/async",
            "create_table": "POST /api/v1/tables",
            "list_tables": "GET /api/v1/tables",
            "table_schema": "GET /api/v1/tables/{table_name}/schema",
            "nodes": "GET /api/v1/nodes",
            "months": "GET /api/v1/months",
            "sync": "POST /api/v1/sync",
            "verify": "POST /api/v1/verify",
        },
        "timestamp": timestamp(),
    });
    Ok(answer(StatusCode::OK, json_bytes(&body)?, None, None))
}

/// 200 when every open month's primary answers and takes writes and no
/// replica has stopped syncing; 503 otherwise.
#[utoipa::path(get, path = "/health", tag = "info",
    responses((status = 200, description = "`{status: \"healthy\", months, open_months, problems: [], timestamp}`"),
              (status = 503, description = "`{status: \"unhealthy\", problems: [...]}`")))]
pub async fn health(State(state): Shared) -> ApiResult<Response> {
    let report = state.engine.health().await;
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if report.healthy { "healthy" } else { "unhealthy" },
        "months": report.months,
        "open_months": report.open_months,
        "problems": report.problems,
        "verify_mismatches": report.verify_mismatches,
        "timestamp": timestamp(),
    });
    Ok(answer(status, json_bytes(&body)?, None, None))
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "info",
    responses((status = 200, description = "OpenMetrics text: requests, latency histograms, rows/bytes streamed, ingest rows, per-node LSN, lag and DuckDB memory, open sessions")))]
pub async fn metrics(State(state): Shared, Who(who): Who) -> ApiResult<Response> {
    let months = state.engine.node_status(&who, None).await?;
    let (held, peak) = state.json_usage();
    crate::metrics::get().http_json(held, peak);
    let text = crate::metrics::get().render(
        &months,
        state.engine.open_sessions(),
        state.engine.queries(),
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// The node status of a month.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes",
    params(("month" = Option<String>, Query, description = "YYYY-MM [default: the current month]")),
    responses((status = 200, description = "`{status: \"success\", month, nodes: [{id, role, path, applied_lsn, lag_lsn, lag_ms, healthy, state, size_bytes, memory_limit, memory_usage_bytes}], months: [the node_status answer]}`"),
              (status = 404, description = "The month does not exist")))]
pub async fn nodes(
    State(state): Shared,
    Who(who): Who,
    headers: HeaderMap,
    Params(q): Params<MonthParam>,
) -> ApiResult<Response> {
    let (_, resolved) = resolve(&state, &who, &headers, None, q.month.as_deref())?;
    let months = state.engine.node_status(&who, Some(&resolved)).await?;
    let nodes = months.first().map(|m| m.nodes.clone()).unwrap_or_default();
    let body = json!({
        "status": "success",
        "month": resolved,
        "nodes": nodes,
        "months": months,
        "timestamp": timestamp(),
    });
    Ok(answer(StatusCode::OK, json_bytes(&body)?, None, None))
}

/// The files SQL can read in place: under the `--files-dir` directories,
/// names relative to the first one (as SQL takes them).
#[utoipa::path(get, path = "/api/v1/files", tag = "files",
    responses((status = 200, description = "`{status: \"success\", count, files: [{name, path, size, modified, format}]}`")))]
pub async fn files(State(state): Shared, Who(who): Who) -> ApiResult<Response> {
    let files = state.engine.list_files(&who).await?;
    let body = json!({"status": "success", "count": files.len(), "files": files});
    Ok(answer(StatusCode::OK, json_bytes(&body)?, None, None))
}

/// The months that exist.
#[utoipa::path(get, path = "/api/v1/months", tag = "nodes",
    responses((status = 200, description = "`{status: \"success\", count, months: [\"YYYY-MM\", ...]}`")))]
pub async fn months(State(state): Shared, Who(who): Who) -> ApiResult<Response> {
    let months: Vec<String> = state
        .engine
        .list_months(&who)?
        .iter()
        .map(ToString::to_string)
        .collect();
    let body = json!({"status": "success", "count": months.len(), "months": months});
    Ok(answer(StatusCode::OK, json_bytes(&body)?, None, None))
}

#[derive(Deserialize, Default, ToSchema)]
pub struct SyncRequest {
    /// `YYYY-MM` [default: the current month].
    month: Option<String>,
    /// Seconds to wait at most [default: 60].
    timeout_s: Option<f64>,
}

/// Waits until every replica of the month has applied its primary's last
/// change set.
#[utoipa::path(post, path = "/api/v1/sync", tag = "nodes",
    request_body(content = SyncRequest, description = "optional"),
    responses((status = 200, description = "`{status: \"success\", month, months: [{month, lsn, replicas}], timestamp}`"),
              (status = 404, description = "The month does not exist"),
              (status = 503, description = "Replicas did not catch up in time")))]
pub async fn sync(
    State(state): Shared,
    Who(who): Who,
    headers: HeaderMap,
    Params(q): Params<MonthParam>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: SyncRequest = optional_body(&body)?;
    let (_, resolved) = resolve(
        &state,
        &who,
        &headers,
        req.month.as_deref(),
        q.month.as_deref(),
    )?;
    let timeout = Duration::from_secs_f64(req.timeout_s.unwrap_or(60.0).clamp(0.0, 3600.0));
    let months = state.engine.sync(&who, Some(&resolved), timeout).await?;
    let body = json!({
        "status": "success",
        "month": resolved,
        "months": months,
        "timestamp": timestamp(),
    });
    Ok(answer(StatusCode::OK, json_bytes(&body)?, None, None))
}

#[derive(Deserialize, Default, ToSchema)]
pub struct VerifyRequest {
    /// `YYYY-MM` [default: every open month].
    month: Option<String>,
}

/// Compares every replica of the month (or of every open month) with its
/// primary at one LSN: per table the row count and an order-independent
/// content hash, and the catalog. A replica that differs is marked failed
/// and rebuilt from the primary.
#[utoipa::path(post, path = "/api/v1/verify", tag = "nodes",
    request_body(content = VerifyRequest, description = "optional"),
    params(("month" = Option<String>, Query, description = "YYYY-MM [default: every open month]")),
    responses((status = 200, description = "`{status: \"success\" | \"mismatch\", months: [{month, lsn, tables, rows, elapsed_ms, ok, replicas: [{node, result: ok|mismatch|not_checked, detail, differences}]}], timestamp}`"),
              (status = 404, description = "The month does not exist")))]
pub async fn verify(
    State(state): Shared,
    Who(who): Who,
    Params(q): Params<MonthParam>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: VerifyRequest = optional_body(&body)?;
    let month = req.month.or(q.month);
    let months = state.engine.verify_replicas(&who, month.as_deref()).await?;
    let ok = months.iter().all(|m| m.ok);
    let body = json!({
        "status": if ok { "success" } else { "mismatch" },
        "months": months,
        "timestamp": timestamp(),
    });
    Ok(answer(StatusCode::OK, json_bytes(&body)?, None, None))
}

/// Every open Flight SQL session and transaction (admin).
#[utoipa::path(get, path = "/api/v1/sessions", tag = "nodes",
    responses((status = 200, description = "`{status: \"success\", count, sessions: [{session, kind, user, month, idle_s}]}`"),
              (status = 403, description = "Needs role admin")))]
pub async fn sessions(State(state): Shared, Who(who): Who) -> ApiResult<Response> {
    let sessions = state.engine.list_sessions(&who)?;
    let body = json!({"status": "success", "count": sessions.len(), "sessions": sessions});
    Ok(answer(StatusCode::OK, json_bytes(&body)?, None, None))
}

/// Closes a session or rolls back a transaction (admin).
#[utoipa::path(delete, path = "/api/v1/sessions/{session}", tag = "nodes",
    params(("session" = String, Path, description = "the id `list_sessions` shows")),
    responses((status = 200, description = "`{status: \"success\", session, killed: \"session\" | \"transaction\"}`"),
              (status = 403, description = "Needs role admin"),
              (status = 404, description = "No such session")))]
pub async fn kill_session(
    State(state): Shared,
    Who(who): Who,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Response> {
    let kind = state.engine.kill_session(&who, &id)?;
    let body = json!({"status": "success", "session": id, "killed": kind});
    Ok(answer(StatusCode::OK, json_bytes(&body)?, None, None))
}
