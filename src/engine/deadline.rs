//! Stopping a running statement: `--query-timeout`, and a client that went
//! away (cancelled its call, closed its connection, dropped the stream).
//!
//! The watchdog may interrupt a connection only while the statement it
//! watches runs on it: the executing thread arms the slot with the
//! connection before it starts and disarms it (under the same lock the
//! watchdog interrupts under) before the connection goes back to its pool.
//! A deadline that fires before the statement starts (it waited for its
//! transaction's connection) is remembered, and the statement never runs.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::duck::{Conn, InterruptHandle};

use super::error::{EngineError, EngineResult, ErrorClass};

const RUNNING: u8 = 0;
const TIMED_OUT: u8 = 1;
const CANCELLED: u8 = 2;

#[derive(Clone)]
pub struct Deadline {
    timeout: Option<Duration>,
    slot: Arc<Mutex<Option<InterruptHandle>>>,
    fired: Arc<AtomicU8>,
}

impl Deadline {
    /// Starts the clock (a tokio task) when there is a timeout; the deadline
    /// can be cancelled either way.
    pub fn start(timeout: Option<Duration>) -> Deadline {
        let d = Deadline {
            timeout,
            slot: Arc::new(Mutex::new(None)),
            fired: Arc::new(AtomicU8::new(RUNNING)),
        };
        if let Some(t) = timeout {
            let watch = d.clone();
            tokio::spawn(async move {
                tokio::time::sleep(t).await;
                watch.fire(TIMED_OUT);
            });
        }
        d
    }

    /// Stops the statement now (the client is gone).
    pub fn cancel(&self) {
        self.fire(CANCELLED);
    }

    fn fire(&self, why: u8) {
        let slot = self.slot.lock();
        let _ = self
            .fired
            .compare_exchange(RUNNING, why, Ordering::SeqCst, Ordering::SeqCst);
        if let Some(h) = slot.as_ref() {
            // SAFETY: the slot holds a handle only while its connection
            // runs the watched statement, and disarming takes this lock.
            unsafe { h.interrupt() };
        }
    }

    /// The error of a deadline that fired: `e` says what it stopped.
    fn outcome(&self, e: EngineError) -> EngineError {
        match self.fired.load(Ordering::SeqCst) {
            TIMED_OUT => EngineError::new(
                ErrorClass::DeadlineExceeded,
                format!(
                    "statement exceeded the query timeout of {:?} ({})",
                    self.timeout.unwrap_or_default(),
                    e.message
                ),
            ),
            CANCELLED => EngineError::new(
                ErrorClass::Cancelled,
                format!("the call was cancelled ({})", e.message),
            ),
            _ => e,
        }
    }

    /// Runs `f`, which leaves the connection alone (it sends results to the
    /// client), with the slot disarmed: a client that goes away meanwhile
    /// must not interrupt a connection that runs nothing, because DuckDB
    /// keeps such an interrupt for the connection's next statement, which
    /// inside a transaction then fails and aborts it. The slot is armed
    /// again afterwards, unless the deadline fired meanwhile: then the error
    /// says why, and the caller stops without asking DuckDB for more.
    pub fn outside<R>(&self, f: impl FnOnce() -> R) -> EngineResult<R> {
        let handle = self.slot.lock().take();
        let out = f();
        let mut slot = self.slot.lock();
        if self.fired.load(Ordering::SeqCst) != RUNNING {
            return Err(self.outcome(EngineError::new(
                ErrorClass::Cancelled,
                "while its results were sent",
            )));
        }
        *slot = handle;
        Ok(out)
    }

    /// Runs `f` on `conn` under this deadline; a statement interrupted by it
    /// fails with DEADLINE_EXCEEDED (timeout) or CANCELLED.
    pub fn run<R>(
        deadline: Option<&Deadline>,
        conn: &Conn,
        f: impl FnOnce(&Conn) -> EngineResult<R>,
    ) -> EngineResult<R> {
        let Some(d) = deadline else { return f(conn) };
        {
            let mut slot = d.slot.lock();
            if d.fired.load(Ordering::SeqCst) != RUNNING {
                return Err(d.outcome(EngineError::new(
                    ErrorClass::Cancelled,
                    "before it started: it waited for its connection",
                )));
            }
            *slot = Some(conn.interrupt_handle());
        }
        let out = f(conn);
        *d.slot.lock() = None;
        out.map_err(|e| d.outcome(e))
    }
}
