//! Applying change sets to a replica: strictly in LSN order, each batch in
//! one replica transaction that also records `applied_lsn`, so a crash
//! anywhere rolls back to a consistent point and the applier resumes after
//! the last applied change set. Rows move from the primary's shadow tables
//! into the replica as DuckDB data chunks (appender), never as SQL text.
//!
//! The apply checks itself: every step knows how many row images the
//! primary captured (the change set carries the counts), and the rows read
//! from the shadow, staged, deleted and inserted must match them exactly.
//! Any difference fails the batch (rolled back; the replica is marked
//! failed and rebuilt) instead of leaving a replica that silently differs.

use crate::duck::{copy_rows_kept, Conn, Param};

use super::capture::{in_transaction, literal, quote, ChangeSet, Op};
use super::catalog::{rows, rows_cached, sys};
use super::error::{EngineError, EngineResult};
use super::months::INTERNAL_SCHEMA as S;
use super::visibility::{self, ROW_GROUP};

/// Change sets applied per replica transaction at most.
pub const BATCH: u64 = 64;

/// Staging table for deleted row images (temporary, on the applier's
/// connection).
const STAGE: &str = "__df_stage";

/// Applies the change sets after `applied`, at most [`BATCH`] of them and
/// none after `upto`, from the primary to the replica; returns the new
/// applied LSN.
pub fn apply_batch(primary: &Conn, replica: &Conn, applied: u64, upto: u64) -> EngineResult<u64> {
    let sets = rows_cached(
        primary,
        &format!(
            "SELECT lsn, txn, ops FROM {S}.changes WHERE lsn > $1 AND lsn <= $2
             ORDER BY lsn LIMIT {BATCH}"
        ),
        // `upto` is u64::MAX when nothing holds the replica back.
        &[
            Param::Int(applied.min(i64::MAX as u64) as i64),
            Param::Int(upto.min(i64::MAX as u64) as i64),
        ],
    )?;
    let Some(first) = sets.first() else {
        // Called only when the primary is ahead: the change sets were pruned.
        return Err(EngineError::internal(format!(
            "change set {} is no longer in the log",
            applied + 1
        )));
    };
    let first_lsn: u64 = first[0].as_deref().unwrap_or("0").parse().unwrap_or(0);
    if first_lsn != applied + 1 {
        return Err(EngineError::internal(format!(
            "change set {} is no longer in the log (oldest retained: {first_lsn})",
            applied + 1
        )));
    }
    let mut large = Vec::new();
    let mut replays_ddl = false;
    let last = in_transaction(replica, || {
        let mut last = applied;
        for s in &sets {
            let lsn: u64 = s[0].as_deref().unwrap_or("0").parse().unwrap_or(0);
            let txn: u64 = s[1].as_deref().unwrap_or("0").parse().unwrap_or(0);
            if lsn != last + 1 {
                return Err(EngineError::internal(format!(
                    "gap in the change log: {lsn} after {last}"
                )));
            }
            let cs: ChangeSet = serde_json::from_str(s[2].as_deref().unwrap_or("{}"))
                .map_err(|e| EngineError::internal(format!("change set {lsn}: {e}")))?;
            replays_ddl |= cs.ops.iter().any(|op| matches!(op, Op::Ddl { .. }));
            apply_one(primary, replica, txn, &cs, &mut large)
                .map_err(|e| EngineError::internal(format!("change set {lsn}: {}", e.message)))?;
            last = lsn;
        }
        super::capture::internal_with(replica, || {
            replica.cached(
                &format!("INSERT OR REPLACE INTO {S}.meta VALUES ('applied_lsn', $1)"),
                &[Param::Text(&last.to_string())],
            )?;
            Ok(())
        })?;
        Ok(last)
    })?;
    if replays_ddl {
        // Committed: readers' remembered verdicts may be stale.
        super::plan_check::catalog_changed();
    }
    // A batch may replay DDL that created a table with no rows and append a
    // row group to it later in the same transaction: DuckDB 2.0.0 would hide
    // those rows. The applier is the replica's only writer, so a checkpoint
    // repairs it; if not, the replica is rebuilt.
    large.sort();
    large.dedup();
    let left = visibility::repair(replica, &large)?;
    if !left.is_empty() {
        return Err(EngineError::internal(format!(
            "rows appended to {} are invisible to scans (DuckDB 2.0.0) and a checkpoint did not repair them",
            left.join(", ")
        )));
    }
    Ok(last)
}

/// Fails unless `got` rows are what the change set says it shipped
/// (`None`: a change set written before the counts were recorded).
fn expect(shipped: Option<u64>, got: u64, what: impl FnOnce() -> String) -> EngineResult<()> {
    match shipped {
        Some(n) if n != got => Err(EngineError::internal(format!(
            "{}: the primary captured {n} row images but {got} arrived",
            what()
        ))),
        _ => Ok(()),
    }
}

/// Applies one change set; `large` collects the tables it appended a row
/// group or more to.
fn apply_one(
    primary: &Conn,
    replica: &Conn,
    txn: u64,
    cs: &ChangeSet,
    large: &mut Vec<String>,
) -> EngineResult<()> {
    for op in &cs.ops {
        match op {
            Op::Ddl { stmt, sql, images } => {
                replica.execute_batch(sql)?;
                for img in images {
                    let target = format!("{}.{}", quote(&img.schema), quote(&img.table));
                    replica.execute_batch(&format!("DELETE FROM {target}"))?;
                    let image = Step {
                        txn,
                        lo: *stmt,
                        hi: *stmt,
                        schema: &img.schema,
                        table: &img.table,
                        shadow: &img.shadow,
                    };
                    let n = image.copy(primary, replica, "*", 1, None)?;
                    expect(img.rows, n, || format!("image of {target}"))?;
                    if n >= ROW_GROUP {
                        large.push(target);
                    }
                }
            }
            Op::Rows {
                lo,
                hi,
                schema,
                table,
                shadow,
                del,
                ins,
                old_rows,
                new_rows,
            } => {
                let step = Step {
                    txn,
                    lo: *lo,
                    hi: *hi,
                    schema,
                    table,
                    shadow,
                };
                if *del {
                    delete_rows(primary, replica, &step, *old_rows)?;
                }
                if *ins {
                    let n = step.copy(primary, replica, "*", 1, None)?;
                    expect(*new_rows, n, || format!("new rows of {}", step.target()))?;
                    if n >= ROW_GROUP {
                        large.push(step.target());
                    }
                }
            }
        }
    }
    for p in &cs.seqs {
        advance_sequence(replica, &p.schema, &p.name, p.last)?;
    }
    Ok(())
}

/// The rows of statements `lo..=hi` of one table in one transaction.
struct Step<'a> {
    txn: u64,
    lo: i64,
    hi: i64,
    schema: &'a str,
    table: &'a str,
    shadow: &'a str,
}

impl Step<'_> {
    fn target(&self) -> String {
        format!("{}.{}", quote(self.schema), quote(self.table))
    }
}

impl Step<'_> {
    /// Copies this step's shadow rows with operation `op` (+1 new image,
    /// -1 old image) from the primary into the table on the replica, or
    /// into the temp table `stage`; `columns` is `*` or a list of quoted
    /// columns. One text per shadow, columns and op: kept prepared on the
    /// primary's connection, the transaction and statements its parameters.
    fn copy(
        &self,
        primary: &Conn,
        replica: &Conn,
        columns: &str,
        op: i8,
        stage: Option<&str>,
    ) -> EngineResult<u64> {
        let columns = if columns == "*" {
            "* EXCLUDE (__txn, __stmt, __op)"
        } else {
            columns
        };
        let select = format!(
            "SELECT {columns} FROM {S}.{} WHERE __txn = $1 AND __stmt BETWEEN $2 AND $3 AND __op = {op}",
            quote(self.shadow)
        );
        let params = [
            Param::Int(self.txn.min(i64::MAX as u64) as i64),
            Param::Int(self.lo),
            Param::Int(self.hi),
        ];
        let (catalog, schema, table) = match stage {
            Some(t) => (Some("temp"), "main", t),
            None => (None, self.schema, self.table),
        };
        Ok(copy_rows_kept(
            primary, &select, &params, replica, catalog, schema, table,
        )?)
    }
}

/// The columns of a table of the replica's database in order: (name, type).
fn table_columns(replica: &Conn, schema: &str, table: &str) -> EngineResult<Vec<(String, String)>> {
    Ok(rows(
        replica,
        &format!(
            "SELECT column_name, data_type FROM {}
             WHERE database_name = current_database() AND schema_name = {} AND table_name = {}
             ORDER BY column_index",
            sys("duckdb_columns"),
            literal(schema),
            literal(table)
        ),
    )?
    .into_iter()
    .filter_map(|r| {
        let mut r = r.into_iter();
        Some((r.next()??, r.next()??))
    })
    .collect())
}

/// The primary key columns of a table of the replica's database (empty:
/// none).
fn primary_key(replica: &Conn, schema: &str, table: &str) -> EngineResult<Vec<String>> {
    Ok(rows(
        replica,
        &format!(
            "SELECT unnest(constraint_column_names) FROM {}
             WHERE database_name = current_database() AND schema_name = {} AND table_name = {}
               AND constraint_type = 'PRIMARY KEY'",
            sys("duckdb_constraints"),
            literal(schema),
            literal(table)
        ),
    )?
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect())
}

/// Deletes the rows whose old images the primary shipped: by primary key
/// when the table has one (only the key columns are staged), else as a
/// multiset (each shipped image removes one equal row, NULLs equal).
/// Exactly one replica row must go per image.
fn delete_rows(
    primary: &Conn,
    replica: &Conn,
    step: &Step<'_>,
    shipped: Option<u64>,
) -> EngineResult<()> {
    let target = step.target();
    let key = primary_key(replica, step.schema, step.table)?;
    let columns = table_columns(replica, step.schema, step.table)?;
    if columns.is_empty() {
        return Err(EngineError::internal(format!(
            "{target} does not exist on the replica"
        )));
    }
    let staged: Vec<&(String, String)> = if key.is_empty() {
        columns.iter().collect()
    } else {
        key.iter()
            .map(|k| {
                columns.iter().find(|(c, _)| c == k).ok_or_else(|| {
                    EngineError::internal(format!("{target}: key column {k} is missing"))
                })
            })
            .collect::<EngineResult<_>>()?
    };
    // Declared column by column, never `CREATE TABLE … AS … LIMIT 0`: that
    // is an empty append, after which DuckDB 2.0.0 hides the rows of a large
    // append to the same table in the same transaction (the images would
    // stage invisibly and delete nothing).
    let decl = staged
        .iter()
        .map(|(c, t)| format!("{} {t}", quote(c)))
        .collect::<Vec<_>>()
        .join(", ");
    replica.execute_batch(&format!("CREATE OR REPLACE TEMP TABLE {STAGE} ({decl})"))?;
    let list = staged
        .iter()
        .map(|(c, _)| quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    let images = step.copy(primary, replica, &list, -1, Some(STAGE))?;
    expect(shipped, images, || format!("old rows of {target}"))?;
    let sql = if !key.is_empty() {
        let on = key
            .iter()
            .map(|k| format!("d.{c} = g.{c}", c = quote(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!("DELETE FROM {target} AS d USING temp.main.{STAGE} AS g WHERE {on}")
    } else {
        let on = columns
            .iter()
            .map(|(c, _)| format!("d.{c} IS NOT DISTINCT FROM g.{c}", c = quote(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            "DELETE FROM {target} WHERE rowid IN (
               SELECT rid FROM (
                 SELECT d.rowid AS rid, g.__cnt, row_number() OVER (PARTITION BY g.__gid) AS rn
                 FROM {target} AS d JOIN (
                   SELECT *, row_number() OVER () AS __gid
                   FROM (SELECT *, count(*) AS __cnt FROM temp.main.{STAGE} GROUP BY ALL)
                 ) AS g ON {on}
               ) WHERE rn <= __cnt)"
        )
    };
    let deleted = replica.prepare(&sql)?.execute()?;
    if deleted != images {
        return Err(EngineError::internal(format!(
            "{target}: {images} old row images matched {deleted} rows of the replica"
        )));
    }
    replica.execute_batch(&format!("DROP TABLE temp.main.{STAGE}"))?;
    Ok(())
}

/// Moves a replica's sequence forward to the primary's position (sequences
/// only move forward; DuckDB has no setval).
fn advance_sequence(replica: &Conn, schema: &str, name: &str, last: i64) -> EngineResult<()> {
    let r = rows(
        replica,
        &format!(
            "SELECT last_value, start_value, increment_by FROM {}
             WHERE database_name = current_database() AND schema_name = {} AND sequence_name = {}",
            sys("duckdb_sequences"),
            literal(schema),
            literal(name)
        ),
    )?;
    let Some(r) = r.first() else {
        return Ok(()); // dropped later in the same change set
    };
    let num = |i: usize| {
        r.get(i)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<i64>().ok())
    };
    let (Some(start), Some(inc)) = (num(1), num(2)) else {
        return Ok(());
    };
    if inc == 0 {
        return Ok(());
    }
    let steps = match num(0) {
        Some(cur) => (last - cur) / inc,
        None => (last - start) / inc + 1,
    };
    if steps > 0 {
        let seq = literal(&format!("{}.{}", quote(schema), quote(name)));
        replica.execute_batch(&format!("SELECT max(nextval({seq})) FROM range({steps})"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duck::Database;

    /// A primary with one logged change set deleting the rows `shipped`
    /// of `main.t` (old images in shadow `cap_1`), the change set claiming
    /// `claimed` images; a replica holding `replica_rows` of `t`.
    fn setup(shipped: &[i64], claimed: u64, replica_rows: &[i64], keyed: bool) -> (Conn, Conn) {
        let p = Database::scratch().unwrap().connect().unwrap();
        let r = Database::scratch().unwrap().connect().unwrap();
        p.execute_batch(&format!(
            "CREATE SCHEMA {S};
             CREATE TABLE {S}.changes (lsn BIGINT, txn BIGINT, committed_at TIMESTAMPTZ, ops VARCHAR);
             CREATE TABLE {S}.cap_1 (__txn BIGINT, __stmt BIGINT, __op TINYINT, i BIGINT, v VARCHAR);"
        ))
        .unwrap();
        for i in shipped {
            p.execute_batch(&format!(
                "INSERT INTO {S}.cap_1 VALUES (7, 3, -1, {i}, 'v{i}')"
            ))
            .unwrap();
        }
        let cs = ChangeSet {
            ops: vec![Op::Rows {
                lo: 3,
                hi: 3,
                schema: "main".into(),
                table: "t".into(),
                shadow: "cap_1".into(),
                del: true,
                ins: false,
                old_rows: Some(claimed),
                new_rows: Some(0),
            }],
            seqs: Vec::new(),
        };
        p.execute_batch(&format!(
            "INSERT INTO {S}.changes VALUES (1, 7, now(), {})",
            literal(&serde_json::to_string(&cs).unwrap())
        ))
        .unwrap();
        let key = if keyed { " PRIMARY KEY" } else { "" };
        r.execute_batch(&format!(
            "CREATE SCHEMA {S}; CREATE TABLE {S}.meta (key VARCHAR PRIMARY KEY, value VARCHAR);
             CREATE TABLE t (i BIGINT{key}, v VARCHAR);"
        ))
        .unwrap();
        for i in replica_rows {
            r.execute_batch(&format!("INSERT INTO t VALUES ({i}, 'v{i}')"))
                .unwrap();
        }
        (p, r)
    }

    fn count(c: &Conn) -> String {
        rows(c, "SELECT count(*) FROM t").unwrap()[0][0]
            .clone()
            .unwrap()
    }

    #[test]
    fn deletes_exactly_the_shipped_images() {
        for keyed in [false, true] {
            let (p, r) = setup(&[1, 2, 3], 3, &[0, 1, 2, 3, 4], keyed);
            assert_eq!(apply_batch(&p, &r, 0, u64::MAX).unwrap(), 1);
            assert_eq!(count(&r), "2");
        }
    }

    #[test]
    fn fewer_images_than_captured_fail_the_batch() {
        for keyed in [false, true] {
            let (p, r) = setup(&[1, 2, 3], 4, &[0, 1, 2, 3, 4], keyed);
            let e = apply_batch(&p, &r, 0, u64::MAX).unwrap_err();
            assert!(
                e.message.contains("captured 4 row images but 3 arrived"),
                "{}",
                e.message
            );
            assert_eq!(count(&r), "5", "the batch rolled back");
        }
    }

    #[test]
    fn an_image_without_its_row_fails_the_batch() {
        for keyed in [false, true] {
            let (p, r) = setup(&[1, 2, 3], 3, &[0, 1, 3, 4], keyed);
            let e = apply_batch(&p, &r, 0, u64::MAX).unwrap_err();
            assert!(
                e.message.contains("3 old row images matched 2 rows"),
                "{}",
                e.message
            );
            assert_eq!(count(&r), "4", "the batch rolled back");
        }
    }
}

#[cfg(test)]
mod crash_tests {
    use std::path::Path;

    use super::*;
    use crate::duck::copy_rows;
    use crate::duck::{Database, DbOptions};

    fn db() -> Conn {
        Database::open(
            Path::new(":memory:"),
            &DbOptions {
                threads: Some(2),
                ..DbOptions::default()
            },
        )
        .unwrap()
        .connect()
        .unwrap()
    }

    fn one(c: &Conn, sql: &str) -> String {
        rows(c, sql).unwrap()[0][0].clone().unwrap_or_default()
    }

    fn num(c: &Conn, sql: &str) -> u64 {
        one(c, sql).parse().unwrap()
    }

    /// One change set with three statements on two keyless tables, as a
    /// transaction of `DELETE a …; UPDATE b …; DELETE b …` captures it. In
    /// DuckDB 2.0.0 the third multiset DELETE corrupts the heap (a bloom
    /// filter pushed into the scan of `b`) unless `join_filter_pushdown` is
    /// off, as `Database::open` sets it.
    #[test]
    fn deletes_and_updates_of_two_keyless_tables_in_one_change_set() {
        let n = 122_879;
        let (p, r) = (db(), db());
        let rows_sql =
            format!("SELECT range AS i, 'v' || range AS v, range / 7 AS d FROM range({n})");
        p.execute_batch(&format!(
            "CREATE SCHEMA {S};
             CREATE TABLE {S}.changes (lsn BIGINT, txn BIGINT, committed_at TIMESTAMPTZ, ops VARCHAR);
             CREATE TABLE {S}.cap_a (__txn BIGINT, __stmt BIGINT, __op TINYINT, i BIGINT, v VARCHAR, d DOUBLE);
             CREATE TABLE {S}.cap_b (__txn BIGINT, __stmt BIGINT, __op TINYINT, i BIGINT, v VARCHAR, d DOUBLE);
             CREATE TABLE a AS {rows_sql}; CREATE TABLE b AS {rows_sql};
             INSERT INTO {S}.cap_a SELECT 7, 1, -1, * FROM a WHERE i % 5 <> 0;
             DELETE FROM a WHERE i % 5 <> 0;
             INSERT INTO {S}.cap_b SELECT 7, 2, -1, * FROM b WHERE i % 7 <> 0;
             INSERT INTO {S}.cap_b SELECT 7, 2, 1, i, v || '!', d FROM b WHERE i % 7 <> 0;
             UPDATE b SET v = v || '!' WHERE i % 7 <> 0;
             INSERT INTO {S}.cap_b SELECT 7, 3, -1, * FROM b WHERE i < {n} // 2;
             DELETE FROM b WHERE i < {n} // 2;"
        ))
        .unwrap();
        let images = |t: &str, stmt: i64, op: i8| {
            num(
                &p,
                &format!("SELECT count(*) FROM {S}.cap_{t} WHERE __stmt = {stmt} AND __op = {op}"),
            )
        };
        let step = |stmt: i64, table: &str| {
            let (del, ins) = (images(table, stmt, -1), images(table, stmt, 1));
            Op::Rows {
                lo: stmt,
                hi: stmt,
                schema: "main".into(),
                table: table.into(),
                shadow: format!("cap_{table}"),
                del: del > 0,
                ins: ins > 0,
                old_rows: Some(del),
                new_rows: Some(ins),
            }
        };
        let cs = ChangeSet {
            ops: vec![step(1, "a"), step(2, "b"), step(3, "b")],
            seqs: Vec::new(),
        };
        p.execute_batch(&format!(
            "INSERT INTO {S}.changes VALUES (1, 7, now(), {})",
            literal(&serde_json::to_string(&cs).unwrap())
        ))
        .unwrap();
        r.execute_batch(&format!(
            "CREATE SCHEMA {S}; CREATE TABLE {S}.meta (key VARCHAR PRIMARY KEY, value VARCHAR);
             CREATE TABLE a (i BIGINT, v VARCHAR, d DOUBLE); CREATE TABLE b (i BIGINT, v VARCHAR, d DOUBLE);"
        ))
        .unwrap();
        for t in ["a", "b"] {
            copy_rows(&p, &rows_sql, &r, None, "main", t).unwrap();
        }
        assert_eq!(apply_batch(&p, &r, 0, u64::MAX).unwrap(), 1);
        for t in ["a", "b"] {
            let digest = format!("SELECT count(*), sum(hash(i, v, d))::VARCHAR FROM {t}");
            let (want, got) = (rows(&p, &digest).unwrap(), rows(&r, &digest).unwrap());
            assert_eq!(want, got, "{t}");
        }
    }
}
