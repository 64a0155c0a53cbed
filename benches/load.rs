//! duckflock load generator: point-query latency and throughput with 1 and 8
//! clients, and a bulk read of a 6M-row table, each next to in-process DuckDB
//! (duckdb-rs, same engine, same data) measured in the same run.
//!
//! Then replication: single-row write transactions per second with 7
//! replicas and with `--replicas 0` (1 and 8 clients, next to in-process
//! DuckDB inserts), and sync lag (write acknowledged → every replica applied
//! it, measured with the `sync` action) for single-row writes and a 1 M-row
//! insert.
//!
//! The HTTP gateway: point queries as JSON and a 500 K-row JSON answer, next
//! to the same queries in process.
//!
//! Verification: `verify_replicas` over the 8 node files of the loaded
//! month (seconds per GB of node files), next to in-process DuckDB computing
//! the same digest of one copy eight times; sync lag of 1 M-row keyed and
//! keyless DELETEs and UPDATEs with 7 replicas.
//!
//! Files in place: a CSV of at least 1 GB and the same rows as Parquet,
//! scanned (an aggregate) and streamed whole to the client through
//! duckflock (`read_csv` / `read_parquet` under `--files-dir`) next to
//! in-process DuckDB on the same files, with the same `memory_limit`, and
//! the peak RSS (`VmHWM`) of the server and of the in-process run (a child
//! process of its own).
//!
//! Run: `cargo run --release --example load` (options: `--seconds N`,
//! `--rows N`, `--bulk-rows N`, `--file-rows N`, `--only
//! reads,http,verify,replication,ingest,files`). Prints a Markdown table of
//! figures and ratios.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use rand::Rng;
use tonic::transport::Channel;

struct Opts {
    ingest_rows: usize,
    seconds: f64,
    rows: i64,
    bulk_rows: i64,
    /// Rows of the files-in-place CSV/Parquet (about 60 bytes a CSV row).
    file_rows: i64,
    /// `--only reads,http,verify,replication,ingest,files`: the parts to run
    /// (default: all).
    only: Option<Vec<String>>,
}

impl Opts {
    fn runs(&self, part: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|parts| parts.iter().any(|p| p == part))
    }
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str, default: f64| -> f64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Opts {
        ingest_rows: get("--ingest-rows", 2_000_000.0) as usize,
        seconds: get("--seconds", 5.0),
        rows: get("--rows", 1_000_000.0) as i64,
        bulk_rows: get("--bulk-rows", 6_000_000.0) as i64,
        file_rows: get("--file-rows", 18_000_000.0) as i64,
        only: args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1))
            .map(|v| v.split(',').map(str::to_string).collect()),
    }
}

/// The setup statements (DDL goes to the server one statement at a time, so
/// that replicas can replay each).
fn setup_sql(rows: i64, bulk_rows: i64) -> Vec<String> {
    vec![
        format!("CREATE TABLE points AS SELECT range AS id, range * 0.5 AS v, 'name-' || range AS s FROM range({rows})"),
        "ALTER TABLE points ADD PRIMARY KEY (id)".to_string(),
        format!("CREATE TABLE bulk AS SELECT range AS id, range % 1000 AS a, range * 1.5 AS b, 'row-' || range AS s,
                DATE '2026-01-01' + (range % 365)::INTEGER AS d FROM range({bulk_rows})"),
    ]
}

struct Stats {
    p50_us: f64,
    p99_us: f64,
    qps: f64,
}

fn stats(mut lat: Vec<Duration>, elapsed: Duration) -> Stats {
    lat.sort();
    let pick = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    Stats {
        p50_us: pick(0.50),
        p99_us: pick(0.99),
        qps: lat.len() as f64 / elapsed.as_secs_f64(),
    }
}

fn start_server(data_dir: &std::path::Path) -> (Server, String) {
    start_server_with(data_dir, &[])
}

fn start_server_with(data_dir: &std::path::Path, extra: &[&str]) -> (Server, String) {
    let exe = std::env::current_exe().expect("exe");
    let bin: PathBuf = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join("duckflock");
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--flight-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (build it with cargo build --release)",
                bin.display()
            )
        });
    use std::io::BufRead;
    let out = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(out).lines();
    let (mut addr, mut http) = (None, None);
    while addr.is_none() || http.is_none() {
        let line = lines.next().expect("server output").expect("line");
        if let Some(a) = line.strip_prefix("duckflock flight sql listening on ") {
            addr = Some(a.to_string());
        }
        if let Some(a) = line.strip_prefix("duckflock http listening on ") {
            http = Some(a.to_string());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (
        Server(child, http.unwrap_or_default()),
        addr.unwrap_or_default(),
    )
}

async fn client(addr: &str) -> FlightSqlServiceClient<Channel> {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut c = FlightSqlServiceClient::new(ch);
    c.set_header("x-duckflock-month", "2026-01");
    c
}

async fn server_point_queries(addr: &str, clients: usize, secs: f64, rows: i64) -> Stats {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut c = client(addr).await;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let id = rand::rng().random_range(0..rows);
                let t = Instant::now();
                let info = c
                    .execute(format!("SELECT v, s FROM points WHERE id = {id}"), None)
                    .await
                    .expect("query");
                let ticket = info.endpoint[0].ticket.clone().expect("ticket");
                let batches: Vec<_> = c
                    .do_get(ticket)
                    .await
                    .expect("get")
                    .try_collect()
                    .await
                    .expect("batches");
                assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    stats(all, start.elapsed())
}

fn local_point_queries(conn: &duckdb::Connection, clients: usize, secs: f64, rows: i64) -> Stats {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let c = conn.try_clone().expect("clone");
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut rng = rand::rng();
                while Instant::now() < deadline {
                    let id = rng.random_range(0..rows);
                    let t = Instant::now();
                    // Same work as the server: a statement from SQL text, Arrow out.
                    let mut stmt = c
                        .prepare(&format!("SELECT v, s FROM points WHERE id = {id}"))
                        .expect("prepare");
                    let n: usize = stmt
                        .query_arrow([])
                        .expect("query")
                        .map(|b| b.num_rows())
                        .sum();
                    assert_eq!(n, 1);
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    stats(all, start.elapsed())
}

#[tokio::main]
async fn main() {
    // The in-process side of the files benchmark, in a process of its own.
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--local-scan") {
        local_scan(&args[i + 1], &args[i + 2], &args[i + 3]);
        return;
    }
    let o = opts();
    if o.only
        .as_ref()
        .is_some_and(|p| p.iter().all(|p| p == "files"))
    {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut table = vec![
            "| workload | duckflock | in-process DuckDB | ratio |".to_string(),
            "|---|---|---|---|".to_string(),
        ];
        files_in_place(&mut table, &o, tmp.path()).await;
        println!("{}", table.join("\n"));
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, addr) = start_server(&tmp.path().join("data"));
    let mut c = client(&addr).await;
    eprintln!(
        "loading {} point rows and {} bulk rows ...",
        o.rows, o.bulk_rows
    );
    for stmt in setup_sql(o.rows, o.bulk_rows) {
        c.execute_update(stmt, None).await.expect("setup");
    }
    sync(&mut c).await;
    let local = duckdb::Connection::open(tmp.path().join("local.db")).expect("local db");
    local
        .execute_batch(&setup_sql(o.rows, o.bulk_rows).join(";\n"))
        .expect("local setup");

    let mut table = vec![
        "| workload | duckflock | in-process DuckDB | ratio |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    for clients in [1usize, 8].into_iter().filter(|_| o.runs("reads")) {
        let s = server_point_queries(&addr, clients, o.seconds, o.rows).await;
        let l = local_point_queries(&local, clients, o.seconds, o.rows);
        table.push(format!(
            "| point query, {clients} client(s): p50 | {:.0} µs | {:.0} µs | {:.1}× |",
            s.p50_us,
            l.p50_us,
            s.p50_us / l.p50_us
        ));
        table.push(format!(
            "| point query, {clients} client(s): p99 | {:.0} µs | {:.0} µs | {:.1}× |",
            s.p99_us,
            l.p99_us,
            s.p99_us / l.p99_us
        ));
        table.push(format!(
            "| point query, {clients} client(s): queries/s | {:.0} | {:.0} | {:.2} |",
            s.qps,
            l.qps,
            s.qps / l.qps
        ));
    }

    // Bulk read of the whole table to Arrow (3 runs, best).
    let mut best_s = f64::MAX;
    let mut best_l = f64::MAX;
    let mut n_rows = 0;
    for _ in 0..3 {
        if !o.runs("reads") {
            break;
        }
        let t = Instant::now();
        let info = c
            .execute("SELECT * FROM bulk".into(), None)
            .await
            .expect("bulk");
        let mut stream = c
            .do_get(info.endpoint[0].ticket.clone().expect("ticket"))
            .await
            .expect("get");
        let mut n = 0;
        while let Some(b) = stream.try_next().await.expect("batch") {
            n += b.num_rows();
        }
        best_s = best_s.min(t.elapsed().as_secs_f64());
        n_rows = n;
        let t = Instant::now();
        let mut stmt = local.prepare("SELECT * FROM bulk").expect("prepare");
        let n: usize = stmt
            .stream_arrow([])
            .expect("stream")
            .map(|b| b.expect("batch").num_rows())
            .sum();
        assert_eq!(n, n_rows);
        best_l = best_l.min(t.elapsed().as_secs_f64());
    }
    if o.runs("reads") {
        table.push(format!(
            "| bulk read {n_rows} rows to Arrow: seconds | {best_s:.2} s | {best_l:.2} s | {:.1}× |",
            best_s / best_l
        ));
        table.push(format!(
            "| bulk read: rows/s | {:.1} M | {:.1} M | {:.2} |",
            n_rows as f64 / best_s / 1e6,
            n_rows as f64 / best_l / 1e6,
            best_l / best_s
        ));
    }
    if o.runs("http") {
        http_gateway(&mut table, &o, &server.1, &local).await;
    }
    if o.runs("verify") {
        verification(&mut table, &mut c, &local, tmp.path()).await;
    }
    drop(server);
    if o.runs("replication") {
        replication(&mut table, &o, tmp.path()).await;
    }
    if o.runs("ingest") {
        ingest(&mut table, &o, tmp.path()).await;
    }
    if o.runs("files") {
        files_in_place(&mut table, &o, tmp.path()).await;
    }
    println!("{}", table.join("\n"));
}

/// Peak resident set (`VmHWM`) of process `pid`, bytes.
fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Child-process mode: runs `sql` with in-process DuckDB (files under
/// `dir`, `memory_limit` = `limit`), streaming the result to Arrow, and
/// prints `seconds rows peak_rss_bytes`.
fn local_scan(dir: &str, limit: &str, sql: &str) {
    let conn = duckdb::Connection::open_in_memory().expect("db");
    conn.execute_batch(&format!(
        "SET memory_limit = '{limit}'; SET file_search_path = '{dir}'; SET temp_directory = '{dir}/.spill'"
    ))
    .expect("settings");
    let t = Instant::now();
    let mut stmt = conn.prepare(sql).expect("prepare");
    let n: usize = stmt
        .stream_arrow([])
        .expect("stream")
        .map(|b| b.expect("batch").num_rows())
        .sum();
    println!(
        "{} {n} {}",
        t.elapsed().as_secs_f64(),
        vm_hwm(std::process::id())
    );
}

/// Files in place: scan and stream a >= 1 GB CSV and the same rows as
/// Parquet through duckflock and in process.
async fn files_in_place(table: &mut Vec<String>, o: &Opts, dir: &std::path::Path) {
    let files = dir.join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    eprintln!("writing {} rows as CSV and Parquet ...", o.file_rows);
    {
        let conn = duckdb::Connection::open_in_memory().expect("db");
        let rows = format!(
            "SELECT i, i * 7 % 1000003 AS j, md5(i::VARCHAR) AS s, DATE '2020-01-01' + (i % 2000)::INTEGER AS d \
             FROM range({}) t(i)",
            o.file_rows
        );
        conn.execute_batch(&format!(
            "COPY ({rows}) TO '{f}/big.csv' (HEADER); COPY ({rows}) TO '{f}/big.parquet' (FORMAT parquet);",
            f = files.display()
        ))
        .expect("write files");
    }
    let csv_bytes = std::fs::metadata(files.join("big.csv"))
        .map(|m| m.len())
        .unwrap_or(0);
    let limit = "1GB";
    let (server, addr) = start_server_with(
        &dir.join("files-data"),
        &[
            "--files-dir",
            &files.to_string_lossy(),
            "--memory-limit",
            limit,
        ],
    );
    let mut c = client(&addr).await;
    let pid = server.0.id();
    let exe = std::env::current_exe().expect("exe");
    for (label, reader) in [
        (
            format!("CSV {:.2} GB", csv_bytes as f64 / 1e9),
            "read_csv('big.csv')",
        ),
        ("Parquet".to_string(), "read_parquet('big.parquet')"),
    ] {
        for (what, sql) in [
            (
                "aggregate scan",
                format!("SELECT count(*), sum(j), max(s), min(d) FROM {reader}"),
            ),
            ("stream every row", format!("SELECT * FROM {reader}")),
        ] {
            let t = Instant::now();
            let info = c.execute(sql.clone(), None).await.expect("files query");
            let mut stream = c
                .do_get(info.endpoint[0].ticket.clone().expect("ticket"))
                .await
                .expect("get");
            let mut n = 0usize;
            while let Some(b) = stream.try_next().await.expect("batch") {
                n += b.num_rows();
            }
            let server_s = t.elapsed().as_secs_f64();
            let out = Command::new(&exe)
                .args(["--local-scan", &files.to_string_lossy(), limit, &sql])
                .output()
                .expect("local scan");
            let text = String::from_utf8_lossy(&out.stdout);
            let mut parts = text.split_whitespace();
            let local_s: f64 = parts
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            let local_n: usize = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let local_rss: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            assert_eq!(n, local_n, "{sql}: rows");
            table.push(format!(
                "| {label}, {what} ({n} rows): seconds | {server_s:.2} s | {local_s:.2} s | {:.2}× |",
                server_s / local_s
            ));
            table.push(format!(
                "| {label}, {what}: peak RSS (server VmHWM so far / in-process) | {:.0} MB | {:.0} MB | {:.2}× |",
                vm_hwm(pid) as f64 / 1e6,
                local_rss as f64 / 1e6,
                vm_hwm(pid) as f64 / local_rss as f64
            ));
        }
    }
    drop(server);
}

/// A server process (and its HTTP gateway's address), stopped when dropped
/// (also when the bench panics).
struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.0);
    }
}

fn stop(server: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let _ = server.wait();
}

/// A JSON admin action's answer.
async fn action(
    c: &mut FlightSqlServiceClient<Channel>,
    name: &str,
    body: &str,
) -> serde_json::Value {
    let action = arrow_flight::Action {
        r#type: name.into(),
        body: body.as_bytes().to_vec().into(),
    };
    let mut s = c.do_action(action).await.expect(name);
    let msg = s.message().await.expect(name).expect("answer");
    serde_json::from_slice(&msg.body).expect("json")
}

/// `verify_replicas` of the loaded month next to the same digest computed
/// in process, per GB of node files.
async fn verification(
    table: &mut Vec<String>,
    c: &mut FlightSqlServiceClient<Channel>,
    local: &duckdb::Connection,
    dir: &std::path::Path,
) {
    eprintln!("verification ...");
    let month = dir.join("data").join("2026-01");
    let bytes: u64 = std::fs::read_dir(&month)
        .expect("month dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let mut best = f64::MAX;
    for _ in 0..2 {
        let t = Instant::now();
        let v = action(c, "verify_replicas", r#"{"month": "2026-01"}"#).await;
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(v["months"][0]["ok"], serde_json::json!(true), "{v}");
    }
    let t = Instant::now();
    for _ in 0..8 {
        for name in ["points", "bulk"] {
            local
                .query_row(
                    &format!("SELECT count(*), sum(hash(*COLUMNS(*)))::VARCHAR FROM {name}"),
                    [],
                    |r| r.get::<_, String>(1),
                )
                .expect("digest");
        }
    }
    let l = t.elapsed().as_secs_f64();
    let gb = bytes as f64 / 1e9;
    table.push(format!(
        "| verify_replicas, 8 nodes, {gb:.2} GB of node files: seconds ({:.1} s/GB) | {best:.2} s | {l:.2} s | {:.1}× |",
        best / gb,
        best / l
    ));
}

async fn sync(c: &mut FlightSqlServiceClient<Channel>) {
    let action = arrow_flight::Action {
        r#type: "sync".into(),
        body: br#"{"month": "2026-01", "timeout_s": 600}"#.to_vec().into(),
    };
    let mut s = c.do_action(action).await.expect("sync");
    while s.message().await.expect("sync answer").is_some() {}
}

/// Single-row INSERTs (autocommit) from `clients` clients for `secs`.
async fn server_writes(addr: &str, clients: usize, secs: f64) -> Stats {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for t in 0..clients {
        let addr = addr.to_string();
        tasks.push(tokio::spawn(async move {
            let mut c = client(&addr).await;
            let mut lat = Vec::new();
            let mut i = 0i64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                c.execute_update(
                    format!(
                        "INSERT INTO w VALUES ({}, random())",
                        (clients as i64) << 48 | (t as i64) << 40 | i
                    ),
                    None,
                )
                .await
                .expect("insert");
                lat.push(t0.elapsed());
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    stats(all, start.elapsed())
}

fn local_writes(path: &std::path::Path, clients: usize, secs: f64) -> Stats {
    let db = duckdb::Connection::open(path).expect("local");
    db.execute_batch("CREATE OR REPLACE TABLE w (id BIGINT PRIMARY KEY, v DOUBLE)")
        .expect("w");
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..clients)
        .map(|t| {
            let conn = db.try_clone().expect("clone");
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut i = 0i64;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    conn.execute("INSERT INTO w VALUES (?, random())", [(t as i64) << 40 | i])
                        .expect("insert");
                    lat.push(t0.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().expect("thread"));
    }
    stats(all, start.elapsed())
}

async fn replication(table: &mut Vec<String>, o: &Opts, dir: &std::path::Path) {
    eprintln!("replication: write throughput and sync lag ...");
    let mut results = Vec::new();
    // Replicas written without fsync (the default), with it, and none.
    let setups: [(&str, &[&str]); 3] = [
        ("--replicas 7", &["--replicas", "7"]),
        (
            "--replicas 7 --replica-fsync",
            &["--replicas", "7", "--replica-fsync"],
        ),
        ("--replicas 0", &["--replicas", "0"]),
    ];
    for (n, (replicas, flags)) in setups.into_iter().enumerate() {
        let (server, addr) = start_server_with(&dir.join(format!("repl{n}")), flags);
        let mut c = client(&addr).await;
        c.execute_update(
            "CREATE TABLE w (id BIGINT PRIMARY KEY, v DOUBLE)".into(),
            None,
        )
        .await
        .expect("w");
        sync(&mut c).await;
        let mut per = Vec::new();
        for clients in [1usize, 8] {
            per.push(server_writes(&addr, clients, o.seconds).await);
            sync(&mut c).await;
        }
        if n < 2 {
            // Sync lag of single-row writes: acknowledged → applied everywhere.
            let mut lag = Vec::new();
            for i in 0..300i64 {
                c.execute_update(format!("INSERT INTO w VALUES ({}, 1)", -1 - i), None)
                    .await
                    .expect("insert");
                let t0 = Instant::now();
                sync(&mut c).await;
                lag.push(t0.elapsed());
            }
            let l = stats(lag, Duration::from_secs(1));
            table.push(format!(
                "| sync lag, single-row write, {replicas}: p50 / p99 | {:.2} ms / {:.2} ms | | |",
                l.p50_us / 1e3,
                l.p99_us / 1e3
            ));
        }
        if n == 0 {
            let mut big = Vec::new();
            for k in 0..3 {
                let t = Instant::now();
                c.execute_update(
                    format!(
                        "INSERT INTO w SELECT range + {}, random() FROM range(1000000)",
                        (16 + k as i64) << 48
                    ),
                    None,
                )
                .await
                .expect("big insert");
                let write = t.elapsed();
                let t0 = Instant::now();
                sync(&mut c).await;
                big.push((write, t0.elapsed()));
            }
            big.sort_by_key(|b| b.1);
            let (w, l) = big[1];
            table.push(format!(
                "| 1 M-row INSERT, 7 replicas: write / sync lag (median of 3) | {:.2} s / {:.2} s | | |",
                w.as_secs_f64(),
                l.as_secs_f64()
            ));
            // Large deletes and updates (old images matched by key, or as
            // a multiset for the keyless table).
            c.execute_update(
                "CREATE TABLE bag AS SELECT range % 100000 AS g, range * 0.5 AS v FROM range(2000000)"
                    .into(),
                None,
            )
            .await
            .expect("bag");
            sync(&mut c).await;
            for (what, sql) in [
                (
                    "UPDATE 1 M rows, keyed",
                    format!(
                        "UPDATE w SET v = v + 1 WHERE id >= {} AND id < {}",
                        17i64 << 48,
                        18i64 << 48
                    ),
                ),
                (
                    "DELETE 1 M rows, keyed",
                    format!("DELETE FROM w WHERE id >= {}", 18i64 << 48),
                ),
                (
                    "UPDATE 1 M rows, keyless",
                    "UPDATE bag SET v = -v WHERE g < 50000".to_string(),
                ),
                (
                    "DELETE 1 M rows, keyless",
                    "DELETE FROM bag WHERE g >= 50000".to_string(),
                ),
            ] {
                let t = Instant::now();
                c.execute_update(sql, None).await.expect(what);
                let write = t.elapsed();
                let t0 = Instant::now();
                sync(&mut c).await;
                table.push(format!(
                    "| {what}, 7 replicas: write / sync lag | {:.2} s / {:.2} s | | |",
                    write.as_secs_f64(),
                    t0.elapsed().as_secs_f64()
                ));
            }
        }
        drop(server);
        results.push((replicas, per));
    }
    for (i, clients) in [1usize, 8].into_iter().enumerate() {
        let local = local_writes(
            &dir.join(format!("local_w{clients}.db")),
            clients,
            o.seconds,
        );
        for (replicas, per) in &results {
            let s = &per[i];
            table.push(format!(
                "| single-row write tx/s, {clients} client(s), {replicas} (p50 {:.2} ms) | {:.0} | {:.0} | {:.2} |",
                s.p50_us / 1e3,
                s.qps,
                local.qps,
                s.qps / local.qps
            ));
        }
    }
}

/// `rows` rows in 64K-row batches: narrow (id, value) or wide (20 columns of
/// integers, doubles and strings).
fn ingest_batches(rows: usize, wide: bool) -> Vec<arrow::record_batch::RecordBatch> {
    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use std::sync::Arc;
    let mut out = Vec::new();
    let mut start = 0usize;
    while start < rows {
        let n = (rows - start).min(64 * 1024);
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
            (start..start + n).map(|i| i as i64),
        ));
        let mut cols: Vec<(String, ArrayRef)> = vec![("id".into(), ids)];
        let width = if wide { 19 } else { 1 };
        for c in 0..width {
            let col: ArrayRef = match c % 3 {
                0 => Arc::new(Float64Array::from_iter_values(
                    (start..start + n).map(|i| i as f64 * 0.5 + c as f64),
                )),
                1 => Arc::new(Int64Array::from_iter_values(
                    (start..start + n).map(|i| (i * 7 + c) as i64 % 100_000),
                )),
                _ => Arc::new(StringArray::from_iter_values(
                    (start..start + n).map(|i| format!("v{c}-{}", i % 10_000)),
                )),
            };
            cols.push((format!("c{c}"), col));
        }
        out.push(arrow::record_batch::RecordBatch::try_from_iter(cols).expect("batch"));
        start += n;
    }
    out
}

/// Bulk ingest (DoPut `CommandStatementIngest`, 7 replicas) next to
/// DuckDB's in-process Arrow appender, narrow and wide rows; and the sync
/// lag of the narrow upload.
async fn ingest(table: &mut Vec<String>, o: &Opts, dir: &std::path::Path) {
    use arrow_flight::sql::{CommandStatementIngest, TableDefinitionOptions};
    eprintln!("ingest ...");
    let (server, addr) = start_server_with(&dir.join("ingest"), &["--replicas", "7"]);
    let mut c = client(&addr).await;
    let local = duckdb::Connection::open(dir.join("local_ingest.db")).expect("local");
    for (name, wide, rows) in [
        ("narrow", false, o.ingest_rows),
        ("wide", true, o.ingest_rows / 4),
    ] {
        let batches = ingest_batches(rows, wide);
        let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        let cmd = CommandStatementIngest {
            table_definition_options: Some(TableDefinitionOptions {
                if_not_exist: 1, // create
                if_exists: 1,    // fail
            }),
            table: format!("ingest_{name}"),
            ..Default::default()
        };
        let t = Instant::now();
        let n = c
            .execute_ingest(
                cmd,
                futures::stream::iter(batches.clone().into_iter().map(Ok)),
            )
            .await
            .expect("ingest");
        let server_s = t.elapsed().as_secs_f64();
        assert_eq!(n as usize, rows);
        let t = Instant::now();
        sync(&mut c).await;
        let lag = t.elapsed().as_secs_f64();

        let cols = batches[0]
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let ty = match f.data_type() {
                    arrow::datatypes::DataType::Int64 => "BIGINT",
                    arrow::datatypes::DataType::Float64 => "DOUBLE",
                    _ => "VARCHAR",
                };
                format!("{} {ty}", f.name())
            })
            .collect::<Vec<_>>()
            .join(", ");
        local
            .execute_batch(&format!("CREATE TABLE ingest_{name} ({cols})"))
            .expect("local table");
        let t = Instant::now();
        {
            let mut app = local.appender(&format!("ingest_{name}")).expect("appender");
            for b in batches {
                app.append_record_batch(b).expect("append");
            }
            app.flush().expect("flush");
        }
        let local_s = t.elapsed().as_secs_f64();
        table.push(format!(
            "| ingest {rows} {name} rows ({} MB Arrow), 7 replicas: rows/s | {:.2} M | {:.2} M | {:.2} |",
            bytes >> 20,
            rows as f64 / server_s / 1e6,
            rows as f64 / local_s / 1e6,
            local_s / server_s
        ));
        table.push(format!(
            "| ingest {name}: sync lag to all 7 replicas after the upload is acknowledged | {lag:.2} s | | |"
        ));
    }
    drop(server);
}

/// A keep-alive HTTP/1.1 connection for the gateway figures (the bench has
/// no HTTP client dependency; axum answers with a Content-Length).
struct HttpConn {
    stream: tokio::io::BufStream<tokio::net::TcpStream>,
}

impl HttpConn {
    async fn connect(addr: &str) -> HttpConn {
        let s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("http connect");
        s.set_nodelay(true).expect("nodelay");
        HttpConn {
            stream: tokio::io::BufStream::new(s),
        }
    }

    /// POSTs a JSON body; the status and the body of the answer.
    async fn post(&mut self, path: &str, body: &str) -> (u16, Vec<u8>) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await.expect("write");
        self.stream.write_all(body.as_bytes()).await.expect("write");
        self.stream.flush().await.expect("flush");
        let mut line = String::new();
        self.stream.read_line(&mut line).await.expect("status");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let mut len = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.expect("header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().expect("length");
                }
            }
        }
        let mut out = vec![0; len];
        self.stream.read_exact(&mut out).await.expect("body");
        (status, out)
    }
}

/// The HTTP gateway next to in-process DuckDB: point queries (1 client) and
/// one large result as JSON.
async fn http_gateway(table: &mut Vec<String>, o: &Opts, http: &str, local: &duckdb::Connection) {
    eprintln!("http gateway ...");
    let mut conn = HttpConn::connect(http).await;
    let mut rng = rand::rng();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    let mut lat = Vec::new();
    while Instant::now() < deadline {
        let id = rng.random_range(0..o.rows);
        let body = format!(
            r#"{{"query": "SELECT v, s FROM points WHERE id = ?", "params": [{id}], "month": "2026-01"}}"#
        );
        let t = Instant::now();
        let (status, _) = conn.post("/api/v1/query/async", &body).await;
        assert_eq!(status, 200);
        lat.push(t.elapsed());
    }
    let s = stats(lat, start.elapsed());
    let l = local_point_queries(local, 1, o.seconds, o.rows);
    table.push(format!(
        "| HTTP point query (JSON), 1 client: p50 | {:.0} µs | {:.0} µs | {:.1}× |",
        s.p50_us,
        l.p50_us,
        s.p50_us / l.p50_us
    ));
    table.push(format!(
        "| HTTP point query (JSON), 1 client: queries/s | {:.0} | {:.0} | {:.2} |",
        s.qps,
        l.qps,
        s.qps / l.qps
    ));
    let rows = 500_000.min(o.bulk_rows);
    let sql = format!("SELECT * FROM bulk LIMIT {rows}");
    let (mut best_s, mut best_l, mut bytes) = (f64::MAX, f64::MAX, 0);
    for _ in 0..3 {
        let t = Instant::now();
        let (status, body) = conn
            .post(
                "/api/v1/query/async",
                &format!(r#"{{"query": "{sql}", "month": "2026-01"}}"#),
            )
            .await;
        assert_eq!(
            status,
            200,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        best_s = best_s.min(t.elapsed().as_secs_f64());
        bytes = body.len();
        let t = Instant::now();
        let mut stmt = local.prepare(&sql).expect("prepare");
        let n: usize = stmt
            .stream_arrow([])
            .expect("stream")
            .map(|b| b.expect("batch").num_rows())
            .sum();
        assert_eq!(n as i64, rows);
        best_l = best_l.min(t.elapsed().as_secs_f64());
    }
    table.push(format!(
        "| HTTP read {rows} rows as JSON ({:.0} MB) vs DuckDB to Arrow: seconds | {best_s:.2} s | {best_l:.3} s | {:.1}× |",
        bytes as f64 / 1e6,
        best_s / best_l
    ));
}
