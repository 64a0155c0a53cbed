//! The months registry: discovers `data/YYYY-MM/` folders at start-up,
//! creates a month (folder + primary file) on its first write, and owns each
//! month's nodes. Every node file is opened exactly once, here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::duck::DbOptions;

use super::error::{EngineError, EngineResult};
use super::month::MonthId;
use super::node::Node;

/// Name of the schema holding the server's bookkeeping inside a node file;
/// metadata calls hide it.
pub const INTERNAL_SCHEMA: &str = "__duckflock";

pub struct Month {
    pub id: MonthId,
    /// `nodes[0]` is the primary; the rest are replicas.
    pub nodes: Vec<Arc<Node>>,
}

impl Month {
    pub fn primary(&self) -> &Arc<Node> {
        &self.nodes[0]
    }
}

pub struct MonthRegistry {
    data_dir: PathBuf,
    opts: DbOptions,
    months: RwLock<BTreeMap<MonthId, Arc<Month>>>,
    /// Serialises month creation so a folder is created and opened once.
    create_lock: parking_lot::Mutex<()>,
    /// An empty in-memory database that answers reads on months that do not
    /// exist yet (`SELECT 1` works; tables are simply not there).
    void: Arc<Node>,
}

impl MonthRegistry {
    pub fn open(data_dir: PathBuf, opts: DbOptions) -> EngineResult<Self> {
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            EngineError::internal(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let void_opts = DbOptions {
            memory_limit: Some("64MB".into()),
            threads: opts.threads,
            temp_directory: None,
            read_only: false,
        };
        let void = Node::open(std::path::Path::new(":memory:"), &void_opts)?;
        let reg = MonthRegistry {
            data_dir,
            opts,
            months: RwLock::new(BTreeMap::new()),
            create_lock: parking_lot::Mutex::new(()),
            void,
        };
        reg.discover()?;
        Ok(reg)
    }

    /// Opens every `YYYY-MM/node_0.db` under the data dir.
    fn discover(&self) -> EngineResult<()> {
        let entries = std::fs::read_dir(&self.data_dir)
            .map_err(|e| EngineError::internal(format!("cannot read data dir: {e}")))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(id) = name.parse::<MonthId>() else {
                continue;
            };
            if entry.path().join("node_0.db").exists() {
                let month = self.open_month(id)?;
                self.months.write().insert(id, month);
                tracing::info!(month = %id, "discovered month");
            }
        }
        Ok(())
    }

    fn open_month(&self, id: MonthId) -> EngineResult<Arc<Month>> {
        let dir = self.data_dir.join(id.to_string());
        std::fs::create_dir_all(&dir)
            .map_err(|e| EngineError::internal(format!("cannot create {}: {e}", dir.display())))?;
        let primary = Node::open(&dir.join("node_0.db"), &self.opts)?;
        primary.connect()?.execute_batch(&format!(
            "CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA};
             CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.meta (key VARCHAR PRIMARY KEY, value VARCHAR);
             INSERT OR IGNORE INTO {INTERNAL_SCHEMA}.meta VALUES ('month', '{id}'), ('created_at', CAST(now() AS VARCHAR));"
        ))?;
        Ok(Arc::new(Month {
            id,
            nodes: vec![primary],
        }))
    }

    pub fn get(&self, id: MonthId) -> Option<Arc<Month>> {
        self.months.read().get(&id).cloned()
    }

    /// The month, created (folder and primary file) if it does not exist.
    pub fn get_or_create(&self, id: MonthId) -> EngineResult<Arc<Month>> {
        if let Some(m) = self.get(id) {
            return Ok(m);
        }
        let _guard = self.create_lock.lock();
        if let Some(m) = self.get(id) {
            return Ok(m);
        }
        let month = self.open_month(id)?;
        self.months.write().insert(id, Arc::clone(&month));
        tracing::info!(month = %id, "created month");
        Ok(month)
    }

    pub fn list(&self) -> Vec<Arc<Month>> {
        self.months.read().values().cloned().collect()
    }

    pub fn void(&self) -> &Arc<Node> {
        &self.void
    }

    /// Checkpoints every primary (graceful shutdown).
    pub fn checkpoint_all(&self) {
        for m in self.list() {
            if let Err(e) = m.primary().checkpoint() {
                tracing::warn!(month = %m.id, error = %e, "checkpoint failed");
            }
        }
    }
}
