//! Admin actions shared by the front doors: months and the status of their
//! nodes (applied LSN, lag, health), sync and replica repair.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::capture;
use super::catalog::rows;
use super::error::{EngineError, EngineResult, ErrorClass};
use super::month::MonthId;
use super::months::Month;
use super::node::Node;
use super::replica::{Health, Verified};
use super::visibility;
use super::{blocking, Caller, Engine, Role};

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub id: usize,
    pub role: &'static str,
    pub path: String,
    /// The last change set the node holds (the primary: the last committed).
    pub applied_lsn: Option<u64>,
    /// Change sets the node is behind the primary.
    pub lag_lsn: Option<u64>,
    /// How long ago the oldest change set it has not applied committed.
    pub lag_ms: Option<u64>,
    pub healthy: bool,
    /// `healthy`, `rebuilding`, `failed` (or `closed` for idle months).
    pub state: &'static str,
    pub error: Option<String>,
    pub size_bytes: u64,
    /// The file's DuckDB `memory_limit` now (its share of `--memory-limit`).
    pub memory_limit: Option<String>,
    /// Bytes DuckDB's buffer manager holds for this file now.
    pub memory_usage_bytes: Option<u64>,
    /// The replica's last verification against the primary.
    pub verified: Option<Verified>,
    /// Since the server started: verifications that found this replica
    /// different from the primary, and batches whose apply failed (a
    /// self-check or an error); each one rebuilt the replica.
    pub mismatches: u64,
    pub apply_failures: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MonthStatus {
    pub month: String,
    /// Whether the month's files are open now (idle months are closed).
    pub open: bool,
    pub epoch: Option<String>,
    pub nodes: Vec<NodeStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncStatus {
    pub month: String,
    /// The primary's LSN every replica reached.
    pub lsn: u64,
    pub replicas: usize,
}

fn file_size(path: &Path) -> u64 {
    ["", ".wal"]
        .iter()
        .filter_map(|ext| std::fs::metadata(format!("{}{ext}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

/// The node's `memory_limit` setting and the bytes its buffer manager
/// holds (`None`: the node does not answer).
fn memory(node: &Node) -> Option<(String, Option<u64>)> {
    let conn = node.bare().ok()?;
    let r = rows(
        &conn,
        "SELECT current_setting('memory_limit'), (SELECT sum(memory_usage_bytes) FROM system.main.duckdb_memory())::UBIGINT",
    )
    .ok()?;
    let r = r.into_iter().next()?;
    let limit = r.first().cloned().flatten()?;
    let used = r.get(1).cloned().flatten().and_then(|v| v.parse().ok());
    Some((limit, used))
}

fn status_of(
    month: MonthId,
    data_dir: &Path,
    replicas: usize,
    open: Option<&Arc<Month>>,
) -> MonthStatus {
    let dir = data_dir.join(month.to_string());
    let Some(m) = open else {
        let nodes = (0..=replicas)
            .map(|i| {
                let path = dir.join(format!("node_{i}.db"));
                NodeStatus {
                    id: i,
                    role: if i == 0 { "primary" } else { "replica" },
                    healthy: path.exists(),
                    state: "closed",
                    size_bytes: file_size(&path),
                    path: path.display().to_string(),
                    applied_lsn: None,
                    lag_lsn: None,
                    lag_ms: None,
                    error: None,
                    memory_limit: None,
                    memory_usage_bytes: None,
                    verified: None,
                    mismatches: 0,
                    apply_failures: 0,
                }
            })
            .collect();
        return MonthStatus {
            month: month.to_string(),
            open: false,
            epoch: None,
            nodes,
        };
    };
    let last = m.log.last_lsn();
    let primary_memory = memory(m.primary());
    let healthy = primary_memory.is_some();
    let (primary_limit, primary_used) = primary_memory.unzip();
    let mut nodes = vec![NodeStatus {
        id: 0,
        role: "primary",
        path: m.primary_path.display().to_string(),
        applied_lsn: Some(last),
        lag_lsn: Some(0),
        lag_ms: Some(0),
        healthy,
        state: if healthy { "healthy" } else { "failed" },
        error: None,
        size_bytes: file_size(&m.primary_path),
        memory_limit: primary_limit,
        memory_usage_bytes: primary_used.flatten(),
        verified: None,
        mismatches: 0,
        apply_failures: 0,
    }];
    for r in &m.replicas {
        let applied = r.applied();
        let lag_ms = if applied >= last {
            0
        } else {
            m.log
                .commit_time(applied + 1)
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        };
        let health = r.health();
        let (limit, used) = r.node().and_then(|n| memory(&n)).unzip();
        nodes.push(NodeStatus {
            id: r.index,
            role: "replica",
            path: r.path.display().to_string(),
            applied_lsn: Some(applied),
            lag_lsn: Some(last.saturating_sub(applied)),
            lag_ms: Some(lag_ms),
            healthy: health == Health::Healthy,
            state: health.name(),
            error: r.last_error.lock().clone(),
            size_bytes: file_size(&r.path),
            memory_limit: limit,
            memory_usage_bytes: used.flatten(),
            verified: r.verified.lock().clone(),
            mismatches: r.mismatches.load(Ordering::SeqCst),
            apply_failures: r.apply_failures.load(Ordering::SeqCst),
        });
    }
    MonthStatus {
        month: month.to_string(),
        open: true,
        epoch: Some(m.log.epoch.clone()),
        nodes,
    }
}

/// Whether the server can do its work: every open month's primary answers
/// and its folder takes new files, and no replica has failed (a replica
/// being rebuilt is being synced).
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub healthy: bool,
    pub months: usize,
    pub open_months: usize,
    pub problems: Vec<String>,
    /// Verifications that found a replica different from its primary since
    /// the server started (each rebuilt that replica).
    pub verify_mismatches: u64,
}

/// Creates and removes a file in `dir`: whether new files can be written
/// there (WAL growth, checkpoints, replica rebuilds).
fn probe_writable(dir: &Path) -> Result<(), String> {
    let probe = dir.join(".duckflock-health-probe");
    std::fs::write(&probe, b"ok")
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| format!("{} is not writable: {e}", dir.display()))
}

impl Engine {
    /// Sessions and transactions open now.
    /// Statements streaming now, and queries waiting for a turn.
    pub fn queries(&self) -> (usize, usize) {
        self.admission.load()
    }

    pub fn open_sessions(&self) -> (usize, usize) {
        (
            self.state.sessions.lock().len(),
            self.state.transactions.lock().len(),
        )
    }

    /// See [`HealthReport`].
    pub async fn health(self: &Arc<Self>) -> HealthReport {
        let me = Arc::clone(self);
        let report = blocking(move || {
            let mut problems = Vec::new();
            if let Err(e) = probe_writable(&me.cfg.data_dir) {
                problems.push(e);
            }
            let open = me.months.open_months();
            let mut mismatches = 0;
            for m in &open {
                if memory(m.primary()).is_none() {
                    problems.push(format!("{}: the primary does not answer", m.id));
                }
                if let Some(dir) = m.primary_path.parent() {
                    if let Err(e) = probe_writable(dir) {
                        problems.push(format!("{}: {e}", m.id));
                    }
                }
                for r in &m.replicas {
                    mismatches += r.mismatches.load(Ordering::SeqCst);
                    if r.health() == Health::Failed {
                        let why = r.last_error.lock().clone().unwrap_or_default();
                        problems.push(format!("{}/node_{}: not syncing: {why}", m.id, r.index));
                    } else if let Some(v) = r.verified.lock().as_ref().filter(|v| v.result == "mismatch") {
                        // Rebuilt since, and verified again within moments.
                        problems.push(format!(
                            "{}/node_{}: verification at LSN {} found it different from the primary ({}); rebuilt, awaiting the next verification",
                            m.id,
                            r.index,
                            v.lsn,
                            v.detail.clone().unwrap_or_default()
                        ));
                    }
                }
            }
            Ok(HealthReport {
                healthy: problems.is_empty(),
                months: me.months.ids().len(),
                open_months: open.len(),
                problems,
                verify_mismatches: mismatches,
            })
        })
        .await;
        report.unwrap_or_else(|e| HealthReport {
            healthy: false,
            months: 0,
            open_months: 0,
            problems: vec![e.message],
            verify_mismatches: 0,
        })
    }

    /// Creates a month (folder and files) if it does not exist.
    pub async fn create_month(
        self: &Arc<Self>,
        caller: &Caller,
        month: &str,
    ) -> EngineResult<MonthStatus> {
        caller.require(Role::Admin, "create_month")?;
        let id: MonthId = month.parse()?;
        caller.require_month(id)?;
        let me = Arc::clone(self);
        blocking(move || {
            let m = me.months.get_or_create(id)?;
            Ok(status_of(id, &me.cfg.data_dir, me.cfg.replicas, Some(&m)))
        })
        .await
    }

    /// The status of one month's nodes, or of every month's.
    pub async fn node_status(
        self: &Arc<Self>,
        caller: &Caller,
        month: Option<&str>,
    ) -> EngineResult<Vec<MonthStatus>> {
        let ids = self.months_for(caller, month)?;
        if let (Some(m), true) = (month, ids.is_empty()) {
            return Err(super::EngineError::not_found(format!(
                "month {m} does not exist"
            )));
        }
        let me = Arc::clone(self);
        blocking(move || {
            Ok(ids
                .into_iter()
                .map(|id| {
                    let open = me.months.get_open(id);
                    status_of(id, &me.cfg.data_dir, me.cfg.replicas, open.as_ref())
                })
                .collect())
        })
        .await
    }

    /// Waits until every replica of the month (or of every month) is
    /// healthy and has applied the primary's last change set.
    pub async fn sync(
        self: &Arc<Self>,
        caller: &Caller,
        month: Option<&str>,
        timeout: Duration,
    ) -> EngineResult<Vec<SyncStatus>> {
        caller.require(Role::Writer, "sync")?;
        let ids = self.months_for(caller, month)?;
        if let (Some(m), true) = (month, ids.is_empty()) {
            return Err(EngineError::not_found(format!("month {m} does not exist")));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        for id in ids {
            let Some(m) = self.existing_month(id).await? else {
                continue;
            };
            let target = m.log.last_lsn();
            loop {
                let notified = m.log.applied.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let behind: Vec<String> = m
                    .replicas
                    .iter()
                    .filter(|r| r.health() != Health::Healthy || r.applied() < target)
                    .map(|r| {
                        format!(
                            "node_{} ({}, LSN {})",
                            r.index,
                            r.health().name(),
                            r.applied()
                        )
                    })
                    .collect();
                if behind.is_empty() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(EngineError::new(
                        ErrorClass::DeadlineExceeded,
                        format!(
                            "{id}: replicas did not reach LSN {target} in time: {}",
                            behind.join(", ")
                        ),
                    ));
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
            }
            out.push(SyncStatus {
                month: id.to_string(),
                lsn: target,
                replicas: m.replicas.len(),
            });
        }
        Ok(out)
    }

    /// Rebuilds one replica from its primary (in the background; `sync`
    /// waits for it).
    pub async fn resync_replica(
        self: &Arc<Self>,
        caller: &Caller,
        month: &str,
        node: usize,
    ) -> EngineResult<()> {
        caller.require(Role::Admin, "resync_replica")?;
        let id: MonthId = month.parse()?;
        caller.require_month(id)?;
        let m = self
            .existing_month(id)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("month {month} does not exist")))?;
        let r = m.replicas.iter().find(|r| r.index == node).ok_or_else(|| {
            EngineError::invalid(format!(
                "node {node} is not a replica of {month} (replicas are 1..={})",
                m.replicas.len()
            ))
        })?;
        r.request_rebuild();
        Ok(())
    }

    /// Checkpoints primaries whose tables still hide rows after a commit
    /// (DuckDB 2.0.0, see `visibility`) and checks them again (janitor).
    pub(super) fn repair_hidden_rows(&self) {
        for m in self.months.open_months() {
            let tables = m.log.take_hiding();
            if tables.is_empty() {
                continue;
            }
            let left = m
                .primary()
                .lease()
                .and_then(|mut l| l.with(|c| visibility::repair(c, &tables)))
                .unwrap_or(tables);
            if !left.is_empty() {
                tracing::warn!(month = %m.id, tables = ?left, "tables still hide rows (DuckDB 2.0.0); checkpointing again soon");
            }
            m.log.still_hiding(left);
        }
    }

    /// Drops log entries every live replica has applied (janitor).
    pub(super) fn prune_logs(&self) {
        for m in self.months.open_months() {
            let last = m.log.last_lsn();
            let upto = m
                .replicas
                .iter()
                // A replica being opened or rebuilt still needs its next
                // change sets; only a failed one (rebuilt from a copy) does not.
                .filter(|r| r.health() != Health::Failed)
                .map(|r| r.applied())
                .min()
                .unwrap_or(last);
            if upto <= m.log.pruned() {
                continue;
            }
            let out = m
                .primary()
                .lease()
                .and_then(|mut l| l.with(|c| capture::prune(c, upto)));
            match out {
                Ok(()) => m.log.set_pruned(upto),
                Err(e) => tracing::debug!(month = %m.id, error = %e, "log pruning postponed"),
            }
        }
    }
}
