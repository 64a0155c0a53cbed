//! The engine: the one place that runs SQL. The Flight SQL service (and the
//! HTTP gateway to come) translate their requests into calls here.
//!
//! Routing: a statement runs against one month (explicit header, the
//! session's `catalog`, or the current month). Writes run on the month's
//! primary; a month that does not exist yet is created by its first write,
//! and reads on it are answered by an empty scratch database.

mod access;
mod admin;
mod admission;
mod apply;
mod capture;
mod catalog;
mod changelog;
mod classify;
mod cross_month;
mod deadline;
mod error;
mod exec;
mod export;
pub mod files;
mod hidden;
mod ingest;
mod lending;
mod month;
mod months;
mod node;
mod plan_check;
mod prepared;
mod replica;
mod sessions;
mod state;
mod tables;
mod unsynced;
mod verify;
mod visibility;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono_tz::Tz;
use parking_lot::Mutex;
use tokio::sync::mpsc;

pub use access::{glob_match, Caller, Principal, Role};
pub use admin::{HealthReport, MonthStatus, NodeStatus, SyncStatus};
pub use catalog::{ColumnInfo, ForeignKey, PrimaryKey, TableInfo};
pub use classify::StatementKind;
pub use error::{EngineError, EngineResult, ErrorClass};
use exec::Mode;
pub use exec::{BatchError, BatchReport};
pub use export::{ExportFormat, Exported};
pub use ingest::{IfExists, IfMissing, IngestTarget};
pub use month::MonthId;
pub use months::INTERNAL_SCHEMA;
pub use replica::Verified;
pub use sessions::SessionInfo;
pub use tables::{ColumnSpec, TableCreated};
pub use verify::{ReplicaCheck, VerifyReport};

use crate::duck::{DbOptions, FilesSetting};
use deadline::Deadline;
use months::MonthRegistry;
use node::Lease;
use state::{new_id, Parked, State, Timeouts};

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
    /// Replicas per month (`node_1..=N`).
    pub replicas: usize,
    /// Reads without a token may be served by a replica that lags the
    /// primary (`--stale-reads`). Off: a read waits for a replica holding
    /// every write committed before it arrived (read-after-write for all).
    pub stale_reads: bool,
    /// Replicas fsync each commit (`--replica-fsync`); without, a replica
    /// an operating-system crash may have torn is rebuilt.
    pub replica_fsync: bool,
    /// Fault injection: replicas wait this long before each batch.
    pub apply_delay: Duration,
    /// Time between the janitor's verification passes (`None`: off).
    pub verify_interval: Option<Duration>,
    /// The directories SQL may read files from.
    pub files: files::FileAccess,
    /// Bytes of spill space for all open files (`None`: DuckDB's default).
    pub max_temp_size: Option<u64>,
    /// Most months that may exist (`None`: no limit).
    pub max_months: Option<usize>,
    /// Most sessions and transactions open at once, admins' aside.
    pub max_sessions: Option<usize>,
    /// Most of them one user may hold.
    pub max_sessions_per_user: Option<usize>,
    /// Most statements streaming at once, and most waiting for a turn.
    pub max_concurrent_queries: usize,
    pub max_queued_queries: usize,
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
    /// Raw `x-duckflock-token` header: read only from a node holding that
    /// write.
    pub token: Option<String>,
    /// Who is calling (the default, nobody, is refused everywhere).
    pub caller: Caller,
}

/// Whether a statement waits for one of the `--max-concurrent-queries`
/// turns before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    Turn,
    /// Writes: readers must never hold them up.
    Exempt,
}

/// A statement that started executing: its result waits under `id` for the
/// client's fetch (`DoGet`).
pub struct Planned {
    pub id: String,
    pub schema: SchemaRef,
    /// The node(s) that answered (see [`BatchStream::node`]).
    pub node: String,
    /// Read-your-writes token of the write it committed.
    pub token: Option<String>,
}

/// Name reported for the empty scratch database that answers reads of
/// months that do not exist yet.
pub const SCRATCH_NODE: &str = "scratch";

/// Where a statement runs: the connection, how it may be used, and the
/// node's name.
struct Routed {
    lease: Lease,
    mode: Mode,
    node: String,
    /// The month (for tokens), when it exists.
    month: Option<Arc<months::Month>>,
}

/// Whether a statement should prefer a replica.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prefer {
    Replica,
    Primary,
    /// A write that is not SQL (bulk ingest): on the primary, creating the
    /// month if needed.
    Write,
}

/// How long a read carrying a token waits for a replica to catch up before
/// it is served by the primary.
const TOKEN_WAIT: Duration = Duration::from_secs(2);

/// A result leaving DuckDB: the batches already produced (`head`), then the
/// rest as DuckDB produces them (`rest`, fed through a bounded channel).
pub struct BatchStream {
    pub schema: SchemaRef,
    /// The node(s) that answered, e.g. `2026-01/node_0` (for the
    /// `x-duckflock-node` header).
    pub node: String,
    pub head: Vec<RecordBatch>,
    pub rest: Option<mpsc::Receiver<EngineResult<RecordBatch>>>,
    /// Read-your-writes token of the write it committed.
    pub token: Option<String>,
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
    /// Held while replicas are verified (one verification at a time).
    verifying: Mutex<()>,
    /// Turns for statements that stream results.
    admission: admission::Admission,
    /// When the janitor last started a verification pass.
    last_verify: Mutex<Instant>,
}

/// How long a started result stays safe from [`Engine::turn`]'s eviction.
const UNFETCHED_GRACE: Duration = Duration::from_secs(1);

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
        // Spill files of this process only: whatever an earlier process left
        // behind (a crash) is removed before any database opens.
        let temp_dir = cfg.data_dir.join(".tmp");
        if temp_dir.exists() {
            std::fs::remove_dir_all(&temp_dir).map_err(|e| {
                EngineError::internal(format!("cannot clean {}: {e}", temp_dir.display()))
            })?;
        }
        let opts = DbOptions {
            memory_limit: None,
            threads: cfg.threads,
            temp_directory: Some(temp_dir.to_string_lossy().into_owned()),
            read_only: false,
            max_temp_size: None,
            files: Some(FilesSetting {
                allowed_directories: cfg.files.allowed_directories(),
                file_search_path: cfg.files.first().to_string_lossy().into_owned(),
            }),
            unsynced: false,
        };
        let months = MonthRegistry::open(
            cfg.data_dir.clone(),
            opts,
            cfg.memory_budget,
            cfg.max_temp_size,
            months::ReplicaSettings {
                count: cfg.replicas,
                fsync: cfg.replica_fsync,
                apply_delay: cfg.apply_delay,
            },
            cfg.max_months,
        )?;
        let keywords = catalog::keywords(months.void())?;
        let session_timeout = cfg.session_timeout;
        let admission =
            admission::Admission::new(cfg.max_concurrent_queries, cfg.max_queued_queries);
        Ok(Arc::new(Engine {
            admission,
            cfg,
            months,
            state: State::default(),
            timeouts: Timeouts {
                session: session_timeout,
                transaction: session_timeout,
                ..Timeouts::default()
            },
            keywords,
            verifying: Mutex::new(()),
            last_verify: Mutex::new(Instant::now()),
        }))
    }

    /// The memory lender (`lending`): a thread of its own, so lending never
    /// waits behind the janitor's slower work.
    fn spawn_lender(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("duckflock-lender".into())
            .spawn(move || loop {
                let request = lending::sleep();
                let Some(engine) = weak.upgrade() else { break };
                let lent =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.months.lend()));
                lending::done(request);
                if lent.is_err() {
                    tracing::error!("memory lender panicked; the even split stays");
                    break;
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the memory lender");
        }
    }

    /// A deadline for one statement of this call, per the session's
    /// `query_timeout` or `--query-timeout` (must be called on the runtime:
    /// it starts a timer task).
    fn deadline(&self, ctx: &CallContext) -> Deadline {
        Deadline::start(self.query_timeout(ctx))
    }

    /// Expires idle sessions, transactions, prepared statements and parked
    /// results every few seconds until the engine is dropped.
    pub fn spawn_janitor(self: &Arc<Self>) {
        self.spawn_lender();
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
                let _ = tokio::task::spawn_blocking(move || {
                    me.repair_hidden_rows();
                    me.prune_logs();
                    me.months.close_idle(idle)
                })
                .await;
                // Verification can take a while: not awaited, so expiry and
                // pruning go on (it skips a pass while one is running).
                let me = Arc::clone(&engine);
                tokio::task::spawn_blocking(move || me.verify_if_due());
            }
        });
    }

    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }

    /// The files SQL can read in place (`--files-dir`), walked on a
    /// blocking thread.
    pub async fn list_files(&self, caller: &Caller) -> EngineResult<Vec<files::FileEntry>> {
        caller.require(Role::Reader, "listing files")?;
        let access = self.cfg.files.clone();
        blocking(move || access.list()).await
    }

    /// The months that exist and the caller may see.
    pub fn list_months(&self, caller: &Caller) -> EngineResult<Vec<MonthId>> {
        caller.require(Role::Reader, "listing months")?;
        let mut ids = self.months.ids();
        ids.retain(|m| caller.may_use(*m));
        Ok(ids)
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
        let month = self.month_of(ctx)?;
        ctx.caller.require_month(month)?;
        Ok(month)
    }

    fn month_of(&self, ctx: &CallContext) -> EngineResult<MonthId> {
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
    /// the month) or a read (answered by the empty scratch database). Reads
    /// outside transactions and sessions prefer a random healthy replica.
    async fn lease_for(
        self: &Arc<Self>,
        ctx: &CallContext,
        month: MonthId,
        sql: Option<&str>,
        prefer: Prefer,
    ) -> EngineResult<Routed> {
        let mut routed = self.route(ctx, month, sql, prefer).await?;
        // A reader's statement runs read-only wherever it lands: a write
        // then fails as on a replica, and the caller names the role it needs.
        if !ctx.caller.has(Role::Writer) {
            routed.mode = Mode::ReadOnly;
        }
        Ok(routed)
    }

    async fn route(
        self: &Arc<Self>,
        ctx: &CallContext,
        month: MonthId,
        sql: Option<&str>,
        prefer: Prefer,
    ) -> EngineResult<Routed> {
        let primary = format!("{month}/node_0");
        if let Some(txn) = &ctx.transaction {
            let (conn, capture_id, txn_month) = {
                let mut txns = self.state.transactions.lock();
                let t = txns
                    .get_mut(txn)
                    .filter(|t| t.owner == ctx.caller.user())
                    .ok_or_else(|| {
                        EngineError::not_found(format!(
                            "transaction {txn} does not exist (expired or ended)"
                        ))
                    })?;
                t.last_used = Instant::now();
                (Arc::clone(&t.conn), t.capture_id, t.month)
            };
            let m = self.existing_month(txn_month).await?.ok_or_else(|| {
                EngineError::not_found(format!("month {txn_month} does not exist"))
            })?;
            return Ok(Routed {
                lease: Lease::Shared(conn, Arc::clone(m.primary())),
                mode: Mode::Primary {
                    log: Arc::clone(&m.log),
                    txn: Some(capture_id),
                    session: false,
                },
                node: format!("{txn_month}/node_0"),
                month: Some(m),
            });
        }
        let month_obj = match self.existing_month(month).await? {
            Some(m) => m,
            None => {
                let writes = match sql {
                    // A reader never creates a month.
                    _ if !ctx.caller.has(Role::Writer) => false,
                    _ if prefer == Prefer::Write => true,
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
                        mode: Mode::ReadOnly,
                        node: SCRATCH_NODE.to_string(),
                        month: None,
                    });
                }
                let me = Arc::clone(self);
                blocking(move || me.months.get_or_create(month)).await?
            }
        };
        let primary_mode = Mode::Primary {
            log: Arc::clone(&month_obj.log),
            txn: None,
            session: false,
        };
        if let Some(sid) = &ctx.session {
            let conn = {
                let mut sessions = self.state.sessions.lock();
                match sessions
                    .get_mut(sid)
                    .filter(|s| s.owner == ctx.caller.user())
                {
                    Some(s) => {
                        s.last_used = Instant::now();
                        Some(match s.conns.get(&month) {
                            Some(c) => Arc::clone(c),
                            None => {
                                let conn = Arc::new(Mutex::new(month_obj.primary().connect()?));
                                s.conns.insert(month, Arc::clone(&conn));
                                conn
                            }
                        })
                    }
                    None => None,
                }
            };
            if let Some(conn) = conn {
                return Ok(Routed {
                    lease: Lease::Shared(conn, Arc::clone(month_obj.primary())),
                    mode: Mode::Primary {
                        log: Arc::clone(&month_obj.log),
                        txn: None,
                        session: true,
                    },
                    node: primary,
                    month: Some(month_obj),
                });
            }
        }
        if prefer == Prefer::Replica {
            let mut min_lsn = self.token_lsn(ctx, &month_obj);
            if !self.cfg.stale_reads {
                min_lsn = min_lsn.map(|l| l.max(month_obj.log.last_lsn()));
            }
            if let Some(min_lsn) = min_lsn {
                if let Some((node, i)) = pick_replica(&month_obj, min_lsn).await {
                    return Ok(Routed {
                        lease: node.lease()?,
                        mode: Mode::ReadOnly,
                        node: format!("{month}/node_{i}"),
                        month: Some(month_obj),
                    });
                }
            }
        }
        Ok(Routed {
            lease: month_obj.primary().lease()?,
            mode: primary_mode,
            node: primary,
            month: Some(month_obj),
        })
    }

    /// The LSN a read must see: 0 without a token; `None` when the token
    /// is from another history of this month (only the primary is safe).
    fn token_lsn(&self, ctx: &CallContext, m: &months::Month) -> Option<u64> {
        let Some(token) = &ctx.token else {
            return Some(0);
        };
        let mut parts = token.splitn(3, ':');
        let (Some(month), Some(epoch), Some(lsn)) = (parts.next(), parts.next(), parts.next())
        else {
            return Some(0);
        };
        if month != m.id.to_string() {
            return Some(0); // a write to another month says nothing here
        }
        if epoch != m.log.epoch {
            return None;
        }
        lsn.parse().ok().or(Some(0))
    }

    /// The month if it exists, opened if needed.
    pub(super) async fn existing_month(
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
    pub(super) fn months_for(
        &self,
        caller: &Caller,
        catalog: Option<&str>,
    ) -> EngineResult<Vec<MonthId>> {
        caller.require(Role::Reader, "this call")?;
        match catalog {
            None => {
                let mut ids = self.months.ids();
                ids.retain(|m| caller.may_use(*m));
                Ok(ids)
            }
            Some(c) => {
                let id: MonthId = c.parse()?;
                caller.require_month(id)?;
                Ok(self.months.exists(id).then_some(id).into_iter().collect())
            }
        }
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
        Ok(self.park(&ctx.caller, stream))
    }

    fn park(&self, caller: &Caller, stream: BatchStream) -> Planned {
        let id = new_id();
        let schema = Arc::clone(&stream.schema);
        let node = stream.node.clone();
        let token = stream.token.clone();
        let evicted = {
            let mut parked = self.state.parked.lock();
            parked.insert(
                id.clone(),
                Parked {
                    stream,
                    created: Instant::now(),
                    owner: caller.user().to_string(),
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
        Planned {
            id,
            schema,
            node,
            token,
        }
    }

    /// One of the `--max-concurrent-queries` turns. While none is free, the
    /// oldest result nobody has fetched for [`UNFETCHED_GRACE`] is dropped
    /// (its fetch then fails with NOT_FOUND): unread results must not keep
    /// everyone else waiting.
    async fn turn(&self) -> EngineResult<admission::Turn> {
        self.admission.enter(|| self.drop_unfetched()).await
    }

    /// Drops the oldest parked result older than [`UNFETCHED_GRACE`].
    fn drop_unfetched(&self) -> bool {
        let dropped = {
            let mut parked = self.state.parked.lock();
            let oldest = parked
                .iter()
                .filter(|(_, p)| p.created.elapsed() >= UNFETCHED_GRACE)
                .min_by_key(|(_, p)| p.created)
                .map(|(k, _)| k.clone());
            oldest.and_then(|k| parked.remove(&k))
        };
        let any = dropped.is_some();
        drop(dropped); // outside the lock: dropping stops the producer
        any
    }

    /// Drops a result not fetched yet, which stops its statement; false when
    /// there is none (fetched, ended, or another user's).
    pub fn cancel_result(&self, caller: &Caller, id: &str) -> bool {
        match self.take_parked(caller, id) {
            Ok(stream) => {
                drop(stream);
                true
            }
            Err(_) => false,
        }
    }

    /// Takes a parked result (each can be fetched once, by its caller).
    pub fn take_parked(&self, caller: &Caller, id: &str) -> EngineResult<BatchStream> {
        caller.require(Role::Reader, "fetching a result")?;
        let mut parked = self.state.parked.lock();
        match parked.get(id) {
            Some(p) if p.owner == caller.user() => Ok(parked.remove(id).map(|p| p.stream)),
            _ => Err(EngineError::not_found(
                "result not found: it was already fetched or expired",
            )),
        }?
        .ok_or_else(|| EngineError::internal("parked result vanished"))
    }

    /// Executes a statement and returns its result stream once DuckDB has
    /// produced the first batch (or finished, or failed). Reads go to a
    /// replica; what a replica cannot answer (a write, a table it has not
    /// caught up with) is retried on the primary.
    pub async fn stream_query(
        self: &Arc<Self>,
        ctx: &CallContext,
        sql: &str,
        params: Vec<RecordBatch>,
    ) -> EngineResult<BatchStream> {
        self.stream_query_as(ctx, sql, params, Admit::Turn).await
    }

    /// [`Engine::stream_query`], with or without waiting for a query turn
    /// (`--max-concurrent-queries`). A statement first tried on a replica
    /// holds a turn until it is found to be a write; its run on the
    /// primary then needs none.
    pub(super) async fn stream_query_as(
        self: &Arc<Self>,
        ctx: &CallContext,
        sql: &str,
        params: Vec<RecordBatch>,
        admit: Admit,
    ) -> EngineResult<BatchStream> {
        ctx.caller.require(Role::Reader, "a query")?;
        tracing::debug!(target: "duckflock::access", user = ctx.caller.user(), sql, "query");
        if let Some(spec) = &ctx.months {
            if ctx.transaction.is_some() {
                return Err(EngineError::invalid(
                    "x-duckflock-months cannot be used inside a transaction",
                ));
            }
            return self.stream_cross_month(ctx, spec, sql, params).await;
        }
        let month = self.resolve_month(ctx)?;
        // The turn comes before the connection: a waiting query holds none.
        let turn = match admit {
            Admit::Turn => Some(self.turn().await?),
            Admit::Exempt => None,
        };
        let routed = self
            .lease_for(ctx, month, Some(sql), Prefer::Replica)
            .await?;
        let replica_read = routed.node != SCRATCH_NODE && !routed.node.ends_with("/node_0");
        let first = self
            .stream_on(routed, sql, params.clone(), turn, self.deadline(ctx))
            .await;
        let result = match first {
            Err(e) if e.class == ErrorClass::WrongNode && replica_read => {
                let turn = None;
                let routed = self
                    .lease_for(ctx, month, Some(sql), Prefer::Primary)
                    .await?;
                self.stream_on(routed, sql, params, turn, self.deadline(ctx))
                    .await
            }
            other => other,
        };
        match result {
            Err(e) if e.class == ErrorClass::WrongNode && !ctx.caller.has(Role::Writer) => Err(ctx
                .caller
                .require(Role::Writer, "this statement (it writes)")
                .err()
                .unwrap_or(e)),
            Err(e) if e.class == ErrorClass::WrongNode => Err(EngineError::new(
                ErrorClass::FailedPrecondition,
                format!(
                    "{} (month {month} does not exist yet: only reads run on it)",
                    e.message
                ),
            )),
            other => other,
        }
    }

    async fn stream_on(
        self: &Arc<Self>,
        routed: Routed,
        sql: &str,
        params: Vec<RecordBatch>,
        turn: Option<admission::Turn>,
        deadline: Deadline,
    ) -> EngineResult<BatchStream> {
        let Routed {
            lease,
            mode,
            node,
            month,
        } = routed;
        let (schema_rx, rx) =
            exec::spawn_stream(lease, sql.to_string(), params, mode, deadline, turn);
        let (schema, lsn) = schema_rx
            .await
            .map_err(|_| EngineError::internal("execution ended without a result"))??;
        let mut stream = first_batch(schema, rx, node).await?;
        stream.token = token(month.as_deref(), lsn);
        Ok(stream)
    }

    /// Executes a statement for its affected-row count (and the token of
    /// the write). Many parameter rows run as one transaction.
    pub async fn execute_update(
        self: &Arc<Self>,
        ctx: &CallContext,
        sql: &str,
        params: Vec<RecordBatch>,
    ) -> EngineResult<(u64, Option<String>)> {
        let owned = sql.to_string();
        let (w, _, token) = self
            .run_to_end(ctx, Some(sql), move |conn, mode| {
                exec::run_update(conn, &owned, &params, mode, exec::Results::Count)
            })
            .await?;
        Ok((w.changed, token))
    }

    /// Like [`Engine::execute_update`] for one write outside a transaction,
    /// and also the generated ids (sequence defaults) of the rows it
    /// inserted, at most `id_limit` of them: the HTTP gateway's `modify`.
    pub async fn execute_update_with_ids(
        self: &Arc<Self>,
        ctx: &CallContext,
        sql: &str,
        params: Vec<RecordBatch>,
        id_limit: usize,
    ) -> EngineResult<(u64, Vec<String>, Option<String>)> {
        let owned = sql.to_string();
        let (w, _, token) = self
            .run_to_end(ctx, Some(sql), move |conn, mode| {
                exec::run_update_with_ids(conn, &owned, &params, mode, id_limit)
            })
            .await?;
        Ok((w.written.changed, w.ids, token))
    }

    /// Runs a write to completion on the primary `ctx` routes `sql` to,
    /// under the query timeout, on the blocking pool. Returns what it wrote,
    /// the node and the token.
    async fn run_to_end<T: exec::Committed + Send + 'static>(
        self: &Arc<Self>,
        ctx: &CallContext,
        sql: Option<&str>,
        f: impl FnOnce(&crate::duck::Conn, &Mode) -> EngineResult<T> + Send + 'static,
    ) -> EngineResult<(T, String, Option<String>)> {
        ctx.caller.require(Role::Writer, "a write")?;
        if let Some(sql) = sql {
            tracing::debug!(target: "duckflock::access", user = ctx.caller.user(), sql, "write");
        }
        if ctx.months.is_some() {
            return Err(EngineError::invalid(
                "x-duckflock-months is for read statements only",
            ));
        }
        let month = self.resolve_month(ctx)?;
        let Routed {
            mut lease,
            mode,
            node,
            month,
        } = self
            .lease_for(
                ctx,
                month,
                sql,
                if sql.is_some() {
                    Prefer::Primary
                } else {
                    Prefer::Write
                },
            )
            .await?;
        let deadline = self.deadline(ctx);
        let out = blocking(move || {
            lease.with(|conn| Deadline::run(Some(&deadline), conn, |conn| f(conn, &mode)))
        })
        .await?;
        let token = token(month.as_deref(), out.lsn());
        Ok((out, node, token))
    }
}

/// A table made by [`Engine::create_table`] and the LSN that made it.
struct Created {
    generated_id: Option<String>,
    lsn: Option<u64>,
}

impl exec::Committed for Created {
    fn lsn(&self) -> Option<u64> {
        self.lsn
    }
    fn set_lsn(&mut self, lsn: Option<u64>) {
        self.lsn = lsn;
    }
}

impl Engine {
    /// The table API: creates `schema.table` (schema `main` by default) in
    /// `ctx`'s month from column definitions DuckDB checked one by one (see
    /// [`tables`]); a single integer primary key gets generated ids.
    pub async fn create_table(
        self: &Arc<Self>,
        ctx: &CallContext,
        schema: Option<String>,
        table: String,
        columns: Vec<ColumnSpec>,
    ) -> EngineResult<(TableCreated, Option<String>)> {
        if table.is_empty() {
            return Err(EngineError::invalid("a table needs a name"));
        }
        let checked = columns.clone();
        blocking(move || tables::check_columns(&checked)).await?;
        let schema = schema.unwrap_or_else(|| "main".into());
        let (name, cols) = (table.clone(), columns.clone());
        let (created, _, token) = self
            .run_to_end(ctx, None, move |conn, mode| {
                let (log, txn) = mode.primary(conn)?;
                exec::captured(conn, log, txn, |id| {
                    let generated_id = tables::create(conn, id, &schema, &name, &cols)?;
                    Ok(Created {
                        generated_id,
                        lsn: None,
                    })
                })
            })
            .await?;
        Ok((
            TableCreated {
                table_name: table,
                columns,
                generated_id: created.generated_id,
            },
            token,
        ))
    }

    /// Runs `sql` once per parameter row, each row in its own transaction
    /// on the primary (DuckDB has no savepoints): a failing row does not
    /// undo or stop the others. Reports every failure by its row index; the
    /// token is that of the last row that committed. Not inside an open
    /// transaction, where one failure would abort the rest.
    pub async fn execute_each(
        self: &Arc<Self>,
        ctx: &CallContext,
        sql: &str,
        params: Vec<RecordBatch>,
    ) -> EngineResult<(BatchReport, Option<String>)> {
        if ctx.transaction.is_some() {
            return Err(EngineError::invalid(
                "a per-operation batch runs each row in its own transaction, so it cannot run inside an open transaction (use a prepared statement with many parameter rows: all or nothing)",
            ));
        }
        let owned = sql.to_string();
        let (each, _, token) = self
            .run_to_end(ctx, Some(sql), move |conn, mode| {
                exec::run_each(conn, &owned, &params, mode.primary(conn)?.0)
            })
            .await?;
        Ok((each.report, token))
    }

    /// Bulk ingest into `target` of `ctx`'s month (see [`ingest`]): the
    /// batches arrive on `batches` while they are inserted. Returns the rows
    /// inserted and the write's token.
    pub async fn ingest(
        self: &Arc<Self>,
        ctx: &CallContext,
        target: IngestTarget,
        schema: SchemaRef,
        mut batches: mpsc::Receiver<EngineResult<RecordBatch>>,
    ) -> EngineResult<(u64, Option<String>)> {
        if target.temporary && ctx.session.is_none() {
            return Err(EngineError::invalid(
                "a temporary table lives as long as a Flight SQL session: keep the session cookie (ADBC: adbc.flight.sql.rpc.with_cookie_middleware=true)",
            ));
        }
        let (w, _, token) = self
            .run_to_end(ctx, None, move |conn, mode| {
                let (log, txn) = mode.primary(conn)?;
                ingest::run(conn, &target, &schema, &mut batches, log, txn)
            })
            .await?;
        Ok((w.changed, token))
    }
}

/// The read-your-writes token of change set `lsn` of `month`.
fn token(month: Option<&months::Month>, lsn: Option<u64>) -> Option<String> {
    let (m, lsn) = (month?, lsn?);
    Some(format!("{}:{}:{lsn}", m.id, m.log.epoch))
}

/// A random healthy replica that has applied `min_lsn`; waits up to
/// [`TOKEN_WAIT`] for one to catch up. The applied LSN only grows and is
/// published after the replica's COMMIT, so a query that starts after this
/// check sees the write.
async fn pick_replica(m: &months::Month, min_lsn: u64) -> Option<(Arc<node::Node>, usize)> {
    let deadline = tokio::time::Instant::now() + TOKEN_WAIT;
    loop {
        let notified = m.log.applied.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let ready: Vec<(Arc<node::Node>, usize)> = m
            .replicas
            .iter()
            .filter(|r| r.applied() >= min_lsn)
            .filter_map(|r| r.serving().map(|n| (n, r.index)))
            .collect();
        if !ready.is_empty() {
            let i = rand::random_range(0..ready.len());
            return ready.into_iter().nth(i);
        }
        let waiting = m
            .replicas
            .iter()
            .any(|r| r.serving().is_some() && r.applied() < min_lsn);
        if min_lsn == 0 || !waiting || tokio::time::Instant::now() >= deadline {
            return None;
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
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
            token: None,
        },
        Some(Err(e)) => return Err(e),
        None => BatchStream {
            schema,
            node,
            head: Vec::new(),
            rest: None,
            token: None,
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
    let kind = classify::check(conn, stmt.statement_type(), sql)?;
    Ok(kind == StatementKind::Write)
}
