//! `POST /api/v1/query/async` (answer now; one month, a list of months or
//! all months), `POST /api/v1/query` (answer stored under an id) and
//! `GET /api/v1/query/result/{id}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::auth::Who;
use super::budget::Held;
use super::error::{ApiError, ApiResult};
use super::extract::{Body, Params, PathParam};
use super::json_out::{collect, CollectError, JsonRows, RowShape};
use super::results::Stored;
use super::{
    answer, answer_held, context, json_bytes, month_of, params_of, resolve, timestamp, AppState,
    Shared,
};
use crate::engine::{CallContext, Caller, MonthId, SCRATCH_NODE};

#[derive(Deserialize, ToSchema)]
pub struct QueryRequest {
    /// The SQL statement (DuckDB dialect); `?` placeholders take `params`.
    query: String,
    /// Values for the `?` placeholders.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    params: Option<Vec<Value>>,
    /// `YYYY-MM` [default: the current month].
    month: Option<String>,
    /// Several months: the statement (a read) runs on each.
    months: Option<Vec<String>>,
    /// Every month that exists.
    all_months: Option<bool>,
}

// The answers are typed structs, not `json!` values: the rows are raw JSON
// text (exact decimals) that a `serde_json::Value` would re-parse as f64.

#[derive(Serialize)]
struct SingleAnswer {
    status: &'static str,
    month: String,
    node_id: Option<u64>,
    node: String,
    results: [NodeResult; 1],
    token: Option<String>,
    timestamp: String,
}

#[derive(Serialize)]
struct NodeResult {
    node_id: Option<u64>,
    success: bool,
    completed: bool,
    data: Data,
}

#[derive(Serialize)]
struct Data {
    columns: Vec<String>,
    types: Vec<String>,
    rows: Box<RawValue>,
    count: u64,
}

#[derive(Serialize)]
struct CrossAnswer {
    status: &'static str,
    cross_month: bool,
    months_queried: Vec<String>,
    total_months: usize,
    successful_months: usize,
    results: Vec<MonthResult>,
    timestamp: String,
}

#[derive(Serialize)]
struct MonthResult {
    month: String,
    /// The rows as objects.
    results: Box<RawValue>,
    columns: Vec<String>,
    count: u64,
    completed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    timestamp: String,
}

#[derive(Deserialize, Default)]
pub struct MonthParam {
    pub month: Option<String>,
}

/// Turns a collect failure into the client's error.
fn collect_error(e: CollectError, state: &AppState) -> ApiError {
    match e {
        CollectError::Engine(e) => e.into(),
        CollectError::Arrow(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot convert the result to JSON: {e}"),
        ),
        CollectError::Busy(b) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the HTTP gateway is building {} bytes of JSON answers, its limit for all requests \
                 together: retry in a moment, or fetch through Flight SQL at {}, which streams",
                b.budget, state.flight_uri
            ),
        )
        .with("retry_after_s", json!(1)),
        CollectError::TooLarge(t) => ApiError::bad_request(format!(
            "the result is larger than the HTTP gateway's limit of {} bytes of JSON ({} rows read before it stopped): \
             fetch large results through Flight SQL at {}, which streams them in Arrow, or narrow the query",
            state.result_limit, t.rows_so_far, state.flight_uri
        ))
        .with("limit_bytes", json!(state.result_limit))
        .with("flight_sql", json!(state.flight_uri.clone())),
    }
}

fn raw(bytes: Vec<u8>) -> ApiResult<Box<RawValue>> {
    let text = String::from_utf8(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("invalid UTF-8 in JSON: {e}"),
        )
    })?;
    RawValue::from_string(text).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("invalid JSON: {e}"),
        )
    })
}

/// `{"node_id": K}` of a node name `YYYY-MM/node_K` (null for the scratch
/// database that answers months without files).
fn node_index(node: &str) -> Option<u64> {
    if node == SCRATCH_NODE {
        return None;
    }
    node.rsplit_once("/node_").and_then(|(_, k)| k.parse().ok())
}

/// A single-month answer, its token and node.
struct Single {
    body: Vec<u8>,
    token: Option<String>,
    node: String,
}

async fn run_single(
    state: &AppState,
    ctx: CallContext,
    sql: &str,
    params: Option<Vec<Value>>,
    held: &mut Held,
) -> ApiResult<Single> {
    let month = state.engine.resolve_month(&ctx)?.to_string();
    let params = params_of(params)?;
    let stream = state.engine.stream_query(&ctx, sql, params).await?;
    let (node, token) = (stream.node.clone(), stream.token.clone());
    let rows = collect(stream, RowShape::Arrays, state.result_limit, held)
        .await
        .map_err(|e| collect_error(e, state))?;
    crate::metrics::get().streamed("http", rows.count, 0);
    if let Some(n) = crate::access_log::current() {
        n.add_rows(rows.count);
    }
    let JsonRows {
        columns,
        types,
        rows,
        count,
    } = rows;
    let node_id = node_index(&node);
    let body = SingleAnswer {
        status: "success",
        month,
        node_id,
        node: node.clone(),
        results: [NodeResult {
            node_id,
            success: true,
            completed: true,
            data: Data {
                columns,
                types,
                rows: raw(rows)?,
                count,
            },
        }],
        token: token.clone(),
        timestamp: timestamp(),
    };
    let body = json_bytes(&body)?;
    held.cover(body.len())
        .await
        .map_err(|b| collect_error(CollectError::Busy(b), state))?;
    Ok(Single { body, token, node })
}

/// Each listed month in turn, through the engine's cross-month read (so
/// only reads run; the leading `month` column is dropped), each month
/// succeeding or failing on its own as in the original API.
async fn run_cross_month(
    state: &AppState,
    who: &Caller,
    headers: &HeaderMap,
    months: Vec<String>,
    sql: &str,
    params: Option<Vec<Value>>,
    held: &mut Held,
) -> ApiResult<Vec<u8>> {
    let params = params_of(params)?;
    let existing = state.engine.list_months(who)?;
    let mut results = Vec::new();
    let mut successful = 0;
    let mut budget = state.result_limit;
    for m in &months {
        let id: MonthId = m.parse().map_err(ApiError::from)?;
        let outcome = if !existing.contains(&id) {
            Err(ApiError::not_found(format!("month {id} does not exist")))
        } else {
            let ctx = CallContext {
                months: Some(id.to_string()),
                ..context(who, headers, None)
            };
            match state.engine.stream_query(&ctx, sql, params.clone()).await {
                Ok(stream) => collect(stream, RowShape::Objects { skip: 1 }, budget, held)
                    .await
                    .map_err(|e| collect_error(e, state)),
                Err(e) => Err(e.into()),
            }
        };
        match outcome {
            Ok(rows) => {
                budget = budget.saturating_sub(rows.rows.len());
                crate::metrics::get().streamed("http", rows.count, 0);
                if let Some(n) = crate::access_log::current() {
                    n.add_rows(rows.count);
                }
                successful += 1;
                results.push(MonthResult {
                    month: id.to_string(),
                    results: raw(rows.rows)?,
                    columns: rows.columns,
                    count: rows.count,
                    completed: true,
                    error: None,
                    timestamp: timestamp(),
                });
            }
            // Too large for the gateway: the whole answer is refused.
            Err(e) if e.extra.contains_key("limit_bytes") => return Err(e),
            Err(e) => results.push(MonthResult {
                month: id.to_string(),
                results: raw(b"[]".to_vec())?,
                columns: Vec::new(),
                count: 0,
                completed: false,
                error: Some(e.message),
                timestamp: timestamp(),
            }),
        }
    }
    let status = if successful == months.len() {
        "success"
    } else if successful > 0 {
        "partial_success"
    } else {
        "error"
    };
    let body = json_bytes(&CrossAnswer {
        status,
        cross_month: true,
        total_months: months.len(),
        months_queried: months,
        successful_months: successful,
        results,
        timestamp: timestamp(),
    })?;
    held.cover(body.len())
        .await
        .map_err(|b| collect_error(CollectError::Busy(b), state))?;
    Ok(body)
}

/// The months of a cross-month request (`None`: a single-month request).
fn cross_months(
    state: &AppState,
    who: &Caller,
    req: &QueryRequest,
) -> ApiResult<Option<Vec<String>>> {
    if req.all_months == Some(true) {
        return Ok(Some(
            state
                .engine
                .list_months(who)?
                .iter()
                .map(ToString::to_string)
                .collect(),
        ));
    }
    match &req.months {
        Some(ms) if ms.is_empty() => Err(ApiError::bad_request(
            "\"months\" is empty: list at least one YYYY-MM month, or use \"all_months\": true",
        )),
        Some(ms) => {
            let mut out = Vec::new();
            for m in ms {
                let id: MonthId = m.parse().map_err(ApiError::from)?;
                if !out.contains(&id.to_string()) {
                    out.push(id.to_string());
                }
            }
            Ok(Some(out))
        }
        None => Ok(None),
    }
}

/// Runs a query and answers its result at once.
#[utoipa::path(
    post, path = "/api/v1/query/async", tag = "query",
    request_body = QueryRequest,
    responses(
        (status = 200, description = "Single month: `{status, month, node_id, results: [{node_id, success, completed, data: {columns, types, rows, count}}], timestamp}`. \
            Several months (`months` or `all_months`): `{cross_month: true, months_queried, total_months, successful_months, results: [{month, results: [row objects], completed, timestamp}], timestamp}`"),
        (status = 400, description = "Bad input or DuckDB's error, or a result over the size limit: `{status: \"error\", error}`"),
    )
)]
pub async fn query_async(
    State(state): Shared,
    Who(who): Who,
    headers: HeaderMap,
    Params(q): Params<MonthParam>,
    Body(req): Body<QueryRequest>,
) -> ApiResult<Response> {
    let mut held = state.json.hold();
    if let Some(months) = cross_months(&state, &who, &req)? {
        let body = run_cross_month(
            &state, &who, &headers, months, &req.query, req.params, &mut held,
        )
        .await?;
        return Ok(answer_held(StatusCode::OK, body, None, None, held));
    }
    let month = month_of(req.month.as_deref(), q.month.as_deref())?;
    let s = run_single(
        &state,
        context(&who, &headers, month),
        &req.query,
        req.params,
        &mut held,
    )
    .await?;
    Ok(answer_held(
        StatusCode::OK,
        s.body,
        s.token.as_deref(),
        Some(&s.node),
        held,
    ))
}

/// Starts a query whose result is kept for later.
#[utoipa::path(
    post, path = "/api/v1/query", tag = "query",
    request_body = QueryRequest,
    responses(
        (status = 200, description = "`{status: \"success\", query_id, month}`: fetch the result with GET /api/v1/query/result/{query_id}. \
            Results are kept one hour after they finish, at most 1000 of them and a bounded number of bytes (oldest first)."),
        (status = 400, description = "Bad input"),
    )
)]
pub async fn query_stored(
    State(state): Shared,
    Who(who): Who,
    headers: HeaderMap,
    Params(q): Params<MonthParam>,
    Body(req): Body<QueryRequest>,
) -> ApiResult<Response> {
    if req.months.is_some() || req.all_months == Some(true) {
        return Err(ApiError::bad_request(
            "a stored query runs on one month; use /api/v1/query/async for several months",
        ));
    }
    let (ctx, resolved) = resolve(
        &state,
        &who,
        &headers,
        req.month.as_deref(),
        q.month.as_deref(),
    )?;
    let id = uuid::Uuid::new_v4().to_string();
    // Stored under its user too: only they can fetch it.
    let (task_state, task_id) = (Arc::clone(&state), stored_key(&who, &id));
    state.results.start(&task_id, &resolved);
    let key = task_id.clone();
    let task = tokio::spawn(async move {
        // Held while the answer is built; the stored result then counts
        // against the result store's own bound.
        let mut held = task_state.json.hold();
        let (status, body) =
            match run_single(&task_state, ctx, &req.query, req.params, &mut held).await {
                Ok(s) => (StatusCode::OK, s.body),
                Err(e) => {
                    let status = e.status;
                    let body = axum::body::to_bytes(e.into_response().into_body(), usize::MAX)
                        .await
                        .map(|b| b.to_vec())
                        .unwrap_or_default();
                    (status, body)
                }
            };
        task_state
            .results
            .finish(&task_id, status, Bytes::from(body));
    });
    state.results.attach(&key, task.abort_handle());
    let body = json_bytes(&json!({
        "status": "success",
        "query_id": id,
        "month": resolved,
        "timestamp": timestamp(),
    }))?;
    Ok(answer(StatusCode::OK, body, None, None))
}

/// The result of a stored query.
#[utoipa::path(
    get, path = "/api/v1/query/result/{query_id}", tag = "query",
    params(("query_id" = String, Path, description = "The id POST /api/v1/query answered"),
           ("month" = Option<String>, Query, description = "YYYY-MM: must be the query's month when given")),
    responses(
        (status = 200, description = "The same shape as a single-month /api/v1/query/async answer"),
        (status = 202, description = "`{status: \"running\", query_id}`: not finished yet"),
        (status = 404, description = "Unknown or expired id"),
    )
)]
pub async fn query_result(
    State(state): Shared,
    Who(who): Who,
    PathParam(id): PathParam,
    Params(q): Params<MonthParam>,
) -> ApiResult<Response> {
    let month = month_of(None, q.month.as_deref())?;
    let gone = || {
        ApiError::not_found(format!(
            "query {id} not found: unknown, or expired (results are kept for one hour)"
        ))
    };
    who.require(crate::engine::Role::Reader, "fetching a result")?;
    let stored = state.results.get(&stored_key(&who, &id)).ok_or_else(gone)?;
    let of = match &stored {
        Stored::Running { month } | Stored::Done { month, .. } => month.clone(),
    };
    if month.is_some_and(|m| m != of) {
        return Err(ApiError::not_found(format!(
            "query {id} was not run on that month (it ran on {of})"
        )));
    }
    Ok(match stored {
        Stored::Running { month } => answer(
            StatusCode::ACCEPTED,
            json_bytes(&json!({"status": "running", "query_id": id, "month": month}))?,
            None,
            None,
        ),
        Stored::Done { status, body, .. } => answer(status, body.to_vec(), None, None),
    })
}

/// The result store's key of a user's stored query.
fn stored_key(who: &Caller, id: &str) -> String {
    format!("{}\u{0}{id}", who.user())
}
