//! `POST /api/v1/modify/async`: one write (with the generated id of the row
//! it inserted), or a per-operation batch (each parameter row in its own
//! transaction, failures reported by index).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::auth::Who;
use super::error::{ApiError, ApiResult};
use super::extract::{Body, Params};
use super::query::MonthParam;
use super::{answer, context, json_bytes, month_of, params_of, timestamp, Shared};

#[derive(Deserialize, ToSchema)]
pub struct ModifyRequest {
    /// The statement (INSERT, UPDATE, DELETE, DDL…); `?` placeholders.
    exec: Option<String>,
    /// Same as `exec` (either may be used).
    query: Option<String>,
    /// Values for the placeholders of a single operation.
    #[schema(value_type = Vec<Object>)]
    params: Option<Vec<Value>>,
    /// Run the statement once per row of `batch_params`.
    #[serde(default)]
    is_batch: bool,
    /// Parameter rows of a batch.
    #[schema(value_type = Vec<Vec<Object>>)]
    batch_params: Option<Vec<Vec<Value>>>,
    /// `YYYY-MM` [default: the current month].
    month: Option<String>,
}

/// A JSON number for an id DuckDB printed (integers stay integers).
fn id_value(id: &str) -> Value {
    id.parse::<i64>()
        .map(Value::from)
        .or_else(|_| id.parse::<u64>().map(Value::from))
        .ok()
        .or_else(|| {
            serde_json::from_str::<serde_json::Number>(id)
                .ok()
                .map(Value::Number)
        })
        .unwrap_or_else(|| Value::String(id.to_string()))
}

/// Runs a write on the month's primary.
#[utoipa::path(
    post, path = "/api/v1/modify/async", tag = "modify",
    request_body = ModifyRequest,
    responses(
        (status = 200, description = "Single: `{status: \"success\", affected_rows, id?, token, timestamp}` (`id`: the generated id of the one row inserted into a table with generated ids). \
            Batch: `{status: \"success\"|\"partial_success\", batch: true, total_operations, successful_operations, failed_operations, affected_rows, errors: null|[{index, error}], token, timestamp}`"),
        (status = 400, description = "Bad input, DuckDB's error, or a batch whose every operation failed"),
    )
)]
pub async fn modify_async(
    State(state): Shared,
    Who(who): Who,
    headers: HeaderMap,
    Params(q): Params<MonthParam>,
    Body(req): Body<ModifyRequest>,
) -> ApiResult<Response> {
    let sql = req
        .exec
        .or(req.query)
        .ok_or_else(|| ApiError::bad_request("the body needs \"exec\" (the SQL statement)"))?;
    let month = month_of(req.month.as_deref(), q.month.as_deref())?;
    let ctx = context(&who, &headers, month);
    if req.is_batch {
        let rows = req.batch_params.ok_or_else(|| {
            ApiError::bad_request("\"is_batch\": true needs \"batch_params\": [[...], ...]")
        })?;
        if rows.is_empty() {
            return Err(ApiError::bad_request("\"batch_params\" is empty"));
        }
        let params = crate::json_params::params_from_json(&rows).map_err(ApiError::bad_request)?;
        let (report, token) = state.engine.execute_each(&ctx, &sql, params).await?;
        let errors = if report.errors.is_empty() {
            Value::Null
        } else {
            json!(report.errors)
        };
        let mut body = json!({
            "status": if report.failed == 0 { "success" } else { "partial_success" },
            "batch": true,
            "total_operations": report.total,
            "successful_operations": report.succeeded,
            "failed_operations": report.failed,
            "affected_rows": report.affected_rows,
            "errors": errors,
            "token": token,
            "timestamp": timestamp(),
        });
        if report.succeeded == 0 {
            let first = report
                .errors
                .first()
                .map(|e| e.error.clone())
                .unwrap_or_default();
            let mut e = ApiError::bad_request(format!(
                "all {} operations failed; the first: {first}",
                report.total
            ));
            if let Value::Object(fields) = body.take() {
                for (k, v) in fields {
                    if k != "status" {
                        e = e.with(&k, v);
                    }
                }
            }
            return Err(e);
        }
        return Ok(answer(
            StatusCode::OK,
            json_bytes(&body)?,
            token.as_deref(),
            None,
        ));
    }
    if req.batch_params.is_some() {
        return Err(ApiError::bad_request(
            "\"batch_params\" needs \"is_batch\": true (a single operation takes \"params\")",
        ));
    }
    let params = params_of(req.params)?;
    let (affected, ids, token) = state
        .engine
        .execute_update_with_ids(&ctx, &sql, params, 2)
        .await?;
    let mut body = json!({
        "status": "success",
        "affected_rows": affected,
        "token": token,
        "timestamp": timestamp(),
    });
    if let ([id], Value::Object(m)) = (ids.as_slice(), &mut body) {
        m.insert("id".into(), id_value(id));
    }
    Ok(answer(
        StatusCode::OK,
        json_bytes(&body)?,
        token.as_deref(),
        None,
    ))
}
