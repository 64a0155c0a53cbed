//! A node: one DuckDB file, opened exactly once, with a small pool of idle
//! connections. A month owns a set of nodes (`node_0` is the primary).

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::duck::{Conn, Database, DbOptions};

use super::error::EngineResult;
use super::hidden;

/// How many idle connections a node keeps for reuse.
const MAX_IDLE: usize = 32;

pub struct Node {
    db: Arc<Database>,
    idle: Mutex<Vec<Conn>>,
    /// Statements running on the file now, and since when it has been busy
    /// without a break (`engine::lending` lends memory to long ones).
    running: AtomicUsize,
    busy_since: Mutex<Option<Instant>>,
    /// The `memory_limit` / `max_temp_directory_size` last set (bytes).
    limit: AtomicU64,
    temp: AtomicU64,
    /// Its even share of the budget (the lender may lend it away while the
    /// file is idle).
    even: AtomicU64,
}

/// Marks its node busy while alive.
pub struct Busy<'a>(&'a Node);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.0.busy_since.lock() = None;
        }
    }
}

impl Node {
    pub fn open(path: &Path, opts: &DbOptions) -> EngineResult<Arc<Node>> {
        let db = Database::open(path, opts)?;
        let limit = opts.memory_limit.as_deref().and_then(mib).unwrap_or(0);
        let temp = opts.max_temp_size.as_deref().and_then(mib).unwrap_or(0);
        Ok(Arc::new(Node {
            db,
            idle: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            busy_since: Mutex::new(None),
            limit: AtomicU64::new(limit),
            temp: AtomicU64::new(temp),
            even: AtomicU64::new(limit),
        }))
    }

    /// Counts a running statement until the guard drops.
    pub fn busy(&self) -> Busy<'_> {
        if self.running.fetch_add(1, Ordering::SeqCst) == 0 {
            self.busy_since.lock().get_or_insert_with(Instant::now);
            // Shrunk while idle: the statement starts with the even share
            // back (DuckDB sizes some operators by the limit at the start).
            if self.limit.load(Ordering::SeqCst) < self.even.load(Ordering::SeqCst) {
                super::lending::wake_and_wait();
            }
        }
        Busy(self)
    }

    /// Statements running on the file now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// How long the file has had statements running without a break.
    pub fn busy_for(&self) -> Option<Duration> {
        self.busy_since.lock().map(|t| t.elapsed())
    }

    /// The `memory_limit` and `max_temp_directory_size` last set.
    pub fn limits(&self) -> (u64, u64) {
        (
            self.limit.load(Ordering::SeqCst),
            self.temp.load(Ordering::SeqCst),
        )
    }

    /// A connection from the pool (or a new one). Returned to the pool when
    /// the lease is dropped.
    pub fn lease(self: &Arc<Self>) -> EngineResult<Lease> {
        let conn = match self.idle.lock().pop() {
            Some(c) => c,
            None => self.connect()?,
        };
        Ok(Lease::Pooled {
            conn: Some(conn),
            node: Arc::clone(self),
        })
    }

    /// Sets the file's DuckDB `memory_limit` and, when `--max-temp-size`
    /// is set (`temp` > 0), its `max_temp_directory_size`: its shares of
    /// the budgets. A failure is logged, the previous limit stays.
    pub fn set_memory_limit(&self, bytes: u64, temp: u64) {
        self.even.store(bytes.max(MIN_LIMIT), Ordering::SeqCst);
        if let Err(e) = self.try_set_limits(bytes, temp) {
            tracing::warn!(error = %e, "could not set memory_limit");
        }
    }

    /// Sets the limits, or fails (DuckDB refuses to lower `memory_limit`
    /// below what it cannot evict) leaving the old ones.
    pub fn try_set_limits(&self, bytes: u64, temp: u64) -> EngineResult<()> {
        let bytes = bytes.max(MIN_LIMIT);
        let conn = self.bare()?;
        conn.execute_batch(&format!(
            "SET GLOBAL memory_limit = '{}'",
            memory_setting(bytes)
        ))?;
        self.limit.store(bytes, Ordering::SeqCst);
        if temp > 0 {
            let temp = temp.max(MIN_LIMIT);
            conn.execute_batch(&format!(
                "SET GLOBAL max_temp_directory_size = '{}'",
                memory_setting(temp)
            ))?;
            self.temp.store(temp, Ordering::SeqCst);
        }
        Ok(())
    }

    /// A dedicated connection (sessions, transactions). Like every
    /// connection handed out, its catalog functions hide the server's
    /// bookkeeping ([`hidden`]).
    pub fn connect(&self) -> EngineResult<Conn> {
        let conn = self.db.connect()?;
        hidden::install(&conn)?;
        Ok(conn)
    }

    /// A connection for the server's own queries only (status, settings,
    /// verification): without the catalog filters of [`hidden`], which
    /// would cost a few statements each time.
    pub fn bare(&self) -> EngineResult<Conn> {
        Ok(self.db.connect()?)
    }

    /// Closes the pooled idle connections.
    pub fn drop_idle(&self) {
        self.idle.lock().clear();
    }

    /// True when no connection to this file is in use (idle pool ones aside).
    pub fn unused(&self) -> bool {
        let idle = self.idle.lock();
        Arc::strong_count(&self.db) == 1 + idle.len()
    }

    fn give_back(&self, conn: Conn) {
        // A connection that ran a client's DDL may hold its temp objects,
        // which would shadow tables for the next client: closed instead.
        if conn.is_spent() {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Flushes the WAL into the database file.
    pub fn checkpoint(&self) -> EngineResult<()> {
        let conn = self.db.connect()?;
        conn.execute_batch("CHECKPOINT")?;
        Ok(())
    }
}

/// A connection a request may use: either borrowed from a node's pool or a
/// session's/transaction's dedicated connection.
pub enum Lease {
    Pooled {
        conn: Option<Conn>,
        node: Arc<Node>,
    },
    /// A session's or transaction's connection, on `node`.
    Shared(Arc<Mutex<Conn>>, Arc<Node>),
}

impl Lease {
    /// Runs `f` with the connection (blocking; call from a blocking thread).
    pub fn with<R>(&mut self, f: impl FnOnce(&Conn) -> EngineResult<R>) -> EngineResult<R> {
        match self {
            Lease::Pooled { conn, node } => {
                if conn.is_none() {
                    *conn = Some(node.connect()?);
                }
                let _busy = node.busy();
                match conn.as_ref() {
                    Some(c) => f(c),
                    None => Err(super::error::EngineError::internal("no connection")),
                }
            }
            Lease::Shared(m, node) => {
                let guard = m.lock();
                let _busy = node.busy();
                f(&guard)
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Lease::Pooled { conn, node } = self {
            if let Some(c) = conn.take() {
                node.give_back(c);
            }
        }
    }
}

/// The smallest limit the engine sets.
pub(super) const MIN_LIMIT: u64 = 16 << 20;

/// Bytes of a [`memory_setting`] value.
fn mib(s: &str) -> Option<u64> {
    s.strip_suffix("MiB")?.parse::<u64>().ok().map(|m| m << 20)
}

/// A byte count as a DuckDB `memory_limit` value (at least 16 MiB).
pub(super) fn memory_setting(bytes: u64) -> String {
    format!("{}MiB", (bytes >> 20).max(16))
}
