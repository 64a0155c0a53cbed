//! The table API: create (column types checked by DuckDB's parser, one
//! column definition each), list, and describe.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::auth::Who;
use super::error::{ApiError, ApiResult};
use super::extract::{Body, Params, PathParam};
use super::query::MonthParam;
use super::{answer, json_bytes, resolve, timestamp, Shared};
use crate::engine::ColumnSpec;

#[derive(Deserialize, ToSchema)]
pub struct Column {
    name: String,
    /// A DuckDB column type, optionally with constraints
    /// (`BIGINT PRIMARY KEY`, `TIMESTAMP DEFAULT CURRENT_TIMESTAMP`).
    r#type: String,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateTableRequest {
    table_name: String,
    columns: Vec<Column>,
    /// `YYYY-MM` [default: the current month].
    month: Option<String>,
    /// [default: main]
    schema: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct TablesParam {
    month: Option<String>,
    schema: Option<String>,
}

/// Creates a table.
#[utoipa::path(
    post, path = "/api/v1/tables", tag = "tables",
    request_body = CreateTableRequest,
    responses(
        (status = 200, description = "`{status: \"success\", message, table_name, month, columns, generated_id, token, timestamp}`; \
            a single integer primary key gets generated ids (`generated_id` names the column)"),
        (status = 400, description = "A type that is not exactly one column definition, or DuckDB's error"),
        (status = 409, description = "The table exists"),
    )
)]
pub async fn create_table(
    State(state): Shared,
    Who(who): Who,
    headers: HeaderMap,
    Params(q): Params<MonthParam>,
    Body(req): Body<CreateTableRequest>,
) -> ApiResult<Response> {
    let (ctx, resolved) = resolve(
        &state,
        &who,
        &headers,
        req.month.as_deref(),
        q.month.as_deref(),
    )?;
    let columns = req
        .columns
        .into_iter()
        .map(|c| ColumnSpec {
            name: c.name,
            r#type: c.r#type,
        })
        .collect();
    let (created, token) = state
        .engine
        .create_table(&ctx, req.schema, req.table_name, columns)
        .await?;
    let body = json!({
        "status": "success",
        "message": format!("table {} created in {resolved}", created.table_name),
        "table_name": created.table_name,
        "month": resolved,
        "columns": created.columns,
        "generated_id": created.generated_id,
        "token": token,
        "timestamp": timestamp(),
    });
    Ok(answer(
        StatusCode::OK,
        json_bytes(&body)?,
        token.as_deref(),
        None,
    ))
}

/// Lists the tables and views of a month.
#[utoipa::path(
    get, path = "/api/v1/tables", tag = "tables",
    params(("month" = Option<String>, Query, description = "YYYY-MM [default: the current month]")),
    responses((status = 200, description = "`{status: \"success\", month, count, tables: [{name, schema, type}]}`"))
)]
pub async fn list_tables(
    State(state): Shared,
    Who(who): Who,
    headers: HeaderMap,
    Params(q): Params<TablesParam>,
) -> ApiResult<Response> {
    let (_, resolved) = resolve(&state, &who, &headers, None, q.month.as_deref())?;
    let tables: Vec<_> = state
        .engine
        .tables(&who, Some(&resolved), false)
        .await?
        .into_iter()
        .filter(|t| q.schema.as_ref().is_none_or(|s| *s == t.schema))
        .map(|t| json!({"name": t.name, "schema": t.schema, "type": t.table_type}))
        .collect();
    let body = json!({
        "status": "success",
        "month": resolved,
        "count": tables.len(),
        "tables": tables,
    });
    Ok(answer(StatusCode::OK, json_bytes(&body)?, None, None))
}

/// Describes a table's columns.
#[utoipa::path(
    get, path = "/api/v1/tables/{table_name}/schema", tag = "tables",
    params(("table_name" = String, Path, description = "The table (or view)"),
           ("month" = Option<String>, Query, description = "YYYY-MM [default: the current month]"),
           ("schema" = Option<String>, Query, description = "[default: main]")),
    responses(
        (status = 200, description = "`{status: \"success\", table_name, month, columns: [{name, type, nullable, primary_key, default}]}`"),
        (status = 404, description = "No such table"),
    )
)]
pub async fn table_schema(
    State(state): Shared,
    Who(who): Who,
    headers: HeaderMap,
    PathParam(table): PathParam,
    Params(q): Params<TablesParam>,
) -> ApiResult<Response> {
    let (_, resolved) = resolve(&state, &who, &headers, None, q.month.as_deref())?;
    let schema = q.schema.unwrap_or_else(|| "main".into());
    let columns = state
        .engine
        .table_columns(&who, &resolved, &schema, &table)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "table {schema}.{table} does not exist in month {resolved}"
            ))
        })?;
    let body = json!({
        "status": "success",
        "table_name": table,
        "schema": schema,
        "month": resolved,
        "columns": columns,
    });
    Ok(answer(StatusCode::OK, json_bytes(&body)?, None, None))
}
