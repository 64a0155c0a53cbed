//! What a client's statement reads, decided by DuckDB's own plan.
//!
//! DuckDB 2.0 serializes the parse tree of SELECTs only (what
//! [`super::classify::guard_select`] walks), names no table for DML, and
//! views, table macros and `query_table()` hide what any statement reads
//! behind a name. Its physical plan hides nothing: each table scan carries
//! the qualified name of the table it reads and each table function its name,
//! after views and macros were expanded and parameters bound. So right before
//! a client's statement runs, the engine asks DuckDB for the plan of exactly
//! that text with exactly those parameter values (`EXPLAIN (FORMAT json)`), on
//! the connection that runs it, and refuses the statement when the plan reads
//! the bookkeeping schema or calls a denied table function.
//!
//! A verdict is remembered per connection until any DDL (a client's, or one a
//! replica replays) may have changed what a name means, for a text without
//! parameters or one DuckDB bound without their values; a parameter that can
//! name what is read (`query_table(?)`) leaves its type unresolved, and then
//! each run is checked. `EXPLAIN` itself cannot be explained: the statement
//! it explains is checked before it runs, and its output, the plan, before
//! it reaches the client or commits.

use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, RecordBatch};
use serde_json::Value;

use crate::duck::{Conn, DuckErrorKind, Prepared, QueryResult, StatementType};

use super::capture;
use super::classify::DENIED_FUNCTIONS;
use super::error::{EngineError, EngineResult};
use super::exec::{bind, Row};
use super::months::INTERNAL_SCHEMA;

/// Bumped by every DDL that may change what a name resolves to.
static CATALOG_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Forgets every remembered verdict: a view, macro or table may now mean
/// something else.
pub(super) fn catalog_changed() {
    CATALOG_EPOCH.fetch_add(1, Ordering::SeqCst);
}

/// Refuses `sql` (one statement, of type `t`, with parameter row `row`) if
/// its plan on `conn` reads the bookkeeping or calls a denied function.
pub(super) fn verify(
    conn: &Conn,
    t: StatementType,
    sql: &str,
    row: Option<Row<'_>>,
) -> EngineResult<Verdict> {
    // `;SELECT 1` is SELECT 1: empty statements in front hold nothing (a
    // comment in front is not looked into: such a text is refused below).
    let sql = sql.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
    if t == StatementType::Explain {
        // Its output is checked too (see [`explain_output`]), but an EXPLAIN
        // ANALYZE runs its statement: that statement is checked like any.
        let inner = explained(conn, sql)?;
        let it = conn.extract(inner)?.prepare(conn, 0)?.statement_type();
        if it == StatementType::Explain {
            return Err(EngineError::invalid(
                "EXPLAIN of an EXPLAIN is not supported",
            ));
        }
        return verify(conn, it, inner, row);
    }
    let epoch = CATALOG_EPOCH.load(Ordering::SeqCst);
    // Only texts whose plan no parameter value can change are remembered.
    if conn.is_verified(epoch, sql) {
        return Ok(Verdict::default());
    }
    // A PRAGMA that DuckDB rewrote into a query of its own (`table_info`,
    // `show_tables`, `database_size`) cannot be explained; its rewrite reads
    // the catalog through a pragma function, never a table by name.
    if t == StatementType::Select && !super::classify::serializable(conn, sql)? {
        return Ok(Verdict::default());
    }
    // Parsed first: a statement that fails to prepare would abort the
    // client's transaction, a text that fails to parse does not.
    let text = format!("EXPLAIN (FORMAT json) {sql}");
    let script = match conn.extract(&text) {
        Ok(s) if s.len() == 1 => s,
        // TRUNCATE and COMMENT ON cannot be explained; each names one object
        // and reads no table. Anything else that cannot is not run.
        Err(e) if e.kind == DuckErrorKind::Parser => {
            if matches!(t, StatementType::Delete | StatementType::Alter) {
                return Ok(Verdict::default());
            }
            return Err(EngineError::forbidden(format!(
                "duckflock could not check what this statement reads (DuckDB cannot EXPLAIN it: {})",
                e.message
            )));
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {
            return Err(EngineError::invalid(
                "send one statement at a time here (this text holds several)",
            ))
        }
    };
    if t == StatementType::Multi {
        verify_multi(conn, &text)?;
        return Ok(Verdict::default());
    }
    let explain = script.prepare(conn, 0)?;
    let fixed = row.is_none() || bound_without_values(&explain)?;
    let plans = plans_of(explain, row)?;
    let mut verdict = Verdict::default();
    for p in &plans {
        let tree: Value = serde_json::from_str(p)
            .map_err(|e| EngineError::internal(format!("DuckDB's JSON plan: {e}")))?;
        if let Some(why) = denied_in_plan(&tree) {
            return Err(EngineError::forbidden(why));
        }
        if any_operator(&tree, &COPY_OPERATORS) {
            return Err(EngineError::forbidden(
                "COPY is not allowed through SQL, in a WITH either: write a query's result \
                 with the `export` action (Flight SQL DoAction, or POST /api/v1/export)",
            ));
        }
        // In a query or a CREATE TABLE … AS only a data-modifying WITH puts
        // such an operator there (DuckDB allows it at the top level only,
        // and not in views or macros).
        if !changes_data(t) && any_operator(&tree, &DML_OPERATORS) {
            return Err(EngineError::invalid(
                "this statement changes data inside a WITH (INSERT, UPDATE or DELETE … \
                 RETURNING in a query or a CREATE TABLE … AS), which duckflock would neither \
                 run on the primary nor replicate: send the INSERT, UPDATE or DELETE … \
                 RETURNING as a statement of its own (its rows come back the same way)",
            ));
        }
        verdict.watch |= changes_data(t) && unguarded(&tree);
    }
    if fixed && !verdict.watch {
        conn.set_verified(epoch, sql);
    }
    Ok(verdict)
}

/// Whether DuckDB bound `stmt` whole without its parameters' values, so
/// that every value runs the same plan and reads the same tables. A
/// parameter in a place DuckDB needs a constant at bind time (the table of
/// `query_table(?)`, the file of `read_csv(?)`, a table macro's argument)
/// leaves the statement to be bound again with the values, and that
/// parameter's type unresolved: then each run is checked with its values.
/// (An `executemany` of 100,000 rows would otherwise plan its EXPLAIN
/// 100,000 times.)
fn bound_without_values(stmt: &Prepared<'_>) -> EngineResult<bool> {
    Ok(stmt
        .parameter_schema()?
        .fields()
        .iter()
        .all(|f| f.data_type() != &arrow::datatypes::DataType::Null))
}

/// What a statement that passed [`verify`] needs around its execution on
/// the primary.
#[must_use = "a write must run inside Verdict::watch"]
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Verdict {
    /// The statement changes rows that no capture trigger guards (see
    /// [`unguarded`]): a temporary table's, or a shadow table's.
    watch: bool,
}

impl Verdict {
    /// Starts watching the shadow tables (inside the statement's
    /// transaction) if the statement could add rows to them.
    pub(super) fn watch(self, conn: &Conn) -> EngineResult<Watch> {
        Ok(Watch(if self.watch {
            Some(capture::shadow_rows(conn)?)
        } else {
            None
        }))
    }
}

/// The shadow tables' rows before a statement ran.
pub(super) struct Watch(Option<u64>);

impl Watch {
    /// Refuses the statement, and rolls its transaction back (a client's
    /// too: nothing of it may commit, and it stays failed until the client
    /// ends it), if it added rows to a shadow table: they would reach the
    /// replicas as changes the primary never made.
    pub(super) fn check(self, conn: &Conn) -> EngineResult<()> {
        let Some(before) = self.0 else {
            return Ok(());
        };
        if capture::shadow_rows(conn)? == before {
            return Ok(());
        }
        conn.rollback_to_failed();
        Err(EngineError::forbidden(format!(
            "{}: this statement wrote to one of its capture tables (the statement's \
             transaction was rolled back)",
            super::error::BOOKKEEPING_REFUSAL
        )))
    }
}

/// Whether a data-changing statement's plan changes rows that no capture
/// trigger guards. On a table with triggers DuckDB plans the statement as
/// a CTE (`__duckdb_trigger_base_…`, under a RETURNING's projection) whose
/// first child is the statement and whose last holds the trigger bodies,
/// ending in a query that only reads what they did; without triggers the
/// statement's own operator is on the main query's path. That path is
/// followed through each CTE's last child (its consumer) and each
/// single-child operator, which a client's own WITH cannot fake: naming a
/// CTE after the triggers' leaves the statement itself at the end of it. (DuckDB
/// refuses a data-modifying WITH in front of a statement on a table with
/// triggers, so a guarded statement changes nothing else.)
fn unguarded(plan: &Value) -> bool {
    let mut node = match plan {
        Value::Array(items) if items.len() == 1 => &items[0],
        other => other,
    };
    loop {
        let name = node.get("name").and_then(Value::as_str).unwrap_or_default();
        let children = node
            .get("children")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        node = match children {
            [.., last] if name == "CTE" => last,
            // A RETURNING's projection over the statement.
            [only] if !DML_OPERATORS.contains(&name) => only,
            _ => break,
        };
    }
    any_operator(node, &DML_OPERATORS)
}

/// The statement an `EXPLAIN [ANALYZE] [(options)]` explains, as DuckDB's
/// parser finds it: the longest proper end of the text that parses as one
/// statement. Nothing in front of it but the EXPLAIN keywords and options
/// may be cut through, so comments there are refused (one could hide a
/// statement that ends the parse early).
fn explained<'s>(conn: &Conn, sql: &'s str) -> EngineResult<&'s str> {
    const MAX_PREFIX: usize = 256;
    for (p, _) in sql
        .char_indices()
        .skip(1)
        .take_while(|(p, _)| *p <= MAX_PREFIX)
    {
        let prefix = &sql[..p];
        if prefix.contains("--") || prefix.contains("/*") {
            break;
        }
        let rest = &sql[p..];
        if conn.extract(rest).is_ok_and(|s| s.len() == 1) {
            return Ok(rest);
        }
    }
    Err(EngineError::forbidden(
        "duckflock could not find the statement this EXPLAIN explains: put no comment \
         between EXPLAIN and its statement",
    ))
}

/// A MULTI: DuckDB expands it into several statements, an `ALTER TABLE …
/// ADD COLUMN` whose default must be materialized (the ALTER, an UPDATE to
/// the default, ALTERs for the default and constraints) or a PIVOT without
/// an IN list (CREATE TYPE … AS ENUM (SELECT DISTINCT …) for its columns,
/// then the statement). The ALTER cannot be explained ("Unimplemented
/// statement type MULTI for Bind") and reads nothing but its table (a
/// default binds without subqueries: "DEFAULT value cannot contain
/// subqueries", macros included): it passes. The PIVOT's plan shows only its
/// last statement, not the queries that name its columns: it is refused.
/// Which one it is, preparing `explain` (its `EXPLAIN`) tells, on a
/// connection of its own: a failed prepare would abort the client's
/// transaction, and the PIVOT's types stay on that connection.
fn verify_multi(conn: &Conn, explain: &str) -> EngineResult<()> {
    let side = conn.sibling()?;
    let script = side.extract(explain)?;
    let prepared = script.prepare(&side, 0);
    match prepared {
        Err(e) if e.kind == DuckErrorKind::NotImplemented && e.message.contains("MULTI") => Ok(()),
        Err(e) => Err(EngineError::forbidden(format!(
            "duckflock could not check what this statement reads ({})",
            e.message
        ))),
        Ok(_) => Err(EngineError::invalid(
            "a PIVOT without an IN list is not supported: DuckDB first runs queries \
             that name its columns, which duckflock cannot check; list the values \
             (PIVOT … ON col IN ('a', 'b') …)",
        )),
    }
}

/// The JSON plans a prepared `EXPLAIN` answers with `row` bound.
fn plans_of(mut explain: Prepared<'_>, row: Option<Row<'_>>) -> EngineResult<Vec<String>> {
    bind(&mut explain, row)?;
    let mut res = explain.execute_owned()?;
    let mut plans = Vec::new();
    while let Some(b) = res.next_batch()? {
        plans.extend(texts(&b, 1));
    }
    Ok(plans)
}

/// Statement types that run as captured writes. (DuckDB refuses a
/// data-modifying WITH in front of them on a table with triggers, as every
/// table of a primary has.)
fn changes_data(t: StatementType) -> bool {
    matches!(
        t,
        StatementType::Insert
            | StatementType::Update
            | StatementType::Delete
            | StatementType::MergeInto
    )
}

/// Physical operators that change a table's rows.
const DML_OPERATORS: [&str; 5] = ["INSERT", "BATCH_INSERT", "DELETE", "UPDATE", "MERGE_INTO"];

/// Physical operators that write files (a COPY, also inside a WITH).
const COPY_OPERATORS: [&str; 4] = [
    "COPY_TO_FILE",
    "BATCH_COPY_TO_FILE",
    "COPY_DATABASE",
    "EXPORT",
];

/// Whether a JSON plan holds an operator named in `names`.
fn any_operator(v: &Value, names: &[&str]) -> bool {
    match v {
        Value::Object(map) => {
            map.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| names.contains(&n))
                || map.get("children").is_some_and(|c| any_operator(c, names))
        }
        Value::Array(items) => items.iter().any(|c| any_operator(c, names)),
        _ => false,
    }
}

/// The output of a client's `EXPLAIN [ANALYZE]` (a plan: a few rows), read
/// whole and refused if the plan it shows reads the bookkeeping or calls a
/// denied function. `EXPLAIN ANALYZE` already ran its statement: on error
/// the caller rolls back and sends nothing.
pub(super) fn explain_output(res: &mut QueryResult<'_>) -> EngineResult<Vec<RecordBatch>> {
    let mut plan = Vec::new();
    while let Some(b) = res.next_batch()? {
        plan.push(b);
    }
    verify_explain_output(&plan)?;
    Ok(plan)
}

fn verify_explain_output(batches: &[RecordBatch]) -> EngineResult<()> {
    for b in batches {
        for col in 0..b.num_columns() {
            for text in texts(b, col) {
                if let Some(why) = denied_in_text(&text) {
                    return Err(EngineError::forbidden(why));
                }
            }
        }
    }
    Ok(())
}

/// The string cells of column `col` (others are skipped).
fn texts(b: &RecordBatch, col: usize) -> Vec<String> {
    let Some(c) = b.columns().get(col) else {
        return Vec::new();
    };
    let Ok(c) = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8) else {
        return Vec::new();
    };
    let c = c.as_string::<i32>();
    (0..c.len())
        .filter(|&r| !c.is_null(r))
        .map(|r| c.value(r).to_string())
        .collect()
}

fn bookkeeping_refusal() -> String {
    format!("the schema {INTERNAL_SCHEMA} holds the server's bookkeeping and is not accessible")
}

fn function_refusal(name: &str) -> String {
    format!(
        "the table function {name}() is not allowed (maintenance and secrets belong to the server)"
    )
}

/// Whether a scan's qualified table name (`catalog.schema.table`) is in the
/// bookkeeping schema.
fn is_bookkeeping(qualified: &str) -> bool {
    let q = qualified.to_ascii_lowercase();
    let schema = INTERNAL_SCHEMA.to_ascii_lowercase();
    q.contains(&format!(".{schema}.")) || q.starts_with(&format!("{schema}."))
}

fn is_denied_function(name: &str) -> bool {
    DENIED_FUNCTIONS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name.trim()))
}

/// Walks a JSON plan: operators (`name`, `children`) with their
/// `extra_info` (`Table` of scans, `Function` of table functions).
fn denied_in_plan(v: &Value) -> Option<String> {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(extra)) = map.get("extra_info") {
                if let Some(Value::String(t)) = extra.get("Table") {
                    if is_bookkeeping(t) {
                        return Some(bookkeeping_refusal());
                    }
                }
                if let Some(Value::String(f)) = extra.get("Function") {
                    if is_denied_function(f) {
                        return Some(function_refusal(&f.to_ascii_lowercase()));
                    }
                }
            }
            map.get("children").and_then(denied_in_plan)
        }
        Value::Array(items) => items.iter().find_map(denied_in_plan),
        _ => None,
    }
}

/// The same for a plan rendered by a client's EXPLAIN (text boxes or JSON).
fn denied_in_text(text: &str) -> Option<String> {
    if let Ok(tree) = serde_json::from_str::<Value>(text) {
        return denied_in_plan(&tree);
    }
    for line in text.lines() {
        for cell in line.split(['│', '┃']) {
            let cell = cell.trim();
            if let Some(t) = cell.strip_prefix("Table:") {
                if is_bookkeeping(t.trim()) {
                    return Some(bookkeeping_refusal());
                }
            }
            if let Some(f) = cell.strip_prefix("Function:") {
                if is_denied_function(f) {
                    return Some(function_refusal(&f.trim().to_ascii_lowercase()));
                }
            }
        }
    }
    None
}

/// The statements of a script, each as its own text, split where DuckDB's
/// parser says a statement ends: a `;` counts as a boundary only if the text
/// up to it parses as exactly one statement and the rest as all the others
/// (the last such `;`, so no piece starts with an empty statement).
/// Each piece then runs (and is checked) on its own, so what is checked is
/// what runs. Scripts are bounded to [`MAX_SCRIPT_STATEMENTS`].
pub(super) fn pieces(conn: &Conn, sql: &str, n: usize) -> EngineResult<Vec<String>> {
    if n > MAX_SCRIPT_STATEMENTS {
        return Err(EngineError::invalid(format!(
            "a script holds at most {MAX_SCRIPT_STATEMENTS} statements (this one has {n}): \
             send more as several requests, or rows as parameters or an ingest"
        )));
    }
    let count = |s: &str| conn.extract(s).map(|x| x.len()).ok();
    let mut out = Vec::with_capacity(n);
    let mut rest = sql;
    while out.len() + 1 < n {
        let others = n - out.len() - 1;
        // The last such `;` before the next statement: empty statements and
        // comments stay with the statement before them.
        let mut cut = None;
        for p in rest.match_indices(';').map(|(p, _)| p + 1) {
            match count(&rest[..p]) {
                Some(1) if count(&rest[p..]) == Some(others) => cut = Some(p),
                Some(k) if k > 1 => break,
                _ => {}
            }
        }
        let Some(p) = cut else {
            return Err(EngineError::invalid(
                "duckflock could not find where this script's statements end: send them one by one",
            ));
        };
        out.push(rest[..p].to_string());
        rest = &rest[p..];
    }
    out.push(rest.to_string());
    Ok(out)
}

/// Most statements in one script (splitting parses the rest of the script
/// once per statement).
pub const MAX_SCRIPT_STATEMENTS: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duck::Database;

    fn setup() -> (std::sync::Arc<Database>, ()) {
        (Database::scratch().unwrap(), ())
    }

    #[test]
    fn plans_that_read_bookkeeping_are_refused_wherever_the_read_hides() {
        let (db, _) = setup();
        let conn = db.connect().unwrap();
        conn.execute_batch(&format!(
            "CREATE SCHEMA {INTERNAL_SCHEMA}; CREATE TABLE {INTERNAL_SCHEMA}.meta(k VARCHAR);
             CREATE TABLE t(s VARCHAR); CREATE TABLE meta(k VARCHAR);
             CREATE VIEW v AS SELECT * FROM {INTERNAL_SCHEMA}.meta;
             CREATE MACRO m(x) AS TABLE SELECT * FROM query_table(x);"
        ))
        .unwrap();
        let refused = [
            (
                StatementType::Insert,
                format!("INSERT INTO t SELECT k FROM {INTERNAL_SCHEMA}.meta"),
            ),
            (StatementType::Select, "SELECT * FROM v".to_string()),
            (
                StatementType::Delete,
                "DELETE FROM t USING v WHERE t.s = v.k".to_string(),
            ),
            (
                StatementType::Create,
                "CREATE TABLE x AS FROM v".to_string(),
            ),
            (
                StatementType::Select,
                format!("SELECT * FROM m('{INTERNAL_SCHEMA}.meta')"),
            ),
            (
                StatementType::Insert,
                "INSERT INTO t SELECT name FROM duckdb_secrets()".to_string(),
            ),
            (
                StatementType::Select,
                "SELECT * FROM checkpoint()".to_string(),
            ),
        ];
        for (t, sql) in &refused {
            let e = verify(&conn, *t, sql, None).unwrap_err();
            assert_eq!(
                e.class,
                super::super::ErrorClass::PermissionDenied,
                "{sql}: {e:?}"
            );
        }
        for (t, sql) in [
            (StatementType::Insert, "INSERT INTO t SELECT k FROM meta"),
            (StatementType::Select, "SELECT * FROM m('meta')"),
            (StatementType::Delete, "TRUNCATE t"),
            (StatementType::Select, "SELECT * FROM duckdb_tables()"),
        ] {
            let _ = verify(&conn, t, sql, None).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
        // A data-modifying WITH runs only in front of a captured write.
        for (sql, ok) in [
            (
                "WITH x AS (INSERT INTO t VALUES ('a') RETURNING *) SELECT * FROM x",
                false,
            ),
            (
                "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
                false,
            ),
            (
                "CREATE TABLE c AS WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
                false,
            ),
            (
                "WITH x AS (DELETE FROM t RETURNING *) INSERT INTO meta SELECT s FROM x",
                true,
            ),
            ("CREATE TABLE c AS SELECT * FROM t", true),
        ] {
            let t = conn.prepare(sql).unwrap().statement_type();
            let got = verify(&conn, t, sql, None);
            assert_eq!(got.is_ok(), ok, "{sql}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.class, super::super::ErrorClass::InvalidArgument, "{sql}");
            }
        }
        // DuckDB prepares an ADD COLUMN with a volatile default as MULTI,
        // which it cannot EXPLAIN; it passes, and then runs. A PIVOT without
        // an IN list is a MULTI too, and is checked like any statement.
        conn.execute_batch(&format!(
            "INSERT INTO meta VALUES ('a'); INSERT INTO {INTERNAL_SCHEMA}.meta VALUES ('b')"
        ))
        .unwrap();
        for (sql, multi) in [
            ("ALTER TABLE t ADD COLUMN r DOUBLE DEFAULT random()", true),
            ("ALTER TABLE t ADD COLUMN n INTEGER DEFAULT 1", false),
            (
                "CREATE TABLE p AS PIVOT meta ON k IN ('a') USING count(*)",
                false,
            ),
        ] {
            let t = conn.prepare(sql).unwrap().statement_type();
            assert_eq!(t == StatementType::Multi, multi, "{sql}: {t:?}");
            let _ = verify(&conn, t, sql, None).unwrap_or_else(|e| panic!("{sql} ({t:?}): {e:?}"));
            conn.execute_batch(sql).unwrap();
        }
        for sql in [
            "CREATE TABLE p2 AS PIVOT v ON k USING count(*)",
            "INSERT INTO t (s) SELECT 'x' FROM (PIVOT v ON k USING count(*))",
            "PIVOT meta ON k USING count(*)",
        ] {
            let t = conn.prepare(sql).unwrap().statement_type();
            assert_eq!(t, StatementType::Multi, "{sql}");
            let e = verify(&conn, t, sql, None).unwrap_err();
            assert_eq!(
                e.class,
                super::super::ErrorClass::InvalidArgument,
                "{sql}: {e:?}"
            );
            assert!(e.message.contains("IN list"), "{sql}: {e:?}");
        }
        // A remembered verdict is forgotten when the catalog changes.
        let _ = verify(&conn, StatementType::Select, "SELECT * FROM meta", None).unwrap();
        conn.execute_batch(&format!(
            "CREATE TEMP VIEW meta AS SELECT * FROM {INTERNAL_SCHEMA}.meta"
        ))
        .unwrap();
        catalog_changed();
        assert!(verify(&conn, StatementType::Select, "SELECT * FROM meta", None).is_err());
    }

    #[test]
    fn writes_no_trigger_guards_are_watched_and_refused_if_they_feed_a_shadow() {
        let (db, _) = setup();
        let conn = db.connect().unwrap();
        let s = INTERNAL_SCHEMA;
        conn.execute_batch(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.capture (shadow VARCHAR, tbl_schema VARCHAR, tbl_name VARCHAR);
             INSERT INTO {s}.capture VALUES ('cap_1', 'main', 't');
             CREATE TABLE {s}.cap_1 (a INTEGER);
             CREATE TABLE t (a INTEGER);
             CREATE TEMP TABLE tt (a INTEGER);
             CREATE TRIGGER ti AFTER INSERT ON t REFERENCING NEW TABLE AS n
                 FOR EACH STATEMENT INSERT INTO {s}.cap_1 SELECT * FROM n;"
        ))
        .unwrap();
        // (statement, watched, refused once run under the watch)
        let cases = [
            ("INSERT INTO t VALUES (1)", false, false),
            (
                "INSERT INTO t VALUES (5) RETURNING a + 1 AS b",
                false,
                false,
            ),
            (
                "INSERT INTO __duckflock.cap_1 VALUES (9) RETURNING a + 1 AS b",
                true,
                true,
            ),
            (
                "WITH m AS MATERIALIZED (SELECT 9 AS a) \
                 INSERT INTO __duckflock.cap_1 SELECT * FROM m RETURNING *",
                true,
                true,
            ),
            ("EXPLAIN ANALYZE INSERT INTO t VALUES (2)", false, false),
            ("INSERT INTO tt VALUES (1)", true, false),
            ("INSERT INTO tt SELECT * FROM t", true, false),
            ("EXPLAIN ANALYZE INSERT INTO tt VALUES (3)", true, false),
            ("INSERT INTO __duckflock.cap_1 VALUES (9)", true, true),
            (
                "WITH x AS (INSERT INTO __duckflock.CAP_1 VALUES (9) RETURNING *) \
                 INSERT INTO tt SELECT * FROM x",
                true,
                true,
            ),
            // A CTE named like the triggers' is still the client's own.
            (
                "WITH __duckdb_trigger_base_1 AS MATERIALIZED (SELECT 9 AS a), \
                 __duckdb_trigger_body_1_1 AS MATERIALIZED (SELECT 1) \
                 INSERT INTO __duckflock.cap_1 SELECT * FROM __duckdb_trigger_base_1",
                true,
                true,
            ),
            (
                "EXPLAIN ANALYZE INSERT INTO __duckflock.cap_1 VALUES (9)",
                true,
                true,
            ),
            (
                "EXPLAIN (ANALYZE, FORMAT json) INSERT INTO __duckflock.cap_1 VALUES (9)",
                true,
                true,
            ),
        ];
        let count = || {
            let mut r = conn
                .query(&format!("SELECT count(*) FROM {s}.cap_1"))
                .unwrap();
            let b = r.next_batch().unwrap().unwrap();
            texts(&b, 0)[0].parse::<u64>().unwrap()
        };
        for (sql, watched, refused) in cases {
            conn.execute_batch("BEGIN").unwrap();
            let mut stmt = conn.prepare(sql).unwrap();
            let t = stmt.statement_type();
            let verdict = verify(&conn, t, sql, None).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            assert_eq!(verdict.watch, watched, "{sql}");
            let before = count();
            let watch = verdict.watch(&conn).unwrap();
            stmt.execute().unwrap();
            let got = watch.check(&conn);
            assert_eq!(got.is_err(), refused, "{sql}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.class, super::super::ErrorClass::PermissionDenied, "{sql}");
                // Rolled back, and a failed transaction left in its place:
                // nothing of it stays, and nothing runs until it ends.
                let e = conn.execute_batch("INSERT INTO t VALUES (0)").unwrap_err();
                assert!(e.message.contains("aborted"), "{sql}: {e:?}");
                conn.execute_batch("ROLLBACK").unwrap();
                assert_eq!(count(), before, "{sql}");
            } else {
                conn.execute_batch("COMMIT").unwrap();
            }
        }
        // A comment between EXPLAIN and its statement could end the parse
        // of what is checked early: refused.
        let sql = "EXPLAIN /* SELECT 1 AS x -- */ ANALYZE INSERT INTO __duckflock.cap_1 VALUES (9)";
        let t = conn.prepare(sql).unwrap().statement_type();
        let e = verify(&conn, t, sql, None).unwrap_err();
        assert_eq!(e.class, super::super::ErrorClass::PermissionDenied, "{e:?}");
        // What an EXPLAIN ANALYZE runs is checked before it runs (its output
        // would come too late for a checkpoint).
        for sql in [
            "EXPLAIN ANALYZE SELECT * FROM checkpoint()",
            "EXPLAIN ANALYZE INSERT INTO t SELECT a FROM __duckflock.cap_1",
        ] {
            let e = verify(&conn, StatementType::Explain, sql, None).unwrap_err();
            assert_eq!(e.class, super::super::ErrorClass::PermissionDenied, "{sql}");
        }
        // A parameter DuckDB binds without its value: the verdict is kept
        // for the text; one that names what is read: each run is checked.
        let p = RecordBatch::try_new(
            std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new("0", arrow::datatypes::DataType::Utf8, true),
            ])),
            vec![std::sync::Arc::new(arrow::array::StringArray::from(vec![
                "t",
                "__duckflock.cap_1",
            ]))],
        )
        .unwrap();
        let sql = "INSERT INTO t SELECT a FROM t WHERE CAST(a AS VARCHAR) = ?";
        let _ = verify(&conn, StatementType::Insert, sql, Some((&p, 0))).unwrap();
        let epoch = CATALOG_EPOCH.load(Ordering::SeqCst);
        assert!(conn.is_verified(epoch, sql));
        let sql = "INSERT INTO t SELECT a FROM query_table(?)";
        let _ = verify(&conn, StatementType::Insert, sql, Some((&p, 0))).unwrap();
        assert!(!conn.is_verified(epoch, sql));
        let e = verify(&conn, StatementType::Insert, sql, Some((&p, 1))).unwrap_err();
        assert_eq!(e.class, super::super::ErrorClass::PermissionDenied, "{e:?}");
        // Remembered verdicts are for guarded statements only.
        let sql = "INSERT INTO tt VALUES (4)";
        for _ in 0..2 {
            let v = verify(&conn, StatementType::Insert, sql, None).unwrap();
            assert!(v.watch);
        }
    }

    #[test]
    fn a_copy_in_a_with_is_refused_whatever_the_statement() {
        // A files dir DuckDB lets SQL use: there the COPY could write.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_string_lossy().into_owned();
        let db = Database::open(
            std::path::Path::new(":memory:"),
            &crate::duck::DbOptions {
                threads: Some(1),
                temp_directory: Some(String::new()),
                files: Some(crate::duck::FilesSetting {
                    allowed_directories: format!("['{d}/']"),
                    file_search_path: d.clone(),
                }),
                ..Default::default()
            },
        )
        .unwrap();
        let conn = db.connect().unwrap();
        conn.execute_batch("CREATE TABLE t (s VARCHAR); CREATE TABLE u (s VARCHAR)")
            .unwrap();
        let out = dir.path().join("out.csv");
        for sql in [
            format!("WITH x AS (COPY t TO '{}') SELECT * FROM x", out.display()),
            format!(
                "WITH x AS (COPY t TO '{}') INSERT INTO u SELECT 'x'",
                out.display()
            ),
        ] {
            let t = conn.prepare(&sql).unwrap().statement_type();
            let e = verify(&conn, t, &sql, None).unwrap_err();
            assert_eq!(
                e.class,
                super::super::ErrorClass::PermissionDenied,
                "{sql}: {e:?}"
            );
            assert!(e.message.contains("COPY"), "{sql}: {e:?}");
        }
        assert!(!out.exists());
    }

    #[test]
    fn explain_output_is_checked() {
        let (db, _) = setup();
        let conn = db.connect().unwrap();
        conn.execute_batch(&format!(
            "CREATE SCHEMA {INTERNAL_SCHEMA}; CREATE TABLE {INTERNAL_SCHEMA}.meta(k VARCHAR); CREATE TABLE t(k VARCHAR)"
        ))
        .unwrap();
        for (sql, bad) in [
            (
                format!("EXPLAIN SELECT * FROM {INTERNAL_SCHEMA}.meta"),
                true,
            ),
            (
                format!("EXPLAIN (FORMAT json) SELECT * FROM {INTERNAL_SCHEMA}.meta"),
                true,
            ),
            (
                format!("EXPLAIN ANALYZE INSERT INTO t SELECT * FROM {INTERNAL_SCHEMA}.meta"),
                true,
            ),
            ("EXPLAIN SELECT * FROM duckdb_secrets()".to_string(), true),
            ("EXPLAIN SELECT * FROM t".to_string(), false),
        ] {
            let mut res = conn.query(&sql).unwrap();
            assert_eq!(explain_output(&mut res).is_err(), bad, "{sql}");
        }
    }

    #[test]
    fn scripts_split_where_the_parser_says() {
        let (db, _) = setup();
        let conn = db.connect().unwrap();
        let script =
            "SELECT 'a;b'; SELECT 1 -- c;\n; /* ; */ SELECT \"x;\" FROM (SELECT 2 AS \"x;\")";
        let n = conn.extract(script).unwrap().len();
        assert_eq!(n, 3);
        let p = pieces(&conn, script, n).unwrap();
        assert_eq!(p.concat(), script);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], "SELECT 'a;b';");
        for piece in &p {
            assert_eq!(conn.extract(piece).unwrap().len(), 1, "{piece}");
        }
        // Empty statements and a ';' in a comment stay with the statement
        // before them: every piece can be explained.
        let script = "SELECT 1;; -- x;\n; SELECT 2 ;";
        let n = conn.extract(script).unwrap().len();
        let p = pieces(&conn, script, n).unwrap();
        assert_eq!(p.concat(), script);
        assert_eq!(p, ["SELECT 1;; -- x;\n;", " SELECT 2 ;"]);
        for piece in &p {
            let _ = verify(&conn, StatementType::Select, piece, None)
                .unwrap_or_else(|e| panic!("{piece}: {e:?}"));
        }
        // A script may start with empty statements too; behind them the
        // statement is checked, and a comment in front is not looked into.
        for sql in [";SELECT 1", " ;\n ; SELECT 2"] {
            let _ = verify(&conn, StatementType::Select, sql, None)
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
        conn.execute_batch(&format!(
            "CREATE SCHEMA {INTERNAL_SCHEMA}; CREATE TABLE {INTERNAL_SCHEMA}.meta(k VARCHAR);
             CREATE VIEW v AS SELECT * FROM {INTERNAL_SCHEMA}.meta"
        ))
        .unwrap();
        for sql in [
            "; SELECT * FROM v",
            "; -- ; SELECT 1 /*\nSELECT * FROM v -- */",
        ] {
            assert_eq!(conn.extract(sql).unwrap().len(), 1, "{sql}");
            let e = verify(&conn, StatementType::Select, sql, None).unwrap_err();
            assert_eq!(
                e.class,
                super::super::ErrorClass::PermissionDenied,
                "{sql}: {e:?}"
            );
        }
    }
}
