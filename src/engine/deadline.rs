//! `--query-timeout`: interrupts a statement that runs (or streams) for too
//! long.
//!
//! The watchdog may interrupt a connection only while the statement it timed
//! runs on it: the executing thread arms the slot with the connection before
//! it starts and disarms it (under the same lock the watchdog interrupts
//! under) before the connection goes back to its pool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::duck::{Conn, InterruptHandle};

use super::error::{EngineError, EngineResult, ErrorClass};

#[derive(Clone)]
pub struct Deadline {
    timeout: Duration,
    slot: Arc<Mutex<Option<InterruptHandle>>>,
    fired: Arc<AtomicBool>,
}

impl Deadline {
    /// Starts the clock (a tokio task); `None` when there is no timeout.
    pub fn start(timeout: Option<Duration>) -> Option<Deadline> {
        let timeout = timeout?;
        let d = Deadline {
            timeout,
            slot: Arc::new(Mutex::new(None)),
            fired: Arc::new(AtomicBool::new(false)),
        };
        let watch = d.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let slot = watch.slot.lock();
            if let Some(h) = slot.as_ref() {
                watch.fired.store(true, Ordering::SeqCst);
                // SAFETY: the slot holds a handle only while its connection
                // runs the timed statement, and disarming takes this lock.
                unsafe { h.interrupt() };
            }
        });
        Some(d)
    }

    /// Runs `f` on `conn` under this deadline; a statement interrupted by it
    /// fails with DEADLINE_EXCEEDED.
    pub fn run<R>(
        deadline: Option<&Deadline>,
        conn: &Conn,
        f: impl FnOnce(&Conn) -> EngineResult<R>,
    ) -> EngineResult<R> {
        let Some(d) = deadline else { return f(conn) };
        *d.slot.lock() = Some(conn.interrupt_handle());
        let out = f(conn);
        *d.slot.lock() = None;
        match out {
            Err(e) if d.fired.load(Ordering::SeqCst) => Err(EngineError::new(
                ErrorClass::DeadlineExceeded,
                format!(
                    "statement exceeded the query timeout of {:?} ({})",
                    d.timeout, e.message
                ),
            )),
            other => other,
        }
    }
}
