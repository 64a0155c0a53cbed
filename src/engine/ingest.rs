//! Bulk ingest (Flight SQL `CommandStatementIngest`, what ADBC's
//! `adbc_ingest` sends): Arrow batches uploaded with DoPut go into a table
//! on the month's primary, batch by batch as they arrive (a bounded channel
//! from the protocol layer, so the upload is never held whole), through
//! DuckDB's Arrow conversion and a query appender running `INSERT … BY NAME`.
//! It runs in a captured transaction, so replicas receive the rows through
//! the change log like any INSERT, and a failure leaves nothing behind.

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

use crate::duck::{sql_types, ArrowInserter, Conn};

use super::capture::{literal, quote};
use super::catalog::rows;
use super::changelog::ChangeLog;
use super::error::{EngineError, EngineResult, ErrorClass, BOOKKEEPING_REFUSAL};
use super::exec::{captured, ddl, Written};
use super::months::INTERNAL_SCHEMA;

/// What to do when the target table does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    Create,
    Fail,
}

/// What to do when the target table exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    Fail,
    Append,
    Replace,
}

/// Where an upload goes (ADBC modes: create = Create/Fail, append =
/// Fail/Append, replace = Create/Replace, create_append = Create/Append).
#[derive(Debug, Clone)]
pub struct IngestTarget {
    /// Schema of the month's database (`main` when unset).
    pub schema: Option<String>,
    pub table: String,
    /// A temporary table (catalog `temp`, schema `main`) on the Flight SQL
    /// session's connection; it lives as long as the session.
    pub temporary: bool,
    pub if_missing: IfMissing,
    pub if_exists: IfExists,
}

/// Rows buffered in the appender before its INSERT runs: bounds memory.
const FLUSH_ROWS: u64 = 256 * 1024;

impl IngestTarget {
    fn database_and_schema(&self) -> EngineResult<(&str, &str)> {
        match (self.temporary, self.schema.as_deref()) {
            (false, s) => Ok(("", s.unwrap_or("main"))),
            (true, None | Some("main")) => Ok(("temp", "main")),
            (true, Some(s)) => Err(EngineError::invalid(format!(
                "temporary tables live in schema main, not in schema {s}"
            ))),
        }
    }

    /// The quoted table name.
    fn qualified(&self) -> EngineResult<String> {
        let (db, schema) = self.database_and_schema()?;
        let name = format!("{}.{}", quote(schema), quote(&self.table));
        Ok(if db.is_empty() {
            name
        } else {
            format!("{db}.{name}")
        })
    }

    fn exists(&self, conn: &Conn) -> EngineResult<bool> {
        let (db, schema) = self.database_and_schema()?;
        let db = if db.is_empty() {
            "current_database()".to_string()
        } else {
            literal(db)
        };
        let r = rows(
            conn,
            &format!(
                "SELECT count(*) FROM system.main.duckdb_tables() WHERE database_name = {db}
                   AND lower(schema_name) = lower({}) AND lower(table_name) = lower({})",
                literal(schema),
                literal(&self.table)
            ),
        )?;
        Ok(r.first()
            .and_then(|r| r.first().cloned().flatten())
            .as_deref()
            != Some("0"))
    }
}

/// Creates, replaces or checks the target table for an upload of `schema`;
/// then inserts every batch received on `batches`. Returns the rows
/// inserted and, outside a transaction, the LSN of the change set.
pub(super) fn run(
    conn: &Conn,
    target: &IngestTarget,
    schema: &Schema,
    batches: &mut mpsc::Receiver<EngineResult<RecordBatch>>,
    log: &ChangeLog,
    txn: Option<u64>,
) -> EngineResult<Written> {
    if target.table.is_empty() {
        return Err(EngineError::invalid("ingest needs a table name"));
    }
    // Appended rows go through no statement the plan check sees: into the
    // bookkeeping (a shadow table's rows would reach the replicas as
    // changes) they are refused by name, as DuckDB resolves names: without
    // regard to case.
    if !target.temporary
        && target
            .schema
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(INTERNAL_SCHEMA))
    {
        return Err(EngineError::forbidden(BOOKKEEPING_REFUSAL));
    }
    let name = target.qualified()?;
    captured(conn, log, txn, |id| {
        let create = match (target.exists(conn)?, target.if_exists, target.if_missing) {
            (true, IfExists::Fail, _) => {
                return Err(EngineError::new(
                    ErrorClass::AlreadyExists,
                    format!(
                        "Catalog Error: Table with name {} already exists!",
                        target.table
                    ),
                ))
            }
            (true, IfExists::Append, _) => None,
            (true, IfExists::Replace, _) => Some("CREATE OR REPLACE"),
            (false, _, IfMissing::Create) => Some("CREATE"),

            (false, _, IfMissing::Fail) => {
                return Err(EngineError::not_found(format!(
                    "Catalog Error: Table with name {} does not exist!",
                    target.table
                )))
            }
        };
        if let Some(verb) = create {
            let columns = sql_types(schema)?
                .iter()
                .map(|(n, t)| format!("{} {t}", quote(n)))
                .collect::<Vec<_>>()
                .join(", ");
            let temp = if target.temporary { " TEMP" } else { "" };
            let sql = format!("{verb}{temp} TABLE {name} ({columns})");
            if target.temporary {
                conn.execute_batch(&sql)?;
            } else {
                ddl(conn, id, &sql, false, || Ok(conn.execute_batch(&sql)?))?;
            }
        }
        let mut ins = ArrowInserter::new(conn, &name, schema)?;
        let mut since_flush = 0u64;
        while let Some(batch) = batches.blocking_recv() {
            let batch = batch?;
            ins.append(&batch)?;
            since_flush += batch.num_rows() as u64;
            if since_flush >= FLUSH_ROWS {
                ins.flush()?;
                since_flush = 0;
            }
        }
        ins.flush()?;
        Ok(Written {
            schema: std::sync::Arc::new(Schema::empty()),
            batches: Vec::new(),
            changed: ins.rows(),
            lsn: None,
        })
    })
}
