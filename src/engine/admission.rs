//! `--max-concurrent-queries` and `--max-queued-queries`: how many
//! statements stream at once (each pins a blocking thread and a DuckDB
//! connection until its client has read it), and how many more may wait for
//! a turn, first come first served (tokio's semaphore is fair). Past the
//! queue a query is refused at once with a retriable `UNAVAILABLE`, and so
//! is one that waited [`MAX_WAIT`]. Results executed but not fetched hold
//! their turns too; a waiting query asks the engine to drop the oldest
//! one that nobody fetched for a while (`evict`), so clients that never
//! fetch cannot keep everyone else waiting. Writes
//! through the update paths and commits are not admitted here, so readers
//! can never starve them of blocking threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{EngineError, EngineResult, ErrorClass};

/// Longest a query waits for its turn.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting query looks for an unfetched result to drop.
pub const EVICT_EVERY: Duration = Duration::from_millis(250);

pub struct Admission {
    running: Arc<Semaphore>,
    max_running: usize,
    queued: AtomicUsize,
    max_queued: usize,
}

/// A turn to run one statement; the next waiter runs when it is dropped.
pub type Turn = OwnedSemaphorePermit;

impl Admission {
    pub fn new(max_running: usize, max_queued: usize) -> Self {
        let max_running = max_running.max(1);
        Self {
            running: Arc::new(Semaphore::new(max_running)),
            max_running,
            queued: AtomicUsize::new(0),
            max_queued,
        }
    }

    /// Waits for a turn, or refuses when the queue is full. While it
    /// waits, `evict` is asked every [`EVICT_EVERY`] to free a turn held by
    /// a result nobody fetches (true when it dropped one).
    pub async fn enter(&self, evict: impl Fn() -> bool) -> EngineResult<Turn> {
        if let Ok(turn) = Arc::clone(&self.running).try_acquire_owned() {
            return Ok(turn);
        }
        let waiting = self.queued.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(&self.queued);
        if waiting >= self.max_queued {
            return Err(EngineError::new(
                ErrorClass::Unavailable,
                format!(
                    "the server runs {} queries, the most --max-concurrent-queries allows, and \
                     {waiting} more wait (--max-queued-queries): retry later",
                    self.max_running
                ),
            ));
        }
        // One acquire future for the whole wait keeps this query's place.
        let turn = Arc::clone(&self.running).acquire_owned();
        tokio::pin!(turn);
        let give_up = tokio::time::sleep(MAX_WAIT);
        tokio::pin!(give_up);
        evict();
        loop {
            tokio::select! {
                got = &mut turn => {
                    return got.map_err(|_| {
                        EngineError::new(ErrorClass::Unavailable, "the server is stopping")
                    });
                }
                _ = &mut give_up => {
                    return Err(EngineError::new(
                        ErrorClass::Unavailable,
                        format!(
                            "waited {}s for one of the --max-concurrent-queries ({}) turns: \
                             fetch or close the results already executed, or retry later",
                            MAX_WAIT.as_secs(),
                            self.max_running
                        ),
                    ));
                }
                _ = tokio::time::sleep(EVICT_EVERY) => {
                    evict();
                }
            }
        }
    }

    /// Statements running and waiting now.
    pub fn load(&self) -> (usize, usize) {
        (
            self.max_running - self.running.available_permits(),
            self.queued.load(Ordering::SeqCst),
        )
    }
}

/// Leaves the queue however the wait ends (a turn, or the caller gone).
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_is_bounded_and_first_come_first_served() {
        let a = Arc::new(Admission::new(1, 1));
        let first = a.enter(|| false).await.expect("a free turn");
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.enter(|| false).await.map(|_| ()) })
        };
        while a.load().1 == 0 {
            tokio::task::yield_now().await;
        }
        let refused = a.enter(|| false).await.expect_err("the queue is full");
        assert_eq!(refused.class, ErrorClass::Unavailable);
        assert_eq!(a.load(), (1, 1));
        drop(first);
        waiter
            .await
            .expect("joins")
            .expect("the waiter gets its turn");
        assert_eq!(a.load(), (0, 0));
        let _turn = a.enter(|| false).await.expect("free again");
    }

    #[tokio::test]
    async fn a_waiting_query_frees_a_turn_held_by_an_unread_result() {
        let a = Admission::new(1, 4);
        let unread = parking_lot::Mutex::new(Some(a.enter(|| false).await.expect("free")));
        // The holder is dropped by the eviction callback, as the engine
        // drops a parked result nobody fetched.
        let turn = a.enter(|| unread.lock().take().is_some()).await;
        assert!(turn.is_ok(), "the evicted result's turn went to the waiter");
        assert!(unread.lock().is_none());
    }
}
