//! Stored results of `POST /api/v1/query`, fetched later by id with
//! `GET /api/v1/query/result/{id}`. Retention is bounded: a result is kept
//! for [`TTL`] after it finished, at most [`MAX_RESULTS`] of them and at
//! most `max_bytes` of JSON together; beyond that the oldest go first (a
//! query evicted while it runs is aborted, which interrupts DuckDB). A
//! result can be fetched any number of times while it is kept.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use parking_lot::Mutex;

/// How long a finished result is kept.
pub const TTL: Duration = Duration::from_secs(3600);
/// How many results are kept at most (running ones included).
pub const MAX_RESULTS: usize = 1000;

pub enum Stored {
    Running {
        month: String,
    },
    Done {
        month: String,
        status: StatusCode,
        body: Bytes,
    },
}

struct Entry {
    stored: Stored,
    at: Instant,
    /// The task computing a running result.
    task: Option<tokio::task::AbortHandle>,
}

pub struct ResultStore {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Ids, oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

impl ResultStore {
    pub fn new(max_bytes: usize) -> ResultStore {
        ResultStore {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Registers a query that started.
    pub fn start(&self, id: &str, month: &str) {
        let mut s = self.inner.lock();
        s.entries.insert(
            id.to_string(),
            Entry {
                stored: Stored::Running {
                    month: month.to_string(),
                },
                at: Instant::now(),
                task: None,
            },
        );
        s.order.push_back(id.to_string());
        self.evict(&mut s);
    }

    /// Ties a running result to the task computing it, which is aborted if
    /// the result is evicted first (or at once, if it already was).
    pub fn attach(&self, id: &str, task: tokio::task::AbortHandle) {
        let mut s = self.inner.lock();
        match s.entries.get_mut(id) {
            Some(e) if matches!(e.stored, Stored::Running { .. }) => e.task = Some(task),
            Some(_) => {}
            None => task.abort(),
        }
    }

    /// Stores a finished query's answer (dropped if it was evicted while
    /// running).
    pub fn finish(&self, id: &str, status: StatusCode, body: Bytes) {
        let mut s = self.inner.lock();
        let len = body.len();
        let Some(e) = s.entries.get_mut(id) else {
            return;
        };
        let month = match &e.stored {
            Stored::Running { month } | Stored::Done { month, .. } => month.clone(),
        };
        e.stored = Stored::Done {
            month,
            status,
            body,
        };
        e.at = Instant::now();
        e.task = None;
        s.bytes += len;
        self.evict(&mut s);
    }

    /// A copy of the entry (bodies are reference-counted).
    pub fn get(&self, id: &str) -> Option<Stored> {
        let mut s = self.inner.lock();
        self.evict(&mut s);
        s.entries.get(id).map(|e| match &e.stored {
            Stored::Running { month } => Stored::Running {
                month: month.clone(),
            },
            Stored::Done {
                month,
                status,
                body,
            } => Stored::Done {
                month: month.clone(),
                status: *status,
                body: body.clone(),
            },
        })
    }

    fn evict(&self, s: &mut Inner) {
        let now = Instant::now();
        while let Some(id) = s.order.front().cloned() {
            let over = s.order.len() > MAX_RESULTS || s.bytes > self.max_bytes;
            let expired = s.entries.get(&id).is_none_or(|e| {
                matches!(e.stored, Stored::Done { .. }) && now.duration_since(e.at) > TTL
            });
            if !(over || expired) {
                break;
            }
            s.order.pop_front();
            match s.entries.remove(&id) {
                Some(Entry {
                    stored: Stored::Done { body, .. },
                    ..
                }) => s.bytes -= body.len(),
                Some(Entry {
                    task: Some(task), ..
                }) => task.abort(),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_results_go_first_beyond_the_byte_bound() {
        let store = ResultStore::new(10);
        for id in ["a", "b", "c"] {
            store.start(id, "2026-01");
            store.finish(id, StatusCode::OK, Bytes::from_static(b"12345"));
        }
        assert!(store.get("a").is_none(), "a was evicted");
        assert!(matches!(store.get("b"), Some(Stored::Done { .. })));
        assert!(matches!(store.get("c"), Some(Stored::Done { .. })));
        store.start("d", "2026-01");
        assert!(matches!(store.get("d"), Some(Stored::Running { .. })));
    }

    #[tokio::test]
    async fn a_query_evicted_while_it_runs_is_aborted() {
        let store = ResultStore::new(usize::MAX);
        store.start("slow", "2026-01");
        let task = tokio::spawn(std::future::pending::<()>());
        store.attach("slow", task.abort_handle());
        for i in 0..MAX_RESULTS {
            store.start(&format!("q{i}"), "2026-01");
        }
        assert!(store.get("slow").is_none(), "evicted");
        let ended = task.await.expect_err("aborted, not finished");
        assert!(ended.is_cancelled());
        // Attaching to a result already gone aborts at once.
        let late = tokio::spawn(std::future::pending::<()>());
        store.attach("slow", late.abort_handle());
        assert!(late.await.expect_err("aborted").is_cancelled());
    }
}
