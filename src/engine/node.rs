//! A node: one DuckDB file, opened exactly once, with a small pool of idle
//! connections. A month owns a set of nodes (`node_0` is the primary).

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::duck::{Conn, Database, DbOptions};

use super::error::EngineResult;
use super::hidden;

/// How many idle connections a node keeps for reuse.
const MAX_IDLE: usize = 32;

pub struct Node {
    db: Arc<Database>,
    idle: Mutex<Vec<Conn>>,
}

impl Node {
    pub fn open(path: &Path, opts: &DbOptions) -> EngineResult<Arc<Node>> {
        let db = Database::open(path, opts)?;
        Ok(Arc::new(Node {
            db,
            idle: Mutex::new(Vec::new()),
        }))
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

    /// Sets the file's DuckDB `memory_limit` (its share of the budget);
    /// a failure is logged, the previous limit stays.
    pub fn set_memory_limit(&self, bytes: u64) {
        let sql = format!("SET GLOBAL memory_limit = '{}'", memory_setting(bytes));
        if let Err(e) = self.bare().and_then(|c| Ok(c.execute_batch(&sql)?)) {
            tracing::warn!(error = %e, "could not set memory_limit");
        }
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
    Pooled { conn: Option<Conn>, node: Arc<Node> },
    Shared(Arc<Mutex<Conn>>),
}

impl Lease {
    /// Runs `f` with the connection (blocking; call from a blocking thread).
    pub fn with<R>(&mut self, f: impl FnOnce(&Conn) -> EngineResult<R>) -> EngineResult<R> {
        match self {
            Lease::Pooled { conn, node } => {
                if conn.is_none() {
                    *conn = Some(node.connect()?);
                }
                match conn.as_ref() {
                    Some(c) => f(c),
                    None => Err(super::error::EngineError::internal("no connection")),
                }
            }
            Lease::Shared(m) => {
                let guard = m.lock();
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

/// A byte count as a DuckDB `memory_limit` value (at least 16 MiB).
pub(super) fn memory_setting(bytes: u64) -> String {
    format!("{}MiB", (bytes >> 20).max(16))
}
