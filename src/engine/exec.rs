//! Statement execution on one connection (blocking code, run on tokio's
//! blocking pool). Results leave through a bounded channel, so a slow client
//! pauses DuckDB instead of growing memory.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use tokio::sync::{mpsc, oneshot};

use crate::duck::{bind_row, Conn, Prepared};

use super::classify::{classify, refuse, StatementKind};
use super::deadline::Deadline;
use super::error::{EngineError, EngineResult};
use super::node::Lease;

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

/// Executes every statement of `sql` but the last, and prepares the last.
/// Each statement is classified by DuckDB before it runs; `allow_write`
/// false refuses writes (reads routed to nodes that must not change).
pub fn prepare_script<'c>(
    conn: &'c Conn,
    sql: &str,
    allow_write: bool,
) -> EngineResult<(Prepared<'c>, StatementKind)> {
    let script = conn.extract(sql)?;
    let n = script.len();
    for i in 0..n {
        let mut stmt = script.prepare(conn, i)?;
        let kind = classify(stmt.statement_type());
        if let Some(e) = refuse(kind) {
            return Err(e);
        }
        if kind == StatementKind::Write && !allow_write {
            return Err(EngineError::new(
                super::error::ErrorClass::FailedPrecondition,
                "this node is read-only",
            ));
        }
        if i + 1 == n {
            return Ok((stmt, kind));
        }
        stmt.execute()?;
    }
    Err(EngineError::invalid(
        "Parser Error: no statement to execute",
    ))
}

/// The parameter rows to run: one execution per row, or one without
/// parameters.
fn param_rows(params: &[RecordBatch]) -> Vec<Option<(&RecordBatch, usize)>> {
    if params.is_empty() {
        return vec![None];
    }
    params
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |r| Some((b, r))))
        .collect()
}

fn bind(stmt: &mut Prepared<'_>, row: Option<(&RecordBatch, usize)>) -> EngineResult<()> {
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

/// Starts a streaming execution on a blocking thread. The schema arrives
/// first (or the error), then batches; the thread stops when the receiver
/// is dropped, or when `deadline` passes.
pub fn spawn_stream(
    mut lease: Lease,
    sql: String,
    params: Vec<RecordBatch>,
    allow_write: bool,
    deadline: Option<Deadline>,
) -> (
    oneshot::Receiver<EngineResult<SchemaRef>>,
    mpsc::Receiver<EngineResult<RecordBatch>>,
) {
    let (schema_tx, schema_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut schema_tx = Some(schema_tx);
        let outcome = lease.with(|conn| {
            Deadline::run(deadline.as_ref(), conn, |conn| {
                stream_into(conn, &sql, &params, allow_write, &mut schema_tx, &tx)
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

/// Runs the statement and sends its schema, then its batches.
fn stream_into(
    conn: &Conn,
    sql: &str,
    params: &[RecordBatch],
    allow_write: bool,
    schema_tx: &mut Option<oneshot::Sender<EngineResult<SchemaRef>>>,
    tx: &mpsc::Sender<EngineResult<RecordBatch>>,
) -> EngineResult<()> {
    let (mut stmt, _) = prepare_script(conn, sql, allow_write)?;
    for row in param_rows(params) {
        bind(&mut stmt, row)?;
        let mut res = stmt.execute_streaming()?;
        if let Some(s) = schema_tx.take() {
            let _ = s.send(Ok(res.schema()));
        }
        let mut out = Coalescer::default();
        while let Some(batch) = res.next_batch()? {
            if let Some(ready) = out.push(batch)? {
                if tx.blocking_send(Ok(ready)).is_err() {
                    return Ok(()); // client went away
                }
            }
        }
        if let Some(rest) = out.finish()? {
            if tx.blocking_send(Ok(rest)).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Runs a script and collects the last statement's result (for writes sent
/// through the query path: DDL, DML and `RETURNING`, whose results DuckDB
/// materialises anyway). Parameter rows run in one transaction.
pub fn run_collect(
    conn: &Conn,
    sql: &str,
    params: &[RecordBatch],
    in_txn: bool,
) -> EngineResult<(SchemaRef, Vec<RecordBatch>)> {
    let (mut stmt, _) = prepare_script(conn, sql, true)?;
    let rows = param_rows(params);
    atomically(conn, in_txn || rows.len() < 2, || {
        let mut schema = None;
        let mut out = Vec::new();
        for row in rows {
            bind(&mut stmt, row)?;
            let mut res = stmt.execute_owned()?;
            schema.get_or_insert_with(|| res.schema());
            while let Some(b) = res.next_batch()? {
                out.push(b);
            }
        }
        let schema = match schema {
            Some(s) => s,
            None => stmt.result_schema()?,
        };
        Ok((schema, out))
    })
}

/// Runs a script for its row count; many parameter rows run as one
/// transaction (all or nothing).
pub fn run_update(
    conn: &Conn,
    sql: &str,
    params: &[RecordBatch],
    in_txn: bool,
) -> EngineResult<u64> {
    let (mut stmt, _) = prepare_script(conn, sql, true)?;
    let rows = param_rows(params);
    atomically(conn, in_txn || rows.len() < 2, || {
        let mut changed = 0u64;
        for row in rows {
            bind(&mut stmt, row)?;
            changed += stmt.execute()?;
        }
        Ok(changed)
    })
}

/// Runs `f` inside BEGIN/COMMIT unless `already_atomic`; rolls back on error.
fn atomically<T>(
    conn: &Conn,
    already_atomic: bool,
    f: impl FnOnce() -> EngineResult<T>,
) -> EngineResult<T> {
    if already_atomic {
        return f();
    }
    conn.execute_batch("BEGIN TRANSACTION")?;
    match f() {
        Ok(v) => {
            conn.execute_batch("COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
