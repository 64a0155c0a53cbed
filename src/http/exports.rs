//! Exports over HTTP: `POST /api/v1/export` (`Engine::export`), the export
//! dir's listing, and one export streamed as a download.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::auth::Who;
use super::error::{ApiError, ApiResult};
use super::extract::{Body, PathParam};
use super::{answer, json_bytes, resolve, timestamp, Shared};
use crate::engine::ExportFormat;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// One query that only reads.
    query: String,
    /// `parquet`, `csv` or `json` (newline-delimited).
    format: String,
    /// File name in the export dir (letters, digits, `.`, `_`, `-`; the
    /// format's extension is added when missing) [default: generated].
    name: Option<String>,
    /// `YYYY-MM` [default: the current month].
    month: Option<String>,
}

/// Runs a query and writes its whole result into a file under the export
/// dir (for results too big to fetch as JSON); SQL `COPY … TO` is refused.
#[utoipa::path(post, path = "/api/v1/export", tag = "files",
    request_body = ExportRequest,
    responses((status = 200, description = "`{status: \"success\", name, path, format, rows, bytes, node, timestamp}`"),
              (status = 400, description = "Not a read, a bad name or format, or DuckDB's error"),
              (status = 409, description = "An export of that name exists")))]
pub async fn export(
    State(state): Shared,
    Who(who): Who,
    headers: HeaderMap,
    Body(req): Body<ExportRequest>,
) -> ApiResult<Response> {
    let (ctx, _) = resolve(&state, &who, &headers, req.month.as_deref(), None)?;
    let format: ExportFormat = req.format.parse()?;
    let done = state
        .engine
        .export(&ctx, &req.query, format, req.name.as_deref())
        .await?;
    let body = json!({
        "status": "success",
        "name": done.name,
        "path": done.path,
        "format": done.format,
        "rows": done.rows,
        "bytes": done.bytes,
        "node": done.node,
        "timestamp": timestamp(),
    });
    Ok(answer(
        StatusCode::OK,
        json_bytes(&body)?,
        None,
        Some(&done.node),
    ))
}

/// The files in the export dir.
#[utoipa::path(get, path = "/api/v1/exports", tag = "files",
    responses((status = 200, description = "`{status: \"success\", count, exports: [{name, path, size, modified, format}]}`")))]
pub async fn list(State(state): Shared, Who(who): Who) -> ApiResult<Response> {
    let exports = state.engine.list_exports(&who).await?;
    let body = json!({"status": "success", "count": exports.len(), "exports": exports});
    Ok(answer(StatusCode::OK, json_bytes(&body)?, None, None))
}

/// One export, streamed from disk.
#[utoipa::path(get, path = "/api/v1/exports/{name}", tag = "files",
    params(("name" = String, Path, description = "The export's file name")),
    responses((status = 200, description = "The file"),
              (status = 404, description = "No such export")))]
pub async fn download(
    State(state): Shared,
    Who(who): Who,
    PathParam(name): PathParam,
) -> ApiResult<Response> {
    let path = state.engine.export_path(&who, &name)?;
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        ApiError::from(crate::engine::EngineError::not_found(format!(
            "{name}: {e}"
        )))
    })?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let content_type = match crate::engine::files::guess_format(&name) {
        Some("parquet") => "application/vnd.apache.parquet",
        Some("csv") => "text/csv",
        Some("json") => "application/x-ndjson",
        _ => "application/octet-stream",
    };
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(resp)
}
