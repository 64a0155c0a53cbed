//! Metadata read from DuckDB's own catalog functions (`duckdb_tables()`,
//! `duckdb_constraints()`, ...), with the server's internal schema hidden.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};

use crate::duck::{Conn, Param};

use super::capture::literal;
use super::error::{EngineError, EngineResult};
use super::months::INTERNAL_SCHEMA;
use super::node::Node;
use super::{blocking, Caller, Engine};

pub struct TableInfo {
    pub catalog: String,
    pub schema: String,
    pub name: String,
    pub table_type: String,
    pub arrow_schema: Option<SchemaRef>,
}

/// One column of a table as the table API describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
    pub primary_key: bool,
    /// The default expression's SQL text.
    pub default: Option<String>,
}

/// The columns of `schema.table` in order; empty when there is no such
/// table or view.
pub fn columns(conn: &Conn, schema: &str, table: &str) -> EngineResult<Vec<ColumnInfo>> {
    if schema.contains('\0') || table.contains('\0') {
        return Ok(Vec::new()); // no DuckDB name holds a NUL
    }
    let sql = format!(
        "SELECT c.column_name, c.data_type, c.is_nullable, \
                EXISTS (SELECT 1 FROM system.main.duckdb_constraints() k \
                         WHERE k.database_name = c.database_name AND k.schema_name = c.schema_name \
                           AND k.table_name = c.table_name AND k.constraint_type = 'PRIMARY KEY' \
                           AND list_contains(k.constraint_column_names, c.column_name)), \
                c.column_default \
           FROM system.main.duckdb_columns() c \
          WHERE c.database_name = current_database() AND c.schema_name = {} AND c.table_name = {} \
          ORDER BY c.column_index",
        literal(schema),
        literal(table)
    );
    Ok(rows(conn, &sql)?
        .iter()
        .map(|r| ColumnInfo {
            name: cell(r, 0),
            data_type: cell(r, 1),
            nullable: cell(r, 2) == "true",
            primary_key: cell(r, 3) == "true",
            default: r.get(4).cloned().flatten(),
        })
        .collect())
}

pub struct PrimaryKey {
    pub catalog: String,
    pub schema: String,
    pub table: String,
    pub column: String,
    pub key_name: Option<String>,
    pub seq: i32,
}

pub struct ForeignKey {
    pub catalog: String,
    pub fk_schema: String,
    pub fk_table: String,
    pub fk_column: String,
    pub pk_table: String,
    pub pk_column: String,
    pub seq: i32,
    pub fk_name: Option<String>,
}

/// DuckDB's own catalog function `name` by its qualified name. User
/// connections see filtered temp macros under the plain names (the
/// server's bookkeeping hidden, see [`super::hidden`]); the server's own SQL
/// must see everything.
pub(super) fn sys(name: &str) -> String {
    format!("system.main.{name}()")
}

/// Runs an internal query and returns every cell as an optional string.
pub(super) fn rows(conn: &Conn, sql: &str) -> EngineResult<Vec<Vec<Option<String>>>> {
    cells(conn.query(sql)?)
}

/// [`rows`] of a fixed statement kept prepared on the connection
/// ([`Conn::cached`]), with parameters `$1`, ...
pub(super) fn rows_cached(
    conn: &Conn,
    sql: &str,
    params: &[Param<'_>],
) -> EngineResult<Vec<Vec<Option<String>>>> {
    cells(conn.cached(sql, params)?)
}

fn cells(mut res: crate::duck::QueryResult<'_>) -> EngineResult<Vec<Vec<Option<String>>>> {
    let mut out = Vec::new();
    while let Some(batch) = res.next_batch()? {
        let cols: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| cast(c, &DataType::Utf8))
            .collect::<Result<_, _>>()
            .map_err(|e| EngineError::internal(e.to_string()))?;
        for r in 0..batch.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| (!c.is_null(r)).then(|| c.as_string::<i32>().value(r).to_string()))
                    .collect(),
            );
        }
    }
    Ok(out)
}

fn cell(row: &[Option<String>], i: usize) -> String {
    row.get(i).cloned().flatten().unwrap_or_default()
}

/// Quotes an identifier for DuckDB.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn keywords(void: &Arc<Node>) -> EngineResult<Vec<String>> {
    let mut lease = void.lease()?;
    lease.with(|c| {
        Ok(rows(
            c,
            "SELECT keyword_name FROM system.main.duckdb_keywords() ORDER BY 1",
        )?
        .iter()
        .map(|r| cell(r, 0))
        .collect())
    })
}

pub fn schemas(conn: &Conn) -> EngineResult<Vec<String>> {
    let sql = format!(
        "SELECT schema_name FROM system.main.duckdb_schemas() WHERE database_name = current_database() \
         AND schema_name NOT IN ('information_schema', 'pg_catalog', '{INTERNAL_SCHEMA}') ORDER BY 1"
    );
    Ok(rows(conn, &sql)?.iter().map(|r| cell(r, 0)).collect())
}

pub fn tables(conn: &Conn, catalog: &str, include_schema: bool) -> EngineResult<Vec<TableInfo>> {
    let sql = format!(
        "SELECT schema_name, table_name, 'TABLE' FROM system.main.duckdb_tables() \
           WHERE database_name = current_database() AND NOT internal AND schema_name <> '{INTERNAL_SCHEMA}' \
         UNION ALL \
         SELECT schema_name, view_name, 'VIEW' FROM system.main.duckdb_views() \
           WHERE database_name = current_database() AND NOT internal AND schema_name <> '{INTERNAL_SCHEMA}' \
         ORDER BY 1, 2"
    );
    rows(conn, &sql)?
        .iter()
        .map(|r| {
            let (schema, name) = (cell(r, 0), cell(r, 1));
            let arrow_schema = if include_schema {
                let stmt = conn.prepare(&format!(
                    "SELECT * FROM {}.{}",
                    quote_ident(&schema),
                    quote_ident(&name)
                ))?;
                Some(stmt.result_schema()?)
            } else {
                None
            };
            Ok(TableInfo {
                catalog: catalog.to_string(),
                schema,
                name,
                table_type: cell(r, 2),
                arrow_schema,
            })
        })
        .collect()
}

pub fn primary_keys(conn: &Conn, catalog: &str) -> EngineResult<Vec<PrimaryKey>> {
    let sql = format!(
        "SELECT schema_name, table_name, unnest(constraint_column_names), \
                generate_subscripts(constraint_column_names, 1), constraint_name \
         FROM system.main.duckdb_constraints() WHERE database_name = current_database() \
           AND constraint_type = 'PRIMARY KEY' AND schema_name <> '{INTERNAL_SCHEMA}' ORDER BY 1, 2, 4"
    );
    Ok(rows(conn, &sql)?
        .iter()
        .map(|r| PrimaryKey {
            catalog: catalog.to_string(),
            schema: cell(r, 0),
            table: cell(r, 1),
            column: cell(r, 2),
            seq: cell(r, 3).parse().unwrap_or(0),
            key_name: r.get(4).cloned().flatten(),
        })
        .collect())
}

pub fn foreign_keys(conn: &Conn, catalog: &str) -> EngineResult<Vec<ForeignKey>> {
    let sql = format!(
        "SELECT schema_name, table_name, unnest(constraint_column_names), referenced_table, \
                unnest(referenced_column_names), generate_subscripts(constraint_column_names, 1), constraint_name \
         FROM system.main.duckdb_constraints() WHERE database_name = current_database() \
           AND constraint_type = 'FOREIGN KEY' AND schema_name <> '{INTERNAL_SCHEMA}' ORDER BY 1, 2, 6"
    );
    Ok(rows(conn, &sql)?
        .iter()
        .map(|r| ForeignKey {
            catalog: catalog.to_string(),
            fk_schema: cell(r, 0),
            fk_table: cell(r, 1),
            fk_column: cell(r, 2),
            pk_table: cell(r, 3),
            pk_column: cell(r, 4),
            seq: cell(r, 5).parse().unwrap_or(0),
            fk_name: r.get(6).cloned().flatten(),
        })
        .collect())
}

impl Engine {
    /// Runs a catalog query on the primary of every month that matches
    /// `catalog` (all months when `None`) and concatenates the rows. Months
    /// not open are read without being opened (`MonthRegistry::read_catalog`).
    async fn per_month<T: Send + 'static>(
        self: &Arc<Self>,
        caller: &Caller,
        catalog: Option<&str>,
        query: impl Fn(&crate::duck::Conn, &str) -> EngineResult<Vec<T>> + Send + 'static,
    ) -> EngineResult<Vec<T>> {
        let ids = self.months_for(caller, catalog)?;
        let me = Arc::clone(self);
        blocking(move || {
            let mut out = Vec::new();
            for id in ids {
                let name = id.to_string();
                if let Some(rows) = me.months.read_catalog(id, |c| query(c, &name))? {
                    out.extend(rows);
                }
            }
            Ok(out)
        })
        .await
    }

    /// (month, schema) pairs.
    pub async fn db_schemas(
        self: &Arc<Self>,
        caller: &Caller,
        catalog: Option<&str>,
    ) -> EngineResult<Vec<(String, String)>> {
        self.per_month(caller, catalog, |c, month| {
            Ok(schemas(c)?
                .into_iter()
                .map(|s| (month.to_string(), s))
                .collect())
        })
        .await
    }

    pub async fn tables(
        self: &Arc<Self>,
        caller: &Caller,
        catalog: Option<&str>,
        include_schema: bool,
    ) -> EngineResult<Vec<TableInfo>> {
        self.per_month(caller, catalog, move |c, month| {
            tables(c, month, include_schema)
        })
        .await
    }

    /// The columns of `schema.table` in `month`; `None` when the month or
    /// the table does not exist.
    pub async fn table_columns(
        self: &Arc<Self>,
        caller: &Caller,
        month: &str,
        schema: &str,
        table: &str,
    ) -> EngineResult<Option<Vec<ColumnInfo>>> {
        let (schema, table) = (schema.to_string(), table.to_string());
        let cols = self
            .per_month(caller, Some(month), move |c, _| columns(c, &schema, &table))
            .await?;
        Ok((!cols.is_empty()).then_some(cols))
    }

    pub async fn primary_keys(
        self: &Arc<Self>,
        caller: &Caller,
        catalog: Option<&str>,
    ) -> EngineResult<Vec<PrimaryKey>> {
        self.per_month(caller, catalog, primary_keys).await
    }

    pub async fn foreign_keys(
        self: &Arc<Self>,
        caller: &Caller,
        catalog: Option<&str>,
    ) -> EngineResult<Vec<ForeignKey>> {
        self.per_month(caller, catalog, foreign_keys).await
    }
}
