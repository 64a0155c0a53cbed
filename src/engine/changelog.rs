//! The in-memory side of a month's change log: the commit lock that orders
//! change sets by LSN, the last committed LSN that appliers wait on, the
//! transaction-id counter, and recent commit times for lag in milliseconds.
//! The durable side is the `__duckflock.changes` table in `node_0.db`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex, MutexGuard};

/// How many recent commit times are kept (for lag in milliseconds).
const RECENT_COMMITS: usize = 4096;

pub struct CommitState {
    /// The LSN of the last committed change set.
    pub last_lsn: u64,
    /// Sequence positions already shipped (`"schema"."name"` → last value).
    pub shipped_seqs: HashMap<String, i64>,
}

pub struct ChangeLog {
    /// Random id of this month's history, minted with the primary file.
    pub epoch: String,
    commit: Mutex<CommitState>,
    /// Mirrors `commit.last_lsn` for readers that must not wait on commits.
    published: Mutex<u64>,
    published_cv: Condvar,
    next_txn: AtomicU64,
    recent: Mutex<VecDeque<(u64, SystemTime)>>,
    stopped: AtomicBool,
    /// Change sets up to here were pruned from the log.
    pruned: AtomicU64,
    /// Woken whenever a replica applied something (read-your-writes, sync).
    pub applied: tokio::sync::Notify,
    /// Tables of the primary whose scans still miss rows after a commit
    /// (DuckDB 2.0.0's defect, see `visibility`): the janitor checkpoints
    /// and checks them again.
    hiding: Mutex<BTreeSet<String>>,
}

impl ChangeLog {
    pub fn new(epoch: String, last_lsn: u64, next_txn: u64) -> ChangeLog {
        ChangeLog {
            epoch,
            commit: Mutex::new(CommitState {
                last_lsn,
                shipped_seqs: HashMap::new(),
            }),
            published: Mutex::new(last_lsn),
            published_cv: Condvar::new(),
            next_txn: AtomicU64::new(next_txn),
            recent: Mutex::new(VecDeque::new()),
            stopped: AtomicBool::new(false),
            pruned: AtomicU64::new(0),
            applied: tokio::sync::Notify::new(),
            hiding: Mutex::new(BTreeSet::new()),
        }
    }

    /// Records tables of the primary that still hide rows.
    pub fn still_hiding(&self, tables: Vec<String>) {
        if !tables.is_empty() {
            self.hiding.lock().extend(tables);
        }
    }

    /// Takes the tables to check again.
    pub fn take_hiding(&self) -> Vec<String> {
        std::mem::take(&mut *self.hiding.lock())
            .into_iter()
            .collect()
    }

    /// A fresh id for a write transaction on the primary.
    pub fn new_txn(&self) -> u64 {
        self.next_txn.fetch_add(1, Ordering::Relaxed)
    }

    /// Held while a change set gets its LSN and commits, and while a replica
    /// copies the primary file (so no commit lands half-way).
    pub fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.commit.lock()
    }

    /// Records a commit (call with the lock held, after COMMIT succeeded).
    pub fn committed(&self, state: &mut CommitState, lsn: u64) {
        state.last_lsn = lsn;
        {
            let mut recent = self.recent.lock();
            recent.push_back((lsn, SystemTime::now()));
            while recent.len() > RECENT_COMMITS {
                recent.pop_front();
            }
        }
        *self.published.lock() = lsn;
        self.published_cv.notify_all();
    }

    pub fn last_lsn(&self) -> u64 {
        *self.published.lock()
    }

    /// Blocks until the log is past `lsn`, the log stops, or `timeout`.
    pub fn wait_past(&self, lsn: u64, timeout: Duration) -> u64 {
        let mut p = self.published.lock();
        if *p <= lsn && !self.is_stopped() {
            self.published_cv.wait_for(&mut p, timeout);
        }
        *p
    }

    /// When the change set `lsn` committed, if it is recent enough to know.
    pub fn commit_time(&self, lsn: u64) -> Option<SystemTime> {
        let recent = self.recent.lock();
        let first = recent.front()?.0;
        let i = lsn.checked_sub(first)? as usize;
        recent.get(i).filter(|(l, _)| *l == lsn).map(|(_, t)| *t)
    }

    /// Stops the appliers (the month is closing).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _p = self.published.lock();
        self.published_cv.notify_all();
    }

    pub fn pruned(&self) -> u64 {
        self.pruned.load(Ordering::SeqCst)
    }

    pub fn set_pruned(&self, lsn: u64) {
        self.pruned.store(lsn, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}
