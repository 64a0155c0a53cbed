//! Per-client server state: sessions, transactions, prepared statements and
//! parked results, each with an idle timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;

use crate::duck::Conn;

use super::classify::StatementKind;
use super::month::MonthId;

pub struct Session {
    pub catalog: Option<MonthId>,
    /// The session's own connection per month (its temp objects, its state).
    pub conns: HashMap<MonthId, Arc<Mutex<Conn>>>,
    pub last_used: Instant,
    /// The user who opened it (nobody else may use it).
    pub owner: String,
    /// The session's `query_timeout` (never above `--query-timeout`).
    pub query_timeout: Option<std::time::Duration>,
}

pub struct Transaction {
    pub month: MonthId,
    pub conn: Arc<Mutex<Conn>>,
    /// The id its captured rows carry (see `capture::begin`).
    pub capture_id: u64,
    pub last_used: Instant,
    /// The user who began it (nobody else may use it).
    pub owner: String,
}

pub struct PreparedEntry {
    pub sql: String,
    pub month: MonthId,
    pub session: Option<String>,
    pub transaction: Option<String>,
    /// `x-duckflock-months` at prepare time: a cross-month read.
    pub months: Option<String>,
    pub kind: StatementKind,
    pub params: Vec<RecordBatch>,
    /// Bytes `params` hold (see `prepared::MAX_BOUND_BYTES`).
    pub param_bytes: usize,
    pub last_used: Instant,
    /// The user who prepared it (nobody else may use it).
    pub owner: String,
}

/// A started statement waiting for its fetch.
pub struct Parked {
    pub stream: super::BatchStream,
    pub created: Instant,
    /// The user who started it (only they may fetch it).
    pub owner: String,
}

#[derive(Default)]
pub struct State {
    pub sessions: Mutex<HashMap<String, Session>>,
    pub transactions: Mutex<HashMap<String, Transaction>>,
    pub prepared: Mutex<HashMap<String, PreparedEntry>>,
    pub parked: Mutex<HashMap<String, Parked>>,
}

/// Idle limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub session: Duration,
    pub transaction: Duration,
    pub prepared: Duration,
    pub parked: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            session: Duration::from_secs(15 * 60),
            transaction: Duration::from_secs(10 * 60),
            prepared: Duration::from_secs(30 * 60),
            parked: Duration::from_secs(60),
        }
    }
}

impl State {
    /// Drops everything idle for longer than its limit. Dropping a
    /// transaction's connection makes DuckDB roll it back.
    pub fn expire(&self, t: &Timeouts) -> usize {
        let now = Instant::now();
        let mut n = 0;
        {
            let mut m = self.sessions.lock();
            let b = m.len();
            m.retain(|_, s| now.duration_since(s.last_used) < t.session);
            n += b - m.len();
        }
        let expired_txns: Vec<Transaction> = {
            let mut m = self.transactions.lock();
            let ids: Vec<String> = m
                .iter()
                .filter(|(_, x)| now.duration_since(x.last_used) >= t.transaction)
                .map(|(k, _)| k.clone())
                .collect();
            ids.iter().filter_map(|k| m.remove(k)).collect()
        };
        n += expired_txns.len();
        drop(expired_txns);
        {
            let mut m = self.prepared.lock();
            let b = m.len();
            m.retain(|_, p| now.duration_since(p.last_used) < t.prepared);
            n += b - m.len();
        }
        {
            let mut m = self.parked.lock();
            let b = m.len();
            m.retain(|_, p| now.duration_since(p.created) < t.parked);
            n += b - m.len();
        }
        n
    }
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
