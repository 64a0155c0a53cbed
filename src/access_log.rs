//! The access log: one `info` line per Flight call and HTTP request on the
//! `duckflock::access` target (JSON with `--log-format json`): door, user,
//! peer address, call, month, node, rows, bytes, duration and status. A
//! call's outermost layer opens a [`Note`] for it; the layers and handlers
//! inside fill in what only they know (the authenticated user, the rows
//! streamed), and the line is written when the response body ends, so a
//! stream is logged with its full size and its final status. Statement
//! text is logged by the engine at `debug` only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

/// What one call has told the log so far.
#[derive(Default)]
pub struct Note {
    user: Mutex<Option<String>>,
    month: Mutex<Option<String>>,
    rows: AtomicU64,
    bytes: AtomicU64,
}

impl Note {
    pub fn set_user(&self, user: &str) {
        *self.user.lock() = Some(user.to_string());
    }

    /// The month the call resolved to (when the request did not name it in
    /// a header or the query string).
    pub fn set_month(&self, month: &str) {
        *self.month.lock() = Some(month.to_string());
    }

    pub fn add_rows(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes of an answer built in full (a streamed one is counted by the
    /// door as it leaves).
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
}

tokio::task_local! {
    static CURRENT: Arc<Note>;
}

/// Runs a call's future with its note reachable through [`current`].
pub async fn scope<F: std::future::Future>(note: Arc<Note>, fut: F) -> F::Output {
    CURRENT.scope(note, fut).await
}

/// The note of the call this task serves (none outside a logged call).
pub fn current() -> Option<Arc<Note>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// One call being served, written out by [`Entry::finish`].
pub struct Entry {
    pub door: &'static str,
    pub call: String,
    pub peer: Option<SocketAddr>,
    pub month: Option<String>,
    pub node: Option<String>,
    pub bytes: u64,
    pub started: Instant,
    pub note: Arc<Note>,
}

impl Entry {
    pub fn new(door: &'static str, call: String, peer: Option<SocketAddr>) -> Entry {
        Entry {
            door,
            call,
            peer,
            month: None,
            node: None,
            bytes: 0,
            started: Instant::now(),
            note: Arc::new(Note::default()),
        }
    }

    pub fn finish(&self, status: &str) {
        let user = self.note.user.lock().clone();
        let month = self
            .note
            .month
            .lock()
            .clone()
            .or_else(|| self.month.clone());
        tracing::info!(
            target: "duckflock::access",
            door = self.door,
            user = user.as_deref().unwrap_or("-"),
            peer = %self.peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            call = %self.call,
            month = month.as_deref().unwrap_or("-"),
            node = self.node.as_deref().unwrap_or("-"),
            rows = self.note.rows.load(Ordering::Relaxed),
            bytes = self.bytes.max(self.note.bytes.load(Ordering::Relaxed)),
            ms = self.started.elapsed().as_secs_f64() * 1e3,
            status,
            "access"
        );
    }
}
