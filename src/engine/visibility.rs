//! DuckDB 2.0.0's hidden rows: detection and repair (ARCHITECTURE.md,
//! "DuckDB 2.0.0 pitfalls"). After a zero-row batch insert, a later append of
//! a row group or more to the same table in the same transaction leaves an
//! empty row group in front of the new ones; scans stop at it, so the new
//! rows (and every later append) are invisible until a checkpoint drops it.
//! `count(*)` still counts them, so a table is affected exactly when
//! `count(*)` and a scan that reads the rows (`sum(1)`) disagree.
//!
//! The server cannot keep users' own transactions from doing this, but it
//! checks every table that just received a row group or more (after a
//! primary commit, after a replica batch) and checkpoints when one is
//! affected, which repairs it unless another connection holds uncommitted
//! writes (then the janitor tries again).

use crate::duck::Conn;

use super::catalog::rows;
use super::error::EngineResult;

/// DuckDB's row group: appends of at least this many rows are merged as
/// whole row groups, the appends the defect hides.
pub const ROW_GROUP: u64 = 122_880;

fn count(conn: &Conn, sql: &str) -> EngineResult<u64> {
    Ok(rows(conn, sql)?
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// The rows DuckDB counts in `table` (quoted): `count(*)` alone, which
/// DuckDB answers from its row-group counts (in the caller's snapshot),
/// hidden rows included.
pub fn counted(conn: &Conn, table: &str) -> EngineResult<u64> {
    count(conn, &format!("SELECT count(*) FROM {table}"))
}

/// (rows DuckDB counts, rows a scan returns) of `table` (quoted), read in
/// the caller's transaction.
pub fn counts(conn: &Conn, table: &str) -> EngineResult<(u64, u64)> {
    Ok((
        counted(conn, table)?,
        count(conn, &format!("SELECT coalesce(sum(1), 0) FROM {table}"))?,
    ))
}

/// Of `tables` (quoted names that exist), those whose scans miss rows, read
/// in one snapshot (a connection not inside a transaction).
fn affected(conn: &Conn, tables: &[String]) -> EngineResult<Vec<String>> {
    conn.execute_batch("BEGIN TRANSACTION READ ONLY")?;
    let out = (|| {
        let mut out = Vec::new();
        for t in tables {
            let (counted, scanned) = counts(conn, t)?;
            if counted != scanned {
                out.push(t.clone());
            }
        }
        Ok(out)
    })();
    conn.rollback();
    out
}

/// Checks `tables` and, when some hide rows, checkpoints the database and
/// checks again; returns the tables still affected (empty: all is well).
/// Call outside a transaction.
pub fn repair(conn: &Conn, tables: &[String]) -> EngineResult<Vec<String>> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let hit = affected(conn, tables)?;
    if hit.is_empty() {
        return Ok(hit);
    }
    tracing::warn!(tables = ?hit, "DuckDB 2.0.0 hides rows of these tables from scans; checkpointing to repair them");
    // A CHECKPOINT while another connection has uncommitted writes reports
    // success without repairing: the check after it decides.
    if let Err(e) = conn.execute_batch("CHECKPOINT") {
        tracing::debug!(error = %e, "checkpoint postponed");
    }
    affected(conn, &hit)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::duck::{Database, DbOptions};

    #[test]
    fn finds_and_repairs_a_table_hiding_rows() {
        let db = Database::open(
            Path::new(":memory:"),
            &DbOptions {
                threads: Some(4),
                ..DbOptions::default()
            },
        )
        .unwrap();
        let conn = db.connect().unwrap();
        conn.execute_batch(
            "CREATE TABLE src AS SELECT range AS i FROM range(300000);
             CREATE TABLE t (i BIGINT); CREATE TABLE fine (i BIGINT);
             INSERT INTO fine SELECT * FROM src;
             BEGIN;
             INSERT INTO t SELECT * FROM src LIMIT 0;
             INSERT INTO t SELECT * FROM src;
             COMMIT;",
        )
        .unwrap();
        let tables = vec!["t".to_string(), "fine".to_string()];
        assert_eq!(affected(&conn, &tables).unwrap(), vec!["t".to_string()]);
        assert_eq!(counts(&conn, "t").unwrap(), (300_000, 0));
        assert!(repair(&conn, &tables).unwrap().is_empty());
        assert_eq!(counts(&conn, "t").unwrap(), (300_000, 300_000));
    }
}
