//! The server's bookkeeping hidden from users' catalog queries.
//!
//! Every node file holds schema `__duckflock` (log, shadow tables, meta) and
//! the capture triggers on user tables. Flight SQL metadata calls filter
//! them, but users and BI tools also ask DuckDB directly:
//! `SELECT … FROM duckdb_columns()`, `information_schema.columns`,
//! `SHOW ALL TABLES`. DuckDB resolves an unqualified table function through
//! the connection's search path, where the temporary catalog comes first,
//! and its `information_schema`/`pg_catalog` views and `SHOW` call the same
//! unqualified names. So each connection the engine hands out gets TEMP
//! table macros under DuckDB's own names that return the built-in's rows
//! minus the bookkeeping. Nothing is rewritten and nothing is persisted (a
//! temp macro lives with its connection, on primaries and replicas alike).
//!
//! The server's own SQL calls the built-ins by their qualified names
//! (`system.main.duckdb_tables()`, [`super::catalog::sys`]).

use crate::duck::Conn;

use super::capture::TRIGGER_PREFIX;
use super::error::EngineResult;
use super::months::INTERNAL_SCHEMA as S;

/// The catalog functions that would show bookkeeping, and the condition a
/// row must meet to be shown.
fn filters() -> [(&'static str, String); 9] {
    let outside = format!("schema_name <> '{S}'");
    [
        ("duckdb_schemas", outside.clone()),
        ("duckdb_tables", outside.clone()),
        ("duckdb_columns", outside.clone()),
        ("duckdb_constraints", outside.clone()),
        ("duckdb_indexes", outside.clone()),
        ("duckdb_sequences", outside.clone()),
        ("duckdb_views", outside),
        (
            "duckdb_triggers",
            format!("NOT starts_with(trigger_name, '{TRIGGER_PREFIX}')"),
        ),
        // The macros themselves are not user functions either.
        (
            "duckdb_functions",
            format!(
                "NOT (database_name = 'temp' AND function_type = 'table_macro' AND function_name IN ({}))",
                NAMES
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    ]
}

const NAMES: [&str; 9] = [
    "duckdb_schemas",
    "duckdb_tables",
    "duckdb_columns",
    "duckdb_constraints",
    "duckdb_indexes",
    "duckdb_sequences",
    "duckdb_views",
    "duckdb_triggers",
    "duckdb_functions",
];

/// The statements that install the filtered views on one connection.
fn script() -> String {
    filters()
        .iter()
        .map(|(name, keep)| {
            format!(
                "CREATE OR REPLACE TEMP MACRO {name}() AS TABLE \
                 SELECT * FROM system.main.{name}() WHERE {keep};"
            )
        })
        .collect()
}

/// Installs the filtered catalog functions on a new connection.
pub fn install(conn: &Conn) -> EngineResult<()> {
    conn.execute_batch(&script())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duck::Database;

    #[test]
    fn bookkeeping_is_hidden_from_catalog_queries() {
        let db = Database::scratch().unwrap();
        let conn = db.connect().unwrap();
        conn.execute_batch(&format!(
            "CREATE SCHEMA {S}; CREATE TABLE {S}.cap_1 (__txn BIGINT, x INTEGER);
             CREATE SEQUENCE {S}.stmt; CREATE TABLE t (x INTEGER);
             CREATE TABLE {S}.log (x INTEGER);
             CREATE TRIGGER {TRIGGER_PREFIX}t AFTER INSERT ON t FOR EACH STATEMENT INSERT INTO {S}.log VALUES (1);"
        ))
        .unwrap();
        install(&conn).unwrap();
        let count = |sql: &str| -> i64 {
            let r = super::super::catalog::rows(&conn, sql).unwrap();
            r[0][0].as_deref().unwrap().parse().unwrap()
        };
        let hidden = format!("'{S}'");
        for sql in [
            format!("SELECT count(*) FROM duckdb_columns() WHERE schema_name = {hidden}"),
            format!("SELECT count(*) FROM duckdb_tables() WHERE schema_name = {hidden}"),
            format!("SELECT count(*) FROM duckdb_schemas() WHERE schema_name = {hidden}"),
            format!("SELECT count(*) FROM duckdb_sequences() WHERE schema_name = {hidden}"),
            format!(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = {hidden}"
            ),
            format!("SELECT count(*) FROM information_schema.tables WHERE table_schema = {hidden}"),
            format!(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = {hidden}"
            ),
            "SELECT count(*) FROM duckdb_triggers()".to_string(),
            "SELECT count(*) FROM duckdb_functions() WHERE database_name = 'temp'".to_string(),
        ] {
            assert_eq!(count(&sql), 0, "{sql}");
        }
        // User objects stay visible; the built-ins still see everything.
        assert_eq!(
            count("SELECT count(*) FROM duckdb_columns() WHERE table_name = 't'"),
            1
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM system.main.duckdb_tables() WHERE schema_name = {hidden}"
            )),
            2
        );
        // SHOW ALL TABLES goes through the same names.
        assert_eq!(count("SELECT count(*) FROM (SHOW ALL TABLES)"), 1);
    }
}
