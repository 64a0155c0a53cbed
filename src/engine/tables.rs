//! Tables made through duckflock's table API (the `create_table` action,
//! later HTTP `POST /api/v1/tables`): identifiers are quoted, each column
//! `type` is checked by DuckDB itself to be exactly one column definition
//! (constraints such as `BIGINT PRIMARY KEY` or `TIMESTAMP DEFAULT
//! CURRENT_TIMESTAMP` are fine; a second column or statement is not), and a
//! single integer primary key gets generated ids: a sequence as its default,
//! so an INSERT that leaves it out gets a fresh id, replicated as the value
//! the primary stored.

use serde::{Deserialize, Serialize};

use crate::duck::{Conn, Database, StatementType};

use super::capture::{literal, quote};
use super::catalog::rows;
use super::error::{EngineError, EngineResult};
use super::exec::ddl;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub r#type: String,
}

/// What `create_table` made.
#[derive(Debug, Clone, Serialize)]
pub struct TableCreated {
    pub table_name: String,
    pub columns: Vec<ColumnSpec>,
    /// The column that gets generated ids, if any.
    pub generated_id: Option<String>,
}

fn column_sql(c: &ColumnSpec) -> String {
    format!("{} {}", quote(&c.name), c.r#type)
}

/// Checks every column definition with DuckDB in a throwaway in-memory
/// database: the text must parse as one CREATE TABLE statement and create
/// exactly one column.
pub(super) fn check_columns(columns: &[ColumnSpec]) -> EngineResult<()> {
    if columns.is_empty() {
        return Err(EngineError::invalid("a table needs at least one column"));
    }
    let db = Database::scratch()?;
    let conn = db.connect()?;
    for (i, c) in columns.iter().enumerate() {
        if c.name.is_empty() || c.r#type.trim().is_empty() {
            return Err(EngineError::invalid(format!(
                "column {i} needs a name and a type"
            )));
        }
        let bad = |why: &str| {
            EngineError::invalid(format!(
                "column {:?}: type {:?} is not one column definition ({why})",
                c.name, c.r#type
            ))
        };
        let sql = format!("CREATE TABLE t{i} ({})", column_sql(c));
        let script = conn.extract(&sql).map_err(|e| bad(&e.message))?;
        if script.len() != 1 {
            return Err(bad("more than one statement"));
        }
        let stmt = script.prepare(&conn, 0).map_err(|e| bad(&e.message))?;
        if stmt.statement_type() != StatementType::Create {
            return Err(bad("not a column"));
        }
        drop(stmt);
        conn.execute_batch(&sql).map_err(|e| bad(&e.message))?;
        let n = rows(
            &conn,
            &format!("SELECT count(*) FROM system.main.duckdb_columns() WHERE table_name = 't{i}'"),
        )?;
        if n.first()
            .and_then(|r| r.first().cloned().flatten())
            .as_deref()
            != Some("1")
        {
            return Err(bad("it defines more than one column"));
        }
    }
    Ok(())
}

/// Creates the table in captured transaction `txn` on the primary (each DDL
/// statement recorded for the replicas), then gives a single integer primary
/// key without a default a sequence as its default.
pub(super) fn create(
    conn: &Conn,
    txn: u64,
    schema: &str,
    table: &str,
    columns: &[ColumnSpec],
) -> EngineResult<Option<String>> {
    let name = format!("{}.{}", quote(schema), quote(table));
    let cols: Vec<String> = columns.iter().map(column_sql).collect();
    let sql = format!("CREATE TABLE {name} ({})", cols.join(", "));
    ddl(conn, txn, &sql, false, || Ok(conn.execute_batch(&sql)?))?;
    let key = rows(
        conn,
        &format!(
            "SELECT c.column_name FROM system.main.duckdb_constraints() k
               JOIN system.main.duckdb_columns() c ON c.table_oid = k.table_oid
                AND c.column_name = k.constraint_column_names[1]
             WHERE k.database_name = current_database() AND k.schema_name = {s} AND k.table_name = {t}
               AND k.constraint_type = 'PRIMARY KEY' AND len(k.constraint_column_names) = 1
               AND c.column_default IS NULL
               AND c.data_type IN ('TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'HUGEINT',
                                   'UTINYINT', 'USMALLINT', 'UINTEGER', 'UBIGINT', 'UHUGEINT')",
            s = literal(schema),
            t = literal(table)
        ),
    )?;
    let Some(column) = key.first().and_then(|r| r.first().cloned().flatten()) else {
        return Ok(None);
    };
    let seq = format!("{table}_{column}_seq");
    let seq_name = format!("{}.{}", quote(schema), quote(&seq));
    let create_seq = format!("CREATE SEQUENCE {seq_name}");
    ddl(conn, txn, &create_seq, false, || {
        Ok(conn.execute_batch(&create_seq)?)
    })?;
    let set_default = format!(
        "ALTER TABLE {name} ALTER COLUMN {} SET DEFAULT nextval({})",
        quote(&column),
        literal(&seq_name)
    );
    ddl(conn, txn, &set_default, false, || {
        Ok(conn.execute_batch(&set_default)?)
    })?;
    Ok(Some(column))
}
