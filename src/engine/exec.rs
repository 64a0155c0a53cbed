//! Statement execution on one connection (blocking code, run on tokio's
//! blocking pool). Results leave through a bounded channel, so a slow client
//! pauses DuckDB instead of growing memory.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use tokio::sync::{mpsc, oneshot};

use crate::duck::{bind_row, Conn, Prepared, StatementType};

use super::capture;
use super::changelog::ChangeLog;
use super::classify::{check, StatementKind};
use super::deadline::Deadline;
use super::error::{EngineError, EngineResult, ErrorClass};
use super::node::Lease;
use super::plan_check;

/// How a connection may be used.
#[derive(Clone)]
pub enum Mode {
    /// Reads only, inside a READ ONLY transaction (replicas, cross-month
    /// reads, the scratch database). Anything else fails with
    /// [`ErrorClass::WrongNode`] so the engine can retry on the primary.
    ReadOnly,
    /// The month's primary: reads stream; writes are captured into the
    /// change log. `txn` is the capture id of the enclosing Flight SQL
    /// transaction (`None`: each call commits on its own, unless a SQL
    /// `BEGIN` opened one on a session's connection). `session`: the
    /// connection is a Flight SQL session's own, where SQL `BEGIN`,
    /// `COMMIT` and `ROLLBACK` run ([`session_transaction`]).
    Primary {
        log: Arc<ChangeLog>,
        txn: Option<u64>,
        session: bool,
    },
}

impl Mode {
    /// The change log and enclosing transaction of a primary connection
    /// `conn` (a Flight SQL transaction's, or one a SQL `BEGIN` opened on
    /// it); writes refuse any other node.
    pub fn primary(&self, conn: &Conn) -> EngineResult<(&ChangeLog, Option<u64>)> {
        match self {
            Mode::Primary { log, txn, .. } => Ok((log, txn.or_else(|| conn.open_txn()))),
            Mode::ReadOnly => Err(EngineError::new(
                ErrorClass::FailedPrecondition,
                "this node is read-only",
            )),
        }
    }
}

/// A SQL `BEGIN`, `COMMIT` or `ROLLBACK` sent alone on a Flight SQL
/// session's connection: it opens, commits (with its change set: the LSN
/// comes back) or rolls back a captured transaction that the session's
/// later statements run in, as in a Flight SQL transaction. `None`: `sql`
/// is something else, or the connection is no session's (where such a
/// statement is refused by [`check`]).
pub fn session_transaction(conn: &Conn, sql: &str, mode: &Mode) -> EngineResult<Option<Written>> {
    let Some(log) = session_log(mode) else {
        return Ok(None);
    };
    let script = conn.extract(sql)?;
    if script.len() != 1 || script.prepare(conn, 0)?.statement_type() != StatementType::Transaction
    {
        return Ok(None);
    }
    transaction_in_session(conn, sql, log).map(Some)
}

/// The change log of a session's connection outside a Flight SQL
/// transaction: where SQL transaction statements run.
fn session_log(mode: &Mode) -> Option<&ChangeLog> {
    match mode {
        Mode::Primary {
            log,
            txn: None,
            session: true,
        } => Some(log),
        _ => None,
    }
}

/// Runs `sql`, a TRANSACTION statement, on a session's connection.
fn transaction_in_session(conn: &Conn, sql: &str, log: &ChangeLog) -> EngineResult<Written> {
    let lsn = match (transaction_statement(conn, sql)?, conn.open_txn()) {
        (TxnStatement::Begin, None) => {
            let id = capture::begin_with(conn, log, || Ok(conn.execute_batch(sql)?))?;
            conn.set_open_txn(Some(id));
            None
        }
        (TxnStatement::Begin, Some(_)) => {
            return Err(EngineError::invalid(
                "TransactionContext Error: cannot start a transaction within a transaction \
                 (this session's is open: COMMIT or ROLLBACK it first)",
            ))
        }
        (TxnStatement::Commit, Some(id)) => {
            conn.set_open_txn(None);
            let committed = capture::commit(conn, id, log);
            if committed.is_err() {
                conn.rollback();
            }
            committed?
        }
        (TxnStatement::Rollback, Some(_)) => {
            conn.set_open_txn(None);
            conn.rollback();
            None
        }
        (_, None) => {
            return Err(EngineError::invalid(
                "TransactionContext Error: no transaction is active in this session",
            ))
        }
    };
    Ok(Written {
        schema: Arc::new(Schema::empty()),
        batches: Vec::new(),
        changed: 0,
        lsn,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnStatement {
    Begin,
    Commit,
    Rollback,
}

/// What a statement of DuckDB's TRANSACTION type does, as DuckDB shows it
/// (its prepared type says only TRANSACTION): run on a connection of its
/// own inside a transaction that made a temporary table, a BEGIN fails
/// (already in one), a COMMIT keeps the table and a ROLLBACK drops it.
fn transaction_statement(conn: &Conn, sql: &str) -> EngineResult<TxnStatement> {
    let probe = conn.sibling()?;
    probe.execute_batch("BEGIN TRANSACTION; CREATE TEMP TABLE __df_probe (x INTEGER)")?;
    match probe.execute_batch(sql) {
        Err(e) if e.kind == crate::duck::DuckErrorKind::Transaction => Ok(TxnStatement::Begin),
        Err(e) => Err(e.into()),
        Ok(()) => {
            let kept = super::catalog::rows(
                &probe,
                "SELECT count(*) FROM system.main.duckdb_tables() \
                 WHERE temporary AND table_name = '__df_probe'",
            )?;
            let kept = kept.first().and_then(|r| r.first().cloned().flatten());
            Ok(if kept.as_deref() == Some("1") {
                TxnStatement::Commit
            } else {
                TxnStatement::Rollback
            })
        }
    }
}

/// What a write produced.
pub struct Written {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub changed: u64,
    /// The LSN of the change set it committed (none inside a transaction or
    /// when nothing replicable changed).
    pub lsn: Option<u64>,
}

/// A finished write that may have committed a change set.
pub trait Committed {
    /// The LSN of the change set it committed, if any.
    fn lsn(&self) -> Option<u64>;
    /// Records the LSN its transaction committed with.
    fn set_lsn(&mut self, lsn: Option<u64>);
}

impl Committed for Written {
    fn lsn(&self) -> Option<u64> {
        self.lsn
    }
    fn set_lsn(&mut self, lsn: Option<u64>) {
        self.lsn = lsn;
    }
}

/// One failed row of a per-operation batch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchError {
    /// The row's position among the parameter rows (from 0).
    pub index: usize,
    /// DuckDB's message.
    pub error: String,
}

/// The outcome of a per-operation batch ([`run_each`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchReport {
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Rows changed by the rows that succeeded.
    pub affected_rows: u64,
    pub errors: Vec<BatchError>,
}

/// A per-operation batch and the last LSN it committed.
pub struct Each {
    pub report: BatchReport,
    lsn: Option<u64>,
}

impl Committed for Each {
    fn lsn(&self) -> Option<u64> {
        self.lsn
    }
    fn set_lsn(&mut self, lsn: Option<u64>) {
        self.lsn = lsn;
    }
}

/// Runs one statement once per parameter row, each row in its own captured
/// transaction that commits (or rolls back) on its own.
pub fn run_each(
    conn: &Conn,
    sql: &str,
    params: &[RecordBatch],
    log: &ChangeLog,
) -> EngineResult<Each> {
    let script = conn.extract(sql)?;
    if script.len() != 1 {
        return Err(EngineError::invalid(
            "a per-operation batch runs exactly one statement",
        ));
    }
    let mut stmt = script
        .prepare(conn, 0)
        .map_err(|e| explain_capture_error(e.into()))?;
    let st = stmt.statement_type();
    check(conn, st, sql)?;
    if is_ddl(st) {
        return Err(EngineError::invalid(
            "DDL takes no parameter rows: send it as a statement of its own",
        ));
    }
    // No parameter rows: no operations (not one run without parameters).
    let rows = if params.is_empty() {
        Vec::new()
    } else {
        param_rows(params)
    };
    let mut report = BatchReport {
        total: rows.len(),
        succeeded: 0,
        failed: 0,
        affected_rows: 0,
        errors: Vec::new(),
    };
    let mut lsn = None;
    for (index, row) in rows.into_iter().enumerate() {
        let txn = capture::begin(conn, log)?;
        let ran = bind(&mut stmt, row)
            .and_then(|_| plan_check::verify(conn, st, sql, row))
            .and_then(|verdict| {
                let watch = verdict.watch(conn)?;
                let mut res = stmt.execute_owned()?;
                watch.check(conn)?;
                if st == StatementType::Explain {
                    plan_check::explain_output(&mut res)?;
                }
                Ok(res.rows_changed())
            })
            .map_err(explain_capture_error);
        let done = match ran {
            Ok(n) => capture::commit(conn, txn, log).map(|l| (n, l)),
            Err(e) => {
                conn.rollback();
                Err(e)
            }
        };
        match done {
            Ok((n, l)) => {
                report.succeeded += 1;
                report.affected_rows += n;
                lsn = l.or(lsn);
            }
            Err(e) => {
                report.failed += 1;
                report.errors.push(BatchError {
                    index,
                    error: e.message,
                });
            }
        }
    }
    Ok(Each { report, lsn })
}

/// Batches in flight between DuckDB and the client, per stream.
pub const CHANNEL_DEPTH: usize = 4;

/// Rows and bytes a streamed batch grows to before it is sent: DuckDB
/// produces 2048-row chunks, and one Flight message per chunk costs more in
/// framing than the data itself for narrow rows.
const COALESCE_ROWS: usize = 64 * 1024;
const COALESCE_BYTES: usize = 4 << 20;

/// Sends the first chunk at once (time to first row), then merges chunks
/// into batches of up to [`COALESCE_ROWS`] rows / [`COALESCE_BYTES`] bytes.
#[derive(Default)]
struct Coalescer {
    started: bool,
    pending: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
}

impl Coalescer {
    fn push(&mut self, batch: RecordBatch) -> EngineResult<Option<RecordBatch>> {
        if !self.started {
            self.started = true;
            return Ok(Some(batch));
        }
        self.rows += batch.num_rows();
        self.bytes += batch.get_array_memory_size();
        self.pending.push(batch);
        if self.rows >= COALESCE_ROWS || self.bytes >= COALESCE_BYTES {
            return self.finish();
        }
        Ok(None)
    }

    fn finish(&mut self) -> EngineResult<Option<RecordBatch>> {
        let pending = std::mem::take(&mut self.pending);
        self.rows = 0;
        self.bytes = 0;
        match pending.len() {
            0 => Ok(None),
            1 => Ok(pending.into_iter().next()),
            _ => arrow::compute::concat_batches(&pending[0].schema(), &pending)
                .map(Some)
                .map_err(|e| EngineError::internal(format!("Arrow concat: {e}"))),
        }
    }
}

/// The parameter rows to run: one execution per row, or one without
/// parameters.
fn param_rows(params: &[RecordBatch]) -> Vec<Option<Row<'_>>> {
    if params.is_empty() {
        return vec![None];
    }
    params
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |r| Some((b, r))))
        .collect()
}

/// One parameter row: a batch and a row index in it.
pub(super) type Row<'a> = (&'a RecordBatch, usize);

pub(super) fn bind(stmt: &mut Prepared<'_>, row: Option<Row<'_>>) -> EngineResult<()> {
    stmt.clear_bindings();
    if let Some((b, r)) = row {
        bind_row(stmt, b, r)?;
    } else if stmt.parameter_count() > 0 {
        return Err(EngineError::invalid(format!(
            "Invalid Input Error: the statement has {} parameter(s) but none were bound",
            stmt.parameter_count()
        )));
    }
    Ok(())
}

fn is_ddl(t: StatementType) -> bool {
    matches!(
        t,
        StatementType::Create
            | StatementType::CreateFunc
            | StatementType::Alter
            | StatementType::Drop
            | StatementType::Multi
    )
}

/// Errors a replica gives for statements the primary may answer: writes
/// (read-only transaction) and catalog entries it has not caught up with.
fn wrong_node(e: EngineError) -> EngineError {
    let m = &e.message;
    if m.starts_with("Catalog Error")
        || m.starts_with("Binder Error")
        || m.contains("read-only mode")
    {
        EngineError::new(ErrorClass::WrongNode, e.message)
    } else {
        e
    }
}

/// Starts an execution on a blocking thread. The schema arrives first (or
/// the error) with the LSN a write committed, then batches; the thread stops
/// when the receiver is dropped, or when `deadline` passes. `turn` (the
/// statement's admission) is given back when the statement ends.
#[allow(clippy::type_complexity)]
pub fn spawn_stream(
    mut lease: Lease,
    sql: String,
    params: Vec<RecordBatch>,
    mode: Mode,
    deadline: Deadline,
    turn: Option<super::admission::Turn>,
) -> (
    oneshot::Receiver<EngineResult<(SchemaRef, Option<u64>)>>,
    mpsc::Receiver<EngineResult<RecordBatch>>,
) {
    let (schema_tx, schema_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    // A client that goes away (drops the result, cancels the call, closes
    // its connection) drops the receiving side: DuckDB is interrupted at
    // once, not when it next has a batch to send. The watcher's sender
    // clone lives until the statement ends, then the stream ends.
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let (watch_tx, watch) = (tx.clone(), deadline.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = watch_tx.closed() => watch.cancel(),
            _ = done_rx => {}
        }
    });
    tokio::task::spawn_blocking(move || {
        let _done = done_tx;
        let _turn = turn;
        let mut schema_tx = Some(schema_tx);
        let outcome = lease.with(|conn| {
            Deadline::run(Some(&deadline), conn, |conn| {
                run_on(conn, &sql, &params, &mode, &deadline, &mut schema_tx, &tx)
            })
        });
        if let Err(e) = outcome {
            match schema_tx.take() {
                Some(s) => {
                    let _ = s.send(Err(e));
                }
                None => {
                    let _ = tx.blocking_send(Err(e));
                }
            }
        }
    });
    (schema_rx, rx)
}

type SchemaTx = Option<oneshot::Sender<EngineResult<(SchemaRef, Option<u64>)>>>;

fn run_on(
    conn: &Conn,
    sql: &str,
    params: &[RecordBatch],
    mode: &Mode,
    deadline: &Deadline,
    schema_tx: &mut SchemaTx,
    tx: &mpsc::Sender<EngineResult<RecordBatch>>,
) -> EngineResult<()> {
    match mode {
        Mode::ReadOnly => {
            conn.execute_batch("BEGIN TRANSACTION READ ONLY")?;
            let out = (|| {
                let script = conn.extract(sql)?;
                if script.len() != 1 {
                    return Err(EngineError::new(ErrorClass::WrongNode, "script"));
                }
                let stmt = script.prepare(conn, 0)?;
                let kind = check(conn, stmt.statement_type(), sql)?;
                if kind != StatementKind::Read {
                    return Err(EngineError::new(ErrorClass::WrongNode, "write"));
                }
                stream_prepared(conn, sql, stmt, params, deadline, schema_tx, tx)
            })();
            conn.rollback();
            out.map_err(wrong_node)
        }
        Mode::Primary { log, txn, .. } => {
            let txn = txn.or_else(|| conn.open_txn());
            let script = conn.extract(sql)?;
            if script.len() == 1 {
                let stmt = script
                    .prepare(conn, 0)
                    .map_err(|e| explain_capture_error(e.into()))?;
                if let Some(log) = session_log(mode)
                    .filter(|_| stmt.statement_type() == StatementType::Transaction)
                {
                    drop(stmt);
                    let w = transaction_in_session(conn, sql, log)?;
                    if let Some(s) = schema_tx.take() {
                        let _ = s.send(Ok((w.schema, w.lsn)));
                    }
                    return Ok(());
                }
                let kind = check(conn, stmt.statement_type(), sql)?;
                if kind == StatementKind::Read && !reads_write(&stmt) {
                    return stream_prepared(conn, sql, stmt, params, deadline, schema_tx, tx);
                }
            }
            let w = write(conn, sql, params, log, txn, Results::Rows)?;
            if let Some(s) = schema_tx.take() {
                let _ = s.send(Ok((w.schema, w.lsn)));
            }
            for b in w.batches {
                if tx.blocking_send(Ok(b)).is_err() {
                    break;
                }
            }
            Ok(())
        }
    }
}

/// A "read" that changes state: `EXPLAIN ANALYZE <write>` runs the write.
fn reads_write(stmt: &Prepared<'_>) -> bool {
    stmt.statement_type() == StatementType::Explain
}

/// Streams one prepared statement's results (one execution per parameter
/// row).
fn stream_prepared(
    conn: &Conn,
    sql: &str,
    mut stmt: Prepared<'_>,
    params: &[RecordBatch],
    deadline: &Deadline,
    schema_tx: &mut SchemaTx,
    tx: &mpsc::Sender<EngineResult<RecordBatch>>,
) -> EngineResult<()> {
    // Whether the client still listens; DuckDB is not interruptible while
    // the thread waits for it (see [`Deadline::outside`]).
    let send = |b: RecordBatch| -> EngineResult<bool> {
        match deadline.outside(|| tx.blocking_send(Ok(b))) {
            Ok(sent) => Ok(sent.is_ok()),
            Err(e) if e.class == ErrorClass::Cancelled => Ok(false),
            Err(e) => Err(e),
        }
    };
    let t = stmt.statement_type();
    for row in param_rows(params) {
        bind(&mut stmt, row)?;
        // A read changes no table (it runs in a READ ONLY transaction, or
        // is a query on the primary, where a data-changing WITH is
        // refused): there is nothing to watch.
        let _read = plan_check::verify(conn, t, sql, row)?;
        let mut res = stmt.execute_streaming()?;
        if t == StatementType::Explain {
            // Checked whole before any row is sent.
            let plan = plan_check::explain_output(&mut res)?;
            if let Some(s) = schema_tx.take() {
                let _ = s.send(Ok((res.schema(), None)));
            }
            for b in plan {
                if !send(b)? {
                    return Ok(());
                }
            }
            continue;
        }
        if let Some(s) = schema_tx.take() {
            let _ = s.send(Ok((res.schema(), None)));
        }
        let mut out = Coalescer::default();
        while let Some(batch) = res.next_batch()? {
            if let Some(ready) = out.push(batch)? {
                if !send(ready)? {
                    return Ok(()); // client went away
                }
            }
        }
        if let Some(rest) = out.finish()? {
            if !send(rest)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Runs a write on the primary: in the enclosing Flight SQL transaction
/// (`txn`), or in its own captured transaction that commits with its change
/// set. Many parameter rows run in the same transaction (all or nothing).
pub fn write(
    conn: &Conn,
    sql: &str,
    params: &[RecordBatch],
    log: &ChangeLog,
    txn: Option<u64>,
    results: Results,
) -> EngineResult<Written> {
    captured(conn, log, txn, |id| {
        run_statements(conn, sql, params, id, results)
    })
}

/// What a write hands back besides its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Results {
    /// Only the count (DoPut updates, HTTP modify): rows a statement
    /// answers (`RETURNING`, a SELECT sent as an update) are not kept.
    Count,
    /// Its rows too, at most [`MAX_WRITE_RESULT_BYTES`] of them: they are
    /// collected before the commit, outside DuckDB's memory limit.
    Rows,
}

/// Most bytes of rows a write answers through the query path.
pub const MAX_WRITE_RESULT_BYTES: usize = 64 << 20;

/// Runs `f` (given the capture id) in the enclosing Flight SQL transaction
/// `txn`, or in its own captured transaction that commits with its change
/// set (the LSN goes into the result) or rolls back on error.
pub(super) fn captured<T: Committed>(
    conn: &Conn,
    log: &ChangeLog,
    txn: Option<u64>,
    f: impl FnOnce(u64) -> EngineResult<T>,
) -> EngineResult<T> {
    let (id, own) = match txn {
        Some(t) => (t, false),
        None => (capture::begin(conn, log)?, true),
    };
    match f(id).map_err(explain_capture_error) {
        Ok(mut w) => {
            if own {
                w.set_lsn(capture::commit(conn, id, log)?);
            }
            Ok(w)
        }
        Err(e) => {
            if own {
                conn.rollback();
            }
            Err(e)
        }
    }
}

/// Runs one DDL statement (`run`) in captured transaction `txn` so that
/// replicas replay `sql`: capture triggers are lifted around it, and new or
/// reshaped tables are imaged.
/// `creates`: the statement is a `CREATE` (DuckDB's statement type), whose
/// new tables ship as catalog definitions plus images, not as `sql`.
pub(super) fn ddl<T>(
    conn: &Conn,
    txn: u64,
    sql: &str,
    creates: bool,
    run: impl FnOnce() -> EngineResult<T>,
) -> EngineResult<T> {
    // Whatever it made (a temp table among them) stays with this client:
    // a pooled connection is closed after use, a session's kept.
    conn.mark_spent();
    let before = capture::catalog_fingerprint(conn)?;
    let internal = capture::internal_fingerprint(conn)?;
    let oids = capture::before_ddl(conn)?;
    let out = run()?;
    // Names may mean something else now (a view, a macro, a temp table).
    plan_check::catalog_changed();
    // DuckDB has no grants: what a client's DDL may not do is checked on
    // what it did, inside its transaction (rolled back by the caller).
    let refused = if capture::internal_fingerprint(conn)? != internal {
        Some(format!(
            "the schema {} holds the server's bookkeeping and cannot be changed",
            super::months::INTERNAL_SCHEMA
        ))
    } else if capture::has_secrets(conn)? {
        Some("CREATE SECRET is not allowed: the server holds no credentials for clients".into())
    } else {
        capture::client_trigger(conn)?.map(|trigger| {
            format!(
                "CREATE TRIGGER is not allowed: duckflock replicates with triggers of its own, \
                 and a replica would run a client's trigger again on every change it applies \
                 (found {trigger}; a trigger made before this rule blocks DDL until it is dropped)"
            )
        })
    };
    if let Some(why) = refused {
        // Also inside a client's transaction: nothing of it may commit, and
        // what the client sends next fails until it ends the transaction.
        conn.rollback_to_failed();
        return Err(EngineError::forbidden(format!(
            "{why} (the statement's transaction was rolled back)"
        )));
    }
    let after = capture::catalog_fingerprint(conn)?;
    capture::after_ddl(conn, txn, sql, creates, before != after, &oids)?;
    Ok(out)
}

/// DuckDB refuses upserts and MERGE on tables with the capture triggers:
/// say why and what to do instead.
pub(super) fn explain_capture_error(e: EngineError) -> EngineError {
    if e.message.contains("REFERENCING NEW TABLE AS triggers")
        || e.message.contains("not supported on tables with triggers")
    {
        EngineError::invalid(format!(
            "{}. duckflock replicates the rows each statement changed, captured by statement triggers, and DuckDB cannot capture INSERT OR REPLACE, ON CONFLICT DO UPDATE or MERGE that way yet: use UPDATE, or DELETE then INSERT, in one transaction",
            e.message
        ))
    } else {
        e
    }
}

fn run_statements(
    conn: &Conn,
    sql: &str,
    params: &[RecordBatch],
    txn: u64,
    results: Results,
) -> EngineResult<Written> {
    let script = conn.extract(sql)?;
    let n = script.len();
    if n == 1 {
        let stmt = script.prepare(conn, 0)?;
        return run_one(conn, sql, stmt, params, txn, results);
    }
    // A script: each statement runs, and is checked, as its own text (a
    // DDL statement is captured as its own text too, so replicas replay it
    // in order with the rows around it); the parameters go to the last.
    // Each piece is prepared only once the ones before it ran: it may use
    // what they made.
    let pieces = plan_check::pieces(conn, sql, n)?;
    for (i, piece) in pieces.iter().enumerate() {
        let stmt = conn.extract(piece)?.prepare(conn, 0)?;
        if i + 1 < n {
            run_one(conn, piece, stmt, &[], txn, Results::Count)?;
            continue;
        }
        return run_one(conn, piece, stmt, params, txn, results);
    }
    Err(EngineError::invalid(
        "Parser Error: no statement to execute",
    ))
}

/// Runs one prepared statement of a write (DDL captured as such) in
/// captured transaction `txn`.
fn run_one(
    conn: &Conn,
    sql: &str,
    mut stmt: Prepared<'_>,
    params: &[RecordBatch],
    txn: u64,
    results: Results,
) -> EngineResult<Written> {
    let st = stmt.statement_type();
    check(conn, st, sql)?;
    if !is_ddl(st) {
        return collect(conn, sql, &mut stmt, params, results);
    }
    if !params.is_empty() {
        return Err(EngineError::invalid("DDL takes no parameters"));
    }
    let creates = st == StatementType::Create;
    let mut w = ddl(conn, txn, sql, creates, || {
        collect(conn, sql, &mut stmt, &[], Results::Count)
    })?;
    w.changed = 0;
    Ok(w)
}

/// Executes a statement once per parameter row, collecting its count and,
/// for [`Results::Rows`], its results (bounded).
fn collect(
    conn: &Conn,
    sql: &str,
    stmt: &mut Prepared<'_>,
    params: &[RecordBatch],
    results: Results,
) -> EngineResult<Written> {
    let mut schema = None;
    let mut batches = Vec::new();
    let (mut changed, mut held) = (0u64, 0usize);
    let t = stmt.statement_type();
    for row in param_rows(params) {
        bind(stmt, row)?;
        let watch = plan_check::verify(conn, t, sql, row)?.watch(conn)?;
        let mut res = stmt.execute_owned()?;
        watch.check(conn)?;
        changed += res.rows_changed();
        schema.get_or_insert_with(|| res.schema());
        if t == StatementType::Explain {
            let plan = plan_check::explain_output(&mut res)?;
            if results == Results::Rows {
                batches.extend(plan);
            }
            continue;
        }
        if results == Results::Count {
            continue;
        }
        while let Some(b) = res.next_batch()? {
            held += b.get_array_memory_size();
            if held > MAX_WRITE_RESULT_BYTES {
                return Err(EngineError::new(
                    ErrorClass::ResourceExhausted,
                    format!(
                        "the rows this write answers exceed {} MiB (they are held until it \
                         commits): select fewer columns in RETURNING, or read them with a query \
                         after the write",
                        MAX_WRITE_RESULT_BYTES >> 20
                    ),
                ));
            }
            batches.push(b);
        }
    }
    let schema = match schema {
        Some(s) => s,
        None => stmt
            .result_schema()
            .unwrap_or_else(|_| Arc::new(Schema::empty())),
    };
    Ok(Written {
        schema,
        batches,
        changed,
        lsn: None,
    })
}

/// A write and the generated ids of the rows it inserted.
pub struct WithIds {
    pub written: Written,
    pub ids: Vec<String>,
}

impl Committed for WithIds {
    fn lsn(&self) -> Option<u64> {
        self.written.lsn
    }
    fn set_lsn(&mut self, lsn: Option<u64>) {
        self.written.lsn = lsn;
    }
}

/// A single write and the generated ids of the rows it inserted (see
/// [`capture::inserted_ids`]), at most `limit`; a write that changed no
/// row skips the lookup.
pub fn run_update_with_ids(
    conn: &Conn,
    sql: &str,
    params: &[RecordBatch],
    mode: &Mode,
    limit: usize,
) -> EngineResult<WithIds> {
    if let Some(written) = session_transaction(conn, sql, mode)? {
        return Ok(WithIds {
            written,
            ids: Vec::new(),
        });
    }
    let (log, txn) = mode.primary(conn)?;
    captured(conn, log, txn, |id| {
        let written = run_statements(conn, sql, params, id, Results::Count)?;
        let ids = if written.changed > 0 {
            capture::inserted_ids(conn, id, limit)?
        } else {
            Vec::new()
        };
        Ok(WithIds { written, ids })
    })
}

/// Runs a statement for its row count (and the LSN it committed): on the
/// primary as a captured write, elsewhere as a read.
pub fn run_update(
    conn: &Conn,
    sql: &str,
    params: &[RecordBatch],
    mode: &Mode,
    results: Results,
) -> EngineResult<Written> {
    if let Some(w) = session_transaction(conn, sql, mode)? {
        return Ok(w);
    }
    let (log, txn) = mode.primary(conn)?;
    write(conn, sql, params, log, txn, results)
}
