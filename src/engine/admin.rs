//! Admin actions shared by the front doors: months and the status of their
//! nodes. (Replication adds applied LSN and lag per node.)

use std::sync::Arc;

use serde::Serialize;

use super::error::EngineResult;
use super::month::MonthId;
use super::months::Month;
use super::{blocking, Engine};

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub id: usize,
    pub role: &'static str,
    pub path: String,
    pub healthy: bool,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MonthStatus {
    pub month: String,
    /// Whether the month's files are open now (idle months are closed).
    pub open: bool,
    pub nodes: Vec<NodeStatus>,
}

fn status_of(month: MonthId, data_dir: &std::path::Path, open: Option<&Arc<Month>>) -> MonthStatus {
    let dir = data_dir.join(month.to_string());
    // Replicas arrive with replication; today a month is its primary.
    let path = dir.join("node_0.db");
    let size_bytes = ["", ".wal"]
        .iter()
        .filter_map(|ext| std::fs::metadata(format!("{}{ext}", path.display())).ok())
        .map(|m| m.len())
        .sum();
    let healthy = match open {
        Some(m) => m
            .primary()
            .connect()
            .and_then(|c| Ok(c.execute_batch("SELECT 1")?))
            .is_ok(),
        None => path.exists(),
    };
    MonthStatus {
        month: month.to_string(),
        open: open.is_some(),
        nodes: vec![NodeStatus {
            id: 0,
            role: "primary",
            path: path.display().to_string(),
            healthy,
            size_bytes,
        }],
    }
}

impl Engine {
    /// Creates a month (folder and files) if it does not exist.
    pub async fn create_month(self: &Arc<Self>, month: &str) -> EngineResult<MonthStatus> {
        let id: MonthId = month.parse()?;
        let me = Arc::clone(self);
        blocking(move || {
            let m = me.months.get_or_create(id)?;
            Ok(status_of(id, &me.cfg.data_dir, Some(&m)))
        })
        .await
    }

    /// The status of one month's nodes, or of every month's.
    pub async fn node_status(
        self: &Arc<Self>,
        month: Option<&str>,
    ) -> EngineResult<Vec<MonthStatus>> {
        let ids = self.months_for(month)?;
        if let (Some(m), true) = (month, ids.is_empty()) {
            return Err(super::EngineError::not_found(format!(
                "month {m} does not exist"
            )));
        }
        let me = Arc::clone(self);
        blocking(move || {
            Ok(ids
                .into_iter()
                .map(|id| status_of(id, &me.cfg.data_dir, me.months.get_open(id).as_ref()))
                .collect())
        })
        .await
    }
}
