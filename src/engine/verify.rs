//! Verification: every replica compared with its primary at one LSN, by
//! DuckDB itself. Per table a row count and an order-independent content
//! hash (`sum(hash(*COLUMNS(*)))`, a multiset digest of the rows), and the
//! catalog (schemas, columns, views, indexes, constraints, sequence
//! definitions, macros, types). A replica that differs is marked failed, so
//! its applier rebuilds it from the primary; the result shows on
//! `node_status`, `/health`, `/status` and `/metrics`.
//!
//! One LSN for both sides without stopping writes: under the commit lock
//! the primary's snapshot is pinned (a read transaction that has touched the
//! file) at the last LSN `P`, and every replica is held at `P` (its applier
//! applies nothing after it). Each replica, once it reaches `P`, pins its
//! own snapshot and is released at once; the digests are then computed in
//! the pinned snapshots while writes and applies go on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::duck::Conn;

use super::capture::quote;
use super::catalog::{rows, sys};
use super::error::{EngineError, EngineResult};
use super::month::MonthId;
use super::months::{Month, INTERNAL_SCHEMA as S};
use super::replica::{Health, Replica, Verified};
use super::visibility;
use super::{blocking, Caller, Engine, Role};

/// How long a replica may take to reach the checked LSN before it is left
/// unchecked this time.
const CATCH_UP: Duration = Duration::from_secs(30);

/// Differences listed per replica at most (the count is always given).
const SHOWN: usize = 5;

/// What one verification of a month found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub month: String,
    /// The LSN the primary and the replicas were compared at.
    pub lsn: u64,
    /// Tables compared and the primary's rows in them.
    pub tables: usize,
    pub rows: u64,
    pub elapsed_ms: u64,
    /// Every checked replica equals the primary.
    pub ok: bool,
    pub replicas: Vec<ReplicaCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaCheck {
    pub node: usize,
    /// `ok`, `mismatch` or `not_checked`.
    pub result: &'static str,
    /// Why it was not checked, or how many differences there were.
    pub detail: Option<String>,
    /// The first differences.
    pub differences: Vec<String>,
}

/// A node's content at one LSN.
struct Digest {
    catalog: BTreeSet<String>,
    /// `"schema"."table"` → (rows, hash of the rows).
    tables: BTreeMap<String, (u64, String)>,
    /// Tables whose scans return fewer rows than DuckDB counts (DuckDB
    /// 2.0.0's hidden rows, see `visibility`): (table, counted, scanned).
    hiding: Vec<(String, u64, u64)>,
}

/// The catalog of the connection's database as comparable lines (the
/// server's schema and sequence positions left out: sequences move outside
/// transactions, so their positions are not bound to an LSN; so is a
/// sequence's `start_value`, which DuckDB 2.0.0 stores as the next value
/// when it writes the catalog: a used sequence read back from a file, a
/// rebuilt replica's or a restarted primary's, starts elsewhere than the
/// same sequence that stayed in memory).
const CATALOG: &str = "
SELECT concat('schema ', schema_name, ' ', comment) FROM {schemas}
 WHERE database_name = current_database() AND NOT internal AND schema_name <> '{S}'
UNION ALL
SELECT concat('column ', schema_name, '.', table_name, '.', column_name, ' ', data_type,
              ' null=', is_nullable, ' default=', column_default, ' ', comment) FROM {columns}
 WHERE database_name = current_database() AND NOT internal AND schema_name <> '{S}'
UNION ALL
SELECT concat('view ', schema_name, '.', view_name, ' ', sql) FROM {views}
 WHERE database_name = current_database() AND NOT internal AND NOT temporary AND schema_name <> '{S}'
UNION ALL
SELECT concat('index ', schema_name, '.', index_name, ' ', table_name, ' ', sql) FROM {indexes}
 WHERE database_name = current_database() AND schema_name <> '{S}'
UNION ALL
SELECT concat('constraint ', schema_name, '.', table_name, ' ', constraint_type, ' ', constraint_text)
  FROM {constraints} WHERE database_name = current_database() AND schema_name <> '{S}'
UNION ALL
SELECT concat('sequence ', schema_name, '.', sequence_name, ' ', increment_by, ' ',
              min_value, ' ', max_value, ' ', cycle) FROM {sequences}
 WHERE database_name = current_database() AND NOT temporary AND schema_name <> '{S}'
UNION ALL
SELECT concat('function ', schema_name, '.', function_name, ' ', function_type, ' ', macro_definition)
  FROM {functions} WHERE database_name = current_database() AND NOT internal AND schema_name <> '{S}'
UNION ALL
SELECT concat('type ', schema_name, '.', type_name, ' ', logical_type) FROM {types}
 WHERE database_name = current_database() AND NOT internal AND schema_name <> '{S}'";

fn catalog_sql() -> String {
    CATALOG
        .replace("{S}", S)
        .replace("{schemas}", &sys("duckdb_schemas"))
        .replace("{columns}", &sys("duckdb_columns"))
        .replace("{views}", &sys("duckdb_views"))
        .replace("{indexes}", &sys("duckdb_indexes"))
        .replace("{constraints}", &sys("duckdb_constraints"))
        .replace("{sequences}", &sys("duckdb_sequences"))
        .replace("{functions}", &sys("duckdb_functions"))
        .replace("{types}", &sys("duckdb_types"))
}

/// The digest of the database `conn` sees (call inside a transaction so
/// that every query reads the same snapshot).
fn digest(conn: &Conn) -> EngineResult<Digest> {
    let catalog = rows(conn, &catalog_sql())?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    let names = rows(
        conn,
        &format!(
            "SELECT schema_name, table_name FROM {} WHERE database_name = current_database()
               AND NOT temporary AND schema_name <> '{S}' ORDER BY 1, 2",
            sys("duckdb_tables")
        ),
    )?;
    let mut tables = BTreeMap::new();
    let mut hiding = Vec::new();
    for n in names {
        let (Some(schema), Some(table)) = (n[0].clone(), n[1].clone()) else {
            continue;
        };
        let name = format!("{}.{}", quote(&schema), quote(&table));
        // count(*) next to an aggregate that reads every column counts the
        // rows the scan returns, not the table's row-count metadata.
        let r = rows(
            conn,
            &format!("SELECT count(*), coalesce(sum(hash(*COLUMNS(*))), 0)::VARCHAR FROM {name}"),
        )?;
        let r = r.into_iter().next().unwrap_or_default();
        let count = r
            .first()
            .cloned()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let hash = r.get(1).cloned().flatten().unwrap_or_default();
        let counted = visibility::counted(conn, &name)?;
        if counted != count {
            hiding.push((name.clone(), counted, count));
        }
        tables.insert(name, (count, hash));
    }
    Ok(Digest {
        catalog,
        tables,
        hiding,
    })
}

/// What differs between the primary's digest and a replica's.
fn differences(p: &Digest, r: &Digest) -> Vec<String> {
    let mut out: Vec<String> = r
        .hiding
        .iter()
        .map(|(t, counted, scanned)| {
            format!("{t}: DuckDB counts {counted} rows but its scans return {scanned} (DuckDB 2.0.0 hidden rows)")
        })
        .collect();
    for line in p.catalog.difference(&r.catalog) {
        out.push(format!("catalog: only on the primary: {line}"));
    }
    for line in r.catalog.difference(&p.catalog) {
        out.push(format!("catalog: only on the replica: {line}"));
    }
    for (t, (n, h)) in &p.tables {
        match r.tables.get(t) {
            None => out.push(format!("{t}: missing on the replica")),
            Some((m, _)) if m != n => {
                out.push(format!("{t}: {n} rows on the primary, {m} on the replica"))
            }
            Some((_, g2)) if g2 != h => {
                out.push(format!("{t}: {n} rows on both, but their contents differ"))
            }
            Some(_) => {}
        }
    }
    for t in r.tables.keys() {
        if !p.tables.contains_key(t) {
            out.push(format!("{t}: only on the replica"));
        }
    }
    out
}

/// Releases every hold when the verification ends, however it ends.
struct Holds<'a>(&'a [Arc<Replica>]);

impl Drop for Holds<'_> {
    fn drop(&mut self) {
        for r in self.0 {
            r.release();
        }
    }
}

/// Opens a read transaction on `conn` and reads from the file, which fixes
/// its snapshot there and then.
fn pin(conn: &Conn) -> EngineResult<Option<u64>> {
    conn.execute_batch("BEGIN TRANSACTION READ ONLY")?;
    let r = rows(
        conn,
        &format!("SELECT value FROM {S}.meta WHERE key = 'applied_lsn'"),
    )?;
    Ok(r.first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|v| v.parse().ok()))
}

/// Waits until the (held) replica has applied `lsn` and pins a snapshot of
/// it there; `Err` says why it cannot be checked now.
fn pin_replica(r: &Replica, lsn: u64) -> Result<Conn, String> {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let health = r.health();
        if health == Health::Healthy && r.applied() >= lsn {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} at LSN {} (it did not reach LSN {lsn} in time)",
                health.name(),
                r.applied()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if r.applied() > lsn {
        return Err(format!("rebuilt at LSN {} during the check", r.applied()));
    }
    let node = r.serving().ok_or("not serving")?;
    let conn = node.bare().map_err(|e| e.message)?;
    match pin(&conn) {
        Ok(Some(at)) if at == lsn => Ok(conn),
        Ok(at) => Err(format!("its file is at LSN {at:?}, not {lsn}")),
        Err(e) => Err(e.message),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Verifies every replica of one open month (blocking).
fn verify_month(m: &Month) -> EngineResult<VerifyReport> {
    let started = Instant::now();
    // Counted as running statements, so the memory lender lends to a long
    // verification instead of shrinking its files.
    let nodes = m.open_nodes();
    let _busy: Vec<_> = nodes.iter().map(|n| n.busy()).collect();
    let pconn = m.primary().bare()?;
    let holds = Holds(&m.replicas);
    let lsn = {
        let state = m.log.lock();
        for r in &m.replicas {
            r.hold_at(state.last_lsn);
        }
        pin(&pconn)?;
        state.last_lsn
    };
    let pinned: Vec<Result<Conn, String>> = m
        .replicas
        .iter()
        .map(|r| {
            let p = pin_replica(r, lsn);
            r.release();
            p
        })
        .collect();
    drop(holds);
    let primary = digest(&pconn);
    pconn.rollback();
    let primary = primary?;
    // The primary itself hides rows: comparing would blame the replicas.
    // Checkpoint it (which repairs it) and leave the replicas unchecked.
    let hiding: Vec<String> = primary.hiding.iter().map(|h| h.0.clone()).collect();
    let primary_note = (!hiding.is_empty()).then(|| {
        let left = visibility::repair(&pconn, &hiding).unwrap_or_else(|_| hiding.clone());
        m.log.still_hiding(left);
        format!(
            "the primary's scans of {} miss rows (DuckDB 2.0.0 hidden rows); it was checkpointed to repair them: verify again",
            hiding.join(", ")
        )
    });
    let mut checks = Vec::new();
    for (r, p) in m.replicas.iter().zip(pinned) {
        let p = match (&primary_note, p) {
            (Some(note), _) => Err(note.clone()),
            (None, p) => p,
        };
        let check = match p {
            Err(why) => ReplicaCheck {
                node: r.index,
                result: "not_checked",
                detail: Some(why),
                differences: Vec::new(),
            },
            Ok(conn) => {
                let d = digest(&conn);
                conn.rollback();
                match d {
                    Err(e) => ReplicaCheck {
                        node: r.index,
                        result: "mismatch",
                        detail: Some(format!("the replica could not be read: {}", e.message)),
                        differences: Vec::new(),
                    },
                    Ok(d) => {
                        let diff = differences(&primary, &d);
                        ReplicaCheck {
                            node: r.index,
                            result: if diff.is_empty() { "ok" } else { "mismatch" },
                            detail: (!diff.is_empty())
                                .then(|| format!("{} difference(s)", diff.len())),
                            differences: diff.into_iter().take(SHOWN).collect(),
                        }
                    }
                }
            }
        };
        record(m, r, lsn, &check);
        checks.push(check);
    }
    let report = VerifyReport {
        month: m.id.to_string(),
        lsn,
        tables: primary.tables.len(),
        rows: primary.tables.values().map(|(n, _)| n).sum(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        ok: checks.iter().all(|c| c.result != "mismatch"),
        replicas: checks,
    };
    tracing::info!(month = %m.id, lsn, ok = report.ok, tables = report.tables, rows = report.rows,
        ms = report.elapsed_ms, "replicas verified");
    Ok(report)
}

/// Keeps a replica's result; a mismatch fails it (its applier rebuilds it).
fn record(m: &Month, r: &Replica, lsn: u64, check: &ReplicaCheck) {
    let detail = match (&check.detail, check.differences.first()) {
        (Some(d), Some(first)) => Some(format!("{d}; first: {first}")),
        (d, _) => d.clone(),
    };
    if check.result == "mismatch" {
        let why = format!(
            "verification at LSN {lsn} found the replica different from the primary: {}",
            detail.clone().unwrap_or_default()
        );
        tracing::error!(month = %m.id, node = r.index, differences = ?check.differences, "{why}; rebuilding it");
        r.mismatches.fetch_add(1, Ordering::SeqCst);
        r.fail(why);
    }
    *r.verified.lock() = Some(Verified {
        at: now(),
        lsn,
        result: check.result,
        detail,
    });
}

impl Engine {
    /// Verifies the replicas of one month (opened if needed) or of every
    /// open month. One verification runs at a time.
    pub async fn verify_replicas(
        self: &Arc<Self>,
        caller: &Caller,
        month: Option<&str>,
    ) -> EngineResult<Vec<VerifyReport>> {
        caller.require(Role::Writer, "verify_replicas")?;
        let months = match month {
            Some(s) => {
                let id: MonthId = s.parse()?;
                caller.require_month(id)?;
                let m = self
                    .existing_month(id)
                    .await?
                    .ok_or_else(|| EngineError::not_found(format!("month {s} does not exist")))?;
                vec![m]
            }
            None => {
                let mut open = self.months.open_months();
                open.retain(|m| caller.may_use(m.id));
                open
            }
        };
        let me = Arc::clone(self);
        blocking(move || {
            let _one = me.verifying.lock();
            months.iter().map(|m| verify_month(m)).collect()
        })
        .await
    }

    /// The janitor's pass (blocking): every open month, once the interval
    /// has passed since the last pass; failures are logged.
    /// A month whose replica was rebuilt after a mismatch is verified again
    /// at the next tick, so its health clears (or the problem shows again).
    /// With the interval off nothing runs on its own.
    pub(super) fn verify_if_due(&self) {
        let Some(every) = self.cfg.verify_interval else {
            return;
        };
        let Some(_one) = self.verifying.try_lock() else {
            return;
        };
        let open = self.months.open_months();
        let due = {
            let mut last = self.last_verify.lock();
            let due = last.elapsed() >= every;
            if due {
                *last = Instant::now();
            }
            due
        };
        for m in open {
            let rebuilt = m.replicas.iter().any(|r| {
                r.health() == Health::Healthy
                    && r.verified
                        .lock()
                        .as_ref()
                        .is_some_and(|v| v.result == "mismatch")
            });
            if due || rebuilt {
                if let Err(e) = verify_month(&m) {
                    tracing::warn!(month = %m.id, error = %e, "verification did not run");
                }
            }
        }
    }
}
