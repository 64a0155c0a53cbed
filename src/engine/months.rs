//! The months registry: knows every `data/YYYY-MM/` folder, opens a month's
//! files on first use and closes them when idle, creates a month on its first
//! write, and shares one memory budget among the open files. Every node file
//! is opened exactly once, here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::duck::{Conn, Database, DbOptions};

use super::capture;
use super::changelog::ChangeLog;
use super::error::{EngineError, EngineResult, ErrorClass};
use super::lending;
use super::month::MonthId;
use super::node::{memory_setting, Node};
use super::replica::{self, Replica};

/// Name of the schema holding the server's bookkeeping inside a node file;
/// metadata calls hide it.
pub const INTERNAL_SCHEMA: &str = "__duckflock";

pub struct Month {
    pub id: MonthId,
    /// `nodes[0]` is the primary (the only node that takes writes).
    pub nodes: Vec<Arc<Node>>,
    pub primary_path: PathBuf,
    /// The change log: LSN order, commit lock, appliers' wake-ups.
    pub log: Arc<ChangeLog>,
    /// `node_1..=N`, each kept up to date by its applier thread.
    pub replicas: Vec<Arc<Replica>>,
    /// Bytes of memory each of this month's files may use now (its share of
    /// the budget); a replica file opened later takes this value.
    pub memory_share: AtomicU64,
    /// Its share of `--max-temp-size` (0: not set, DuckDB's default).
    pub temp_share: AtomicU64,
}

impl Month {
    pub fn primary(&self) -> &Arc<Node> {
        &self.nodes[0]
    }

    /// True when nothing outside the registry uses this month: no handle to
    /// it, no lease of one of its nodes, no connection but idle pool ones.
    fn unused(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1
            && self
                .nodes
                .iter()
                .all(|n| Arc::strong_count(n) == 1 && n.unused())
            && self.replicas.iter().all(|r| {
                r.node()
                    .map(|n| Arc::strong_count(&n) == 2 && n.unused())
                    .unwrap_or(true)
            })
    }

    /// A random healthy replica that holds every committed write, else the
    /// primary, with its node number.
    pub fn read_node(&self) -> (Arc<Node>, usize) {
        let serving: Vec<(Arc<Node>, usize)> = self
            .replicas
            .iter()
            .filter(|r| r.applied() >= self.log.last_lsn())
            .filter_map(|r| r.serving().map(|n| (n, r.index)))
            .collect();
        if serving.is_empty() {
            return (Arc::clone(self.primary()), 0);
        }
        let i = rand::random_range(0..serving.len());
        serving
            .into_iter()
            .nth(i)
            .unwrap_or_else(|| (Arc::clone(self.primary()), 0))
    }

    /// Every open node file of the month (primary first).
    pub fn open_nodes(&self) -> Vec<Arc<Node>> {
        let mut out = self.nodes.clone();
        out.extend(self.replicas.iter().filter_map(|r| r.node()));
        out
    }
}

struct OpenMonth {
    month: Arc<Month>,
    last_used: Instant,
}

/// How each month's replicas run.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaSettings {
    /// Replicas per month (`--replicas`).
    pub count: usize,
    /// Whether a replica's file is fsynced at each commit
    /// (`--replica-fsync`). Without, a replica left by an operating-system
    /// crash is rebuilt before it serves (see [`super::replica`]).
    pub fsync: bool,
    /// Fault injection (`--apply-delay-ms`): appliers wait before each batch.
    pub apply_delay: Duration,
}

pub struct MonthRegistry {
    data_dir: PathBuf,
    replicas: ReplicaSettings,
    opts: DbOptions,
    /// Bytes of DuckDB memory shared by all open month files.
    budget: u64,
    /// Bytes of spill space shared by all open month files (0: unset).
    temp_budget: u64,
    known: RwLock<BTreeSet<MonthId>>,
    open: Mutex<BTreeMap<MonthId, OpenMonth>>,
    /// Serialises opening, creating and closing, so a file is opened once.
    lifecycle: Mutex<()>,
    void: Arc<Node>,
    /// Most months that may exist (`--max-months`).
    max_months: Option<usize>,
}

impl MonthRegistry {
    /// Scans the data dir for months (without opening them).
    pub fn open(
        data_dir: PathBuf,
        opts: DbOptions,
        budget: u64,
        temp_budget: Option<u64>,
        replicas: ReplicaSettings,
        max_months: Option<usize>,
    ) -> EngineResult<Self> {
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            EngineError::internal(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        // The scratch database answers reads of months that do not exist,
        // files in place among them: it takes part in the budget like a
        // node file (all of it while no month is open).
        let void_opts = DbOptions {
            memory_limit: Some(memory_setting(budget)),
            max_temp_size: temp_budget.map(memory_setting),
            ..opts.spill_dir("void")
        };
        let void = Node::open(std::path::Path::new(":memory:"), &void_opts)?;
        let mut known = BTreeSet::new();
        let entries = std::fs::read_dir(&data_dir)
            .map_err(|e| EngineError::internal(format!("cannot read data dir: {e}")))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(id) = name.parse::<MonthId>() {
                if entry.path().join("node_0.db").exists() {
                    known.insert(id);
                }
            }
        }
        tracing::info!(months = known.len(), "found months");
        Ok(MonthRegistry {
            data_dir,
            replicas,
            opts,
            budget,
            temp_budget: temp_budget.unwrap_or(0),
            known: RwLock::new(known),
            open: Mutex::new(BTreeMap::new()),
            lifecycle: Mutex::new(()),
            void,
            max_months,
        })
    }

    /// Every month that exists, open or not.
    pub fn ids(&self) -> Vec<MonthId> {
        self.known.read().iter().copied().collect()
    }

    pub fn exists(&self, id: MonthId) -> bool {
        self.known.read().contains(&id)
    }

    /// The month if it is open (no I/O).
    pub fn get_open(&self, id: MonthId) -> Option<Arc<Month>> {
        let mut open = self.open.lock();
        let om = open.get_mut(&id)?;
        om.last_used = Instant::now();
        Some(Arc::clone(&om.month))
    }

    /// The month if it exists, opened if needed (blocking I/O).
    pub fn get(&self, id: MonthId) -> EngineResult<Option<Arc<Month>>> {
        if !self.exists(id) {
            return Ok(None);
        }
        self.get_or_create(id).map(Some)
    }

    /// The month, opened, and created (folder and primary file) if it does
    /// not exist yet (blocking I/O).
    pub fn get_or_create(&self, id: MonthId) -> EngineResult<Arc<Month>> {
        if let Some(m) = self.get_open(id) {
            return Ok(m);
        }
        let _guard = self.lifecycle.lock();
        if let Some(m) = self.get_open(id) {
            return Ok(m);
        }
        let created = !self.exists(id);
        if let Some(max) = self
            .max_months
            .filter(|&m| created && self.known.read().len() >= m)
        {
            return Err(EngineError::new(
                ErrorClass::FailedPrecondition,
                format!(
                    "cannot create month {id}: the server holds {max} months, the most --max-months allows"
                ),
            ));
        }
        let n_open = self.open.lock().len() as u64 + 1;
        let files = self.slots(n_open as usize);
        let month = self.open_month(id, self.budget / files, self.temp_budget / files)?;
        self.known.write().insert(id);
        {
            let mut open = self.open.lock();
            open.insert(
                id,
                OpenMonth {
                    month: Arc::clone(&month),
                    last_used: Instant::now(),
                },
            );
            self.rebalance(&open);
        }
        tracing::info!(month = %id, created, "opened month");
        Ok(month)
    }

    /// Runs `f` on month `id`'s primary without opening the month: the open
    /// month's primary when it is open, else the primary file opened
    /// read-only for this call alone (one thread, one slot of the memory
    /// budget) and closed after it. Metadata calls over every month thus
    /// hold at most one extra file open at a time instead of opening every
    /// month with its replicas and appliers. `None`: no such month.
    pub fn read_catalog<T>(
        &self,
        id: MonthId,
        f: impl FnOnce(&Conn) -> EngineResult<T>,
    ) -> EngineResult<Option<T>> {
        if !self.exists(id) {
            return Ok(None);
        }
        if let Some(m) = self.get_open(id) {
            return m.primary().lease()?.with(f).map(Some);
        }
        // Held while the file is open: the month cannot be opened for
        // writing (a second DuckDB instance on the same file) meanwhile.
        let guard = self.lifecycle.lock();
        if let Some(m) = self.get_open(id) {
            drop(guard);
            return m.primary().lease()?.with(f).map(Some);
        }
        let slots = self.slots(self.open.lock().len() + 1);
        let opts = DbOptions {
            memory_limit: Some(memory_setting(self.budget / slots)),
            threads: Some(1),
            read_only: true,
            ..self.opts.spill_dir(&format!("{id}/node_0"))
        };
        let path = self.data_dir.join(id.to_string()).join("node_0.db");
        let db = Database::open(&path, &opts)?;
        let conn = db.connect()?;
        f(&conn).map(Some)
    }

    fn files_per_month(&self) -> u64 {
        1 + self.replicas.count as u64
    }

    /// The budget's slots with `open` months open: every file of every
    /// open month, and the scratch database.
    fn slots(&self, open: usize) -> u64 {
        open as u64 * self.files_per_month() + 1
    }

    fn open_month(&self, id: MonthId, memory: u64, temp: u64) -> EngineResult<Arc<Month>> {
        let dir = self.data_dir.join(id.to_string());
        std::fs::create_dir_all(&dir)
            .map_err(|e| EngineError::internal(format!("cannot create {}: {e}", dir.display())))?;
        let opts = DbOptions {
            memory_limit: Some(memory_setting(memory)),
            max_temp_size: (temp > 0).then(|| memory_setting(temp)),
            ..self.opts.clone()
        };
        let primary_path = dir.join("node_0.db");
        let primary = Node::open(&primary_path, &opts.spill_dir(&format!("{id}/node_0")))?;
        let (epoch, last_lsn, next_txn) = {
            let mut lease = primary.lease()?;
            lease.with(|c| capture::install(c, &id.to_string()))?
        };
        let replicas = (1..=self.replicas.count)
            .map(|i| Arc::new(Replica::new(i, dir.join(format!("node_{i}.db")))))
            .collect();
        let month = Arc::new(Month {
            id,
            nodes: vec![primary],
            primary_path,
            log: Arc::new(ChangeLog::new(epoch, last_lsn, next_txn)),
            replicas,
            memory_share: AtomicU64::new(memory),
            temp_share: AtomicU64::new(temp),
        });
        for r in &month.replicas {
            replica::spawn_applier(&month, Arc::clone(r), opts.clone(), self.replicas)?;
        }
        Ok(month)
    }

    /// Gives every open month file an equal share of the memory budget.
    fn rebalance(&self, open: &BTreeMap<MonthId, OpenMonth>) {
        let files = self.slots(open.len());
        let (share, temp) = (self.budget / files, self.temp_budget / files);
        self.void.set_memory_limit(share, temp);
        for om in open.values() {
            // Stored before the nodes are visited: a replica placed after
            // this loop reads it (see `replica::place`).
            om.month.memory_share.store(share, Ordering::SeqCst);
            om.month.temp_share.store(temp, Ordering::SeqCst);
            for node in om.month.open_nodes() {
                node.set_memory_limit(share, temp);
            }
        }
    }

    /// Lends the budget to files running long statements, or gives the
    /// even split back when none does (`lending`).
    pub fn lend(&self) {
        let open = self.open.lock();
        let mut nodes = vec![Arc::clone(&self.void)];
        nodes.extend(open.values().flat_map(|om| om.month.open_nodes()));
        let slots = self.slots(open.len());
        let loads: Vec<lending::Load> = nodes.iter().map(|n| lending::load_of(n)).collect();
        let targets = lending::targets(&loads, slots, self.budget);
        lending::apply(&nodes, &targets, self.budget, self.temp_budget);
    }

    /// Closes months idle for longer than `idle` that nothing uses. Returns
    /// how many were closed.
    pub fn close_idle(&self, idle: Duration) -> usize {
        let _guard = self.lifecycle.lock();
        let closed: Vec<OpenMonth> = {
            let mut open = self.open.lock();
            let now = Instant::now();
            let ids: Vec<MonthId> = open
                .iter()
                .filter(|(_, om)| now.duration_since(om.last_used) >= idle)
                .filter(|(_, om)| {
                    om.month.open_nodes().iter().for_each(|n| n.drop_idle());
                    om.month.unused()
                })
                .map(|(id, _)| *id)
                .collect();
            let closed = ids.iter().filter_map(|id| open.remove(id)).collect();
            if !ids.is_empty() {
                self.rebalance(&open);
            }
            closed
        };
        for om in &closed {
            om.month.log.stop();
        }
        // Still under the lifecycle lock: the month reopens only once its
        // appliers released (and settled) its replica files.
        wait_closed(closed.iter().map(|om| &om.month));
        for om in &closed {
            tracing::info!(month = %om.month.id, "closed idle month");
        }
        closed.len()
    }

    /// The months open now.
    pub fn open_months(&self) -> Vec<Arc<Month>> {
        self.open
            .lock()
            .values()
            .map(|om| Arc::clone(&om.month))
            .collect()
    }

    pub fn void(&self) -> &Arc<Node> {
        &self.void
    }

    /// Checkpoints every open primary and closes its replicas (graceful
    /// shutdown; closed months were checkpointed when DuckDB closed them).
    pub fn checkpoint_all(&self) {
        let open: Vec<Arc<Month>> = self
            .open
            .lock()
            .values()
            .map(|om| Arc::clone(&om.month))
            .collect();
        for m in &open {
            if let Err(e) = m.primary().checkpoint() {
                tracing::warn!(month = %m.id, error = %e, "checkpoint failed");
            }
            m.log.stop();
        }
        // Stopped, each applier closes its replica, fsynced (see
        // `unsynced`): a clean shutdown leaves no replica to rebuild.
        wait_closed(open.iter());
    }
}

/// Waits (at most 10 s) until the appliers of `months`, whose logs were
/// stopped, have released their replica files.
fn wait_closed<'m>(months: impl Iterator<Item = &'m Arc<Month>>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for r in months.flat_map(|m| m.replicas.iter()) {
        while !r.closed() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !r.closed() {
            tracing::warn!(replica = %r.path.display(), "applier did not stop in time");
        }
    }
}
