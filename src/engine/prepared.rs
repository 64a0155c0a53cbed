//! Prepared statements: created on the target connection (schemas known
//! before execution), parameters bound with DoPut, run like statements.

use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::classify::{self, StatementKind};
use super::error::{EngineError, EngineResult, ErrorClass};
use super::month::MonthId;
use super::state::{new_id, PreparedEntry};
use super::*;

impl Engine {
    pub async fn create_prepared(
        self: &Arc<Self>,
        ctx: &CallContext,
        sql: &str,
    ) -> EngineResult<PreparedInfo> {
        ctx.caller.require(Role::Reader, "preparing a statement")?;
        self.room_for_prepared(&ctx.caller)?;
        let month = self.resolve_month(ctx)?;
        if let Some(spec) = &ctx.months {
            let plan = self.plan_cross_month(&ctx.caller, spec, sql).await?;
            return Ok(self.register_prepared(
                ctx,
                sql,
                month,
                StatementKind::Read,
                plan.schema,
                plan.parameter_schema,
            ));
        }
        let mut lease = self
            .lease_for(ctx, month, Some(sql), super::Prefer::Primary)
            .await?
            .lease;
        let sql_owned = sql.to_string();
        // A SQL BEGIN/COMMIT/ROLLBACK runs on a session's connection (see
        // [`exec::session_transaction`]); elsewhere it is refused here.
        let in_session = ctx.session.is_some() && ctx.transaction.is_none();
        let (kind, dataset_schema, parameter_schema) = blocking(move || {
            lease.with(|conn| {
                let script = conn.extract(&sql_owned)?;
                if script.len() > 1 {
                    // A script: later statements may depend on earlier ones,
                    // so nothing can be prepared before it runs.
                    let empty: SchemaRef = Arc::new(arrow::datatypes::Schema::empty());
                    return Ok((StatementKind::Write, Arc::clone(&empty), empty));
                }
                let stmt = script
                    .prepare(conn, 0)
                    .map_err(|e| exec::explain_capture_error(e.into()))?;
                let t = stmt.statement_type();
                if in_session && t == crate::duck::StatementType::Transaction {
                    let empty: SchemaRef = Arc::new(arrow::datatypes::Schema::empty());
                    return Ok((StatementKind::Transaction, Arc::clone(&empty), empty));
                }
                let kind = classify::check(conn, t, &sql_owned)?;
                Ok((kind, stmt.result_schema()?, stmt.parameter_schema()?))
            })
        })
        .await?;
        if kind == StatementKind::Write {
            ctx.caller
                .require(Role::Writer, "this statement (it writes)")?;
        }
        Ok(self.register_prepared(ctx, sql, month, kind, dataset_schema, parameter_schema))
    }

    fn register_prepared(
        &self,
        ctx: &CallContext,
        sql: &str,
        month: MonthId,
        kind: StatementKind,
        dataset_schema: SchemaRef,
        parameter_schema: SchemaRef,
    ) -> PreparedInfo {
        let handle = new_id();
        self.state.prepared.lock().insert(
            handle.clone(),
            PreparedEntry {
                sql: sql.to_string(),
                month,
                session: ctx.session.clone(),
                transaction: ctx.transaction.clone(),
                months: ctx.months.clone(),
                kind,
                params: Vec::new(),
                param_bytes: 0,
                last_used: Instant::now(),
                owner: ctx.caller.user().to_string(),
            },
        );
        PreparedInfo {
            handle,
            dataset_schema,
            parameter_schema,
        }
    }

    /// The context and SQL a prepared statement runs with: the month it was
    /// prepared for, and the caller's current transaction if any.
    fn prepared_call(
        &self,
        handle: &str,
        ctx: &CallContext,
    ) -> EngineResult<(CallContext, String, StatementKind, Vec<RecordBatch>)> {
        let mut map = self.state.prepared.lock();
        let p = map
            .get_mut(handle)
            .filter(|p| p.owner == ctx.caller.user())
            .ok_or_else(|| {
                EngineError::not_found("prepared statement not found (closed or expired)")
            })?;
        p.last_used = Instant::now();
        let call = CallContext {
            month: Some(p.month.to_string()),
            session: ctx.session.clone().or_else(|| p.session.clone()),
            transaction: ctx.transaction.clone().or_else(|| p.transaction.clone()),
            months: ctx.months.clone().or_else(|| p.months.clone()),
            token: ctx.token.clone(),
            caller: ctx.caller.clone(),
        };
        Ok((call, p.sql.clone(), p.kind, p.params.clone()))
    }

    /// Binds parameter batches to a prepared statement (replacing earlier ones).
    pub fn bind_prepared(
        &self,
        caller: &Caller,
        handle: &str,
        params: Vec<RecordBatch>,
    ) -> EngineResult<()> {
        let bytes: usize = params.iter().map(batch_bytes).sum();
        let mut map = self.state.prepared.lock();
        let others: usize = map
            .iter()
            .filter(|(h, _)| h.as_str() != handle)
            .map(|(_, p)| p.param_bytes)
            .sum();
        let p = map
            .get_mut(handle)
            .filter(|p| p.owner == caller.user())
            .ok_or_else(|| {
                EngineError::not_found("prepared statement not found (closed or expired)")
            })?;
        if others + bytes > MAX_BOUND_BYTES {
            return Err(EngineError::new(
                ErrorClass::ResourceExhausted,
                format!(
                    "the server holds {} MiB of bound parameters, the most it keeps: execute or \
                     close prepared statements first, or load bulk data with bulk ingest",
                    others >> 20
                ),
            ));
        }
        p.params = params;
        p.param_bytes = bytes;
        p.last_used = Instant::now();
        Ok(())
    }

    /// Refuses a prepared statement beyond the per-user and total bounds
    /// (they expire when idle, but a client that never closes them must not
    /// fill the server first).
    fn room_for_prepared(&self, caller: &Caller) -> EngineResult<()> {
        let map = self.state.prepared.lock();
        let mine = map.values().filter(|p| p.owner == caller.user()).count();
        if mine >= MAX_PREPARED_PER_USER {
            return Err(EngineError::new(
                ErrorClass::ResourceExhausted,
                format!(
                    "user {} holds {mine} open prepared statements, the most one user may: close \
                     them when done (ADBC: cursor.close())",
                    caller.user()
                ),
            ));
        }
        if map.len() >= MAX_PREPARED {
            return Err(EngineError::new(
                ErrorClass::Unavailable,
                format!(
                    "the server holds {} open prepared statements, the most it keeps: retry later",
                    map.len()
                ),
            ));
        }
        Ok(())
    }

    pub fn close_prepared(&self, caller: &Caller, handle: &str) {
        let mut map = self.state.prepared.lock();
        if map.get(handle).is_some_and(|p| p.owner == caller.user()) {
            map.remove(handle);
        }
    }

    /// Starts a prepared statement for fetching (see [`Engine::plan_query`]).
    /// A write with many parameter rows runs as one transaction and its
    /// (DuckDB-materialised) results are collected.
    pub async fn plan_prepared(
        self: &Arc<Self>,
        ctx: &CallContext,
        handle: &str,
    ) -> EngineResult<Planned> {
        let (call, sql, kind, params) = self.prepared_call(handle, ctx)?;
        let many_rows = params.iter().map(|b| b.num_rows()).sum::<usize>() > 1;
        if kind != StatementKind::Write || !many_rows {
            let admit = admit_for(kind);
            let stream = self.stream_query_as(&call, &sql, params, admit).await?;
            return Ok(self.park(&ctx.caller, stream));
        }
        let run_sql = sql.clone();
        let (w, node, token) = self
            .run_to_end(&call, Some(&sql), move |conn, mode| {
                exec::run_update(conn, &run_sql, &params, mode, exec::Results::Rows)
            })
            .await?;
        Ok(self.park(
            &ctx.caller,
            BatchStream {
                schema: w.schema,
                head: w.batches,
                rest: None,
                node,
                token,
            },
        ))
    }

    pub async fn stream_prepared(
        self: &Arc<Self>,
        ctx: &CallContext,
        handle: &str,
    ) -> EngineResult<BatchStream> {
        let (call, sql, kind, params) = self.prepared_call(handle, ctx)?;
        self.stream_query_as(&call, &sql, params, admit_for(kind))
            .await
    }

    /// Executes a prepared update with the given parameter rows (or the ones
    /// bound before, when none are given).
    pub async fn update_prepared(
        self: &Arc<Self>,
        ctx: &CallContext,
        handle: &str,
        params: Vec<RecordBatch>,
    ) -> EngineResult<(u64, Option<String>)> {
        let (call, sql, _, bound) = self.prepared_call(handle, ctx)?;
        let params = if params.is_empty() { bound } else { params };
        self.execute_update(&call, &sql, params).await
    }
}

/// Most open prepared statements of one user, and of all users.
pub const MAX_PREPARED_PER_USER: usize = 4096;
pub const MAX_PREPARED: usize = 65536;
/// Most bytes of bound parameters held for all prepared statements.
pub const MAX_BOUND_BYTES: usize = 1 << 30;

/// The bytes a batch's arrays use (slices counted by their own length, not
/// the message buffer they were decoded from).
fn batch_bytes(b: &RecordBatch) -> usize {
    b.columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// Whether a prepared statement waits for a query turn: writes never do
/// (ADBC sends `cursor.execute("INSERT …")` as a prepared query).
fn admit_for(kind: StatementKind) -> Admit {
    match kind {
        StatementKind::Write => Admit::Exempt,
        _ => Admit::Turn,
    }
}
