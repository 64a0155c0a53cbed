//! Applying change sets to a replica: strictly in LSN order, each batch in
//! one replica transaction that also records `applied_lsn`, so a crash
//! anywhere rolls back to a consistent point and the applier resumes after
//! the last applied change set. Rows move from the primary's shadow tables
//! into the replica as DuckDB data chunks (appender), never as SQL text.

use crate::duck::{copy_rows, Conn};

use super::capture::{in_transaction, literal, quote, ChangeSet, Op};
use super::catalog::rows;
use super::error::{EngineError, EngineResult};
use super::months::INTERNAL_SCHEMA as S;

/// Change sets applied per replica transaction at most.
pub const BATCH: u64 = 64;

/// Staging table for deleted row images (temporary, on the applier's
/// connection).
const STAGE: &str = "__df_stage";

/// Applies every change set after `applied` (up to [`BATCH`] of them) from
/// the primary to the replica; returns the new applied LSN.
pub fn apply_batch(primary: &Conn, replica: &Conn, applied: u64) -> EngineResult<u64> {
    let sets = rows(
        primary,
        &format!(
            "SELECT lsn, txn, ops FROM {S}.changes WHERE lsn > {applied} ORDER BY lsn LIMIT {BATCH}"
        ),
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
    in_transaction(replica, || {
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
            apply_one(primary, replica, txn, &cs)
                .map_err(|e| EngineError::internal(format!("change set {lsn}: {}", e.message)))?;
            last = lsn;
        }
        replica.execute_batch(&format!(
            "INSERT OR REPLACE INTO {S}.meta VALUES ('applied_lsn', '{last}')"
        ))?;
        Ok(last)
    })
}

fn apply_one(primary: &Conn, replica: &Conn, txn: u64, cs: &ChangeSet) -> EngineResult<()> {
    for op in &cs.ops {
        match op {
            Op::Ddl { stmt, sql, images } => {
                replica.execute_batch(sql)?;
                for img in images {
                    replica.execute_batch(&format!(
                        "DELETE FROM {}.{}",
                        quote(&img.schema),
                        quote(&img.table)
                    ))?;
                    let select = shadow_rows(&img.shadow, txn, *stmt, *stmt, 1);
                    copy_rows(primary, &select, replica, None, &img.schema, &img.table)?;
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
            } => {
                if *del {
                    delete_rows(primary, replica, txn, *lo, *hi, schema, table, shadow)?;
                }
                if *ins {
                    let select = shadow_rows(shadow, txn, *lo, *hi, 1);
                    copy_rows(primary, &select, replica, None, schema, table)?;
                }
            }
        }
    }
    for p in &cs.seqs {
        advance_sequence(replica, &p.schema, &p.name, p.last)?;
    }
    Ok(())
}

fn shadow_rows(shadow: &str, txn: u64, lo: i64, hi: i64, op: i8) -> String {
    format!(
        "SELECT * EXCLUDE (__txn, __stmt, __op) FROM {S}.{} \
         WHERE __txn = {txn} AND __stmt BETWEEN {lo} AND {hi} AND __op = {op}",
        quote(shadow)
    )
}

/// Deletes the rows whose old images the primary shipped: by primary key
/// when the table has one, else as a multiset (each shipped image removes
/// one equal row, NULLs equal).
#[allow(clippy::too_many_arguments)]
fn delete_rows(
    primary: &Conn,
    replica: &Conn,
    txn: u64,
    lo: i64,
    hi: i64,
    schema: &str,
    table: &str,
    shadow: &str,
) -> EngineResult<()> {
    let target = format!("{}.{}", quote(schema), quote(table));
    replica.execute_batch(&format!(
        "CREATE OR REPLACE TEMP TABLE {STAGE} AS SELECT * FROM {target} LIMIT 0"
    ))?;
    copy_rows(
        primary,
        &shadow_rows(shadow, txn, lo, hi, -1),
        replica,
        Some("temp"),
        "main",
        STAGE,
    )?;
    let key: Vec<String> = rows(
        replica,
        &format!(
            "SELECT unnest(constraint_column_names) FROM duckdb_constraints()
             WHERE database_name = current_database() AND schema_name = {} AND table_name = {}
               AND constraint_type = 'PRIMARY KEY'",
            literal(schema),
            literal(table)
        ),
    )?
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect();
    let sql = if !key.is_empty() {
        let on = key
            .iter()
            .map(|k| format!("d.{c} = g.{c}", c = quote(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!("DELETE FROM {target} AS d USING temp.main.{STAGE} AS g WHERE {on}")
    } else {
        let cols: Vec<String> = rows(
            replica,
            &format!(
                "SELECT column_name FROM duckdb_columns()
                 WHERE database_name = 'temp' AND table_name = '{STAGE}' ORDER BY column_index"
            ),
        )?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
        let on = cols
            .iter()
            .map(|c| format!("d.{c} IS NOT DISTINCT FROM g.{c}", c = quote(c)))
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
    replica.execute_batch(&sql)?;
    replica.execute_batch(&format!("DROP TABLE temp.main.{STAGE}"))?;
    Ok(())
}

/// Moves a replica's sequence forward to the primary's position (sequences
/// only move forward; DuckDB has no setval).
fn advance_sequence(replica: &Conn, schema: &str, name: &str, last: i64) -> EngineResult<()> {
    let r = rows(
        replica,
        &format!(
            "SELECT last_value, start_value, increment_by FROM duckdb_sequences()
             WHERE database_name = current_database() AND schema_name = {} AND sequence_name = {}",
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
