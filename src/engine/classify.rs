//! What a statement is, decided by DuckDB's parser (the prepared statement's
//! type), never by looking at the SQL text.
//!
//! The type is the one DuckDB gives the *prepared* statement: a PRAGMA that
//! only reads (`table_info`, `show_tables`, `database_size`, `version`…) is
//! rewritten by DuckDB into a query and prepares as SELECT; a PRAGMA that
//! changes state (`force_checkpoint`, `disable_checkpoint_on_shutdown`)
//! stays PRAGMA, and one that sets an option (`threads=1`,
//! `enable_profiling`) prepares as SET. `CHECKPOINT` prepares as CALL.

use std::collections::HashMap;
use std::sync::OnceLock;

use parking_lot::Mutex;
use serde_json::Value;

use crate::duck::{Conn, StatementType};

use super::catalog::rows;
use super::error::{EngineError, EngineResult};
use super::months::INTERNAL_SCHEMA;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// Reads only: may run on any node of the month.
    Read,
    /// Changes data or schema: runs on the month's primary.
    Write,
    /// BEGIN / COMMIT / ROLLBACK in SQL.
    Transaction,
    /// Refused for every client.
    Forbidden(&'static str),
}

pub fn classify(t: StatementType) -> StatementKind {
    use StatementType::*;
    match t {
        Select | Explain => StatementKind::Read,
        Pragma => StatementKind::Forbidden(
            "this PRAGMA changes server state and is not allowed (PRAGMAs that only read, \
             such as table_info, show_tables, database_size, storage_info, version, work)",
        ),
        Call => StatementKind::Forbidden(
            "CALL is not allowed: CHECKPOINT and other maintenance are the server's; \
             query a table function with SELECT * FROM f(...)",
        ),
        Insert | Update | Delete | MergeInto | Create | CreateFunc | Alter | Drop | Multi
        | Analyze | Vacuum => StatementKind::Write,
        Transaction => StatementKind::Transaction,
        Attach | Detach => {
            StatementKind::Forbidden("ATTACH/DETACH is not allowed: each month is its own catalog")
        }
        Load | UpdateExtensions => {
            StatementKind::Forbidden("INSTALL/LOAD of extensions is not allowed")
        }
        Set | VariableSet => {
            StatementKind::Forbidden("changing server settings with SET/RESET is not allowed")
        }
        // DuckDB's allowed_directories cannot tell reads from writes: a
        // COPY … TO could overwrite the files users query in place.
        Copy | CopyDatabase | Export => StatementKind::Forbidden(
            "COPY/EXPORT is not allowed through SQL (it could write into the files dirs, \
             which SQL may only read): write a query's result with the `export` action \
             (Flight SQL DoAction, or POST /api/v1/export) into the export dir; read files \
             in place with read_csv/read_parquet/read_json/read_xlsx or FROM 'file', and \
             load them with CREATE TABLE … AS or INSERT … SELECT FROM read_…",
        ),
        Prepare | Execute => StatementKind::Forbidden(
            "SQL PREPARE/EXECUTE is not allowed: use Flight SQL prepared statements",
        ),
        Other => StatementKind::Forbidden("this statement type is not supported"),
    }
}

/// Table functions no client may call, wherever they appear: maintenance
/// (`checkpoint()` is what `CHECKPOINT` runs), the secrets manager, and the
/// functions that parse a string as SQL at bind time (which would hide a
/// statement from this check).
pub(super) const DENIED_FUNCTIONS: [&str; 6] = [
    "checkpoint",
    "force_checkpoint",
    "duckdb_secrets",
    "which_secret",
    "query",
    "query_table",
];

/// Refuses a SELECT that calls a denied table function or names the
/// server's bookkeeping schema. DuckDB's parser decides: the statement's
/// parse tree (`json_serialize_sql`) is walked for table functions and base
/// tables. Statements the serializer does not cover (PRAGMA rewrites, PIVOT)
/// hold neither a table function call by name nor a bookkeeping table that
/// could be named otherwise, and pass.
pub fn guard_select(conn: &Conn, sql: &str) -> EngineResult<()> {
    serializable(conn, sql).map(|_| ())
}

/// [`guard_select`], answering whether DuckDB could serialize the parse tree
/// at all (a PRAGMA rewritten into a query cannot: it is planned only after
/// DuckDB expands it, and cannot be explained either).
pub fn serializable(conn: &Conn, sql: &str) -> EngineResult<bool> {
    if let Some(s) = passed().lock().get(sql) {
        return Ok(*s);
    }
    let q = format!(
        "SELECT json_serialize_sql({})",
        super::capture::literal(sql)
    );
    let tree = rows(conn, &q)?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten());
    let tree = tree
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .filter(|t| t.get("error").and_then(Value::as_bool) != Some(true));
    let Some(tree) = tree else {
        remember(sql, false);
        return Ok(false);
    };
    match denied_in(&tree) {
        Some(why) => Err(EngineError::forbidden(why)),
        None => {
            remember(sql, true);
            Ok(true)
        }
    }
}

/// Statements that passed [`guard_select`] (the verdict depends on the text
/// alone), and whether they serialized: a prepared statement run again is
/// not parsed again. Bounded.
fn passed() -> &'static Mutex<HashMap<String, bool>> {
    static PASSED: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    PASSED.get_or_init(Default::default)
}

const PASSED_MAX: usize = 4096;
const PASSED_MAX_LEN: usize = 4096;

fn remember(sql: &str, serialized: bool) {
    if sql.len() > PASSED_MAX_LEN {
        return;
    }
    let mut set = passed().lock();
    if set.len() >= PASSED_MAX {
        set.clear();
    }
    set.insert(sql.to_string(), serialized);
}

fn denied_in(v: &Value) -> Option<String> {
    match v {
        Value::Object(map) => {
            let kind = map.get("type").and_then(Value::as_str);
            if kind == Some("TABLE_FUNCTION") {
                let name = map
                    .get("function")
                    .and_then(|f| f.get("function_name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if DENIED_FUNCTIONS.contains(&name.as_str()) {
                    return Some(format!(
                        "the table function {name}() is not allowed (maintenance, secrets and \
                         SQL-in-a-string belong to the server)"
                    ));
                }
            }
            if kind == Some("BASE_TABLE") {
                let schema = map.get("schema_name").and_then(Value::as_str);
                if schema.is_some_and(|s| s.eq_ignore_ascii_case(INTERNAL_SCHEMA)) {
                    return Some(format!(
                        "the schema {INTERNAL_SCHEMA} holds the server's bookkeeping and is not \
                         accessible"
                    ));
                }
            }
            map.values().find_map(denied_in)
        }
        Value::Array(items) => items.iter().find_map(denied_in),
        _ => None,
    }
}

/// What a prepared statement of `sql` is, refusing what no client may run
/// (see [`refuse`] and [`guard_select`]).
pub fn check(conn: &Conn, t: StatementType, sql: &str) -> EngineResult<StatementKind> {
    let kind = classify(t);
    if let Some(e) = refuse(kind) {
        return Err(e);
    }
    if t == StatementType::Select {
        guard_select(conn, sql)?;
    }
    Ok(kind)
}

/// The error for a statement kind a caller may not run.
pub fn refuse(kind: StatementKind) -> Option<EngineError> {
    match kind {
        StatementKind::Forbidden(why) => Some(EngineError::forbidden(why)),
        StatementKind::Transaction => Some(EngineError::invalid(
            "BEGIN/COMMIT/ROLLBACK in SQL run only in a Flight SQL session, each sent as a statement of its own (ADBC: adbc.flight.sql.rpc.with_cookie_middleware=true keeps the session); otherwise use Flight SQL transactions (BeginTransaction/EndTransaction, e.g. ADBC autocommit=False)",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duck::Database;

    #[test]
    fn guard_refuses_denied_functions_and_bookkeeping() {
        let db = Database::scratch().unwrap();
        let conn = db.connect().unwrap();
        for sql in [
            "SELECT * FROM checkpoint()",
            "SELECT * FROM system.main.force_checkpoint()",
            "WITH x AS (SELECT * FROM duckdb_secrets()) SELECT * FROM x",
            "SELECT (SELECT count(*) FROM __duckflock.changes)",
            "SELECT * FROM query('SELECT 1')",
            "SELECT * FROM \"__DUCKFLOCK\".t",
            "SELECT 1 UNION ALL SELECT * FROM which_secret('s3://x', 's3')",
        ] {
            let e = guard_select(&conn, sql).unwrap_err();
            assert_eq!(e.class, super::super::ErrorClass::PermissionDenied, "{sql}");
        }
        for sql in [
            "SELECT 1",
            "SELECT * FROM range(3)",
            "SELECT 'checkpoint()' AS s",
            "SELECT * FROM main.checkpoints",
            "PRAGMA table_info('t')",
        ] {
            assert!(guard_select(&conn, sql).is_ok(), "{sql}");
        }
    }
}
