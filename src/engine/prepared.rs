//! Prepared statements: created on the target connection (schemas known
//! before execution), parameters bound with DoPut, run like statements.

use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::classify::{self, classify, StatementKind};
use super::error::{EngineError, EngineResult};
use super::month::MonthId;
use super::state::{new_id, PreparedEntry};
use super::*;

impl Engine {
    pub async fn create_prepared(
        self: &Arc<Self>,
        ctx: &CallContext,
        sql: &str,
    ) -> EngineResult<PreparedInfo> {
        let month = self.resolve_month(ctx)?;
        if let Some(spec) = &ctx.months {
            let plan = self.plan_cross_month(spec, sql).await?;
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
                let kind = classify(stmt.statement_type());
                if let Some(e) = classify::refuse(kind) {
                    return Err(e);
                }
                Ok((kind, stmt.result_schema()?, stmt.parameter_schema()?))
            })
        })
        .await?;
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
                last_used: Instant::now(),
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
        let p = map.get_mut(handle).ok_or_else(|| {
            EngineError::not_found("prepared statement not found (closed or expired)")
        })?;
        p.last_used = Instant::now();
        let call = CallContext {
            month: Some(p.month.to_string()),
            session: ctx.session.clone().or_else(|| p.session.clone()),
            transaction: ctx.transaction.clone().or_else(|| p.transaction.clone()),
            months: ctx.months.clone().or_else(|| p.months.clone()),
            token: ctx.token.clone(),
        };
        Ok((call, p.sql.clone(), p.kind, p.params.clone()))
    }

    /// Binds parameter batches to a prepared statement (replacing earlier ones).
    pub fn bind_prepared(&self, handle: &str, params: Vec<RecordBatch>) -> EngineResult<()> {
        let mut map = self.state.prepared.lock();
        let p = map.get_mut(handle).ok_or_else(|| {
            EngineError::not_found("prepared statement not found (closed or expired)")
        })?;
        p.params = params;
        p.last_used = Instant::now();
        Ok(())
    }

    pub fn close_prepared(&self, handle: &str) {
        self.state.prepared.lock().remove(handle);
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
            let stream = self.stream_query(&call, &sql, params).await?;
            return Ok(self.park(stream));
        }
        let run_sql = sql.clone();
        let (w, node, token) = self
            .run_to_end(&call, Some(&sql), move |conn, mode| {
                exec::run_update(conn, &run_sql, &params, mode)
            })
            .await?;
        Ok(self.park(BatchStream {
            schema: w.schema,
            head: w.batches,
            rest: None,
            node,
            token,
        }))
    }

    pub async fn stream_prepared(
        self: &Arc<Self>,
        ctx: &CallContext,
        handle: &str,
    ) -> EngineResult<BatchStream> {
        let (call, sql, _, params) = self.prepared_call(handle, ctx)?;
        self.stream_query(&call, &sql, params).await
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
