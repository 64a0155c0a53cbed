//! End-to-end tests of the Flight SQL server: the real binary, real DuckDB
//! files in a temp dir, real gRPC through arrow-flight's FlightSqlServiceClient.

mod common;

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetTables, SqlInfo,
};
use arrow_flight::Action;
use common::*;
use futures::TryStreamExt;
use prost::Message;
use tonic::Code;

fn current_month() -> String {
    chrono::Utc::now().format("%Y-%m").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn literal_query_streams_back() {
    let server = Server::start(&[]);
    let mut c = server.client().await;
    let b = query(&mut c, "SELECT 42::BIGINT AS answer, 'duck' AS name")
        .await
        .unwrap();
    assert_eq!(rows(&b), 1);
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 42);
    assert_eq!(b[0].column(1).as_string::<i32>().value(0), "duck");
    // A read does not create the month.
    assert!(!server.data_dir.join(current_month()).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn ddl_and_dml_through_query_path_take_effect_once() {
    let server = Server::start(&[]);
    let mut c = server.client().await;
    query(&mut c, "CREATE TABLE t (id INTEGER PRIMARY KEY, v VARCHAR)")
        .await
        .unwrap();
    // The month folder and primary file exist after the first write.
    assert!(server
        .data_dir
        .join(current_month())
        .join("node_0.db")
        .exists());
    let b = query(
        &mut c,
        "INSERT INTO t VALUES (1, 'a'), (2, 'b') RETURNING id, upper(v) AS v",
    )
    .await
    .unwrap();
    assert_eq!(rows(&b), 2);
    assert_eq!(b[0].column(1).as_string::<i32>().value(1), "B");
    // GetFlightInfo executed the insert exactly once, even though DoGet fetched it.
    let b = query(&mut c, "SELECT count(*) AS n FROM t").await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 2);
    let n = c
        .execute_update("UPDATE t SET v = 'z' WHERE id >= 1".into(), None)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let n = c
        .execute_update("DELETE FROM t WHERE id = 2".into(), None)
        .await
        .unwrap();
    assert_eq!(n, 1);
    // A script: several statements, the last one's result comes back.
    query(&mut c, "CREATE TABLE u AS SELECT * FROM range(5) r(i)")
        .await
        .unwrap();
    let b = query(
        &mut c,
        "INSERT INTO u VALUES (0); SELECT sum(i) AS s FROM u",
    )
    .await
    .unwrap();
    assert!(pretty(&b).contains("| 10 |"), "{}", pretty(&b));
    // DDL inside a script runs, each statement captured as its own text.
    let b = query(
        &mut c,
        "CREATE TABLE u2 (i INT); INSERT INTO u2 VALUES (1), (2); \
         ALTER TABLE u2 ADD COLUMN j INT DEFAULT 5; SELECT sum(i + j) AS s FROM u2",
    )
    .await
    .unwrap();
    assert!(pretty(&b).contains("| 13 |"), "{}", pretty(&b));
}

#[tokio::test(flavor = "multi_thread")]
async fn prepared_statements_bind_query_update_and_executemany() {
    let server = Server::start(&[]);
    let mut c = server.client().await;
    c.execute_update("CREATE TABLE p (id BIGINT, name VARCHAR)".into(), None)
        .await
        .unwrap();

    // executemany: 10,000 parameter rows in one DoPut, one transaction.
    let mut ins = c
        .prepare("INSERT INTO p VALUES (?, ?)".into(), None)
        .await
        .unwrap();
    let ids: Vec<i64> = (0..10_000).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("0", DataType::Int64, true),
            Field::new("1", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
        ],
    )
    .unwrap();
    ins.set_parameters(params).unwrap();
    assert_eq!(ins.execute_update().await.unwrap(), 10_000);
    ins.close().await.unwrap();

    // A parameterised query; the dataset schema is known before execution.
    let mut q = c
        .prepare("SELECT name FROM p WHERE id = ?".into(), None)
        .await
        .unwrap();
    assert_eq!(q.dataset_schema().unwrap().field(0).name(), "name");
    assert_eq!(q.parameter_schema().unwrap().fields().len(), 1);
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("0", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![4242]))],
    )
    .unwrap();
    q.set_parameters(params).unwrap();
    let info = q.execute().await.unwrap();
    let b = fetch(&mut c, info).await.unwrap();
    assert_eq!(b[0].column(0).as_string::<i32>().value(0), "n4242");
    q.close().await.unwrap();

    // A parameter DuckDB cannot type before binding is reported as Arrow Null.
    let mut q = c
        .prepare("SELECT ? AS anything".into(), None)
        .await
        .unwrap();
    assert_eq!(
        q.parameter_schema().unwrap().field(0).data_type(),
        &DataType::Null
    );
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("0", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec!["free"]))],
    )
    .unwrap();
    q.set_parameters(params).unwrap();
    let info = q.execute().await.unwrap();
    let b = fetch(&mut c, info).await.unwrap();
    assert_eq!(b[0].column(0).as_string::<i32>().value(0), "free");

    // A failing row rolls the whole batch back.
    c.execute_update("CREATE TABLE k (id BIGINT PRIMARY KEY)".into(), None)
        .await
        .unwrap();
    let mut ins = c
        .prepare("INSERT INTO k VALUES (?)".into(), None)
        .await
        .unwrap();
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("0", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![1, 2, 2]))],
    )
    .unwrap();
    ins.set_parameters(params).unwrap();
    let err = ins.execute_update().await.unwrap_err();
    assert_eq!(code(&err), Code::AlreadyExists, "{err}");
    let b = query(&mut c, "SELECT count(*) FROM k").await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn months_are_catalogs_chosen_by_header_and_discovered_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    {
        let server = Server::start_in(&dir, &[]);
        let mut c = server.client().await;
        c.set_header("x-duckflock-month", "2026-01");
        c.execute_update("CREATE TABLE m (v INTEGER)".into(), None)
            .await
            .unwrap();
        c.execute_update("INSERT INTO m VALUES (1)".into(), None)
            .await
            .unwrap();
        c.set_header("x-duckflock-month", "2026-02");
        c.execute_update("CREATE TABLE m (v INTEGER)".into(), None)
            .await
            .unwrap();
        c.execute_update("INSERT INTO m VALUES (2), (3)".into(), None)
            .await
            .unwrap();
        let b = query(&mut c, "SELECT count(*) FROM m").await.unwrap();
        assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 2);

        // Invalid months are INVALID_ARGUMENT and never touch the filesystem.
        for bad in ["2026-13", "26-01", "../x", "2026-1"] {
            c.set_header("x-duckflock-month", bad);
            let err = c
                .execute_update("CREATE TABLE evil (v INTEGER)".into(), None)
                .await
                .unwrap_err();
            assert_eq!(code(&err), Code::InvalidArgument, "{bad}: {err}");
        }
        let entries: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        let mut entries = entries;
        entries.sort();
        // The months, and the default files and export dirs.
        assert_eq!(entries, vec!["2026-01", "2026-02", "exports", "files"]);
        assert!(!tmp.path().join("x").exists());
    }
    // A new server discovers both months.
    let server = Server::start_in(&dir, &[]);
    let mut c = server.client().await;
    let info = c.get_catalogs().await.unwrap();
    let b = fetch(&mut c, info).await.unwrap();
    let cats: Vec<&str> = (0..b[0].num_rows())
        .map(|i| b[0].column(0).as_string::<i32>().value(i))
        .collect();
    assert_eq!(cats, vec!["2026-01", "2026-02"]);
    c.set_header("x-duckflock-month", "2026-01");
    let b = query(&mut c, "SELECT sum(v) FROM m").await.unwrap();
    assert!(pretty(&b).contains("| 1 "), "{}", pretty(&b));
}

#[tokio::test(flavor = "multi_thread")]
async fn session_catalog_option_selects_the_month() {
    use duckflock::flight::session::*;
    let server = Server::start(&[]);
    let mut c = server.client().await;
    let mut req = SetSessionOptionsRequest::default();
    req.session_options.insert(
        "catalog".into(),
        SessionOptionValue {
            option_value: Some(session_option_value::OptionValue::StringValue(
                "2025-07".into(),
            )),
        },
    );
    let resp = c
        .inner_mut()
        .do_action(Action {
            r#type: "SetSessionOptions".into(),
            body: req.encode_to_vec().into(),
        })
        .await
        .unwrap();
    let cookie = resp
        .metadata()
        .get("set-cookie")
        .expect("session cookie")
        .to_str()
        .unwrap()
        .to_string();
    let results: Vec<arrow_flight::Result> = resp.into_inner().try_collect().await.unwrap();
    let res = SetSessionOptionsResult::decode(results[0].body.clone()).unwrap();
    assert!(res.errors.is_empty());
    c.set_header("cookie", cookie.split(';').next().unwrap());
    c.execute_update("CREATE TABLE s (v INTEGER)".into(), None)
        .await
        .unwrap();
    assert!(server.data_dir.join("2025-07").join("node_0.db").exists());

    // GetSessionOptions reports the catalog.
    let resp = c
        .do_action(Action {
            r#type: "GetSessionOptions".into(),
            body: GetSessionOptionsRequest {}.encode_to_vec().into(),
        })
        .await
        .unwrap();
    let results: Vec<arrow_flight::Result> = resp.try_collect().await.unwrap();
    let res = GetSessionOptionsResult::decode(results[0].body.clone()).unwrap();
    assert_eq!(
        res.session_options["catalog"].option_value,
        Some(session_option_value::OptionValue::StringValue(
            "2025-07".into()
        ))
    );

    // An invalid month as catalog is refused as an invalid value.
    let mut req = SetSessionOptionsRequest::default();
    req.session_options.insert(
        "catalog".into(),
        SessionOptionValue {
            option_value: Some(session_option_value::OptionValue::StringValue(
                "2025-13".into(),
            )),
        },
    );
    let resp = c
        .do_action(Action {
            r#type: "SetSessionOptions".into(),
            body: req.encode_to_vec().into(),
        })
        .await
        .unwrap();
    let results: Vec<arrow_flight::Result> = resp.try_collect().await.unwrap();
    let res = SetSessionOptionsResult::decode(results[0].body.clone()).unwrap();
    assert_eq!(res.errors["catalog"].value, 2);

    // Session state: a temp table lives in the session's own connection.
    c.execute_update("CREATE TEMP TABLE tmp AS SELECT 7 AS v".into(), None)
        .await
        .unwrap();
    let b = query(&mut c, "SELECT v FROM tmp").await.unwrap();
    assert_eq!(rows(&b), 1);
    let mut other = server.client().await;
    other.set_header("x-duckflock-month", "2025-07");
    let err = query(&mut other, "SELECT v FROM tmp").await.unwrap_err();
    assert_eq!(code(&err), Code::NotFound, "{err}");

    let resp = c
        .do_action(Action {
            r#type: "CloseSession".into(),
            body: CloseSessionRequest {}.encode_to_vec().into(),
        })
        .await
        .unwrap();
    let results: Vec<arrow_flight::Result> = resp.try_collect().await.unwrap();
    assert_eq!(
        CloseSessionResult::decode(results[0].body.clone())
            .unwrap()
            .status,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_commit_and_rollback() {
    let server = Server::start(&[]);
    let mut c = server.client().await;
    c.execute_update("CREATE TABLE tx (v INTEGER)".into(), None)
        .await
        .unwrap();

    let t = c.begin_transaction().await.unwrap();
    c.execute_update("INSERT INTO tx VALUES (1)".into(), Some(t.clone()))
        .await
        .unwrap();
    // Visible inside, invisible outside until commit.
    let info = c
        .execute("SELECT count(*) FROM tx".into(), Some(t.clone()))
        .await
        .unwrap();
    let b = fetch(&mut c, info).await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 1);
    let b = query(&mut c, "SELECT count(*) FROM tx").await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 0);
    c.end_transaction(t, arrow_flight::sql::EndTransaction::Rollback)
        .await
        .unwrap();
    let b = query(&mut c, "SELECT count(*) FROM tx").await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 0);

    let t = c.begin_transaction().await.unwrap();
    c.execute_update("INSERT INTO tx VALUES (1), (2)".into(), Some(t.clone()))
        .await
        .unwrap();
    c.end_transaction(t.clone(), arrow_flight::sql::EndTransaction::Commit)
        .await
        .unwrap();
    let b = query(&mut c, "SELECT count(*) FROM tx").await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 2);
    // The ended transaction is gone.
    let err = c
        .execute_update("INSERT INTO tx VALUES (3)".into(), Some(t))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_carry_duckdb_messages_and_codes() {
    let server = Server::start(&[]);
    let mut c = server.client().await;
    c.execute_update("CREATE TABLE e (id INTEGER PRIMARY KEY)".into(), None)
        .await
        .unwrap();
    c.execute_update("INSERT INTO e VALUES (1)".into(), None)
        .await
        .unwrap();

    let cases = [
        ("SELEC 1", Code::InvalidArgument, "Parser Error"),
        ("SELECT nope FROM e", Code::InvalidArgument, "Binder Error"),
        (
            "SELECT * FROM missing_table",
            Code::NotFound,
            "missing_table",
        ),
        (
            "CREATE TABLE e (id INTEGER)",
            Code::AlreadyExists,
            "already exists",
        ),
        (
            "INSERT INTO e VALUES (1)",
            Code::AlreadyExists,
            "Duplicate key",
        ),
        (
            "INSERT INTO e VALUES (NULL)",
            Code::FailedPrecondition,
            "NOT NULL",
        ),
        (
            "SELECT 'x'::INTEGER",
            Code::InvalidArgument,
            "Conversion Error",
        ),
        ("ATTACH 'other.db'", Code::PermissionDenied, "ATTACH"),
        ("INSTALL httpfs", Code::PermissionDenied, "INSTALL"),
        ("SET memory_limit = '1TB'", Code::PermissionDenied, "SET"),
        (
            "SELECT * FROM read_csv('/etc/passwd')",
            Code::PermissionDenied,
            "Permission Error",
        ),
        (
            "SELECT * FROM glob('/etc/*')",
            Code::PermissionDenied,
            "Permission Error",
        ),
        (
            "BEGIN TRANSACTION",
            Code::InvalidArgument,
            "BeginTransaction",
        ),
    ];
    for (sql, want, msg) in cases {
        let err = query(&mut c, sql).await.unwrap_err();
        assert_eq!(code(&err), want, "{sql}: {err}");
        assert!(err.to_string().contains(msg), "{sql}: {err}");
        let err = c.execute_update(sql.into(), None).await.unwrap_err();
        assert_eq!(code(&err), want, "{sql} (update): {err}");
    }
    // Execution errors reach the caller of `execute` (GetFlightInfo), not only the fetch.
    let err = c
        .execute("SELECT 'x'::INTEGER".into(), None)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");
    // The server is fine afterwards.
    let b = query(&mut c, "SELECT count(*) FROM e").await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn write_conflict_is_aborted() {
    let server = Server::start(&[]);
    let mut c = server.client().await;
    c.execute_update(
        "CREATE TABLE w (id INTEGER PRIMARY KEY, v INTEGER)".into(),
        None,
    )
    .await
    .unwrap();
    c.execute_update("INSERT INTO w VALUES (1, 0)".into(), None)
        .await
        .unwrap();
    let t1 = c.begin_transaction().await.unwrap();
    let t2 = c.begin_transaction().await.unwrap();
    c.execute_update("UPDATE w SET v = 1 WHERE id = 1".into(), Some(t1.clone()))
        .await
        .unwrap();
    let err = c
        .execute_update("UPDATE w SET v = 2 WHERE id = 1".into(), Some(t2.clone()))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::Aborted, "{err}");
    c.end_transaction(t1, arrow_flight::sql::EndTransaction::Commit)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_memory_is_resource_exhausted() {
    let server = Server::start(&["--memory-limit", "64MB"]);
    let mut c = server.client().await;
    // A real month file, whose DuckDB gets the --memory-limit budget.
    c.set_header("x-duckflock-month", "2026-07");
    c.execute_update("CREATE TABLE m (v INTEGER)".into(), None)
        .await
        .unwrap();
    // 64 MB = 64,000,000 bytes, shared with the scratch database.
    assert_eq!(
        settled_memory_limit(&server, "2026-07", "30.0 MiB").await,
        "30.0 MiB"
    );
    // A single huge LIST value cannot spill.
    let err = query(&mut c, "SELECT list(i) FROM range(50000000) t(i)")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::ResourceExhausted, "{err}");
    let b = query(&mut c, "SELECT 1").await.unwrap();
    assert_eq!(rows(&b), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_lists_months_schemas_tables_keys_and_hides_internals() {
    let server = Server::start(&[]);
    let mut c = server.client().await;
    c.set_header("x-duckflock-month", "2026-03");
    c.execute_update(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY, a VARCHAR)".into(),
        None,
    )
    .await
    .unwrap();
    c.execute_update(
        "CREATE TABLE child (id INTEGER, pid INTEGER REFERENCES parent(id), PRIMARY KEY (id, pid))"
            .into(),
        None,
    )
    .await
    .unwrap();
    c.execute_update("CREATE VIEW pv AS SELECT id FROM parent".into(), None)
        .await
        .unwrap();

    let info = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("2026-03".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let b = fetch(&mut c, info).await.unwrap();
    let text = pretty(&b);
    assert!(text.contains("main"), "{text}");
    assert!(!text.contains("__duckflock"), "{text}");

    let info = c
        .get_tables(CommandGetTables {
            catalog: Some("2026-03".into()),
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let b = fetch(&mut c, info).await.unwrap();
    let names: Vec<&str> = (0..b[0].num_rows())
        .map(|i| b[0].column(2).as_string::<i32>().value(i))
        .collect();
    assert_eq!(names, vec!["child", "parent", "pv"]);
    let types: Vec<&str> = (0..b[0].num_rows())
        .map(|i| b[0].column(3).as_string::<i32>().value(i))
        .collect();
    assert_eq!(types, vec!["TABLE", "TABLE", "VIEW"]);
    // include_schema: the IPC-encoded Arrow schema of each table.
    let schema_col = b[0].column(4).as_binary::<i32>();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(schema_col.value(1)).unwrap();
    assert_eq!(schema.field(0).name(), "id");
    assert_eq!(schema.field(1).data_type(), &DataType::Utf8);

    let info = c
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: Some("2026-03".into()),
            db_schema: None,
            table: "child".into(),
        })
        .await
        .unwrap();
    let b = fetch(&mut c, info).await.unwrap();
    let cols: Vec<&str> = (0..b[0].num_rows())
        .map(|i| b[0].column(3).as_string::<i32>().value(i))
        .collect();
    assert_eq!(cols, vec!["id", "pid"]);

    let info = c
        .get_imported_keys(CommandGetImportedKeys {
            catalog: Some("2026-03".into()),
            db_schema: None,
            table: "child".into(),
        })
        .await
        .unwrap();
    let b = fetch(&mut c, info).await.unwrap();
    assert_eq!(rows(&b), 1);
    assert_eq!(b[0].column(2).as_string::<i32>().value(0), "parent");
    assert_eq!(b[0].column(7).as_string::<i32>().value(0), "pid");
    let info = c
        .get_exported_keys(CommandGetExportedKeys {
            catalog: Some("2026-03".into()),
            db_schema: None,
            table: "parent".into(),
        })
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut c, info).await.unwrap()), 1);

    let info = c
        .get_cross_reference(arrow_flight::sql::CommandGetCrossReference {
            pk_catalog: Some("2026-03".into()),
            pk_db_schema: None,
            pk_table: "parent".into(),
            fk_catalog: Some("2026-03".into()),
            fk_db_schema: None,
            fk_table: "child".into(),
        })
        .await
        .unwrap();
    let b = fetch(&mut c, info).await.unwrap();
    assert_eq!(rows(&b), 1);
    assert_eq!(b[0].column(3).as_string::<i32>().value(0), "id");
    let info = c
        .get_cross_reference(arrow_flight::sql::CommandGetCrossReference {
            pk_catalog: Some("2026-03".into()),
            pk_db_schema: None,
            pk_table: "child".into(),
            fk_catalog: Some("2026-03".into()),
            fk_db_schema: None,
            fk_table: "parent".into(),
        })
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut c, info).await.unwrap()), 0);

    let info = c.get_table_types().await.unwrap();
    assert!(pretty(&fetch(&mut c, info).await.unwrap()).contains("VIEW"));

    let info = c
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
            SqlInfo::SqlKeywords,
        ])
        .await
        .unwrap();
    let text = pretty(&fetch(&mut c, info).await.unwrap());
    assert!(text.contains("duckflock"), "{text}");
    assert!(text.to_lowercase().contains("select"), "{text}");

    let info = c
        .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let text = pretty(&fetch(&mut c, info).await.unwrap());
    assert!(
        text.contains("TIMESTAMP WITH TIME ZONE") && text.contains("BIGINT"),
        "{text}"
    );

    // An invalid catalog filter is refused, a missing one is empty.
    let err = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("../etc".into()),
            db_schema_filter_pattern: None,
        })
        .await;
    let err = match err {
        Ok(info) => fetch(&mut c, info).await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(code(&err), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn results_stream_with_bounded_memory() {
    // ~2.2 GB of result data through a server limited to 128 MB of DuckDB memory.
    let server = Server::start(&["--memory-limit", "128MB", "--threads", "2"]);
    let mut c = server.client().await;
    // A real month file, whose DuckDB gets the --memory-limit budget.
    c.set_header("x-duckflock-month", "2026-07");
    c.execute_update("CREATE TABLE m (v INTEGER)".into(), None)
        .await
        .unwrap();
    let sql = "SELECT i, repeat('x', 200) || i::VARCHAR AS payload FROM range(10000000) t(i)";
    let info = c.execute(sql.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = c.do_get(ticket).await.unwrap();
    let (mut n, mut bytes) = (0usize, 0usize);
    while let Some(b) = stream.try_next().await.unwrap() {
        n += b.num_rows();
        bytes += b.get_array_memory_size();
    }
    assert_eq!(n, 10_000_000);
    assert!(
        bytes > 2_000_000_000,
        "the result must be much larger than the memory limit ({bytes} bytes)"
    );
    let peak_mb = server.proc_status_kb("VmHWM") / 1024;
    eprintln!("streamed {bytes} bytes; server peak RSS {peak_mb} MB");
    assert!(
        peak_mb < 700,
        "server peak RSS {peak_mb} MB grew with the result"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_clients_and_a_failing_one_do_not_interfere() {
    let server = Server::start(&[]);
    let mut c = server.client().await;
    c.execute_update(
        "CREATE TABLE cc AS SELECT range AS i FROM range(1000)".into(),
        None,
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for k in 0..16 {
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                if k % 4 == 0 {
                    assert!(query(&mut c, "SELECT * FROM nope").await.is_err());
                }
                let b = query(&mut c, "SELECT sum(i) FROM cc").await.unwrap();
                assert_eq!(
                    b[0].column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::Decimal128Array>()
                        .map(|a| a.value(0))
                        .unwrap_or_else(
                            || b[0].column(0).as_primitive::<Int64Type>().value(0) as i128
                        ),
                    499500
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_zero_and_keeps_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut server = Server::start_in(&dir, &[]);
    let mut c = server.client().await;
    c.set_header("x-duckflock-month", "2026-04");
    c.execute_update(
        "CREATE TABLE g AS SELECT * FROM range(1000) t(i)".into(),
        None,
    )
    .await
    .unwrap();
    let status = server.signal_and_wait("TERM");
    assert!(status.success(), "exit status {status:?}");
    // Checkpointed: no WAL left behind.
    let wal = dir.join("2026-04").join("node_0.db.wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
    let server = Server::start_in(&dir, &[]);
    let mut c = server.client().await;
    c.set_header("x-duckflock-month", "2026-04");
    let b = query(&mut c, "SELECT count(*) FROM g").await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_and_transactions_expire() {
    use duckflock::flight::session::*;
    let server = Server::start(&["--session-timeout", "1"]);
    let mut c = server.client().await;
    c.set_header("x-duckflock-month", "2026-05");
    c.execute_update("CREATE TABLE ex (v INTEGER)".into(), None)
        .await
        .unwrap();

    // A session with a temp table in its own connection.
    let resp = c
        .inner_mut()
        .do_action(Action {
            r#type: "SetSessionOptions".into(),
            body: SetSessionOptionsRequest::default().encode_to_vec().into(),
        })
        .await
        .unwrap();
    let cookie = resp
        .metadata()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut s = server.client().await;
    s.set_header("x-duckflock-month", "2026-05");
    s.set_header("cookie", cookie);
    s.execute_update("CREATE TEMP TABLE mine AS SELECT 1 AS v".into(), None)
        .await
        .unwrap();
    assert_eq!(rows(&query(&mut s, "SELECT * FROM mine").await.unwrap()), 1);

    // An open transaction with an uncommitted row.
    let t = c.begin_transaction().await.unwrap();
    c.execute_update("INSERT INTO ex VALUES (1)".into(), Some(t.clone()))
        .await
        .unwrap();

    tokio::time::sleep(std::time::Duration::from_secs(4)).await;

    // The session's connection (and its temp table) is gone.
    let err = query(&mut s, "SELECT * FROM mine").await.unwrap_err();
    assert_eq!(code(&err), Code::NotFound, "{err}");
    // The transaction was rolled back and its id is unknown.
    let err = c
        .execute_update("INSERT INTO ex VALUES (2)".into(), Some(t))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::NotFound, "{err}");
    let b = query(&mut c, "SELECT count(*) FROM ex").await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_month_reads_stream_one_unified_answer() {
    let server = Server::start(&[]);
    let mut c = server.client().await;
    for (m, ddl) in [
        ("2026-01", "CREATE TABLE sales AS SELECT range AS id, 'a' AS region FROM range(3)"),
        ("2026-02", "CREATE TABLE sales AS SELECT range AS id, 'b' AS region, range * 1.5 AS amount FROM range(100000)"),
        ("2026-03", "CREATE TABLE sales AS SELECT range AS id FROM range(2)"),
    ] {
        c.set_header("x-duckflock-month", m);
        c.execute_update(ddl.into(), None).await.unwrap();
    }
    let mut x = server.client().await;
    x.set_header("x-duckflock-months", "2026-03,2026-01");
    let b = query(&mut x, "SELECT * FROM sales ORDER BY id")
        .await
        .unwrap();
    let schema = b[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, vec!["month", "id", "region"]);
    let text = pretty(&b);
    assert_eq!(rows(&b), 5, "{text}");
    // Months in the order asked; a column a month lacks is NULL there.
    let months: Vec<String> = b
        .iter()
        .flat_map(|batch| {
            let col = batch.column(0).as_string::<i32>().clone();
            (0..batch.num_rows())
                .map(move |i| col.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        months,
        vec!["2026-03", "2026-03", "2026-01", "2026-01", "2026-01"]
    );
    assert_eq!(b.iter().map(|b| b.column(2).null_count()).sum::<usize>(), 2);

    // `all`: every month, streamed in many batches.
    x.set_header("x-duckflock-months", "all");
    let b = query(&mut x, "SELECT * FROM sales").await.unwrap();
    assert_eq!(rows(&b), 100_005);
    assert!(b.len() > 1);
    assert_eq!(b[0].schema().fields().len(), 4);
    let b = query(&mut x, "SELECT count(*) AS n FROM sales")
        .await
        .unwrap();
    assert_eq!(rows(&b), 3);

    // Writes, bad month names and a failing month are errors.
    let err = x
        .execute_update("DELETE FROM sales".into(), None)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");
    let err = query(&mut x, "DROP TABLE sales").await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");
    x.set_header("x-duckflock-months", "2026-01,2026-13");
    let err = query(&mut x, "SELECT 1").await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");
    x.set_header("x-duckflock-months", "all");
    let err = query(&mut x, "SELECT amount FROM sales").await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains("2026-01"),
        "the failing month is named: {err}"
    );
    // Nothing was deleted.
    c.set_header("x-duckflock-month", "2026-02");
    let b = query(&mut c, "SELECT count(*) FROM sales").await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 100_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_streams_release_their_connections() {
    let server = Server::start(&["--threads", "2"]);
    let mut c = server.client().await;
    c.set_header("x-duckflock-month", "2026-06");
    c.execute_update(
        "CREATE TABLE big AS SELECT range AS i, repeat('y', 100) AS s FROM range(2000000)".into(),
        None,
    )
    .await
    .unwrap();
    // 64 clients each read a few batches of a large result and hang up.
    for _ in 0..64 {
        let mut r = server.client().await;
        r.set_header("x-duckflock-month", "2026-06");
        let info = r.execute("SELECT * FROM big".into(), None).await.unwrap();
        let mut stream = r
            .do_get(info.endpoint[0].ticket.clone().unwrap())
            .await
            .unwrap();
        for _ in 0..2 {
            stream.try_next().await.unwrap();
        }
        drop(stream);
        drop(r);
    }
    // And 64 more only ask (GetFlightInfo) and never fetch.
    for _ in 0..64 {
        c.execute("SELECT * FROM big".into(), None).await.unwrap();
    }
    // The server still answers promptly, writes included (no stuck transaction
    // or exhausted pool).
    for k in 0..20 {
        c.execute_update(format!("INSERT INTO big VALUES ({k}, 'z')"), None)
            .await
            .unwrap();
        let b = query(&mut c, "SELECT count(*) FROM big").await.unwrap();
        assert_eq!(
            b[0].column(0).as_primitive::<Int64Type>().value(0),
            2_000_001 + k
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unfetched_results_are_capped_oldest_first() {
    // Every unfetched result holds one of the --max-concurrent-queries
    // turns: allow more than the park keeps.
    let server = Server::start(&["--max-concurrent-queries", "300"]);
    let mut c = server.client().await;
    let mut tickets = Vec::new();
    for _ in 0..300 {
        let info = c
            .execute("SELECT * FROM range(1000000)".into(), None)
            .await
            .unwrap();
        tickets.push(info.endpoint[0].ticket.clone().unwrap());
    }
    // Beyond 256 parked results the oldest were dropped...
    let err = match c.do_get(tickets[0].clone()).await {
        Ok(s) => s.try_collect::<Vec<_>>().await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(code(&err), Code::NotFound, "{err}");
    // ...and the newest still streams completely.
    let b: Vec<RecordBatch> = c
        .do_get(tickets[299].clone())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows(&b), 1_000_000);
}

/// DuckDB's `memory_limit` of the month a client is routed to, e.g. "1.5 GiB".
async fn memory_limit_of(server: &Server, month: &str) -> String {
    let mut c = server.client().await;
    c.set_header("x-duckflock-month", month);
    let b = query(&mut c, "SELECT current_setting('memory_limit')")
        .await
        .unwrap();
    b[0].column(0).as_string::<i32>().value(0).to_string()
}

/// The month's `memory_limit` once it settles at `want`: a statement that
/// ran long just before borrowed memory (`engine::lending`) until the
/// lender's next look.
async fn settled_memory_limit(server: &Server, month: &str, want: &str) -> String {
    let mut got = String::new();
    for _ in 0..50 {
        got = memory_limit_of(server, month).await;
        if got == want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_budget_is_shared_by_open_months_and_idle_months_close() {
    // Long enough an idle timeout that creating three months (7 replicas
    // each) on a busy machine does not close the first one before it is
    // looked at.
    let server = Server::start(&["--memory-limit", "3GiB", "--month-idle-timeout", "3"]);
    let mut c = server.client().await;
    for m in ["2024-01", "2024-02", "2024-03"] {
        c.set_header("x-duckflock-month", m);
        c.execute_update("CREATE TABLE IF NOT EXISTS b AS SELECT 1 AS v".into(), None)
            .await
            .unwrap();
    }
    // Three open month files and the scratch database (reads of months
    // that do not exist, files in place) share the budget.
    assert_eq!(
        settled_memory_limit(&server, "2024-01", "768.0 MiB").await,
        "768.0 MiB"
    );
    // Once idle they close; the one in use then shares it with the
    // scratch database only...
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    assert_eq!(
        settled_memory_limit(&server, "2024-02", "1.5 GiB").await,
        "1.5 GiB"
    );
    // ...and a closed month reopens on demand with its data.
    c.set_header("x-duckflock-month", "2024-03");
    let b = query(&mut c, "SELECT v FROM b").await.unwrap();
    assert_eq!(rows(&b), 1);
    assert_eq!(
        settled_memory_limit(&server, "2024-03", "1.0 GiB").await,
        "1.0 GiB"
    );
}

async fn action_json(
    c: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    name: &str,
    body: &str,
) -> Result<serde_json::Value, arrow_flight::error::FlightError> {
    let results: Vec<arrow_flight::Result> = c
        .do_action(Action {
            r#type: name.into(),
            body: body.as_bytes().to_vec().into(),
        })
        .await?
        .try_collect()
        .await?;
    Ok(serde_json::from_slice(&results[0].body).expect("JSON answer"))
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_actions_list_create_and_report_months() {
    let server = Server::start(&[]);
    let mut c = server.client().await;
    let listed: Vec<arrow_flight::ActionType> = c
        .inner_mut()
        .list_actions(arrow_flight::Empty {})
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    let names: Vec<&str> = listed.iter().map(|a| a.r#type.as_str()).collect();
    for want in [
        "list_months",
        "create_month",
        "node_status",
        "SetSessionOptions",
        "BeginTransaction",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }

    assert_eq!(
        action_json(&mut c, "list_months", "{}").await.unwrap()["months"],
        serde_json::json!([])
    );
    let st = action_json(&mut c, "create_month", r#"{"month": "2026-03"}"#)
        .await
        .unwrap();
    assert_eq!(st["month"], "2026-03");
    assert_eq!(st["nodes"][0]["role"], "primary");
    assert_eq!(st["nodes"][0]["healthy"], true);
    assert!(st["nodes"][0]["size_bytes"].as_u64().unwrap() > 0);
    assert!(server.data_dir.join("2026-03").join("node_0.db").exists());
    // Idempotent, and listed.
    action_json(&mut c, "create_month", r#"{"month": "2026-03"}"#)
        .await
        .unwrap();
    action_json(&mut c, "create_month", r#"{"month": "2026-01"}"#)
        .await
        .unwrap();
    assert_eq!(
        action_json(&mut c, "list_months", "").await.unwrap()["months"],
        serde_json::json!(["2026-01", "2026-03"])
    );

    let all = action_json(&mut c, "node_status", "{}").await.unwrap();
    assert_eq!(all["months"].as_array().unwrap().len(), 2);
    let one = action_json(&mut c, "node_status", r#"{"month": "2026-01"}"#)
        .await
        .unwrap();
    assert_eq!(one["months"][0]["month"], "2026-01");

    for (name, body, want) in [
        (
            "create_month",
            r#"{"month": "2026-13"}"#,
            Code::InvalidArgument,
        ),
        (
            "create_month",
            r#"{"month": "../x"}"#,
            Code::InvalidArgument,
        ),
        ("create_month", "{}", Code::InvalidArgument),
        ("create_month", "not json", Code::InvalidArgument),
        ("node_status", r#"{"month": "2020-01"}"#, Code::NotFound),
        (
            "node_status",
            r#"{"moth": "2026-01"}"#,
            Code::InvalidArgument,
        ),
        ("no_such_action", "{}", Code::InvalidArgument),
    ] {
        let err = action_json(&mut c, name, body).await.unwrap_err();
        assert_eq!(code(&err), want, "{name} {body}: {err}");
    }
    assert!(!server.data_dir.join("2026-13").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn query_timeout_stops_runaway_statements_only() {
    let server = Server::start(&["--query-timeout", "2"]);
    let mut c = server.client().await;
    c.set_header("x-duckflock-month", "2026-08");
    c.execute_update(
        "CREATE TABLE q AS SELECT range AS i FROM range(1000)".into(),
        None,
    )
    .await
    .unwrap();
    // A statement that would run for minutes is interrupted.
    let err = query(&mut c, "SELECT count(*) FROM range(100000000000) a")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::DeadlineExceeded, "{err}");
    assert!(err.to_string().contains("query timeout"), "{err}");
    let err = c
        .execute_update(
            "INSERT INTO q SELECT count(*) FROM range(100000000000)".into(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::DeadlineExceeded, "{err}");
    // The connections those statements used go on working, unaffected.
    for _ in 0..40 {
        let b = query(&mut c, "SELECT count(*) FROM q").await.unwrap();
        assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 1000);
    }
}

/// The `x-duckflock-node` header of a DoGet answer.
fn node_header(stream: &arrow_flight::decode::FlightRecordBatchStream) -> &str {
    stream
        .headers()
        .get("x-duckflock-node")
        .unwrap()
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_name_the_node_that_served_them() {
    let server = Server::start(&["--replicas", "0"]); // replica routing: tests/python/test_replication.py
    let mut c = server.client().await;
    c.set_header("x-duckflock-month", "2026-09");
    c.execute_update("CREATE TABLE n AS SELECT 1 AS v".into(), None)
        .await
        .unwrap();
    // On GetFlightInfo (where execution starts)...
    use arrow_flight::sql::ProstMessageExt;
    let cmd = arrow_flight::sql::CommandStatementQuery {
        query: "SELECT * FROM n".into(),
        transaction_id: None,
    };
    let mut req = tonic::Request::new(arrow_flight::FlightDescriptor::new_cmd(
        cmd.as_any().encode_to_vec(),
    ));
    req.metadata_mut()
        .insert("x-duckflock-month", "2026-09".parse().unwrap());
    let resp = c.inner_mut().get_flight_info(req).await.unwrap();
    assert_eq!(
        resp.metadata()
            .get("x-duckflock-node")
            .unwrap()
            .to_str()
            .unwrap(),
        "2026-09/node_0"
    );
    // ...and on DoGet.
    let info = c.execute("SELECT * FROM n".into(), None).await.unwrap();
    let stream = c
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(node_header(&stream), "2026-09/node_0");
    // A month that does not exist yet is answered by the scratch database.
    let mut s = server.client().await;
    s.set_header("x-duckflock-month", "1999-01");
    let info = s.execute("SELECT 1".into(), None).await.unwrap();
    let stream = s
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(node_header(&stream), "scratch");
    // Cross-month reads name every node.
    c.set_header("x-duckflock-month", "2026-10");
    c.execute_update("CREATE TABLE n AS SELECT 2 AS v".into(), None)
        .await
        .unwrap();
    let mut x = server.client().await;
    x.set_header("x-duckflock-months", "all");
    let info = x.execute("SELECT * FROM n".into(), None).await.unwrap();
    let stream = x
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(node_header(&stream), "2026-09/node_0,2026-10/node_0");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_years_of_months_start_closed_and_share_the_budget() {
    // 24 months x (1 primary + 7 replicas) = 192 DuckDB files.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let months: Vec<String> = (0..24)
        .map(|i| format!("{}-{:02}", 2024 + i / 12, i % 12 + 1))
        .collect();
    {
        let server = Server::start_in(&dir, &["--replicas", "7"]);
        let mut c = server.client().await;
        for m in &months {
            action_json(&mut c, "create_month", &format!(r#"{{"month": "{m}"}}"#))
                .await
                .unwrap();
        }
        action_json(&mut c, "sync", r#"{"timeout_s": 120}"#)
            .await
            .unwrap();
    }
    let server = Server::start_in(&dir, &["--memory-limit", "24GiB", "--replicas", "7"]);
    let mut c = server.client().await;
    // Every month is known, none is open.
    let st = action_json(&mut c, "node_status", "{}").await.unwrap();
    let st = st["months"].as_array().unwrap();
    assert_eq!(st.len(), 24);
    assert!(st.iter().all(|m| m["open"] == false), "{st:?}");
    let info = c.get_catalogs().await.unwrap();
    assert_eq!(rows(&fetch(&mut c, info).await.unwrap()), 24);
    // Using all of them opens each once (all 8 files); together every file's
    // memory_limit stays within the budget.
    for m in &months {
        assert!(!memory_limit_of(&server, m).await.is_empty());
    }
    action_json(&mut c, "sync", r#"{"timeout_s": 120}"#)
        .await
        .unwrap();
    let st = action_json(&mut c, "node_status", "{}").await.unwrap();
    let mut total_mib = 0.0;
    let mut files = 0;
    for m in st["months"].as_array().unwrap() {
        assert_eq!(m["open"], true, "{m}");
        for n in m["nodes"].as_array().unwrap() {
            assert_eq!(n["state"], "healthy", "{n}");
            let v = n["memory_limit"].as_str().unwrap();
            let (n, unit) = v.split_once(' ').unwrap();
            let n: f64 = n.parse().unwrap();
            total_mib += match unit {
                "GiB" => n * 1024.0,
                "MiB" => n,
                other => panic!("unit {other}"),
            };
            files += 1;
        }
    }
    assert_eq!(files, 24 * 8);
    assert!(
        total_mib <= 24.0 * 1024.0 * 1.01,
        "sum of memory_limit {total_mib} MiB exceeds the 24 GiB budget"
    );
    assert!(
        total_mib >= 24.0 * 1024.0 * 0.95,
        "budget not used: {total_mib} MiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_stream_in_flight_finish() {
    let mut server = Server::start(&[]);
    let mut c = server.client().await;
    c.set_header("x-duckflock-month", "2026-11");
    c.execute_update(
        "CREATE TABLE s AS SELECT range AS i FROM range(3000000)".into(),
        None,
    )
    .await
    .unwrap();
    let info = c.execute("SELECT * FROM s".into(), None).await.unwrap();
    let mut stream = c
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let mut n = stream.try_next().await.unwrap().unwrap().num_rows();
    // Shutdown begins while the result is being streamed...
    server.signal("TERM");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // ...and the stream still delivers every row before the server exits.
    while let Some(b) = stream.try_next().await.unwrap() {
        n += b.num_rows();
    }
    assert_eq!(n, 3_000_000);
    let status = server.wait();
    assert!(status.success(), "exit status {status:?}");
}

/// Bulk ingest with the transaction id: the created table and its rows
/// exist only if the transaction commits.
#[tokio::test(flavor = "multi_thread")]
async fn ingest_inside_a_transaction_commits_or_rolls_back_with_it() {
    use arrow_flight::sql::{CommandStatementIngest, EndTransaction, TableDefinitionOptions};
    let server = Server::start(&["--replicas", "1"]);
    let mut c = server.client().await;
    let batch = |n: i64| {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from_iter_values(0..n))],
        )
        .unwrap()
    };
    let ingest = |txn: Option<bytes::Bytes>, if_exists: i32| CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: 1, // create
            if_exists,       // 1 fail, 2 append
        }),
        table: "txi".into(),
        transaction_id: txn,
        ..Default::default()
    };
    let table_count = "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'txi'";

    let t = c.begin_transaction().await.unwrap();
    let n = c
        .execute_ingest(
            ingest(Some(t.clone()), 1),
            futures::stream::iter(vec![Ok(batch(5000))]),
        )
        .await
        .unwrap();
    assert_eq!(n, 5000);
    let info = c
        .execute("SELECT count(*) FROM txi".into(), Some(t.clone()))
        .await
        .unwrap();
    let b = fetch(&mut c, info).await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 5000);
    let b = query(&mut c, table_count).await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 0);
    c.end_transaction(t, EndTransaction::Rollback)
        .await
        .unwrap();
    let b = query(&mut c, table_count).await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 0);

    let t = c.begin_transaction().await.unwrap();
    for _ in 0..2 {
        c.execute_ingest(
            ingest(Some(t.clone()), 2),
            futures::stream::iter(vec![Ok(batch(300)), Ok(batch(700))]),
        )
        .await
        .unwrap();
    }
    c.end_transaction(t, EndTransaction::Commit).await.unwrap();
    let b = query(&mut c, "SELECT count(*), sum(id) FROM txi")
        .await
        .unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 2000);
    // A batch whose schema differs from the first one fails the whole upload.
    let other = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec!["x"]))],
    )
    .unwrap();
    // arrow-flight's encoder refuses to send that, so the Flight data is
    // put together by hand: schema, batch, another schema, its batch.
    let first = batch(10);
    let mut data = arrow_flight::utils::batches_to_flight_data(&first.schema(), [&first]).unwrap();
    data.extend(arrow_flight::utils::batches_to_flight_data(&other.schema(), [&other]).unwrap());
    data[0].flight_descriptor = Some(arrow_flight::FlightDescriptor::new_cmd(
        arrow_flight::sql::ProstMessageExt::as_any(&ingest(None, 2)).encode_to_vec(),
    ));
    let err = match c.do_put(futures::stream::iter(data)).await {
        Err(e) => e.to_string(),
        Ok(mut answers) => answers.message().await.unwrap_err().to_string(),
    };
    // (arrow-flight's decoder already refuses a second schema; the engine
    // checks every batch against the first one too.)
    assert!(
        err.contains("invalid argument") && err.contains("Schema"),
        "{err}"
    );
    let b = query(&mut c, "SELECT count(*) FROM txi").await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 2000);
    // Ingest is a write: never cross-month.
    c.set_header("x-duckflock-months", "all");
    let err = c
        .execute_ingest(ingest(None, 2), futures::stream::iter(vec![Ok(batch(1))]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read statements only"), "{err}");
}
