//! Change capture on a month's primary. Every persistent user table has a
//! shadow table `__duckflock.cap_<n>` and three statement triggers that copy
//! the rows each INSERT/UPDATE/DELETE stored or removed (the values DuckDB
//! stored: defaults, `now()`, `random()`, sequences) into it, tagged with the
//! transaction id and a per-statement number. DDL is captured by the engine
//! around the statement: its SQL text, and a full image of every table it
//! created or reshaped. At commit the transaction's statements become one
//! change set (a row of `__duckflock.changes`, in the same DuckDB
//! transaction as the data) with the next LSN.

use serde::{Deserialize, Serialize};

use crate::duck::{Conn, Param};

use super::catalog::{rows, rows_cached};
use super::changelog::ChangeLog;
use super::error::{EngineError, EngineResult};
use super::months::INTERNAL_SCHEMA as S;
use super::visibility;

/// Connection variable holding the transaction id the triggers record.
const TXN_VAR: &str = "__df_txn";
/// Prefix of the capture triggers.
pub(super) const TRIGGER_PREFIX: &str = "__df_";
/// Prefix of the triggers that refuse clients' writes to the bookkeeping.
const GUARD_PREFIX: &str = "__df_guard_";
/// Connection variable under which the server's own statements may write
/// its bookkeeping tables. Clients cannot set variables (SET is refused).
const INTERNAL_VAR: &str = "__df_internal";
/// The bookkeeping tables only the server writes. The shadow tables are
/// written by the capture triggers inside clients' statements (DuckDB's
/// triggers cascade, so a guard cannot tell those inserts from a client's):
/// only their updates and deletes are guarded.
const GUARDED: [&str; 4] = ["meta", "capture", "changes", "ddl"];

/// Runs the server's own writes to its bookkeeping tables, which the guard
/// triggers let through only under [`INTERNAL_VAR`]. The variable is reset
/// whatever happens; a connection where that fails is not reused.
pub(super) fn internal(conn: &Conn, sql: &str) -> EngineResult<()> {
    internal_with(conn, || Ok(conn.execute_batch(sql)?))
}

/// [`internal`] for any statements `f` runs (kept prepared ones among them).
pub(super) fn internal_with<T>(
    conn: &Conn,
    f: impl FnOnce() -> EngineResult<T>,
) -> EngineResult<T> {
    conn.cached(&format!("SET VARIABLE {INTERNAL_VAR} = true"), &[])?;
    let out = f();
    if conn
        .cached(&format!("RESET VARIABLE {INTERNAL_VAR}"), &[])
        .is_err()
    {
        conn.mark_spent();
    }
    out
}

/// Statement triggers on `table` (in the bookkeeping schema) that fail
/// `ops` unless the server runs them (see [`internal`]).
fn guard_sql(table: &str, ops: &[&str]) -> String {
    let refuse = literal(&format!(
        "permission denied: {}",
        super::error::BOOKKEEPING_REFUSAL
    ));
    ops.iter()
        .map(|op| {
            let name = quote(&format!(
                "{GUARD_PREFIX}{table}_{}",
                op.to_ascii_lowercase()
            ));
            format!(
                "CREATE TRIGGER IF NOT EXISTS {name} AFTER {op} ON {S}.{} FOR EACH STATEMENT
                 INSERT INTO {S}.guard SELECT CAST(error({refuse}) AS INTEGER)
                 WHERE getvariable('{INTERNAL_VAR}') IS DISTINCT FROM true;",
                quote(table)
            )
        })
        .collect()
}

/// Installs the guard triggers of the bookkeeping tables and shadows
/// (idempotent). `guard` itself accepts no row at all.
fn guard(conn: &Conn) -> EngineResult<()> {
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {S}.guard (x INTEGER CHECK (false));");
    for t in GUARDED {
        sql.push_str(&guard_sql(t, &["INSERT", "UPDATE", "DELETE"]));
    }
    for (shadow, _, _) in shadows(conn)? {
        sql.push_str(&guard_sql(&shadow, &["UPDATE", "DELETE"]));
    }
    Ok(conn.execute_batch(&sql)?)
}

/// A table image to load after a DDL statement (CTAS, ALTER, rename).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    pub schema: String,
    pub table: String,
    pub shadow: String,
    /// Rows in the image (checked by the apply; `None` in change sets
    /// written before the count was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// One step of a change set, in statement order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Run `sql`, then replace each image table's rows by the shadow rows of
    /// statement `stmt`.
    Ddl {
        stmt: i64,
        sql: String,
        images: Vec<Image>,
    },
    /// Rows of statements `lo..=hi` on one table: delete the old images
    /// (`del`), then insert the new ones (`ins`). `old_rows`/`new_rows` are
    /// how many images of each kind the primary captured; the apply checks
    /// them (`None` in change sets written before they were recorded).
    Rows {
        lo: i64,
        hi: i64,
        schema: String,
        table: String,
        shadow: String,
        del: bool,
        ins: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_rows: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new_rows: Option<u64>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeqPos {
    pub schema: String,
    pub name: String,
    pub last: i64,
}

impl SeqPos {
    /// The sequence's quoted name, `"schema"."name"`.
    pub fn key(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.name))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChangeSet {
    pub ops: Vec<Op>,
    #[serde(default)]
    pub seqs: Vec<SeqPos>,
}

pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn cell(row: &[Option<String>], i: usize) -> String {
    row.get(i).cloned().flatten().unwrap_or_default()
}

fn int(row: &[Option<String>], i: usize) -> i64 {
    cell(row, i).parse().unwrap_or(0)
}

/// Runs `f` inside BEGIN/COMMIT on `conn`; rolls back when it fails.
pub(super) fn in_transaction<T>(
    conn: &Conn,
    f: impl FnOnce() -> EngineResult<T>,
) -> EngineResult<T> {
    conn.cached("BEGIN TRANSACTION", &[])?;
    match f() {
        Ok(v) => {
            conn.cached("COMMIT", &[])?;
            Ok(v)
        }
        Err(e) => {
            conn.rollback();
            Err(e)
        }
    }
}

/// Creates the bookkeeping tables of a primary (idempotent) and returns
/// (epoch, last LSN, next transaction id).
pub fn install(conn: &Conn, month: &str) -> EngineResult<(String, u64, u64)> {
    internal(conn, &format!(
        "CREATE SCHEMA IF NOT EXISTS {S};
         CREATE TABLE IF NOT EXISTS {S}.meta (key VARCHAR PRIMARY KEY, value VARCHAR);
         INSERT OR IGNORE INTO {S}.meta VALUES ('month', {m}), ('created_at', CAST(now() AS VARCHAR)),
             ('epoch', CAST(uuid() AS VARCHAR)), ('role', 'primary');
         CREATE SEQUENCE IF NOT EXISTS {S}.stmt;
         CREATE TABLE IF NOT EXISTS {S}.capture (shadow VARCHAR PRIMARY KEY, tbl_schema VARCHAR,
             tbl_name VARCHAR, signature VARCHAR, live BOOLEAN);
         CREATE TABLE IF NOT EXISTS {S}.changes (lsn BIGINT PRIMARY KEY, txn BIGINT NOT NULL,
             committed_at TIMESTAMPTZ, ops VARCHAR);
         CREATE TABLE IF NOT EXISTS {S}.ddl (txn BIGINT, stmt BIGINT, sql VARCHAR, images VARCHAR);",
        m = literal(month)
    ))?;
    guard(conn)?;
    let meta = rows(
        conn,
        &format!("SELECT value FROM {S}.meta WHERE key = 'epoch'"),
    )?;
    let epoch = meta.first().map(|r| cell(r, 0)).unwrap_or_default();
    let last = rows(
        conn,
        &format!("SELECT coalesce(max(lsn), 0), coalesce(max(txn), 0) FROM {S}.changes"),
    )?;
    let (mut last_lsn, mut max_txn) = last
        .first()
        .map(|r| (int(r, 0), int(r, 1)))
        .unwrap_or((0, 0));
    last_lsn = last_lsn.max(pruned_lsn(conn)? as i64);
    for s in shadows(conn)? {
        let r = rows(
            conn,
            &format!("SELECT coalesce(max(__txn), 0) FROM {S}.{}", quote(&s.0)),
        )?;
        max_txn = max_txn.max(r.first().map(|r| int(r, 0)).unwrap_or(0));
    }
    // Tables that predate capture (or were made without it) get triggers.
    in_transaction(conn, || {
        drop_triggers(conn)?;
        reconcile(conn, 0, 0, None)?;
        Ok::<_, EngineError>(())
    })?;
    Ok((epoch, last_lsn as u64, max_txn as u64 + 1))
}

/// The last change set pruned from the log (0: none).
pub fn pruned_lsn(conn: &Conn) -> EngineResult<u64> {
    let r = rows(
        conn,
        &format!("SELECT value FROM {S}.meta WHERE key = 'pruned_lsn'"),
    )?;
    Ok(r.first().map(|r| int(r, 0)).unwrap_or(0) as u64)
}

/// Every shadow table: (shadow, schema, table).
fn shadows(conn: &Conn) -> EngineResult<Vec<(String, String, String)>> {
    Ok(rows_cached(
        conn,
        &format!("SELECT shadow, tbl_schema, tbl_name FROM {S}.capture ORDER BY shadow"),
        &[],
    )?
    .iter()
    .map(|r| (cell(r, 0), cell(r, 1), cell(r, 2)))
    .collect())
}

/// The rows of every shadow table, as the current transaction sees them.
/// Nothing but a statement's triggers adds rows to a shadow and only the
/// server removes them (updates and deletes are guarded), so within one
/// transaction this number changes only when a statement added rows to a
/// shadow: what [`super::plan_check::Watch`] checks around a statement that
/// no capture trigger guards.
pub(super) fn shadow_rows(conn: &Conn) -> EngineResult<u64> {
    let all = shadows(conn)?;
    if all.is_empty() {
        return Ok(0);
    }
    let sum = all
        .iter()
        .map(|(s, _, _)| format!("(SELECT count(*) FROM {S}.{})", quote(s)))
        .collect::<Vec<_>>()
        .join(" + ");
    let r = rows_cached(conn, &format!("SELECT {sum}"), &[])?;
    Ok(r.first().map(|r| int(r, 0)).unwrap_or(0) as u64)
}

/// Starts a captured write transaction on a primary connection.
pub fn begin(conn: &Conn, log: &ChangeLog) -> EngineResult<u64> {
    begin_with(conn, log, || {
        conn.cached("BEGIN TRANSACTION", &[])?;
        Ok(())
    })
}

/// [`begin`], the transaction opened by `open` (a client's own `BEGIN`).
pub fn begin_with(
    conn: &Conn,
    log: &ChangeLog,
    open: impl FnOnce() -> EngineResult<()>,
) -> EngineResult<u64> {
    let txn = log.new_txn();
    open()?;
    if let Err(e) = conn.cached(
        &format!("SET VARIABLE {TXN_VAR} = $1"),
        &[Param::Int(txn as i64)],
    ) {
        conn.rollback();
        return Err(e.into());
    }
    Ok(txn)
}

/// A fingerprint of the server's own schema (its tables, views, sequences,
/// indexes and macros), to tell that a client's DDL touched it.
pub fn internal_fingerprint(conn: &Conn) -> EngineResult<String> {
    let sql = format!(
        "SELECT CAST(hash(list(x ORDER BY x)) AS VARCHAR) FROM (
           SELECT 's' AS x FROM system.main.duckdb_schemas() WHERE schema_name = '{S}'
           UNION ALL SELECT 't' || table_name || coalesce(sql, '') FROM system.main.duckdb_tables() WHERE schema_name = '{S}'
           UNION ALL SELECT 'v' || view_name || coalesce(sql, '') FROM system.main.duckdb_views() WHERE schema_name = '{S}'
           UNION ALL SELECT 'q' || sequence_name FROM system.main.duckdb_sequences() WHERE schema_name = '{S}'
           UNION ALL SELECT 'i' || index_name || coalesce(sql, '') FROM system.main.duckdb_indexes() WHERE schema_name = '{S}'
           UNION ALL SELECT 'f' || function_name FROM system.main.duckdb_functions() WHERE schema_name = '{S}'
           UNION ALL SELECT 'g' || trigger_name || coalesce(sql, '') FROM system.main.duckdb_triggers() WHERE schema_name = '{S}')"
    );
    Ok(rows(conn, &sql)?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
        .unwrap_or_default())
}

/// A persistent trigger the server did not make (`schema.table: name`), if
/// one exists.
/// Called inside a client's DDL, between [`before_ddl`] (which drops the
/// capture triggers) and [`after_ddl`]: every persistent trigger left
/// outside the bookkeeping schema is then a client's. Clients may not make
/// them: DuckDB runs a trigger inside the statement that fires it, so on the
/// primary its effects are captured like the statement's, and a replica
/// (a copy of the primary's file) would run it again on every change it
/// applies. A temporary trigger stays: DuckDB lets it touch only its own
/// connection's temporary tables.
pub fn client_trigger(conn: &Conn) -> EngineResult<Option<String>> {
    let found = rows(
        conn,
        &format!(
            "SELECT schema_name || '.' || table_name || ': ' || trigger_name
             FROM system.main.duckdb_triggers()
             WHERE database_name = current_database() AND schema_name <> '{S}'
             ORDER BY ALL LIMIT 1"
        ),
    )?;
    Ok(found
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten()))
}

/// Drops the triggers of a replica's user tables (none should exist: the
/// capture triggers are the primary's, and a client's trigger made before
/// clients were refused them would run again on what the replica applies).
pub fn drop_replica_triggers(conn: &Conn) -> EngineResult<()> {
    in_transaction(conn, || drop_user_table_triggers(conn))
}

/// Drops every trigger outside the bookkeeping schema (the capture
/// triggers, and any a client made), keeping the bookkeeping's guards.
fn drop_user_table_triggers(conn: &Conn) -> EngineResult<()> {
    drop_triggers_where(conn, &format!("schema_name <> '{S}'"))
}

/// Whether any secret exists on this connection's database (none ever may:
/// CREATE SECRET is refused).
pub fn has_secrets(conn: &Conn) -> EngineResult<bool> {
    let n = rows(conn, "SELECT count(*) FROM system.main.duckdb_secrets()")?;
    Ok(n.first()
        .and_then(|r| r.first().cloned().flatten())
        .is_some_and(|c| c != "0"))
}

/// A fingerprint of the persistent catalog (not temporary objects, not the
/// server's own schema): DDL that leaves it unchanged is not shipped.
pub fn catalog_fingerprint(conn: &Conn) -> EngineResult<String> {
    let sql = format!(
        "SELECT CAST(hash(list(x ORDER BY x)) AS VARCHAR) FROM (
           SELECT 's' || schema_name || coalesce(comment, '') AS x FROM system.main.duckdb_schemas()
             WHERE database_name = current_database() AND NOT internal AND schema_name <> '{S}'
           UNION ALL SELECT 't' || schema_name || '.' || table_name || coalesce(sql, '') || coalesce(comment, '')
             FROM system.main.duckdb_tables() WHERE database_name = current_database() AND NOT temporary AND schema_name <> '{S}'
           UNION ALL SELECT 'v' || schema_name || '.' || view_name || coalesce(sql, '') || coalesce(comment, '')
             FROM system.main.duckdb_views() WHERE database_name = current_database() AND NOT internal AND NOT temporary
           UNION ALL SELECT 'i' || schema_name || '.' || index_name || coalesce(sql, '')
             FROM system.main.duckdb_indexes() WHERE database_name = current_database()
           UNION ALL SELECT 'q' || schema_name || '.' || sequence_name || increment_by || coalesce(comment, '')
             FROM system.main.duckdb_sequences() WHERE database_name = current_database() AND NOT temporary AND schema_name <> '{S}'
           UNION ALL SELECT 'f' || schema_name || '.' || function_name || coalesce(macro_definition, '') || coalesce(CAST(parameters AS VARCHAR), '')
             FROM system.main.duckdb_functions() WHERE database_name = current_database() AND NOT internal
               AND function_type IN ('macro', 'table_macro')
           UNION ALL SELECT 'y' || schema_name || '.' || type_name || coalesce(logical_type, '')
             FROM system.main.duckdb_types() WHERE database_name = current_database() AND NOT internal
         )"
    );
    Ok(rows(conn, &sql)?
        .first()
        .map(|r| cell(r, 0))
        .unwrap_or_default())
}

/// The catalog identity of every persistent user table: a table replaced
/// (`CREATE OR REPLACE`) or altered gets a new one.
pub type TableOids = Vec<(String, String, String)>;

fn table_oids(conn: &Conn) -> EngineResult<TableOids> {
    Ok(rows(
        conn,
        &format!(
            "SELECT schema_name, table_name, CAST(table_oid AS VARCHAR) FROM system.main.duckdb_tables()
             WHERE database_name = current_database() AND NOT temporary AND schema_name <> '{S}'"
        ),
    )?
    .iter()
    .map(|r| (cell(r, 0), cell(r, 1), cell(r, 2)))
    .collect())
}

/// Drops the capture triggers (DuckDB refuses to rename or alter a table
/// that triggers depend on) and returns the tables' identities; [`after_ddl`]
/// puts the triggers back.
pub fn before_ddl(conn: &Conn) -> EngineResult<TableOids> {
    drop_triggers(conn)?;
    table_oids(conn)
}

fn drop_triggers(conn: &Conn) -> EngineResult<()> {
    drop_triggers_where(
        conn,
        &format!(
            "starts_with(trigger_name, '{TRIGGER_PREFIX}')
             AND NOT starts_with(trigger_name, '{GUARD_PREFIX}')"
        ),
    )
}

/// Drops the persistent triggers that match `filter` (over
/// `duckdb_triggers()`).
fn drop_triggers_where(conn: &Conn, filter: &str) -> EngineResult<()> {
    let triggers = rows(
        conn,
        &format!(
            "SELECT trigger_name, schema_name, table_name FROM system.main.duckdb_triggers()
             WHERE database_name = current_database() AND {filter}"
        ),
    )?;
    for t in triggers {
        conn.execute_batch(&format!(
            "DROP TRIGGER {} ON {}.{}",
            quote(&cell(&t, 0)),
            quote(&cell(&t, 1)),
            quote(&cell(&t, 2))
        ))?;
    }
    Ok(())
}

/// Records a DDL statement that changed the catalog: new and reshaped tables
/// get a fresh shadow and a full image, and every table gets its triggers
/// back.
///
/// A `CREATE` that made tables (`creates`) does not ship its own text:
/// `CREATE TABLE … AS SELECT` may read files, temp tables, variables,
/// `now()` or `random()`, none of which a replica has or would give the same
/// answer. The replicas get the column-list definition DuckDB keeps in its
/// catalog (constraints and defaults included) and the rows as the image.
pub fn after_ddl(
    conn: &Conn,
    txn: u64,
    sql: &str,
    creates: bool,
    changed: bool,
    before: &TableOids,
) -> EngineResult<()> {
    let stmt = next_stmt(conn)?;
    let after = table_oids(conn)?;
    let replaced: Vec<(String, String)> = after
        .into_iter()
        .filter(|t| !before.contains(t))
        .map(|(s, t, _)| (s, t))
        .collect();
    let images = reconcile(conn, txn, stmt, Some(&replaced))?;
    // A table replaced by an identical definition leaves the fingerprint
    // alone but has new rows: it ships too.
    if changed || !images.is_empty() {
        let shipped = match creates && !replaced.is_empty() {
            true => definitions(conn, &replaced)?,
            false => sql.to_string(),
        };
        let images = serde_json::to_string(&images)
            .map_err(|e| EngineError::internal(format!("images: {e}")))?;
        internal(
            conn,
            &format!(
                "INSERT INTO {S}.ddl VALUES ({txn}, {stmt}, {}, {})",
                literal(&shipped),
                literal(&images)
            ),
        )?;
    }
    Ok(())
}

/// `CREATE OR REPLACE TABLE` statements for `tables` from DuckDB's catalog
/// (`duckdb_tables().sql`, its own rendering of each definition).
fn definitions(conn: &Conn, tables: &[(String, String)]) -> EngineResult<String> {
    let mut out = Vec::new();
    for (schema, table) in tables {
        let r = rows(
            conn,
            &format!(
                "SELECT sql FROM system.main.duckdb_tables()
                 WHERE database_name = current_database() AND schema_name = {} AND table_name = {}",
                literal(schema),
                literal(table)
            ),
        )?;
        let sql = r.first().map(|r| cell(r, 0)).unwrap_or_default();
        let body = sql.strip_prefix("CREATE TABLE ").ok_or_else(|| {
            EngineError::internal(format!(
                "unexpected catalog definition of {schema}.{table}: {sql}"
            ))
        })?;
        out.push(format!("CREATE OR REPLACE TABLE {body}"));
    }
    Ok(out.join("\n"))
}

fn next_stmt(conn: &Conn) -> EngineResult<i64> {
    let r = rows(conn, &format!("SELECT nextval('{S}.stmt')"))?;
    Ok(r.first().map(|r| int(r, 0)).unwrap_or(0))
}

/// Brings shadows and triggers in line with the catalog. With `images`,
/// tables that are new, whose columns changed or that the statement replaced
/// (listed in `images`) get a new shadow holding their rows under statement
/// `stmt` (returned as images).
fn reconcile(
    conn: &Conn,
    txn: u64,
    stmt: i64,
    images: Option<&[(String, String)]>,
) -> EngineResult<Vec<Image>> {
    let tables = rows(
        conn,
        &format!(
            "SELECT t.schema_name, t.table_name,
                    string_agg(c.column_name || ' ' || c.data_type, ', ' ORDER BY c.column_index),
                    string_agg('\"' || replace(c.column_name, '\"', '\"\"') || '\" ' || c.data_type, ', '
                               ORDER BY c.column_index)
             FROM system.main.duckdb_tables() t JOIN system.main.duckdb_columns() c ON c.table_oid = t.table_oid
             WHERE t.database_name = current_database() AND NOT t.temporary AND t.schema_name <> '{S}'
             GROUP BY ALL ORDER BY 1, 2"
        ),
    )?;
    let live = rows(
        conn,
        &format!("SELECT shadow, tbl_schema, tbl_name, signature FROM {S}.capture WHERE live"),
    )?;
    let mut out = Vec::new();
    let mut keep = Vec::new();
    for t in &tables {
        let (schema, table, sig, columns) = (cell(t, 0), cell(t, 1), cell(t, 2), cell(t, 3));
        let replaced = images
            .map(|r| r.iter().any(|(s, t)| *s == schema && *t == table))
            .unwrap_or(false);
        let existing = live
            .iter()
            .find(|l| cell(l, 1) == schema && cell(l, 2) == table && cell(l, 3) == sig)
            .filter(|_| !replaced);
        let shadow = match existing {
            Some(l) => cell(l, 0),
            None => {
                // Declared column by column, not `CREATE TABLE AS … LIMIT 0`:
                // DuckDB 2.0 loses the rows of a large INSERT into a table
                // created that way earlier in the same transaction (they are
                // invisible after COMMIT until a restart).
                let shadow = format!("cap_{}", next_stmt(conn)?);
                let target = format!("{}.{}", quote(&schema), quote(&table));
                internal(conn, &format!(
                    "UPDATE {S}.capture SET live = false WHERE live AND tbl_schema = {} AND tbl_name = {};
                     INSERT INTO {S}.capture VALUES ({}, {}, {}, {}, true);",
                    literal(&schema),
                    literal(&table),
                    literal(&shadow),
                    literal(&schema),
                    literal(&table),
                    literal(&sig)
                ))?;
                conn.execute_batch(&format!(
                    "CREATE TABLE {S}.{shadow} (__txn BIGINT, __stmt BIGINT, __op TINYINT, {columns})"
                ))
                .map_err(|e| undeclarable(&target, &sig, e.into()))?;
                if images.is_some() {
                    // An image of a table whose rows this transaction hid
                    // (DuckDB 2.0.0, see `visibility`) would ship without them.
                    let (counted, scanned) = visibility::counts(conn, &target)?;
                    if counted != scanned {
                        return Err(EngineError::invalid(format!(
                            "{target} holds {counted} rows but DuckDB's scans return {scanned} in this \
                             transaction (a DuckDB 2.0.0 defect after an insert of no rows followed by a \
                             large one): commit the inserts first, then run this statement"
                        )));
                    }
                    let n = conn
                        .prepare(&format!(
                            "INSERT INTO {S}.{shadow} SELECT {txn}, {stmt}, 1, * FROM {target}"
                        ))?
                        .execute()?;
                    out.push(Image {
                        schema: schema.clone(),
                        table: table.clone(),
                        shadow: shadow.clone(),
                        rows: Some(n),
                    });
                }
                shadow
            }
        };
        keep.push(shadow.clone());
        create_triggers(conn, &schema, &table, &shadow)?;
    }
    for l in &live {
        if !keep.contains(&cell(l, 0)) {
            internal(
                conn,
                &format!(
                    "UPDATE {S}.capture SET live = false WHERE shadow = {}",
                    literal(&cell(l, 0))
                ),
            )?;
        }
    }
    Ok(out)
}

/// The error for a table whose column types DuckDB cannot declare in a
/// `CREATE TABLE` (the only one today: `AGGREGATE_STATE`, what `EXPORT_STATE`
/// gives): its row images have nowhere to go, so it is refused rather than
/// left unreplicated.
fn undeclarable(target: &str, columns: &str, e: EngineError) -> EngineError {
    EngineError::invalid(format!(
        "duckflock cannot replicate {target} ({columns}): {}. Replicas receive the rows each \
         statement changed through a table of the same column types, and DuckDB cannot declare \
         one of these types in CREATE TABLE (an aggregate's EXPORT_STATE is AGGREGATE_STATE). \
         Store finalize(state) instead, or keep the state in a TEMP table.",
        e.message
    ))
}

fn create_triggers(conn: &Conn, schema: &str, table: &str, shadow: &str) -> EngineResult<()> {
    let target = format!("{}.{}", quote(schema), quote(table));
    let into = format!("INSERT INTO {S}.{shadow}");
    let stmt = format!("(SELECT nextval('{S}.stmt') AS x) AS s");
    let var = format!("getvariable('{TXN_VAR}')");
    conn.execute_batch(&format!(
        "CREATE TRIGGER {TRIGGER_PREFIX}{shadow}_i AFTER INSERT ON {target}
             REFERENCING NEW TABLE AS n FOR EACH STATEMENT
             {into} SELECT {var}, s.x, 1, n.* FROM {stmt}, n;
         CREATE TRIGGER {TRIGGER_PREFIX}{shadow}_d AFTER DELETE ON {target}
             REFERENCING OLD TABLE AS o FOR EACH STATEMENT
             {into} SELECT {var}, s.x, -1, o.* FROM {stmt}, o;
         CREATE TRIGGER {TRIGGER_PREFIX}{shadow}_u AFTER UPDATE ON {target}
             REFERENCING OLD TABLE AS o NEW TABLE AS n FOR EACH STATEMENT
             {into} SELECT {var}, s.x, u.* FROM {stmt},
                 (SELECT -1, * FROM o UNION ALL SELECT 1, * FROM n) AS u;
         {guards}",
        guards = guard_sql(shadow, &["UPDATE", "DELETE"])
    ))?;
    Ok(())
}

/// The change set of transaction `txn` as seen inside it (before COMMIT),
/// and the sequence positions that moved since the last shipped ones. One
/// query reads the DDL steps, each shadow's statements and the sequences
/// (rows tagged `d`, `r`, `q`).
pub fn collect(conn: &Conn, txn: u64, log: &ChangeLog) -> EngineResult<ChangeSet> {
    let all = shadows(conn)?;
    let mut parts = vec![
        format!(
            "SELECT 'd' AS k, stmt AS n, sql AS a, images AS b, NULL::BIGINT AS del, NULL::BIGINT AS ins
             FROM {S}.ddl WHERE txn = $1"
        ),
        format!(
            "SELECT 'q', last_value, schema_name, sequence_name, NULL, NULL FROM system.main.duckdb_sequences()
             WHERE database_name = {} AND NOT temporary
               AND schema_name <> '{S}' AND last_value IS NOT NULL",
            literal(conn.database_name()?)
        ),
    ];
    for (shadow, _, _) in &all {
        parts.push(format!(
            "SELECT 'r', __stmt, {}, NULL, count(*) FILTER (WHERE __op < 0), count(*) FILTER (WHERE __op > 0)
             FROM {S}.{} WHERE __txn = $1 GROUP BY __stmt",
            literal(shadow),
            quote(shadow)
        ));
    }
    let mut ops: Vec<Op> = Vec::new();
    let mut ddl_stmts = Vec::new();
    let mut row_steps = Vec::new();
    let mut seqs = Vec::new();
    // One text per set of shadows: kept prepared, the transaction a parameter.
    for r in rows_cached(conn, &parts.join(" UNION ALL "), &[Param::Int(txn as i64)])? {
        match cell(&r, 0).as_str() {
            "d" => {
                let images: Vec<Image> = serde_json::from_str(&cell(&r, 3))
                    .map_err(|e| EngineError::internal(format!("images: {e}")))?;
                ddl_stmts.push(int(&r, 1));
                ops.push(Op::Ddl {
                    stmt: int(&r, 1),
                    sql: cell(&r, 2),
                    images,
                });
            }
            "q" => seqs.push(SeqPos {
                schema: cell(&r, 2),
                name: cell(&r, 3),
                last: int(&r, 1),
            }),
            _ => row_steps.push(r),
        }
    }
    for r in row_steps {
        let stmt = int(&r, 1);
        if ddl_stmts.contains(&stmt) {
            continue; // a DDL statement's image rows
        }
        let shadow = cell(&r, 2);
        let Some((_, schema, table)) = all.iter().find(|(s, _, _)| *s == shadow) else {
            continue;
        };
        let (old_rows, new_rows) = (int(&r, 4).max(0) as u64, int(&r, 5).max(0) as u64);
        ops.push(Op::Rows {
            lo: stmt,
            hi: stmt,
            schema: schema.clone(),
            table: table.clone(),
            shadow,
            del: old_rows > 0,
            ins: new_rows > 0,
            old_rows: Some(old_rows),
            new_rows: Some(new_rows),
        });
    }
    ops.sort_by_key(|op| match op {
        Op::Ddl { stmt, .. } => *stmt,
        Op::Rows { lo, .. } => *lo,
    });
    let ops = merge_inserts(ops);
    let state = log.lock();
    seqs.retain(|p: &SeqPos| state.shipped_seqs.get(&p.key()) != Some(&p.last));
    Ok(ChangeSet { ops, seqs })
}

/// Consecutive insert-only statements on one table become one step.
fn merge_inserts(ops: Vec<Op>) -> Vec<Op> {
    let mut out: Vec<Op> = Vec::with_capacity(ops.len());
    for op in ops {
        if let (
            Some(Op::Rows {
                hi,
                shadow: prev,
                del: false,
                ins: true,
                new_rows,
                ..
            }),
            Op::Rows {
                hi: next_hi,
                shadow,
                del: false,
                ins: true,
                new_rows: next_rows,
                ..
            },
        ) = (out.last_mut(), &op)
        {
            if prev == shadow {
                *hi = *next_hi;
                *new_rows = (*new_rows).zip(*next_rows).map(|(a, b)| a + b);
                continue;
            }
        }
        out.push(op);
    }
    out
}

/// Commits a captured transaction: an empty change set commits plainly; a
/// non-empty one gets the next LSN, is written to the log and commits with
/// the data. Returns the LSN (`None`: nothing to ship). Rolls back on error.
pub fn commit(conn: &Conn, txn: u64, log: &ChangeLog) -> EngineResult<Option<u64>> {
    let out = (|| {
        let cs = collect(conn, txn, log)?;
        if cs.ops.is_empty() && cs.seqs.is_empty() {
            conn.cached("COMMIT", &[])?;
            return Ok((None, Vec::new()));
        }
        let json = serde_json::to_string(&cs)
            .map_err(|e| EngineError::internal(format!("change set: {e}")))?;
        let mut state = log.lock();
        let lsn = state.last_lsn + 1;
        internal_with(conn, || {
            conn.cached(
                &format!("INSERT INTO {S}.changes VALUES ($1, $2, now(), $3)"),
                &[
                    Param::Int(lsn as i64),
                    Param::Int(txn as i64),
                    Param::Text(&json),
                ],
            )?;
            Ok(())
        })?;
        conn.cached("COMMIT", &[])?;
        if cs.ops.iter().any(|op| matches!(op, Op::Ddl { .. })) {
            // Other connections now see the new catalog.
            super::plan_check::catalog_changed();
        }
        for p in &cs.seqs {
            let e = state.shipped_seqs.entry(p.key()).or_insert(p.last);
            *e = (*e).max(p.last);
        }
        log.committed(&mut state, lsn);
        Ok((Some(lsn), large_appends(&cs)))
    })();
    match out {
        Ok((lsn, large)) => {
            // Committed: a failing check is only logged (and retried).
            match visibility::repair(conn, &large) {
                Ok(left) => log.still_hiding(left),
                Err(e) => {
                    tracing::warn!(error = %e, "could not check appended tables");
                    log.still_hiding(large);
                }
            }
            Ok(lsn)
        }
        Err(e) => {
            conn.rollback();
            Err(e)
        }
    }
}

/// The tables (quoted names) a change set appended a row group or more to:
/// the appends DuckDB 2.0.0 can hide ([`visibility`]).
pub fn large_appends(cs: &ChangeSet) -> Vec<String> {
    let mut out: Vec<String> = cs
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Rows {
                schema,
                table,
                new_rows: Some(n),
                ..
            } if *n >= visibility::ROW_GROUP => Some(format!("{}.{}", quote(schema), quote(table))),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Deletes log entries every replica has applied (all up to `upto`, which is
/// recorded as `pruned_lsn`, the LSN high-water mark once the log is empty) and drops retired
/// shadows that became empty. Runs in its own transaction.
pub fn prune(conn: &Conn, upto: u64) -> EngineResult<()> {
    in_transaction(conn, || {
        let done = format!("SELECT txn FROM {S}.changes WHERE lsn <= {upto}");
        for (shadow, _, _) in shadows(conn)? {
            internal(
                conn,
                &format!("DELETE FROM {S}.{} WHERE __txn IN ({done})", quote(&shadow)),
            )?;
        }
        internal(
            conn,
            &format!(
                "DELETE FROM {S}.ddl WHERE txn IN ({done});
             DELETE FROM {S}.changes WHERE lsn <= {upto};
             INSERT OR REPLACE INTO {S}.meta VALUES ('pruned_lsn', '{upto}');"
            ),
        )?;
        let retired = rows(
            conn,
            &format!("SELECT shadow FROM {S}.capture WHERE NOT live"),
        )?;
        for r in retired {
            let shadow = cell(&r, 0);
            let n = rows(
                conn,
                &format!("SELECT count(*) FROM {S}.{}", quote(&shadow)),
            )?;
            if n.first().map(|r| int(r, 0)) == Some(0) {
                internal(
                    conn,
                    &format!(
                        "DROP TABLE {S}.{}; DELETE FROM {S}.capture WHERE shadow = {}",
                        quote(&shadow),
                        literal(&shadow)
                    ),
                )?;
            }
        }
        Ok::<_, EngineError>(())
    })
}

/// Makes a fresh copy of the primary a replica: no triggers but the
/// bookkeeping's guards, no shadows, no log; `applied_lsn` set to the LSN the copy was taken at.
pub fn make_replica(conn: &Conn, lsn: u64) -> EngineResult<()> {
    in_transaction(conn, || {
        // The capture triggers, and any a client made before clients were
        // refused triggers: a replica must not run them on what it applies
        // (the primary captured their effects).
        drop_user_table_triggers(conn)?;
        for (shadow, _, _) in shadows(conn)? {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS {S}.{}", quote(&shadow)))?;
        }
        internal(
            conn,
            &format!(
                "DELETE FROM {S}.capture; DELETE FROM {S}.changes; DELETE FROM {S}.ddl;
             INSERT OR REPLACE INTO {S}.meta VALUES ('role', 'replica'), ('applied_lsn', '{lsn}');"
            ),
        )?;
        Ok::<_, EngineError>(())
    })
}

/// The key values of the rows transaction `txn` inserted (not updated) into
/// tables whose key column is filled from a sequence (`DEFAULT nextval(…)`,
/// as the table API makes it): the generated ids the HTTP gateway reports.
/// At most `limit` values.
pub fn inserted_ids(conn: &Conn, txn: u64, limit: usize) -> EngineResult<Vec<String>> {
    let generated = rows(
        conn,
        &format!(
            "SELECT c.shadow, col.column_name FROM {S}.capture c
             JOIN system.main.duckdb_columns() col
               ON col.database_name = current_database() AND col.schema_name = c.tbl_schema
              AND col.table_name = c.tbl_name
             WHERE c.live AND starts_with(col.column_default, 'nextval(')
             ORDER BY c.shadow"
        ),
    )?;
    let mut ids = Vec::new();
    for r in generated {
        let (shadow, column) = (quote(&cell(&r, 0)), quote(&cell(&r, 1)));
        let sql = format!(
            "SELECT {column}::VARCHAR FROM {S}.{shadow} WHERE __txn = {txn} AND __op = 1
               AND __stmt NOT IN (SELECT __stmt FROM {S}.{shadow} WHERE __txn = {txn} AND __op = -1)
             LIMIT {}",
            limit + 1 - ids.len().min(limit)
        );
        ids.extend(
            rows(conn, &sql)?
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten()),
        );
        if ids.len() > limit {
            break;
        }
    }
    ids.truncate(limit);
    Ok(ids)
}
