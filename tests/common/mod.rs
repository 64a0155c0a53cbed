//! Test harness: starts the real `duckflock` binary on an ephemeral port with
//! a temporary data directory and connects arrow-flight's Flight SQL client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::FlightInfo;
use futures::TryStreamExt;
use tonic::transport::Channel;

pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh temporary data directory.
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut s = Server::start_in(&dir, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on the given data directory.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_duckflock"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--flight-addr")
            .arg("127.0.0.1:0")
            .arg("--http-addr")
            .arg("127.0.0.1:0")
            // These tests check single-node features (memory budget per
            // file, streaming, timeouts); replication has its own tests in
            // tests/python/test_replication.py. A test may pass --replicas.
            .args(if extra.contains(&"--replicas") {
                &[][..]
            } else {
                &["--replicas", "0"][..]
            })
            .args(extra)
            .env("RUST_LOG", "duckflock=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn duckflock");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.strip_prefix("duckflock flight sql listening on ") {
                        break a.trim().to_string();
                    }
                }
                _ => panic!("server exited before listening"),
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child: Some(child),
            addr,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub async fn client(&self) -> FlightSqlServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        FlightSqlServiceClient::new(channel)
    }

    /// A value from /proc/<pid>/status in kB (e.g. "VmHWM", "VmRSS").
    pub fn proc_status_kb(&self, key: &str) -> u64 {
        let text =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Sends a signal without waiting.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid)
            .status()
            .expect("kill");
    }

    /// Waits (up to 60 s) for the server to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal and waits for the exit status.
    pub fn signal_and_wait(&mut self, sig: &str) -> ExitStatus {
        self.signal(sig);
        self.wait()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Fetches every endpoint of a FlightInfo and concatenates the batches.
pub async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    let mut out = Vec::new();
    for ep in info.endpoint {
        let ticket = ep.ticket.expect("ticket");
        let batches: Vec<RecordBatch> = client.do_get(ticket).await?.try_collect().await?;
        out.extend(batches);
    }
    Ok(out)
}

/// Runs a statement through the query path and returns its batches.
pub async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    let info = client.execute(sql.to_string(), None).await?;
    fetch(client, info).await
}

/// The batches pretty-printed, for readable assertions.
pub fn pretty(batches: &[RecordBatch]) -> String {
    arrow::util::pretty::pretty_format_batches(batches)
        .expect("pretty")
        .to_string()
}

pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// The gRPC code of a Flight error.
pub fn code(e: &arrow_flight::error::FlightError) -> tonic::Code {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => s.code(),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}
