//! The engine: the one place that runs SQL. The Flight SQL service (and the
//! HTTP gateway to come) translate their requests into calls here.
//!
//! Routing: a statement runs against one month (explicit header, the
//! session's `catalog`, or the current month). Writes run on the month's
//! primary; a month that does not exist yet is created by its first write,
//! and reads on it are answered by an empty scratch database.

mod admin;
mod catalog;
mod classify;
mod cross_month;
mod deadline;
mod error;
mod exec;
mod month;
mod months;
mod node;
mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono_tz::Tz;
use parking_lot::Mutex;
use tokio::sync::mpsc;

pub use admin::{MonthStatus, NodeStatus};
pub use catalog::{ForeignKey, PrimaryKey, TableInfo};
pub use classify::StatementKind;
pub use error::{EngineError, EngineResult, ErrorClass};
pub use month::MonthId;
pub use months::INTERNAL_SCHEMA;

use crate::duck::DbOptions;
use classify::classify;
use deadline::Deadline;
use months::MonthRegistry;
use node::Lease;
use state::{new_id, Parked, PreparedEntry, Session, State, Timeouts, Transaction};

/// Engine settings (from the CLI/config).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// Bytes of DuckDB memory shared by all open month files.
    pub memory_budget: u64,
    /// Idle time after which a month's files are closed.
    pub month_idle_timeout: Duration,
    pub threads: Option<usize>,
    pub timezone: Tz,
    /// Longest a statement may run or stream (`None`: no limit).
    pub query_timeout: Option<Duration>,
    /// Idle time after which a session is closed and a transaction rolled back.
    pub session_timeout: Duration,
}

/// Who is calling and in which context; built by the protocol layers from
/// headers, session cookies and command fields.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Raw `x-duckflock-month` header (validated here).
    pub month: Option<String>,
    /// Flight SQL session id (cookie).
    pub session: Option<String>,
    /// Flight SQL transaction id.
    pub transaction: Option<String>,
    /// Raw `x-duckflock-months` header: a cross-month read.
    pub months: Option<String>,
}

/// A statement that started executing: its result waits under `id` for the
/// client's fetch (`DoGet`).
pub struct Planned {
    pub id: String,
    pub schema: SchemaRef,
    /// The node(s) that answered (see [`BatchStream::node`]).
    pub node: String,
}

/// Name reported for the empty scratch database that answers reads of
/// months that do not exist yet.
pub const SCRATCH_NODE: &str = "scratch";

/// Where a statement runs: the connection, whether it is inside a Flight SQL
/// transaction, and the node's name.
struct Routed {
    lease: Lease,
    in_txn: bool,
    node: String,
}

/// A result leaving DuckDB: the batches already produced (`head`), then the
/// rest as DuckDB produces them (`rest`, fed through a bounded channel).
pub struct BatchStream {
    pub schema: SchemaRef,
    /// The node(s) that answered, e.g. `2026-01/node_0` (for the
    /// `x-duckflock-node` header).
    pub node: String,
    pub head: Vec<RecordBatch>,
    pub rest: Option<mpsc::Receiver<EngineResult<RecordBatch>>>,
}

pub struct PreparedInfo {
    pub handle: String,
    pub dataset_schema: SchemaRef,
    pub parameter_schema: SchemaRef,
}

/// A session option value (Flight SQL `SessionOptionValue`).
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    String(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    StringList(Vec<String>),
}

pub struct Engine {
    cfg: EngineConfig,
    months: MonthRegistry,
    state: State,
    timeouts: Timeouts,
    keywords: Vec<String>,
}

/// Results started but not yet fetched, at most (see [`Engine::park`]).
const MAX_PARKED: usize = 256;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> EngineResult<T> + Send + 'static,
) -> EngineResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::internal(format!("internal error while executing: {e}")))?
}

impl Engine {
    pub fn open(cfg: EngineConfig) -> EngineResult<Arc<Engine>> {
        let opts = DbOptions {
            memory_limit: None,
            threads: cfg.threads,
            temp_directory: Some(cfg.data_dir.join(".tmp").to_string_lossy().into_owned()),
            read_only: false,
        };
        let months = MonthRegistry::open(cfg.data_dir.clone(), opts, cfg.memory_budget)?;
        let keywords = catalog::keywords(months.void())?;
        let session_timeout = cfg.session_timeout;
        Ok(Arc::new(Engine {
            cfg,
            months,
            state: State::default(),
            timeouts: Timeouts {
                session: session_timeout,
                transaction: session_timeout,
                ..Timeouts::default()
            },
            keywords,
        }))
    }

    /// A deadline for one statement per `--query-timeout` (must be called
    /// on the runtime: it starts a timer task).
    fn deadline(&self) -> Option<Deadline> {
        Deadline::start(self.cfg.query_timeout)
    }

    /// Expires idle sessions, transactions, prepared statements and parked
    /// results every few seconds until the engine is dropped.
    pub fn spawn_janitor(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let period = (self.timeouts.session.min(self.cfg.month_idle_timeout) / 2)
            .clamp(Duration::from_millis(200), Duration::from_secs(5));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(engine) = weak.upgrade() else { break };
                let n = engine.state.expire(&engine.timeouts);
                if n > 0 {
                    tracing::debug!(expired = n, "expired idle client state");
                }
                let idle = engine.cfg.month_idle_timeout;
                let me = Arc::clone(&engine);
                let _ = tokio::task::spawn_blocking(move || me.months.close_idle(idle)).await;
            }
        });
    }

    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }

    pub fn months(&self) -> Vec<MonthId> {
        self.months.ids()
    }

    /// Checkpoints every primary (graceful shutdown).
    pub async fn shutdown(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let _ = blocking(move || {
            me.state.transactions.lock().clear();
            me.state.sessions.lock().clear();
            me.months.checkpoint_all();
            Ok(())
        })
        .await;
    }

    // ----- routing ---------------------------------------------------------

    /// The month a call runs against: header, else session catalog, else the
    /// current month in the server's time zone.
    pub fn resolve_month(&self, ctx: &CallContext) -> EngineResult<MonthId> {
        if let Some(txn) = &ctx.transaction {
            if let Some(t) = self.state.transactions.lock().get(txn) {
                return Ok(t.month);
            }
        }
        if let Some(m) = &ctx.month {
            return m.parse();
        }
        if let Some(sid) = &ctx.session {
            if let Some(c) = self.state.sessions.lock().get(sid).and_then(|s| s.catalog) {
                return Ok(c);
            }
        }
        Ok(MonthId::current(self.cfg.timezone))
    }

    /// The connection a statement runs on. `sql` is used to decide whether a
    /// statement on a month that does not exist yet is a write (which creates
    /// the month) or a read (answered by the empty scratch database).
    async fn lease_for(
        self: &Arc<Self>,
        ctx: &CallContext,
        month: MonthId,
        sql: Option<&str>,
    ) -> EngineResult<Routed> {
        let primary = format!("{month}/node_0");
        if let Some(txn) = &ctx.transaction {
            let mut txns = self.state.transactions.lock();
            let t = txns.get_mut(txn).ok_or_else(|| {
                EngineError::not_found(format!(
                    "transaction {txn} does not exist (expired or ended)"
                ))
            })?;
            t.last_used = Instant::now();
            return Ok(Routed {
                lease: Lease::Shared(Arc::clone(&t.conn)),
                in_txn: true,
                node: format!("{}/node_0", t.month),
            });
        }
        let month_obj = match self.existing_month(month).await? {
            Some(m) => m,
            None => {
                let writes = match sql {
                    Some(sql) => {
                        let void = Arc::clone(self.months.void());
                        let sql = sql.to_string();
                        blocking(move || {
                            let mut lease = void.lease()?;
                            lease.with(|conn| first_is_write(conn, &sql))
                        })
                        .await?
                    }
                    None => false,
                };
                if !writes {
                    return Ok(Routed {
                        lease: self.months.void().lease()?,
                        in_txn: false,
                        node: SCRATCH_NODE.to_string(),
                    });
                }
                let me = Arc::clone(self);
                blocking(move || me.months.get_or_create(month)).await?
            }
        };
        if let Some(sid) = &ctx.session {
            let mut sessions = self.state.sessions.lock();
            if let Some(s) = sessions.get_mut(sid) {
                s.last_used = Instant::now();
                let conn = match s.conns.get(&month) {
                    Some(c) => Arc::clone(c),
                    None => {
                        let conn = Arc::new(Mutex::new(month_obj.primary().connect()?));
                        s.conns.insert(month, Arc::clone(&conn));
                        conn
                    }
                };
                return Ok(Routed {
                    lease: Lease::Shared(conn),
                    in_txn: false,
                    node: primary,
                });
            }
        }
        Ok(Routed {
            lease: month_obj.primary().lease()?,
            in_txn: false,
            node: primary,
        })
    }

    // ----- statements ------------------------------------------------------

    /// Starts a statement sent through the query path (GetFlightInfo) and
    /// parks its result for the fetch. Execution starts now so that errors
    /// reach the caller of `execute` and a write runs exactly once; a read
    /// then produces batches only as fast as the client fetches them.
    pub async fn plan_query(
        self: &Arc<Self>,
        ctx: &CallContext,
        sql: &str,
    ) -> EngineResult<Planned> {
        let stream = self.stream_query(ctx, sql, Vec::new()).await?;
        Ok(self.park(stream))
    }

    fn park(&self, stream: BatchStream) -> Planned {
        let id = new_id();
        let schema = Arc::clone(&stream.schema);
        let node = stream.node.clone();
        let evicted = {
            let mut parked = self.state.parked.lock();
            parked.insert(
                id.clone(),
                Parked {
                    stream,
                    created: Instant::now(),
                },
            );
            // Each unfetched result holds a connection and a blocking thread:
            // beyond the cap the oldest one is dropped (its fetch then fails
            // with NOT_FOUND) rather than exhausting the blocking pool.
            let oldest = (parked.len() > MAX_PARKED)
                .then(|| {
                    parked
                        .iter()
                        .min_by_key(|(_, p)| p.created)
                        .map(|(k, _)| k.clone())
                })
                .flatten();
            oldest.and_then(|k| parked.remove(&k))
        };
        drop(evicted); // outside the lock: dropping stops the producer
        Planned { id, schema, node }
    }

    /// Takes a parked result (each can be fetched once).
    pub fn take_parked(&self, id: &str) -> EngineResult<BatchStream> {
        self.state
            .parked
            .lock()
            .remove(id)
            .map(|p| p.stream)
            .ok_or_else(|| {
                EngineError::not_found("result not found: it was already fetched or expired")
            })
    }

    /// Executes a statement and returns its result stream once DuckDB has
    /// produced the first batch (or finished, or failed).
    pub async fn stream_query(
        self: &Arc<Self>,
        ctx: &CallContext,
        sql: &str,
        params: Vec<RecordBatch>,
    ) -> EngineResult<BatchStream> {
        if let Some(spec) = &ctx.months {
            if ctx.transaction.is_some() {
                return Err(EngineError::invalid(
                    "x-duckflock-months cannot be used inside a transaction",
                ));
            }
            return self.stream_cross_month(spec, sql, params).await;
        }
        let month = self.resolve_month(ctx)?;
        let routed = self.lease_for(ctx, month, Some(sql)).await?;
        let (schema_rx, rx) =
            exec::spawn_stream(routed.lease, sql.to_string(), params, true, self.deadline());
        let schema = schema_rx
            .await
            .map_err(|_| EngineError::internal("execution ended without a result"))??;
        first_batch(schema, rx, routed.node).await
    }

    /// Executes a statement for its affected-row count. Many parameter rows
    /// run as one transaction.
    pub async fn execute_update(
        self: &Arc<Self>,
        ctx: &CallContext,
        sql: &str,
        params: Vec<RecordBatch>,
    ) -> EngineResult<u64> {
        if ctx.months.is_some() {
            return Err(EngineError::invalid(
                "x-duckflock-months is for read statements only",
            ));
        }
        let month = self.resolve_month(ctx)?;
        let Routed {
            mut lease, in_txn, ..
        } = self.lease_for(ctx, month, Some(sql)).await?;
        let sql = sql.to_string();
        let deadline = self.deadline();
        blocking(move || {
            lease.with(|conn| {
                Deadline::run(deadline.as_ref(), conn, |conn| {
                    exec::run_update(conn, &sql, &params, in_txn)
                })
            })
        })
        .await
    }

    // ----- prepared statements ---------------------------------------------

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
        let mut lease = self.lease_for(ctx, month, Some(sql)).await?.lease;
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
                let stmt = script.prepare(conn, 0)?;
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
        let month = self.resolve_month(&call)?;
        let Routed {
            mut lease,
            in_txn,
            node,
        } = self.lease_for(&call, month, Some(&sql)).await?;
        let deadline = self.deadline();
        let (schema, head) = blocking(move || {
            lease.with(|conn| {
                Deadline::run(deadline.as_ref(), conn, |conn| {
                    exec::run_collect(conn, &sql, &params, in_txn)
                })
            })
        })
        .await?;
        Ok(self.park(BatchStream {
            schema,
            head,
            rest: None,
            node,
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
    ) -> EngineResult<u64> {
        let (call, sql, _, bound) = self.prepared_call(handle, ctx)?;
        let params = if params.is_empty() { bound } else { params };
        self.execute_update(&call, &sql, params).await
    }

    // ----- transactions ----------------------------------------------------

    /// Begins a transaction on the month's primary (creating the month).
    pub async fn begin_transaction(self: &Arc<Self>, ctx: &CallContext) -> EngineResult<String> {
        let month = self.resolve_month(ctx)?;
        let me = Arc::clone(self);
        let conn = blocking(move || {
            let m = me.months.get_or_create(month)?;
            let conn = m.primary().connect()?;
            conn.execute_batch("BEGIN TRANSACTION")?;
            Ok(conn)
        })
        .await?;
        let id = new_id();
        self.state.transactions.lock().insert(
            id.clone(),
            Transaction {
                month,
                conn: Arc::new(Mutex::new(conn)),
                last_used: Instant::now(),
            },
        );
        Ok(id)
    }

    pub async fn end_transaction(self: &Arc<Self>, id: &str, commit: bool) -> EngineResult<()> {
        let txn = self.state.transactions.lock().remove(id).ok_or_else(|| {
            EngineError::not_found(format!(
                "transaction {id} does not exist (expired or ended)"
            ))
        })?;
        blocking(move || {
            let conn = txn.conn.lock();
            conn.execute_batch(if commit { "COMMIT" } else { "ROLLBACK" })?;
            Ok(())
        })
        .await
    }

    // ----- sessions --------------------------------------------------------

    /// Sets session options, creating the session if needed. Returns the
    /// session id and the options that were refused with a reason.
    pub fn set_session_options(
        &self,
        session: Option<&str>,
        options: Vec<(String, OptionValue)>,
    ) -> (String, Vec<(String, EngineError)>) {
        let mut sessions = self.state.sessions.lock();
        let id = match session {
            Some(s) if sessions.contains_key(s) => s.to_string(),
            _ => new_id(),
        };
        let s = sessions.entry(id.clone()).or_insert_with(|| Session {
            catalog: None,
            conns: Default::default(),
            last_used: Instant::now(),
        });
        s.last_used = Instant::now();
        let mut errors = Vec::new();
        for (name, value) in options {
            match (name.as_str(), value) {
                ("catalog", OptionValue::String(v)) => match v.parse::<MonthId>() {
                    Ok(m) => s.catalog = Some(m),
                    Err(e) => errors.push((name, e)),
                },
                ("catalog", _) => errors.push((
                    name,
                    EngineError::invalid("catalog must be a string YYYY-MM"),
                )),
                _ => errors.push((
                    name.clone(),
                    EngineError::not_found(format!("unknown session option '{name}'")),
                )),
            }
        }
        (id, errors)
    }

    pub fn get_session_options(&self, ctx: &CallContext) -> Vec<(String, OptionValue)> {
        let month = self.resolve_month(&CallContext {
            session: ctx.session.clone(),
            ..CallContext::default()
        });
        match month {
            Ok(m) => vec![("catalog".to_string(), OptionValue::String(m.to_string()))],
            Err(_) => Vec::new(),
        }
    }

    pub fn close_session(&self, session: &str) -> bool {
        self.state.sessions.lock().remove(session).is_some()
    }

    pub fn session_count(&self) -> usize {
        self.state.sessions.lock().len()
    }

    // ----- metadata --------------------------------------------------------

    /// The month if it exists, opened if needed.
    async fn existing_month(
        self: &Arc<Self>,
        id: MonthId,
    ) -> EngineResult<Option<Arc<months::Month>>> {
        if let Some(m) = self.months.get_open(id) {
            return Ok(Some(m));
        }
        if !self.months.exists(id) {
            return Ok(None);
        }
        let me = Arc::clone(self);
        blocking(move || me.months.get(id)).await
    }

    /// Months matching an optional exact catalog name (an invalid name is an
    /// error, never a path).
    fn months_for(&self, catalog: Option<&str>) -> EngineResult<Vec<MonthId>> {
        match catalog {
            None => Ok(self.months.ids()),
            Some(c) => {
                let id: MonthId = c.parse()?;
                Ok(self.months.exists(id).then_some(id).into_iter().collect())
            }
        }
    }

    /// Runs a catalog query on the primary of every month that matches
    /// `catalog` (all months when `None`) and concatenates the rows.
    async fn per_month<T: Send + 'static>(
        self: &Arc<Self>,
        catalog: Option<&str>,
        query: impl Fn(&crate::duck::Conn, &str) -> EngineResult<Vec<T>> + Send + 'static,
    ) -> EngineResult<Vec<T>> {
        let ids = self.months_for(catalog)?;
        let me = Arc::clone(self);
        blocking(move || {
            let mut out = Vec::new();
            for m in ids
                .into_iter()
                .filter_map(|id| me.months.get(id).transpose())
            {
                let m = m?;
                let name = m.id.to_string();
                out.extend(m.primary().lease()?.with(|c| query(c, &name))?);
            }
            Ok(out)
        })
        .await
    }

    /// (month, schema) pairs.
    pub async fn db_schemas(
        self: &Arc<Self>,
        catalog: Option<&str>,
    ) -> EngineResult<Vec<(String, String)>> {
        self.per_month(catalog, |c, month| {
            Ok(catalog::schemas(c)?
                .into_iter()
                .map(|s| (month.to_string(), s))
                .collect())
        })
        .await
    }

    pub async fn tables(
        self: &Arc<Self>,
        catalog: Option<&str>,
        include_schema: bool,
    ) -> EngineResult<Vec<TableInfo>> {
        self.per_month(catalog, move |c, month| {
            catalog::tables(c, month, include_schema)
        })
        .await
    }

    pub async fn primary_keys(
        self: &Arc<Self>,
        catalog: Option<&str>,
    ) -> EngineResult<Vec<PrimaryKey>> {
        self.per_month(catalog, catalog::primary_keys).await
    }

    pub async fn foreign_keys(
        self: &Arc<Self>,
        catalog: Option<&str>,
    ) -> EngineResult<Vec<ForeignKey>> {
        self.per_month(catalog, catalog::foreign_keys).await
    }
}

/// Waits for the first batch of a stream (or its end, or its error) so that
/// the caller learns about failures before answering.
async fn first_batch(
    schema: SchemaRef,
    mut rx: mpsc::Receiver<EngineResult<RecordBatch>>,
    node: String,
) -> EngineResult<BatchStream> {
    Ok(match rx.recv().await {
        Some(Ok(first)) => BatchStream {
            schema,
            node,
            head: vec![first],
            rest: Some(rx),
        },
        Some(Err(e)) => return Err(e),
        None => BatchStream {
            schema,
            node,
            head: Vec::new(),
            rest: None,
        },
    })
}

/// Whether the first statement of `sql` (or any, for scripts) writes.
fn first_is_write(conn: &crate::duck::Conn, sql: &str) -> EngineResult<bool> {
    let script = conn.extract(sql)?;
    if script.len() > 1 {
        return Ok(true);
    }
    let stmt = script.prepare(conn, 0)?;
    let kind = classify(stmt.statement_type());
    if let Some(e) = classify::refuse(kind) {
        return Err(e);
    }
    Ok(kind == StatementKind::Write)
}
