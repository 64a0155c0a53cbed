//! `DoAction` beyond Flight SQL's own: session options (`SetSessionOptions`,
//! `GetSessionOptions`, `CloseSession`) and the admin actions (JSON in, JSON
//! out), each one engine call.

use std::sync::Arc;

use arrow_flight::{Action, ActionType};
use prost::Message;
use tonic::{Response, Status};

use super::session::*;
use super::status::to_status;
use super::BoxStream;
use crate::engine::{CallContext, Engine, ErrorClass, ExportFormat};

type ActionResponse = Result<Response<BoxStream<arrow_flight::Result>>, Status>;

/// The actions `ListActions` adds to Flight SQL's.
pub fn list() -> Vec<Result<ActionType, Status>> {
    let a = |t: &str, d: &str| {
        Ok(ActionType {
            r#type: t.into(),
            description: d.into(),
        })
    };
    vec![
        a("SetSessionOptions", "Set session options (catalog = YYYY-MM month)"),
        a("GetSessionOptions", "Get session options"),
        a("CloseSession", "Close the session"),
        a(
            "CancelFlightInfo",
            "Flight CancelFlightInfoRequest -> stops the statements behind a FlightInfo not fetched yet",
        ),
        a("list_months", "JSON {} -> {\"months\": [\"YYYY-MM\", ...]}"),
        a(
            "list_sessions",
            "JSON {} -> {\"sessions\": [{\"session\", \"kind\", \"user\", \"month\", \"idle_s\"}]} (admin)",
        ),
        a(
            "kill_session",
            "JSON {\"session\": \"...\"} -> closes that session or rolls back that transaction (admin)",
        ),
        a("create_month", "JSON {\"month\": \"YYYY-MM\"} -> the month's node status"),
        a(
            "node_status",
            "JSON {\"month\": \"YYYY-MM\"} (optional) -> per month, per node: id, role, path, applied_lsn, lag_lsn, lag_ms, healthy, state, size_bytes",
        ),
        a(
            "sync",
            "JSON {\"month\": \"YYYY-MM\", \"timeout_s\": 60} (both optional) -> waits until every replica has applied the primary's last change set; the LSN reached per month",
        ),
        a(
            "create_table",
            "JSON {\"table_name\": \"t\", \"columns\": [{\"name\": \"id\", \"type\": \"BIGINT PRIMARY KEY\"}, ...], \"month\": \"YYYY-MM\", \"schema\": \"main\"} -> creates the table (each type checked to be one column definition); a single integer primary key gets generated ids",
        ),
        a(
            "execute_batch",
            "JSON {\"sql\": \"INSERT ... VALUES (?, ?)\", \"params\": [[1, \"a\"], ...], \"month\": \"YYYY-MM\"} -> runs the statement once per parameter row, each row in its own transaction; {\"total\", \"succeeded\", \"failed\", \"affected_rows\", \"errors\": [{\"index\", \"error\"}]}",
        ),
        a(
            "verify_replicas",
            "JSON {\"month\": \"YYYY-MM\"} (optional: every open month) -> compares every replica with its primary at one LSN (per table a row count and a content hash, and the catalog); a replica that differs is marked failed and rebuilt; per month {\"lsn\", \"ok\", \"replicas\": [{\"node\", \"result\", \"detail\", \"differences\"}]}",
        ),
        a(
            "list_files",
            "JSON {} -> {\"files\": [{\"name\", \"path\", \"size\", \"modified\", \"format\"}]}: the files SQL can read in place (under --files-dir; names relative to the first one)",
        ),
        a(
            "export",
            "JSON {\"query\": \"SELECT ...\", \"format\": \"parquet\"|\"csv\"|\"json\", \"name\": \"file\" (optional), \"month\": \"YYYY-MM\" (optional)} -> writes the query's result under --export-dir: {\"name\", \"path\", \"format\", \"rows\", \"bytes\", \"node\"} (SQL COPY ... TO is refused)",
        ),
        a("list_exports", "JSON {} -> {\"exports\": [{\"name\", \"path\", \"size\", \"modified\", \"format\"}]}"),
        a(
            "resync_replica",
            "JSON {\"month\": \"YYYY-MM\", \"node\": 3} -> rebuilds that replica from a copy of the primary (in the background; sync waits for it)",
        ),
    ]
}

pub async fn dispatch(engine: &Arc<Engine>, ctx: &CallContext, action: Action) -> ActionResponse {
    match action.r#type.as_str() {
        "SetSessionOptions" => set_session_options(engine, ctx, &action.body),
        "GetSessionOptions" => {
            let options = engine.get_session_options(ctx);
            let result = GetSessionOptionsResult {
                session_options: options.into_iter().map(|(k, v)| (k, to_wire(v))).collect(),
            };
            Ok(Response::new(one_result(result.encode_to_vec())))
        }
        "CloseSession" => {
            let closed = ctx
                .session
                .as_deref()
                .map(|s| engine.close_session(&ctx.caller, s))
                .unwrap_or(false);
            let result = CloseSessionResult {
                status: if closed { 1 } else { 3 },
            };
            Ok(Response::new(one_result(result.encode_to_vec())))
        }
        "CancelFlightInfo" => {
            let req = arrow_flight::CancelFlightInfoRequest::decode(action.body.as_ref())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let info = req
                .info
                .ok_or_else(|| Status::invalid_argument("CancelFlightInfo needs the FlightInfo"))?;
            let cancelled = cancel(engine, ctx, &info);
            let result = arrow_flight::CancelFlightInfoResult {
                // CANCELLED, or NOT_CANCELLABLE (already fetched or ended).
                status: if cancelled { 1 } else { 3 },
            };
            Ok(Response::new(one_result(result.encode_to_vec())))
        }
        "list_sessions" => {
            let sessions = engine.list_sessions(&ctx.caller).map_err(to_status)?;
            json_result(&serde_json::json!({ "sessions": sessions }))
        }
        "kill_session" => {
            let body: KillBody = json_body(&action.body)?;
            let id = body.session.ok_or_else(|| {
                Status::invalid_argument("kill_session needs {\"session\": \"...\"}")
            })?;
            let kind = engine.kill_session(&ctx.caller, &id).map_err(to_status)?;
            json_result(&serde_json::json!({ "session": id, "killed": kind }))
        }
        "list_months" => {
            let months: Vec<String> = engine
                .list_months(&ctx.caller)
                .map_err(to_status)?
                .iter()
                .map(|m| m.to_string())
                .collect();
            json_result(&serde_json::json!({ "months": months }))
        }
        "create_month" => {
            let body: MonthBody = json_body(&action.body)?;
            let month = body.month.ok_or_else(|| {
                Status::invalid_argument("create_month needs {\"month\": \"YYYY-MM\"}")
            })?;
            json_result(
                &engine
                    .create_month(&ctx.caller, &month)
                    .await
                    .map_err(to_status)?,
            )
        }
        "node_status" => {
            let body: MonthBody = json_body(&action.body)?;
            let status = engine
                .node_status(&ctx.caller, body.month.as_deref())
                .await
                .map_err(to_status)?;
            json_result(&serde_json::json!({ "months": status }))
        }
        "sync" => {
            let body: SyncBody = json_body(&action.body)?;
            let timeout = std::time::Duration::from_secs_f64(
                body.timeout_s.unwrap_or(60.0).clamp(0.0, 3600.0),
            );
            let status = engine
                .sync(&ctx.caller, body.month.as_deref(), timeout)
                .await
                .map_err(to_status)?;
            json_result(&serde_json::json!({ "months": status }))
        }
        "export" => {
            let body: ExportBody = json_body(&action.body)?;
            let (Some(query), Some(format)) = (body.query, body.format) else {
                return Err(Status::invalid_argument(
                    "export needs {\"query\": \"SELECT ...\", \"format\": \"parquet\"|\"csv\"|\"json\"}",
                ));
            };
            let mut ctx = ctx.clone();
            if body.month.is_some() {
                ctx.month = body.month;
            }
            let format: ExportFormat = format.parse().map_err(to_status)?;
            let done = engine
                .export(&ctx, &query, format, body.name.as_deref())
                .await
                .map_err(to_status)?;
            json_result(&done)
        }
        "list_exports" => {
            let exports = engine.list_exports(&ctx.caller).await.map_err(to_status)?;
            json_result(&serde_json::json!({ "exports": exports }))
        }
        "list_files" => {
            let files = engine.list_files(&ctx.caller).await.map_err(to_status)?;
            json_result(&serde_json::json!({ "files": files }))
        }
        "verify_replicas" => {
            let body: MonthBody = json_body(&action.body)?;
            let reports = engine
                .verify_replicas(&ctx.caller, body.month.as_deref())
                .await
                .map_err(to_status)?;
            json_result(&serde_json::json!({ "months": reports }))
        }
        "resync_replica" => {
            let body: ResyncBody = json_body(&action.body)?;
            let (Some(month), Some(node)) = (body.month, body.node) else {
                return Err(Status::invalid_argument(
                    "resync_replica needs {\"month\": \"YYYY-MM\", \"node\": N}",
                ));
            };
            engine
                .resync_replica(&ctx.caller, &month, node)
                .await
                .map_err(to_status)?;
            json_result(&serde_json::json!({ "month": month, "node": node, "rebuilding": true }))
        }
        "create_table" => {
            let body: TableBody = json_body(&action.body)?;
            let mut ctx = ctx.clone();
            if body.month.is_some() {
                ctx.month = body.month;
            }
            let (created, t) = engine
                .create_table(
                    &ctx,
                    body.schema,
                    body.table_name.unwrap_or_default(),
                    body.columns,
                )
                .await
                .map_err(to_status)?;
            super::token::set(t);
            json_result(&created)
        }
        "execute_batch" => {
            let body: BatchBody = json_body(&action.body)?;
            let sql = body.sql.ok_or_else(|| {
                Status::invalid_argument(
                    "execute_batch needs {\"sql\": ..., \"params\": [[...], ...]}",
                )
            })?;
            let params = crate::json_params::params_from_json(&body.params)
                .map_err(Status::invalid_argument)?;
            let mut ctx = ctx.clone();
            if body.month.is_some() {
                ctx.month = body.month;
            }
            let (report, t) = engine
                .execute_each(&ctx, &sql, params)
                .await
                .map_err(to_status)?;
            super::token::set(t);
            json_result(&report)
        }
        other => Err(Status::invalid_argument(format!(
            "unknown action '{other}'"
        ))),
    }
}

/// Sets options, creating the session when the call carries none; a new
/// session's id goes back as the `arrow_flight_session_id` cookie.
fn set_session_options(engine: &Engine, ctx: &CallContext, body: &[u8]) -> ActionResponse {
    let req = SetSessionOptionsRequest::decode(body)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut options = Vec::new();
    let mut result = SetSessionOptionsResult::default();
    for (k, v) in req.session_options {
        match from_wire(v) {
            Some(v) => options.push((k, v)),
            None => {
                result.errors.insert(k, SetSessionOptionsError { value: 2 });
            }
        }
    }
    let (id, errors) = engine
        .set_session_options(&ctx.caller, ctx.session.as_deref(), options)
        .map_err(to_status)?;
    for (k, e) in errors {
        // 1: invalid name, 2: invalid value (Flight.proto).
        let value = if e.class == ErrorClass::NotFound {
            1
        } else {
            2
        };
        result.errors.insert(k, SetSessionOptionsError { value });
    }
    let mut resp = Response::new(one_result(result.encode_to_vec()));
    if ctx.session.as_deref() != Some(id.as_str()) {
        if let Ok(v) = format!("{SESSION_COOKIE}={id}").parse() {
            resp.metadata_mut().insert("set-cookie", v);
        }
    }
    Ok(resp)
}
/// The JSON body of an admin action (`{}` or empty allowed).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MonthBody {
    month: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KillBody {
    session: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    query: Option<String>,
    format: Option<String>,
    name: Option<String>,
    month: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SyncBody {
    month: Option<String>,
    timeout_s: Option<f64>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TableBody {
    table_name: Option<String>,
    #[serde(default)]
    columns: Vec<crate::engine::ColumnSpec>,
    month: Option<String>,
    schema: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    sql: Option<String>,
    #[serde(default)]
    params: Vec<Vec<serde_json::Value>>,
    month: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResyncBody {
    month: Option<String>,
    node: Option<usize>,
}

fn json_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| Status::invalid_argument(format!("invalid JSON body: {e}")))
}

/// Stops the statements behind a FlightInfo's tickets that have not been
/// fetched (a fetch in progress stops when its own call is cancelled).
pub(super) fn cancel(engine: &Engine, ctx: &CallContext, info: &arrow_flight::FlightInfo) -> bool {
    let mut any = false;
    for ep in &info.endpoint {
        let Some(ticket) = &ep.ticket else { continue };
        let handle = arrow_flight::sql::Any::decode(ticket.ticket.as_ref())
            .ok()
            .and_then(|a| {
                a.unpack::<arrow_flight::sql::TicketStatementQuery>()
                    .ok()
                    .flatten()
            });
        if let Some(t) = handle {
            let id = String::from_utf8_lossy(&t.statement_handle).into_owned();
            any |= engine.cancel_result(&ctx.caller, &id);
        }
    }
    any
}

fn json_result(value: &impl serde::Serialize) -> ActionResponse {
    let bytes = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(one_result(bytes)))
}

fn one_result(bytes: Vec<u8>) -> BoxStream<arrow_flight::Result> {
    Box::pin(futures::stream::iter(vec![Ok(arrow_flight::Result {
        body: bytes.into(),
    })]))
}
