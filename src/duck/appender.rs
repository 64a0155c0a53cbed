//! Moving rows between databases without leaving DuckDB's own vectors: a
//! query's raw data chunks go into an appender on another connection. Types
//! are exact (no Arrow round trip, no casts), so NaN, -0.0, nested values and
//! user types arrive bit for bit.

use std::ffi::CString;
use std::ptr;

use duckdb::ffi;

use super::cstr_to_string;
use super::database::Conn;
use super::error::{DuckError, DuckErrorKind, DuckResult};
use super::result::{error_data, QueryResult};

/// One data chunk of a query result, owned until dropped.
pub struct Chunk {
    raw: ffi::duckdb_data_chunk,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: fetched from a result; destroyed once.
        unsafe { ffi::duckdb_destroy_data_chunk(&mut self.raw) };
    }
}

impl Chunk {
    pub(super) fn from_raw(raw: ffi::duckdb_data_chunk) -> Chunk {
        Chunk { raw }
    }

    /// Rows in the chunk.
    pub fn len(&self) -> u64 {
        // SAFETY: live chunk.
        unsafe { ffi::duckdb_data_chunk_get_size(self.raw) }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunk's column types (owned by the caller).
    fn types(&self) -> Vec<ffi::duckdb_logical_type> {
        // SAFETY: live chunk; each vector belongs to it.
        unsafe {
            (0..ffi::duckdb_data_chunk_get_column_count(self.raw))
                .map(|i| {
                    ffi::duckdb_vector_get_column_type(ffi::duckdb_data_chunk_get_vector(
                        self.raw, i,
                    ))
                })
                .collect()
        }
    }
}

impl QueryResult<'_> {
    /// The next raw chunk; `Ok(None)` at the end.
    pub fn next_chunk(&mut self) -> DuckResult<Option<Chunk>> {
        let raw = self.fetch_raw_chunk()?;
        Ok(raw.map(|raw| Chunk { raw }))
    }
}

/// An appender into a table of `conn`'s database.
pub struct Appender<'c> {
    raw: ffi::duckdb_appender,
    _conn: std::marker::PhantomData<&'c Conn>,
}

fn cstring(s: &str) -> DuckResult<CString> {
    CString::new(s).map_err(|_| DuckError::new(DuckErrorKind::InvalidInput, "name contains NUL"))
}

impl<'c> Appender<'c> {
    /// `catalog` `None` is the connection's default database (`Some("temp")`
    /// for temporary tables).
    pub fn new(
        conn: &'c Conn,
        catalog: Option<&str>,
        schema: &str,
        table: &str,
    ) -> DuckResult<Appender<'c>> {
        let cat = catalog.map(cstring).transpose()?;
        let (s, t) = (cstring(schema)?, cstring(table)?);
        let mut raw: ffi::duckdb_appender = ptr::null_mut();
        // SAFETY: live connection, valid strings, out-pointer.
        let state = unsafe {
            ffi::duckdb_appender_create_ext(
                conn.raw(),
                cat.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
                s.as_ptr(),
                t.as_ptr(),
                &mut raw,
            )
        };
        let app = Appender {
            raw,
            _conn: std::marker::PhantomData,
        };
        if state != ffi::DuckDBSuccess {
            return Err(app.error(&format!("cannot append to {schema}.{table}")));
        }
        Ok(app)
    }

    /// An appender whose rows (shaped like `like`, named `names`) are the
    /// table `appended_data` of `query`, run on every flush.
    pub fn for_query(
        conn: &'c Conn,
        query: &str,
        like: &Chunk,
        names: &[String],
    ) -> DuckResult<Appender<'c>> {
        let q = cstring(query)?;
        let table = cstring("appended_data")?;
        let c_names = names
            .iter()
            .map(|n| cstring(n))
            .collect::<DuckResult<Vec<_>>>()?;
        let mut name_ptrs: Vec<*const std::os::raw::c_char> =
            c_names.iter().map(|c| c.as_ptr()).collect();
        let mut types = like.types();
        let mut raw: ffi::duckdb_appender = ptr::null_mut();
        // SAFETY: live connection; arrays of the chunk's width; strings
        // outlive the call; out-pointer.
        let state = unsafe {
            ffi::duckdb_appender_create_query(
                conn.raw(),
                q.as_ptr(),
                types.len() as u64,
                types.as_mut_ptr(),
                table.as_ptr(),
                name_ptrs.as_mut_ptr(),
                &mut raw,
            )
        };
        for t in types.iter_mut() {
            // SAFETY: owned logical types from `Chunk::types`.
            unsafe { ffi::duckdb_destroy_logical_type(t) };
        }
        let app = Appender {
            raw,
            _conn: std::marker::PhantomData,
        };
        if state != ffi::DuckDBSuccess {
            return Err(app.error("cannot insert the upload"));
        }
        Ok(app)
    }

    /// The appender's error with DuckDB's class (a constraint, binder or
    /// conversion error keeps its kind), its message prefixed by `context`
    /// unless that is empty.
    fn error(&self, context: &str) -> DuckError {
        // SAFETY: the appender (possibly failed) is live; the error data is
        // destroyed by `error_data`.
        let typed = error_data(unsafe { ffi::duckdb_appender_error_data(self.raw) });
        match typed {
            Err(e) if context.is_empty() => e,
            Err(e) => DuckError::new(e.kind, format!("{context}: {}", e.message)),
            Ok(()) => {
                let msg = cstr_to_string(unsafe { ffi::duckdb_appender_error(self.raw) })
                    .unwrap_or_else(|| "appender error".into());
                DuckError::from_message(format!("{context}: {msg}"))
            }
        }
    }

    /// Appends a chunk whose column types equal the table's.
    pub fn append(&mut self, chunk: &Chunk) -> DuckResult<()> {
        // SAFETY: live appender and chunk.
        if unsafe { ffi::duckdb_append_data_chunk(self.raw, chunk.raw) } != ffi::DuckDBSuccess {
            return Err(self.error(""));
        }
        Ok(())
    }

    /// Flushes and reports constraint errors (an unflushed appender's errors
    /// would be lost on drop).
    pub fn flush(&mut self) -> DuckResult<()> {
        // SAFETY: live appender.
        if unsafe { ffi::duckdb_appender_flush(self.raw) } != ffi::DuckDBSuccess {
            return Err(self.error(""));
        }
        Ok(())
    }
}

impl Drop for Appender<'_> {
    fn drop(&mut self) {
        // SAFETY: created above; destroyed once (flush errors were taken by
        // `flush`, which callers run before dropping).
        unsafe { ffi::duckdb_appender_destroy(&mut self.raw) };
    }
}

/// Runs `select` on `src` and appends every row to `schema.table` on `dst`.
/// Returns the number of rows copied.
///
/// The appender is created at the first non-empty chunk, so a copy of no
/// rows leaves the target untouched: in DuckDB 2.0.0 an empty append to a
/// table followed, in the same transaction, by a large one makes the large
/// one invisible to scans (ARCHITECTURE.md, "DuckDB 2.0.0 pitfalls").
pub fn copy_rows(
    src: &Conn,
    select: &str,
    dst: &Conn,
    catalog: Option<&str>,
    schema: &str,
    table: &str,
) -> DuckResult<u64> {
    let stmt = src.prepare(select)?;
    append_rows(stmt, dst, catalog, schema, table)
}

/// [`copy_rows`] of one of the server's fixed statements (`$1`, ...
/// bound to `params`), kept prepared on `src` ([`Conn::kept_bound`]).
pub fn copy_rows_kept(
    src: &Conn,
    select: &str,
    params: &[super::Param<'_>],
    dst: &Conn,
    catalog: Option<&str>,
    schema: &str,
    table: &str,
) -> DuckResult<u64> {
    let stmt = src.kept_bound(select, params)?;
    append_rows(stmt, dst, catalog, schema, table)
}

fn append_rows(
    mut stmt: super::Prepared<'_>,
    dst: &Conn,
    catalog: Option<&str>,
    schema: &str,
    table: &str,
) -> DuckResult<u64> {
    let mut res = stmt.execute_streaming()?;
    let mut app: Option<Appender<'_>> = None;
    let mut rows = 0u64;
    while let Some(chunk) = res.next_chunk()? {
        if chunk.is_empty() {
            continue;
        }
        let a = match app.as_mut() {
            Some(a) => a,
            None => app.insert(Appender::new(dst, catalog, schema, table)?),
        };
        rows += chunk.len();
        a.append(&chunk)?;
    }
    if let Some(mut a) = app {
        a.flush()?;
    }
    Ok(rows)
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::duck::{Database, DbOptions};

    /// More than one row group (122,880 rows): DuckDB's optimistic,
    /// order-preserving insert path.
    const BIG: u64 = 300_000;

    /// An in-memory database with 4 threads (shared by the `duck` tests).
    pub(in crate::duck) fn db() -> Arc<Database> {
        Database::open(
            Path::new(":memory:"),
            &DbOptions {
                threads: Some(4),
                ..DbOptions::default()
            },
        )
        .unwrap()
    }

    /// The first column of the first row, as text.
    pub(in crate::duck) fn scalar(conn: &Conn, sql: &str) -> Option<String> {
        let mut res = conn.query(sql).unwrap();
        let batch = res.next_batch().unwrap()?;
        let col = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let col = arrow::array::AsArray::as_string::<i32>(&col);
        arrow::array::Array::is_valid(col, 0).then(|| col.value(0).to_string())
    }

    /// The DuckDB 2.0.0 defect the server works around (ARCHITECTURE.md,
    /// "DuckDB 2.0.0 pitfalls"): an empty append, then a large INSERT …
    /// SELECT into the same table in the same transaction, and the large
    /// one's rows are invisible to scans. When this test fails, the bundled
    /// DuckDB has the fix (2.0.1): the workarounds can be reviewed.
    #[test]
    fn duckdb_2_0_0_hides_a_large_insert_after_an_empty_one() {
        let db = db();
        let conn = db.connect().unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE src AS SELECT range AS i FROM range({BIG});
             CREATE TABLE t (i BIGINT);
             BEGIN;
             INSERT INTO t SELECT * FROM src LIMIT 0;
             INSERT INTO t SELECT * FROM src;
             COMMIT;"
        ))
        .unwrap();
        assert_eq!(scalar(&conn, "SELECT sum(i) FROM t"), None);
        conn.execute_batch("CHECKPOINT").unwrap();
        let want = (BIG * (BIG - 1) / 2).to_string();
        assert_eq!(scalar(&conn, "SELECT sum(i) FROM t"), Some(want));
    }

    /// `copy_rows` of no rows leaves the target alone, so a large copy
    /// into the same table later in the transaction stays visible.
    #[test]
    fn an_empty_copy_does_not_hide_a_later_large_one() {
        let (src_db, dst_db) = (db(), db());
        let (src, dst) = (src_db.connect().unwrap(), dst_db.connect().unwrap());
        src.execute_batch(&format!(
            "CREATE TABLE s AS SELECT range AS i, range::VARCHAR AS v FROM range({BIG})"
        ))
        .unwrap();
        dst.execute_batch("CREATE TABLE t (i BIGINT, v VARCHAR); BEGIN")
            .unwrap();
        let none = copy_rows(&src, "SELECT * FROM s WHERE i < 0", &dst, None, "main", "t").unwrap();
        assert_eq!(none, 0);
        let all = copy_rows(&src, "SELECT * FROM s", &dst, None, "main", "t").unwrap();
        assert_eq!(all, BIG);
        let inside = scalar(
            &dst,
            "SELECT count(*) FROM t JOIN (SELECT range AS i FROM range(300000)) USING (i)",
        );
        dst.execute_batch("COMMIT").unwrap();
        assert_eq!(inside, Some(BIG.to_string()));
        let want = (BIG * (BIG - 1) / 2).to_string();
        assert_eq!(scalar(&dst, "SELECT sum(i) FROM t"), Some(want));
    }
}
