//! One DuckDB database (file) and its connections.

use std::ffi::CString;
use std::path::Path;
use std::ptr;
use std::sync::Arc;

use duckdb::ffi;

use super::cstr_to_string;
use super::error::{DuckError, DuckErrorKind, DuckResult};
use super::result::QueryResult;
use super::statement::{Param, Prepared};

/// Most statements one connection keeps prepared ([`Conn::cached`]); past
/// it, statements are prepared for each use.
const KEPT_STATEMENTS: usize = 64;

/// Most texts one connection remembers as verified ([`Conn::is_verified`]),
/// and the longest text it remembers.
const VERIFIED_TEXTS: usize = 1024;
const VERIFIED_MAX_LEN: usize = 8192;

/// Settings applied when a database is opened.
#[derive(Debug, Clone, Default)]
pub struct DbOptions {
    /// DuckDB `memory_limit`, e.g. `"2GB"`.
    pub memory_limit: Option<String>,
    /// DuckDB `threads`.
    pub threads: Option<usize>,
    /// Where DuckDB spills when a query exceeds `memory_limit`. DuckDB lets
    /// a database's SQL read its own spill directory, so each node file
    /// gets one of its own (`DbOptions::spill_dir`).
    pub temp_directory: Option<String>,
    /// Open read-only (the scratch database for months that do not exist yet).
    pub read_only: bool,
    /// DuckDB `max_temp_directory_size`.
    pub max_temp_size: Option<String>,
    /// Directories SQL may read files from (DuckDB `allowed_directories`,
    /// a list literal), and where relative paths resolve
    /// (`file_search_path`). Without them no file outside the database's
    /// own can be read.
    pub files: Option<FilesSetting>,
    /// DuckDB `fsync_mode = NONE`: commits and checkpoints are not fsynced
    /// (a file an operating-system crash may leave torn; the replicas').
    pub unsynced: bool,
}

impl DbOptions {
    /// These options with the spill directory `<temp_directory>/<sub>`.
    pub fn spill_dir(&self, sub: &str) -> DbOptions {
        DbOptions {
            temp_directory: self
                .temp_directory
                .as_ref()
                .map(|t| format!("{}/{sub}", t.trim_end_matches('/'))),
            ..self.clone()
        }
    }
}

/// The files sandbox as DuckDB settings.
#[derive(Debug, Clone)]
pub struct FilesSetting {
    pub allowed_directories: String,
    pub file_search_path: String,
}

/// Locks the database's settings before anyone else can use it: with a
/// files sandbox, the directories SQL may read (before external access is
/// switched off: DuckDB refuses to change them after), then nothing a
/// statement runs may change a setting again (SQL `SET` is refused by the
/// engine anyway; this also covers what DuckDB runs on its own) except the
/// two budgets the engine rebalances.
fn sandbox(conn: &Conn, files: Option<&FilesSetting>) -> DuckResult<()> {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut sql = String::new();
    if let Some(f) = files {
        sql.push_str(&format!(
            "SET GLOBAL allowed_directories = {};
             SET GLOBAL file_search_path = {};
             SET GLOBAL enable_external_access = false;",
            f.allowed_directories,
            quote(&f.file_search_path)
        ));
    }
    sql.push_str(
        "SET GLOBAL allowed_configs = ['memory_limit', 'max_temp_directory_size'];
         SET GLOBAL lock_configuration = true;",
    );
    conn.execute_batch(&sql)
}

/// An open DuckDB database. Opened exactly once per file; connections are
/// handed out from it. DuckDB's database object is thread-safe.
pub struct Database {
    raw: ffi::duckdb_database,
}

// SAFETY: duckdb_database is internally synchronised; DuckDB documents that a
// database handle may be shared between threads that each use their own
// connection.
unsafe impl Send for Database {}
unsafe impl Sync for Database {}

impl Database {
    /// Opens (or creates) the database at `path`; `":memory:"` for in-memory.
    /// A small throwaway in-memory database (64 MB, one thread) for asking
    /// DuckDB things that must not touch a month's files.
    pub fn scratch() -> DuckResult<Arc<Database>> {
        Database::open(
            Path::new(":memory:"),
            &DbOptions {
                memory_limit: Some("64MB".into()),
                threads: Some(1),
                // No spilling (an in-memory database would spill into the
                // working directory, a files dir).
                temp_directory: Some(String::new()),
                read_only: false,
                max_temp_size: None,
                files: None,
                unsynced: false,
            },
        )
    }

    pub fn open(path: &Path, opts: &DbOptions) -> DuckResult<Arc<Database>> {
        let path_str = path.to_string_lossy().into_owned();
        let c_path = CString::new(path_str.clone())
            .map_err(|_| DuckError::new(DuckErrorKind::InvalidInput, "path contains NUL"))?;
        let mut config: ffi::duckdb_config = ptr::null_mut();
        // SAFETY: out-pointer is valid; config is destroyed below.
        if unsafe { ffi::duckdb_create_config(&mut config) } != ffi::DuckDBSuccess {
            return Err(DuckError::new(
                DuckErrorKind::Internal,
                "could not create DuckDB config",
            ));
        }
        let mut settings: Vec<(&str, String)> = Vec::new();
        if let Some(m) = &opts.memory_limit {
            settings.push(("memory_limit", m.clone()));
        }
        if let Some(t) = opts.threads {
            settings.push(("threads", t.to_string()));
        }
        if let Some(d) = &opts.temp_directory {
            // DuckDB creates only the last component of the spill directory.
            if let Some(parent) = Path::new(d).parent().filter(|_| !d.is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    DuckError::new(
                        DuckErrorKind::Io,
                        format!("cannot create {}: {e}", parent.display()),
                    )
                })?;
            }
            settings.push(("temp_directory", d.clone()));
        }
        if let Some(m) = &opts.max_temp_size {
            settings.push(("max_temp_directory_size", m.clone()));
        }
        if opts.read_only {
            settings.push(("access_mode", "READ_ONLY".into()));
        }
        if opts.unsynced {
            settings.push(("fsync_mode", "NONE".into()));
        }
        // Without a files sandbox SQL may not touch the filesystem at all
        // (read_csv('/etc/passwd'), COPY, ATTACH, glob); the database's own
        // files and its temp directory stay usable. With one, external
        // access is switched off after the open (`sandbox`): DuckDB 2.0
        // refuses allowed_directories in the open's config.
        if opts.files.is_none() {
            settings.push(("enable_external_access", "false".into()));
        }
        // DuckDB 2.0.0 corrupts its heap when a join's bloom filter is
        // pushed into the scan of a table this transaction has deleted from
        // and appended to (the replica apply does exactly that; so can a
        // user's transaction): a crash of the whole server. No measurable
        // cost on our join benchmarks (ARCHITECTURE.md, "DuckDB 2.0.0
        // pitfalls").
        settings.push(("disabled_optimizers", "join_filter_pushdown".into()));
        // Extensions are never downloaded or loaded at run time.
        settings.push(("autoinstall_known_extensions", "false".into()));
        settings.push(("autoload_known_extensions", "false".into()));
        // No secrets read from the machine (~/.duckdb/stored_secrets); the
        // engine refuses CREATE SECRET, so a database never holds one.
        settings.push(("allow_persistent_secrets", "false".into()));
        for (k, v) in &settings {
            let (ck, cv) = (CString::new(*k), CString::new(v.as_str()));
            let ok = match (ck, cv) {
                (Ok(ck), Ok(cv)) => {
                    // SAFETY: valid config and NUL-terminated strings.
                    let state = unsafe { ffi::duckdb_set_config(config, ck.as_ptr(), cv.as_ptr()) };
                    state == ffi::DuckDBSuccess
                }
                _ => false,
            };
            if !ok {
                // SAFETY: config was created above.
                unsafe { ffi::duckdb_destroy_config(&mut config) };
                return Err(DuckError::new(
                    DuckErrorKind::InvalidInput,
                    format!("invalid DuckDB setting {k}={v}"),
                ));
            }
        }
        let mut raw: ffi::duckdb_database = ptr::null_mut();
        let mut err: *mut std::os::raw::c_char = ptr::null_mut();
        // SAFETY: all pointers valid; err is freed with duckdb_free.
        let state = unsafe { ffi::duckdb_open_ext(c_path.as_ptr(), &mut raw, config, &mut err) };
        // SAFETY: config no longer needed after open.
        unsafe { ffi::duckdb_destroy_config(&mut config) };
        if state != ffi::DuckDBSuccess {
            let msg = cstr_to_string(err).unwrap_or_else(|| "could not open database".into());
            if !err.is_null() {
                // SAFETY: err was allocated by DuckDB.
                unsafe { ffi::duckdb_free(err.cast()) };
            }
            return Err(DuckError::from_message(format!("{path_str}: {msg}")));
        }
        let db = Arc::new(Database { raw });
        let conn = db.connect()?;
        // Table functions live in the database's system catalog: one
        // registration serves every connection.
        super::xlsx::register(&conn, db.raw)?;
        sandbox(&conn, opts.files.as_ref())
            .map_err(|e| DuckError::new(e.kind, format!("{path_str}: {}", e.message)))?;
        Ok(db)
    }

    /// A new connection to this database.
    pub fn connect(self: &Arc<Self>) -> DuckResult<Conn> {
        let mut raw: ffi::duckdb_connection = ptr::null_mut();
        // SAFETY: self.raw is a live database.
        if unsafe { ffi::duckdb_connect(self.raw, &mut raw) } != ffi::DuckDBSuccess {
            return Err(DuckError::new(
                DuckErrorKind::Internal,
                "could not connect to database",
            ));
        }
        Ok(Conn {
            raw,
            _db: Arc::clone(self),
            spent: std::cell::Cell::new(false),
            open_txn: std::cell::Cell::new(None),
            kept: Default::default(),
            verified: Default::default(),
            name: Default::default(),
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // SAFETY: every Conn holds an Arc<Database>, so no connection outlives this.
        unsafe { ffi::duckdb_close(&mut self.raw) };
    }
}

/// One DuckDB connection: its own transaction and session state.
/// `Send` but not `Sync`: one thread uses it at a time.
pub struct Conn {
    raw: ffi::duckdb_connection,
    _db: Arc<Database>,
    /// Holds state of the client that used it (temp objects): never to be
    /// handed to another client.
    spent: std::cell::Cell<bool>,
    /// The id its owner gave the transaction it opened on this connection
    /// with a client's SQL `BEGIN` (see [`Conn::open_txn`]).
    open_txn: std::cell::Cell<Option<u64>>,
    /// `current_database()`, asked once.
    name: std::cell::OnceCell<String>,
    /// The server's own statements, prepared once on this connection.
    kept: std::cell::RefCell<std::collections::HashMap<String, ffi::duckdb_prepared_statement>>,
    /// Texts a caller checked on this connection, and the epoch (of the
    /// caller's choosing) they were checked at.
    verified: std::cell::RefCell<(u64, std::collections::HashSet<String>)>,
}

// SAFETY: a DuckDB connection may move between threads as long as it is used
// by one thread at a time, which `&mut`/ownership (not Sync) guarantees.
unsafe impl Send for Conn {}

impl Conn {
    pub(crate) fn raw(&self) -> ffi::duckdb_connection {
        self.raw
    }

    /// The id of the transaction a client's SQL `BEGIN` opened on this
    /// connection (a session's), until its COMMIT or ROLLBACK.
    pub fn open_txn(&self) -> Option<u64> {
        self.open_txn.get()
    }

    pub fn set_open_txn(&self, id: Option<u64>) {
        self.open_txn.set(id);
    }

    /// Marks the connection as holding its client's state (a DDL statement
    /// ran on it, which may have made temporary objects): a pool must close
    /// it instead of handing it to the next client.
    pub fn mark_spent(&self) {
        self.spent.set(true);
    }

    pub fn is_spent(&self) -> bool {
        self.spent.get()
    }

    /// Whether `sql` was marked verified on this connection at `epoch`
    /// ([`Conn::set_verified`]); a newer epoch forgets every mark.
    pub fn is_verified(&self, epoch: u64, sql: &str) -> bool {
        let v = self.verified.borrow();
        v.0 == epoch && v.1.contains(sql)
    }

    /// Remembers `sql` as verified at `epoch` (bounded: past
    /// [`VERIFIED_TEXTS`] texts the memory starts over).
    pub fn set_verified(&self, epoch: u64, sql: &str) {
        if sql.len() > VERIFIED_MAX_LEN {
            return;
        }
        let mut v = self.verified.borrow_mut();
        if v.0 != epoch || v.1.len() >= VERIFIED_TEXTS {
            v.0 = epoch;
            v.1.clear();
        }
        v.1.insert(sql.to_string());
    }

    /// Rolls back the open transaction, if there is one. An interrupt meant
    /// for the statement before (a timeout, a client gone) can land on the
    /// ROLLBACK instead, so a failed one is retried; a connection that
    /// still cannot roll back is not reused (it may hold an aborted
    /// transaction).
    pub fn rollback(&self) {
        for _ in 0..2 {
            match self.execute_batch("ROLLBACK") {
                Ok(()) => return,
                Err(e) if e.message.contains("no transaction is active") => return,
                Err(_) => {}
            }
        }
        self.mark_spent();
    }

    /// Rolls back the open transaction and leaves a failed one in its
    /// place: every later statement fails with DuckDB's "Current transaction
    /// is aborted (please ROLLBACK)" until the owner ends it (a COMMIT of
    /// it commits nothing). For a client's transaction the server rolled
    /// back: what the client sends next must not run outside it, committed
    /// on its own. A connection where this fails is not reused.
    pub fn rollback_to_failed(&self) {
        self.rollback();
        let failed = self.execute_batch("BEGIN TRANSACTION").is_ok()
            && self
                .execute_batch("SELECT error('the server rolled this transaction back')")
                .is_err();
        if !failed {
            self.rollback();
            self.mark_spent();
        }
    }

    /// Runs SQL (one or more statements, each prepared after the previous
    /// one ran) and discards the results. For the server's own statements.
    pub fn execute_batch(&self, sql: &str) -> DuckResult<()> {
        let script = self.extract(sql)?;
        for i in 0..script.len() {
            script.prepare(self, i)?.execute()?;
        }
        Ok(())
    }

    /// Prepares a single statement.
    pub fn prepare(&self, sql: &str) -> DuckResult<Prepared<'_>> {
        let c_sql = CString::new(sql).map_err(|_| {
            DuckError::new(
                DuckErrorKind::Parser,
                "Parser Error: SQL contains a NUL byte",
            )
        })?;
        let mut raw: ffi::duckdb_prepared_statement = ptr::null_mut();
        // SAFETY: live connection, valid C string, out-pointer.
        let state = unsafe { ffi::duckdb_prepare(self.raw, c_sql.as_ptr(), &mut raw) };
        Prepared::from_raw(self, raw, state)
    }

    /// A new connection to the same database (no temporary objects, no
    /// transaction of this one's).
    pub fn sibling(&self) -> DuckResult<Conn> {
        self._db.connect()
    }

    /// Splits SQL into statements with DuckDB's parser.
    pub fn extract(&self, sql: &str) -> DuckResult<Script> {
        let c_sql = CString::new(sql).map_err(|_| {
            DuckError::new(
                DuckErrorKind::Parser,
                "Parser Error: SQL contains a NUL byte",
            )
        })?;
        let mut raw: ffi::duckdb_extracted_statements = ptr::null_mut();
        // SAFETY: live connection, valid string, out-pointer.
        let n = unsafe { ffi::duckdb_extract_statements(self.raw, c_sql.as_ptr(), &mut raw) };
        if n == 0 {
            // SAFETY: raw is valid (possibly holding an error) and destroyed by Script.
            let msg = cstr_to_string(unsafe { ffi::duckdb_extract_statements_error(raw) });
            let script = Script { raw, len: 0 };
            drop(script);
            return Err(match msg {
                Some(m) => DuckError::from_message(m),
                None => DuckError::new(
                    DuckErrorKind::Parser,
                    "Parser Error: no statement to execute",
                ),
            });
        }
        Ok(Script {
            raw,
            len: n as usize,
        })
    }

    /// Runs one statement and returns its (materialised) result; for internal
    /// bookkeeping queries with small answers.
    pub fn query(&self, sql: &str) -> DuckResult<QueryResult<'_>> {
        let mut stmt = self.prepare(sql)?;
        stmt.execute_owned()
    }

    /// The name SQL knows this connection's database by
    /// (`current_database()`), asked once. A kept statement that calls
    /// `current_database()` is planned again on every run (DuckDB re-binds
    /// statements with functions that depend on the query), one that names
    /// the database is not.
    pub fn database_name(&self) -> DuckResult<&str> {
        if let Some(n) = self.name.get() {
            return Ok(n);
        }
        let mut res = self.query("SELECT current_database()")?;
        let name = res
            .next_batch()?
            .and_then(|b| {
                let col =
                    arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).ok()?;
                let a = col.as_any().downcast_ref::<arrow::array::StringArray>()?;
                (arrow::array::Array::len(a) > 0).then(|| a.value(0).to_string())
            })
            .ok_or_else(|| DuckError::new(DuckErrorKind::Internal, "no current database"))?;
        Ok(self.name.get_or_init(|| name))
    }

    /// Runs one of the server's own statements with `params` (`$1`, ...)
    /// and returns its materialised result. The statement is parsed and
    /// planned once per connection and kept: DuckDB 2.0 spends 0.3-1 ms
    /// parsing and planning even `COMMIT` or a one-row INSERT, more than
    /// running them (DuckDB re-binds a kept statement itself when the
    /// catalog changed under it). Only for fixed texts: each distinct text
    /// is kept until the connection closes, at most [`KEPT_STATEMENTS`].
    pub fn cached(&self, sql: &str, params: &[Param<'_>]) -> DuckResult<QueryResult<'_>> {
        self.kept_bound(sql, params)?.execute_owned()
    }

    /// The kept statement of `sql` (prepared now if it is new) with
    /// `params` bound, for [`Conn::cached`] and streaming reads.
    pub fn kept_bound(&self, sql: &str, params: &[Param<'_>]) -> DuckResult<Prepared<'_>> {
        let kept = self.kept.borrow().get(sql).copied();
        let mut stmt = match kept {
            Some(raw) => Prepared::kept(self, raw),
            None => {
                let stmt = self.prepare(sql)?;
                let mut kept = self.kept.borrow_mut();
                if kept.len() < KEPT_STATEMENTS {
                    let raw = stmt.keep();
                    kept.insert(sql.to_string(), raw);
                    Prepared::kept(self, raw)
                } else {
                    stmt
                }
            }
        };
        stmt.bind_params(params)?;
        Ok(stmt)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        for (_, mut raw) in self.kept.get_mut().drain() {
            // SAFETY: kept statements were created on this connection and
            // are destroyed once, before it disconnects.
            unsafe { ffi::duckdb_destroy_prepare(&mut raw) };
        }
        // SAFETY: the connection is live and used by no other thread.
        unsafe { ffi::duckdb_disconnect(&mut self.raw) };
    }
}

/// SQL split into statements by DuckDB's parser.
pub struct Script {
    raw: ffi::duckdb_extracted_statements,
    len: usize,
}

impl Script {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Prepares statement `i` on `conn` (later statements may depend on the
    /// effects of executing earlier ones, so prepare them one at a time).
    pub fn prepare<'c>(&self, conn: &'c Conn, i: usize) -> DuckResult<Prepared<'c>> {
        let mut raw: ffi::duckdb_prepared_statement = ptr::null_mut();
        // SAFETY: i < len, valid extracted statements and connection.
        let state = unsafe {
            ffi::duckdb_prepare_extracted_statement(conn.raw(), self.raw, i as u64, &mut raw)
        };
        Prepared::from_raw(conn, raw, state)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        // SAFETY: created by duckdb_extract_statements.
        unsafe { ffi::duckdb_destroy_extracted(&mut self.raw) };
    }
}

/// Interrupts the query running on a connection, from another thread.
#[derive(Clone, Copy)]
pub struct InterruptHandle {
    raw: ffi::duckdb_connection,
}

// SAFETY: duckdb_interrupt is meant to be called from another thread; the
// handle is only used while its connection is alive (see `interrupt`).
unsafe impl Send for InterruptHandle {}
unsafe impl Sync for InterruptHandle {}

impl InterruptHandle {
    /// # Safety
    /// The connection this handle came from must still be open.
    pub unsafe fn interrupt(&self) {
        // SAFETY: guaranteed by the caller.
        unsafe { ffi::duckdb_interrupt(self.raw) };
    }
}

impl Conn {
    /// A handle that can interrupt this connection's running query.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle { raw: self.raw }
    }
}

/// The DuckDB duckflock bundles carries fixes for defects of DuckDB 2.0.0
/// (vendor/README.md). These fail with the unpatched engine. (The `rowid`
/// join fix has no test of its own: the server also keeps
/// `join_filter_pushdown` off, and `engine::apply`'s crash test fails
/// without that.)
#[cfg(test)]
mod bundled_engine_tests {
    use crate::duck::appender::tests::{db, scalar};

    /// More than one row group (122,880 rows).
    const BIG: u64 = 300_000;

    /// An UPDATE of an indexed table (run as delete + insert) whose rows
    /// cross a row group of the transaction's local storage: 2.0.0 loses
    /// rows of RETURNING and of a trigger's NEW TABLE, and fails (then
    /// invalidates the database) when a trigger reads OLD TABLE.
    #[test]
    fn a_large_update_of_an_indexed_table_returns_every_row() {
        let db = db();
        let conn = db.connect().unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE k (id BIGINT PRIMARY KEY, v DOUBLE);
             INSERT INTO k SELECT range, 0 FROM range({BIG});
             CREATE TABLE cap (op INTEGER, id BIGINT, v DOUBLE);
             CREATE TRIGGER k_u AFTER UPDATE ON k REFERENCING OLD TABLE AS o NEW TABLE AS n
                 FOR EACH STATEMENT INSERT INTO cap SELECT -1, * FROM o UNION ALL SELECT 1, * FROM n;"
        ))
        .unwrap();
        let mut res = conn
            .query("UPDATE k SET v = 1 WHERE id < 122881 RETURNING id")
            .unwrap();
        let mut returned = 0;
        while let Some(batch) = res.next_batch().unwrap() {
            returned += batch.num_rows();
        }
        drop(res);
        assert_eq!(returned, 122_881);
        conn.execute_batch("DELETE FROM cap; UPDATE k SET v = 2 WHERE random() < 0.8")
            .unwrap();
        let changed = scalar(&conn, "SELECT count(*) FROM k WHERE v = 2").unwrap();
        let captured = scalar(
            &conn,
            "SELECT count(*) FILTER (WHERE op = 1 AND v = 2) || ',' || count(*) FILTER (WHERE op = -1 AND v <> 2) FROM cap",
        )
        .unwrap();
        assert_eq!(captured, format!("{changed},{changed}"));
    }
}

#[cfg(test)]
mod kept_statement_tests {
    use super::Param;
    use crate::duck::appender::tests::{db, scalar};

    fn count(conn: &super::Conn, lo: i64, hi: i64) -> i64 {
        let mut res = conn
            .cached(
                "SELECT count(*)::BIGINT AS n FROM t WHERE i > $1 AND i <= $2",
                &[Param::Int(lo), Param::Int(hi)],
            )
            .unwrap();
        let b = res.next_batch().unwrap().unwrap();
        b.column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    }

    /// A kept statement sees rows committed after it was prepared, takes
    /// new parameters each time, and runs inside later transactions.
    #[test]
    fn kept_statements_see_new_rows_and_new_parameters() {
        let db = db();
        let conn = db.connect().unwrap();
        let other = db.connect().unwrap();
        conn.execute_batch("CREATE TABLE t (i BIGINT)").unwrap();
        assert_eq!(count(&conn, 0, 10), 0);
        other
            .execute_batch("INSERT INTO t SELECT range FROM range(1, 11)")
            .unwrap();
        assert_eq!(count(&conn, 0, 10), 10);
        assert_eq!(count(&conn, 5, 10), 5);
        conn.cached("BEGIN TRANSACTION", &[]).unwrap();
        conn.cached("INSERT INTO t VALUES ($1)", &[Param::Int(11)])
            .unwrap();
        conn.cached("INSERT INTO t VALUES ($1)", &[Param::Int(12)])
            .unwrap();
        assert_eq!(count(&conn, 10, 20), 2);
        conn.cached("COMMIT", &[]).unwrap();
        assert_eq!(scalar(&other, "SELECT count(*) FROM t").unwrap(), "12");
        conn.cached("SET VARIABLE v = $1", &[Param::Text("a")])
            .unwrap();
        conn.cached("SET VARIABLE v = $1", &[Param::Text("b")])
            .unwrap();
        assert_eq!(scalar(&conn, "SELECT getvariable('v')").unwrap(), "b");
    }
}
