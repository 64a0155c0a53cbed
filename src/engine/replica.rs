//! Replicas of a month: their state (applied LSN, health), the applier
//! thread that keeps each one up to date, and bootstrap/repair by copying the
//! primary file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::duck::DbOptions;

use super::apply;
use super::capture;
use super::catalog::rows;
use super::changelog::ChangeLog;
use super::error::{EngineError, EngineResult};
use super::months::{Month, ReplicaSettings, INTERNAL_SCHEMA as S};
use super::node::{memory_setting, Node};
use super::unsynced;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Being opened, checked or rebuilt: not serving reads.
    Starting = 0,
    Healthy = 1,
    /// Applying failed; will be rebuilt.
    Failed = 2,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Starting => "rebuilding",
            Health::Healthy => "healthy",
            Health::Failed => "failed",
        }
    }
}

pub struct Replica {
    pub index: usize,
    pub path: PathBuf,
    node: RwLock<Option<Arc<Node>>>,
    applied: AtomicU64,
    health: AtomicU8,
    pub last_error: Mutex<Option<String>>,
    /// Set by `resync_replica`: rebuild at the next opportunity.
    rebuild: AtomicBool,
    /// The applier applies nothing after this LSN (`u64::MAX`: no limit);
    /// the verifier holds a replica at the LSN it checks.
    hold: AtomicU64,
    /// The last verification of this replica against its primary.
    pub verified: Mutex<Option<Verified>>,
    /// Verifications that found this replica different from its primary,
    /// and batches whose apply failed (a self-check or an error), since the
    /// server started.
    pub mismatches: AtomicU64,
    pub apply_failures: AtomicU64,
    /// Set when the applier has stopped and released the file.
    closed: AtomicBool,
}

/// The outcome of one verification of a replica.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    /// When it ran (RFC 3339, UTC).
    pub at: String,
    /// The LSN both sides were compared at.
    pub lsn: u64,
    /// `ok`, `mismatch` or `not_checked`.
    pub result: &'static str,
    /// What differed, or why the replica was not checked.
    pub detail: Option<String>,
}

impl Replica {
    pub fn new(index: usize, path: PathBuf) -> Replica {
        Replica {
            index,
            path,
            node: RwLock::new(None),
            applied: AtomicU64::new(0),
            health: AtomicU8::new(Health::Starting as u8),
            last_error: Mutex::new(None),
            rebuild: AtomicBool::new(false),
            hold: AtomicU64::new(u64::MAX),
            verified: Mutex::new(None),
            mismatches: AtomicU64::new(0),
            apply_failures: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Stops the applier after `lsn` (see [`Replica::release`]).
    pub fn hold_at(&self, lsn: u64) {
        self.hold.store(lsn, Ordering::SeqCst);
    }

    pub fn release(&self) {
        self.hold.store(u64::MAX, Ordering::SeqCst);
    }

    /// Marks the replica failed (its applier rebuilds it) with the reason.
    pub fn fail(&self, why: String) {
        *self.last_error.lock() = Some(why);
        self.set_health(Health::Failed);
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::SeqCst) {
            1 => Health::Healthy,
            2 => Health::Failed,
            _ => Health::Starting,
        }
    }

    fn set_health(&self, h: Health) {
        self.health.store(h as u8, Ordering::SeqCst);
    }

    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// The node, if it serves reads now.
    pub fn serving(&self) -> Option<Arc<Node>> {
        if self.health() != Health::Healthy {
            return None;
        }
        self.node.read().clone()
    }

    pub fn node(&self) -> Option<Arc<Node>> {
        self.node.read().clone()
    }

    /// Whether the applier has stopped and released the file.
    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Asks the applier to rebuild the replica; it stops serving reads (and
    /// `sync` waits for it) from now on, not from when the applier wakes.
    pub fn request_rebuild(&self) {
        self.rebuild.store(true, Ordering::SeqCst);
        self.set_health(Health::Starting);
    }
}

/// Starts the applier thread of one replica.
pub fn spawn_applier(
    month: &Arc<Month>,
    replica: Arc<Replica>,
    opts: DbOptions,
    settings: ReplicaSettings,
) -> EngineResult<()> {
    let opts = DbOptions {
        unsynced: !settings.fsync,
        ..opts
    };
    let delay = settings.apply_delay;
    let weak = Arc::downgrade(month);
    let log = Arc::clone(&month.log);
    let name = format!("apply-{}-{}", month.id, replica.index);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || applier(weak, log, replica, opts, delay))
        .map_err(|e| EngineError::internal(format!("cannot start applier: {e}")))?;
    Ok(())
}

fn applier(
    month: Weak<Month>,
    log: Arc<ChangeLog>,
    replica: Arc<Replica>,
    opts: DbOptions,
    delay: Duration,
) {
    let mut backoff = Duration::from_millis(100);
    while !log.is_stopped() {
        if !delay.is_zero() && replica.applied() < log.last_lsn() {
            std::thread::sleep(delay);
        }
        let Some(m) = month.upgrade() else { break };
        let step = step(&m, &log, &replica, &opts);
        drop(m);
        match step {
            Ok(true) => {
                backoff = Duration::from_millis(100);
                log.applied.notify_waiters();
            }
            Ok(false) if replica.applied() >= replica.hold.load(Ordering::SeqCst) => {
                // Held by the verifier, which releases it within moments.
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(false) => {
                log.wait_past(replica.applied(), Duration::from_millis(500));
            }
            Err(e) => {
                tracing::warn!(replica = %replica.path.display(), error = %e, "replica failed; it will be rebuilt");
                replica.apply_failures.fetch_add(1, Ordering::SeqCst);
                *replica.last_error.lock() = Some(e.message.clone());
                replica.set_health(Health::Failed);
                log.applied.notify_waiters();
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    // Closing: release the file.
    if let Some(node) = replica.node.write().take() {
        settle(&replica, node);
    }
    replica.closed.store(true, Ordering::SeqCst);
}

/// One step of the applier: open/check/rebuild the replica if needed, or
/// apply the next batch. `Ok(true)` when something was done.
fn step(m: &Month, log: &ChangeLog, r: &Replica, opts: &DbOptions) -> EngineResult<bool> {
    if r.rebuild.swap(false, Ordering::SeqCst) || r.health() == Health::Failed {
        r.set_health(Health::Starting);
        close(r);
        rebuild(m, log, r, opts)?;
        r.set_health(Health::Healthy);
        *r.last_error.lock() = None;
        return Ok(true);
    }
    if r.health() == Health::Starting {
        if let Err(e) = open_existing(m, log, r, opts) {
            tracing::info!(replica = %r.path.display(), reason = %e, "rebuilding replica");
            close(r);
            rebuild(m, log, r, opts)?;
        }
        r.set_health(Health::Healthy);
        return Ok(true);
    }
    let upto = r.hold.load(Ordering::SeqCst);
    if r.applied() >= log.last_lsn().min(upto) {
        return Ok(false);
    }
    let node = r
        .node()
        .ok_or_else(|| EngineError::internal("replica is not open"))?;
    let mut please = m.primary().lease()?;
    let mut rlease = node.lease()?;
    let applied = r.applied();
    let last = please.with(|p| rlease.with(|c| apply::apply_batch(p, c, applied, upto)))?;
    r.applied.store(last, Ordering::SeqCst);
    Ok(last > applied)
}

/// Opens the replica file and checks it belongs to this primary's history
/// and is not behind the retained log.
fn open_existing(m: &Month, log: &ChangeLog, r: &Replica, opts: &DbOptions) -> EngineResult<()> {
    if !r.path.exists() {
        return Err(EngineError::not_found("file is missing"));
    }
    if let Some(why) = unsynced::torn(&r.path) {
        return Err(EngineError::invalid(why));
    }
    let node = open_node(m, r, opts)?;
    let meta = {
        let mut lease = node.lease()?;
        lease.with(|c| {
            rows(
                c,
                &format!(
                    "SELECT key, value FROM {S}.meta WHERE key IN ('epoch', 'role', 'applied_lsn')"
                ),
            )
        })?
    };
    let get = |k: &str| {
        meta.iter()
            .find(|r| r[0].as_deref() == Some(k))
            .and_then(|r| r[1].clone())
    };
    if get("epoch").as_deref() != Some(log.epoch.as_str())
        || get("role").as_deref() != Some("replica")
    {
        return Err(EngineError::invalid("file is from another history"));
    }
    let applied: u64 = get("applied_lsn")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| EngineError::invalid("no applied_lsn"))?;
    let pruned = {
        let mut lease = m.primary().lease()?;
        lease.with(capture::pruned_lsn)?
    };
    if applied > log.last_lsn() {
        return Err(EngineError::invalid("replica is ahead of the primary"));
    }
    if applied < log.last_lsn() && applied < pruned {
        return Err(EngineError::invalid("replica is behind the retained log"));
    }
    {
        let mut lease = node.lease()?;
        lease.with(capture::drop_replica_triggers)?;
    }
    r.applied.store(applied, Ordering::SeqCst);
    place(m, r, node);
    Ok(())
}

/// Opens the replica's file with the month's current share of the memory
/// budget.
fn open_node(m: &Month, r: &Replica, opts: &DbOptions) -> EngineResult<Arc<Node>> {
    let opts = DbOptions {
        memory_limit: Some(memory_setting(m.memory_share.load(Ordering::SeqCst))),
        max_temp_size: match m.temp_share.load(Ordering::SeqCst) {
            0 => opts.max_temp_size.clone(),
            t => Some(memory_setting(t)),
        },
        ..opts.spill_dir(&format!("{}/node_{}", m.id, r.index))
    };
    if opts.unsynced {
        unsynced::mark(&r.path)?;
    } else {
        unsynced::clear(&r.path)?;
    }
    Node::open(&r.path, &opts)
}

/// Closes a replica's file at shutdown: once nobody else holds it, DuckDB
/// closes it (a checkpoint) and, written without fsync, it is fsynced now,
/// so a clean shutdown needs no rebuild after a reboot.
fn settle(r: &Replica, node: Arc<Node>) {
    node.drop_idle();
    if Arc::strong_count(&node) > 1 || !node.unused() {
        return; // a reader (or the verifier) still holds it: the mark stays
    }
    drop(node);
    if let Err(e) = unsynced::clear(&r.path) {
        tracing::warn!(replica = %r.path.display(), error = %e.message, "replica not settled");
    }
}

/// Puts an opened file in the replica's slot, then applies the month's
/// memory share again: a rebalance that ran while the file was opening
/// stored the new share before visiting the open nodes, so either it saw
/// this node or this reads its share.
fn place(m: &Month, r: &Replica, node: Arc<Node>) {
    *r.node.write() = Some(Arc::clone(&node));
    node.set_memory_limit(
        m.memory_share.load(Ordering::SeqCst),
        m.temp_share.load(Ordering::SeqCst),
    );
}

/// Closes the replica's file once no reader holds it.
fn close(r: &Replica) {
    let Some(node) = r.node.write().take() else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    node.drop_idle();
    while Arc::strong_count(&node) > 1 || !node.unused() {
        if Instant::now() > deadline {
            tracing::warn!(replica = %r.path.display(), "readers still hold the old replica file");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        node.drop_idle();
    }
}

/// How long a rebuild waits for a moment without other write transactions.
const CHECKPOINT_PATIENCE: Duration = Duration::from_secs(10);

/// Rebuilds the replica from a copy of the primary, taken after a
/// checkpoint while no change set can commit.
fn rebuild(m: &Month, log: &ChangeLog, r: &Replica, opts: &DbOptions) -> EngineResult<()> {
    let started = Instant::now();
    let tmp = with_suffix(&r.path, ".rebuild");
    // DuckDB refuses to checkpoint while another write transaction is open
    // (an ingest, a client's transaction): release the commit lock, let them
    // finish, try again for a while before giving up (then the applier's
    // backoff retries the rebuild).
    let deadline = Instant::now() + CHECKPOINT_PATIENCE;
    let lsn = loop {
        let state = log.lock();
        match m.primary().checkpoint() {
            Ok(()) => {
                copy_file(&m.primary_path, &tmp)?;
                break state.last_lsn;
            }
            Err(e)
                if e.message.contains("other write transactions") && Instant::now() < deadline =>
            {
                drop(state);
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => return Err(e),
        }
    };
    let _ = std::fs::remove_file(with_suffix(&r.path, ".wal"));
    let _ = std::fs::remove_file(with_suffix(&tmp, ".wal"));
    std::fs::rename(&tmp, &r.path)
        .map_err(|e| EngineError::internal(format!("cannot place replica file: {e}")))?;
    let node = open_node(m, r, opts)?;
    {
        let mut lease = node.lease()?;
        lease.with(|c| capture::make_replica(c, lsn))?;
    }
    node.checkpoint()?;
    r.applied.store(lsn, Ordering::SeqCst);
    place(m, r, node);
    tracing::info!(replica = %r.path.display(), lsn, ms = started.elapsed().as_millis() as u64, "replica rebuilt from the primary");
    Ok(())
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn copy_file(from: &Path, to: &Path) -> EngineResult<()> {
    let io = |e: std::io::Error| EngineError::internal(format!("copying {}: {e}", from.display()));
    std::fs::copy(from, to).map_err(io)?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    Ok(())
}
