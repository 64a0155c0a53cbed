//! Command line, environment (`DUCKFLOCK_*`) and optional TOML file, merged
//! with the precedence flag > env > file > built-in default.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(
    name = "duckflock",
    version,
    about = "Arrow Flight SQL server over monthly DuckDB partitions"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Send a CSV, Parquet, JSON or xlsx file to a running server (bulk
    /// ingest), with a progress bar.
    Load(LoadArgs),
    /// Read a password on stdin and print its argon2id hash for the users
    /// file (`password_hash = "..."`).
    HashPassword,
}

/// How `duckflock load` treats the target table.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Create the table; fail if it exists.
    Create,
    /// Append to the table; fail if it does not exist.
    Append,
    /// Replace the table (create it if missing).
    Replace,
    /// Create the table if missing, else append.
    CreateAppend,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// The file: .csv/.tsv, .parquet, .json/.ndjson (optionally .gz) or .xlsx
    /// (first sheet, first row = column names).
    pub file: PathBuf,
    /// Target table.
    #[arg(long)]
    pub table: String,
    /// Target month (YYYY-MM) [default: the server's current month].
    #[arg(long)]
    pub month: Option<String>,
    /// Target schema [default: main].
    #[arg(long)]
    pub schema: Option<String>,
    #[arg(long, value_enum, default_value = "create-append")]
    pub mode: LoadMode,
    /// The server's Flight SQL address.
    #[arg(long, env = "DUCKFLOCK_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    pub flight_addr: String,
    /// Sign in as this user (the password is read from DUCKFLOCK_PASSWORD).
    #[arg(long, env = "DUCKFLOCK_USER")]
    pub user: Option<String>,
}

#[derive(Args, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeArgs {
    /// Optional TOML file with any of these options (keys as the flag names).
    #[arg(long, env = "DUCKFLOCK_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Data directory holding one folder per month [default: ./data].
    #[arg(long, env = "DUCKFLOCK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Flight SQL listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "DUCKFLOCK_FLIGHT_ADDR")]
    pub flight_addr: Option<SocketAddr>,
    /// HTTP gateway listen address (the original REST API, docs, health,
    /// metrics, status page) [default: 127.0.0.1:8000].
    #[arg(long, env = "DUCKFLOCK_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Largest JSON result the HTTP gateway builds for one request, e.g.
    /// 64MB; larger results are refused with a pointer to Flight SQL, which
    /// streams them [default: 64MB].
    #[arg(long, env = "DUCKFLOCK_HTTP_RESULT_LIMIT")]
    pub http_result_limit: Option<String>,
    /// DuckDB memory shared by all open month files, e.g. 4GB or 2GiB
    /// [default: 80% of physical memory].
    #[arg(long, env = "DUCKFLOCK_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,
    /// DuckDB worker threads [default: number of cores].
    #[arg(long, env = "DUCKFLOCK_THREADS")]
    pub threads: Option<usize>,
    /// Time zone that decides the default (current) month [default: UTC].
    #[arg(long, env = "DUCKFLOCK_TIMEZONE")]
    pub timezone: Option<String>,
    /// Seconds a statement may run, streaming included; 0 = no limit
    /// [default: 0].
    #[arg(long, env = "DUCKFLOCK_QUERY_TIMEOUT")]
    pub query_timeout: Option<u64>,
    /// Seconds a month's files stay open without use [default: 600].
    #[arg(long, env = "DUCKFLOCK_MONTH_IDLE_TIMEOUT")]
    pub month_idle_timeout: Option<u64>,
    /// Seconds a Flight SQL session or transaction may stay idle before it
    /// is closed (a transaction is rolled back) [default: 900].
    #[arg(long, env = "DUCKFLOCK_SESSION_TIMEOUT")]
    pub session_timeout: Option<u64>,
    /// Replicas per month (`node_1..node_N`, kept up to date by incremental
    /// sync; reads go to a random one) [default: 7].
    #[arg(long, env = "DUCKFLOCK_REPLICAS")]
    pub replicas: Option<usize>,
    /// Let reads without an `x-duckflock-token` be served by a replica that
    /// has not applied the latest writes yet (faster under write load)
    /// [default: false: every read sees the writes committed before it].
    #[arg(long, env = "DUCKFLOCK_STALE_READS", num_args = 0..=1, default_missing_value = "true")]
    pub stale_reads: Option<bool>,
    /// Seconds between the janitor's verification passes: every replica of
    /// every open month is compared with its primary (row count and an
    /// order-independent content hash per table, and the catalog, at one
    /// LSN); a replica that differs is marked failed and rebuilt. 0 = never
    /// (the `verify_replicas` action still runs on demand) [default: 1800].
    #[arg(long, env = "DUCKFLOCK_VERIFY_INTERVAL")]
    pub verify_interval: Option<u64>,
    /// Fsync each replica's file at every commit, as the primary's. Off, a
    /// replica is written without fsync (durability is the primary's: an
    /// acknowledged write is fsynced there), and one the operating system
    /// may have lost writes of (it crashed or lost power since the replica
    /// was opened: a new boot id) is rebuilt from the primary before it
    /// serves [default: false].
    #[arg(long, env = "DUCKFLOCK_REPLICA_FSYNC", num_args = 0..=1, default_missing_value = "true")]
    pub replica_fsync: Option<bool>,
    /// Fault injection for tests: every replica waits this many
    /// milliseconds before applying each batch of change sets, so replicas
    /// visibly lag the primary [default: 0].
    #[arg(long, hide = true)]
    pub apply_delay_ms: Option<u64>,
    /// Allow a non-loopback listen address without authentication.
    #[arg(long, env = "DUCKFLOCK_INSECURE", num_args = 0..=1, default_missing_value = "true")]
    pub insecure: Option<bool>,
    /// A directory SQL may read files from in place (`read_csv`,
    /// `read_parquet`, `read_json`, `read_xlsx`, globs, `'file.parquet'`);
    /// repeatable. Relative paths in SQL are relative to the first one.
    /// Nothing else on the machine is readable [default: <data-dir>/files].
    #[arg(long = "files-dir", env = "DUCKFLOCK_FILES_DIR")]
    #[serde(default)]
    pub files_dir: Vec<PathBuf>,
    /// Where exports are written [default: <data-dir>/exports].
    #[arg(long, env = "DUCKFLOCK_EXPORT_DIR")]
    pub export_dir: Option<PathBuf>,
    /// Largest amount of spill data DuckDB may write to the temp directory
    /// (`<data-dir>/.tmp`), e.g. 20GB [default: DuckDB's, 90% of the free
    /// disk].
    #[arg(long, env = "DUCKFLOCK_MAX_TEMP_SIZE")]
    pub max_temp_size: Option<String>,
    /// Users file (TOML: `[[user]] name, password_hash, role = "reader" |
    /// "writer" | "admin", months = ["2026-*"]`), re-read on SIGHUP. With
    /// it every call is authenticated (Basic or bearer token)
    /// [default: none: no authentication, loopback addresses only].
    #[arg(long, env = "DUCKFLOCK_USERS")]
    pub users: Option<PathBuf>,
    /// Seconds a bearer token stays valid [default: 86400].
    #[arg(long, env = "DUCKFLOCK_TOKEN_TTL")]
    pub token_ttl: Option<u64>,
    /// File holding the tokens' signing key (at least 32 bytes)
    /// [default: <data-dir>/.token-secret, generated once, mode 0600].
    #[arg(long, env = "DUCKFLOCK_TOKEN_SECRET_FILE")]
    pub token_secret_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) for both Flight SQL and HTTP.
    #[arg(long, env = "DUCKFLOCK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "DUCKFLOCK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates are required (mTLS).
    #[arg(long, env = "DUCKFLOCK_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// A web origin (`https://app.example`) whose pages may call the HTTP
    /// gateway (CORS); repeatable. Other origins are refused.
    #[arg(long = "http-allow-origin", env = "DUCKFLOCK_HTTP_ALLOW_ORIGIN")]
    #[serde(default)]
    pub http_allow_origin: Vec<String>,
    /// Most months the server holds; a write that would create one more is
    /// refused [default: no limit].
    #[arg(long, env = "DUCKFLOCK_MAX_MONTHS")]
    pub max_months: Option<usize>,
    /// Most Flight SQL sessions and transactions open at once (admins are
    /// exempt); beyond it `UNAVAILABLE` [default: 1024].
    #[arg(long, env = "DUCKFLOCK_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// Most sessions and transactions one user may hold (admins are
    /// exempt); beyond it `RESOURCE_EXHAUSTED` [default: 256].
    #[arg(long, env = "DUCKFLOCK_MAX_SESSIONS_PER_USER")]
    pub max_sessions_per_user: Option<usize>,
    /// Most statements streaming results at once (each holds a DuckDB
    /// connection and a thread until its client has read it) [default: 64].
    #[arg(long, env = "DUCKFLOCK_MAX_CONCURRENT_QUERIES")]
    pub max_concurrent_queries: Option<usize>,
    /// Most queries waiting for a turn, first come first served; beyond it a
    /// query is refused with a retriable `UNAVAILABLE` [default: 256].
    #[arg(long, env = "DUCKFLOCK_MAX_QUEUED_QUERIES")]
    pub max_queued_queries: Option<usize>,
    /// Log lines as text or as JSON objects (one per line), the access log
    /// (target `duckflock::access`) included [default: text].
    #[arg(long, value_enum, env = "DUCKFLOCK_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Fully resolved server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub flight_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Bytes of JSON one HTTP answer may hold.
    pub http_result_limit: u64,
    /// Bytes of DuckDB memory for all open month files together.
    pub memory_budget: u64,
    pub month_idle_timeout: std::time::Duration,
    pub query_timeout: Option<std::time::Duration>,
    pub threads: Option<usize>,
    pub timezone: chrono_tz::Tz,
    pub session_timeout: std::time::Duration,
    pub replicas: usize,
    pub stale_reads: bool,
    pub replica_fsync: bool,
    pub apply_delay: std::time::Duration,
    /// Time between verification passes (`None`: off).
    pub verify_interval: Option<std::time::Duration>,
    pub insecure: bool,
    /// Directories SQL may read (at least one; the first is where relative
    /// paths resolve).
    pub files_dirs: Vec<PathBuf>,
    pub export_dir: PathBuf,
    /// Bytes DuckDB may spill (`None`: DuckDB's default).
    pub max_temp_size: Option<u64>,
    pub users: Option<PathBuf>,
    pub token_ttl: std::time::Duration,
    pub token_secret_file: Option<PathBuf>,
    pub tls: Option<crate::tls::TlsFiles>,
    pub http_allow_origin: Vec<String>,
    pub max_months: Option<usize>,
    pub max_sessions: usize,
    pub max_sessions_per_user: usize,
    pub max_concurrent_queries: usize,
    pub max_queued_queries: usize,
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// Fills what flags and env left unset from the TOML file, then defaults.
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file: ServeArgs = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => ServeArgs::default(),
        };
        let timezone = self
            .timezone
            .or(file.timezone)
            .unwrap_or_else(|| "UTC".into());
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("data"));
        let files_dirs = match (self.files_dir.is_empty(), file.files_dir.is_empty()) {
            (false, _) => self.files_dir,
            (true, false) => file.files_dir,
            (true, true) => vec![data_dir.join("files")],
        };
        let cfg = ServeConfig {
            files_dirs,
            export_dir: self
                .export_dir
                .or(file.export_dir)
                .unwrap_or_else(|| data_dir.join("exports")),
            max_temp_size: match self.max_temp_size.or(file.max_temp_size) {
                Some(s) => Some(parse_size(&s)?),
                None => None,
            },
            data_dir,
            flight_addr: self
                .flight_addr
                .or(file.flight_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50051))),
            http_addr: self
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8000))),
            http_result_limit: parse_size(
                self.http_result_limit
                    .or(file.http_result_limit)
                    .as_deref()
                    .unwrap_or("64MB"),
            )?,
            memory_budget: match self.memory_limit.or(file.memory_limit) {
                Some(s) => parse_size(&s)?,
                None => physical_memory()? / 10 * 8,
            },
            query_timeout: match self.query_timeout.or(file.query_timeout).unwrap_or(0) {
                0 => None,
                s => Some(std::time::Duration::from_secs(s)),
            },
            month_idle_timeout: std::time::Duration::from_secs(
                self.month_idle_timeout
                    .or(file.month_idle_timeout)
                    .unwrap_or(600),
            ),
            threads: self.threads.or(file.threads),
            timezone: timezone
                .parse()
                .map_err(|_| anyhow::anyhow!("unknown time zone '{timezone}'"))?,
            session_timeout: std::time::Duration::from_secs(
                self.session_timeout.or(file.session_timeout).unwrap_or(900),
            ),
            replicas: self.replicas.or(file.replicas).unwrap_or(7),
            stale_reads: self.stale_reads.or(file.stale_reads).unwrap_or(false),
            replica_fsync: self.replica_fsync.or(file.replica_fsync).unwrap_or(false),
            apply_delay: std::time::Duration::from_millis(
                self.apply_delay_ms.or(file.apply_delay_ms).unwrap_or(0),
            ),
            verify_interval: match self
                .verify_interval
                .or(file.verify_interval)
                .unwrap_or(1800)
            {
                0 => None,
                s => Some(std::time::Duration::from_secs(s)),
            },
            insecure: self.insecure.or(file.insecure).unwrap_or(false),
            users: self.users.or(file.users),
            token_ttl: std::time::Duration::from_secs(
                self.token_ttl.or(file.token_ttl).unwrap_or(86_400).max(1),
            ),
            token_secret_file: self.token_secret_file.or(file.token_secret_file),
            tls: match (
                self.tls_cert.or(file.tls_cert),
                self.tls_key.or(file.tls_key),
                self.tls_client_ca.or(file.tls_client_ca),
            ) {
                (Some(cert), Some(key), client_ca) => Some(crate::tls::TlsFiles {
                    cert,
                    key,
                    client_ca,
                }),
                (None, None, None) => None,
                _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key"),
            },
            http_allow_origin: if self.http_allow_origin.is_empty() {
                file.http_allow_origin
            } else {
                self.http_allow_origin
            },
            max_months: self.max_months.or(file.max_months),
            max_sessions: self.max_sessions.or(file.max_sessions).unwrap_or(1024),
            max_sessions_per_user: self
                .max_sessions_per_user
                .or(file.max_sessions_per_user)
                .unwrap_or(256),
            max_concurrent_queries: self
                .max_concurrent_queries
                .or(file.max_concurrent_queries)
                .unwrap_or(64),
            max_queued_queries: self
                .max_queued_queries
                .or(file.max_queued_queries)
                .unwrap_or(256),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
        };
        for addr in [cfg.flight_addr, cfg.http_addr] {
            if !addr.ip().is_loopback() && !cfg.insecure && cfg.users.is_none() {
                anyhow::bail!(
                    "refusing to listen on {addr} without authentication: configure --users, or pass --insecure to allow it"
                );
            }
        }
        Ok(cfg)
    }
}

/// Bytes from a size such as `4GB` (10^9), `2GiB` (2^30), `512 MB`, `1.5TB`.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size '{s}': expected e.g. 4GB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        other => anyhow::bail!("invalid size unit '{other}' in '{s}'"),
    };
    Ok((num * mult) as u64)
}

/// Physical memory from /proc/meminfo.
fn physical_memory() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("MemTotal not found in /proc/meminfo"))?;
    Ok(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(cli: Cli) -> ServeArgs {
        match cli.command {
            Command::Serve(a) => *a,
            other => panic!("not serve: {other:?}"),
        }
    }

    fn resolve(args: &[&str]) -> ServeConfig {
        let cli = Cli::try_parse_from(args).expect("parse");
        serve_args(cli).resolve().expect("resolve")
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("duckflock.toml");
        std::fs::write(
            &file,
            "data-dir = \"/from/file\"\nmemory-limit = \"1GB\"\nthreads = 5\ntimezone = \"Asia/Tokyo\"\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        // Only this test touches DUCKFLOCK_THREADS.
        std::env::set_var("DUCKFLOCK_THREADS", "3");
        let cfg = resolve(&["duckflock", "serve", "--config", f, "--memory-limit", "2GB"]);
        std::env::remove_var("DUCKFLOCK_THREADS");
        assert_eq!(cfg.memory_budget, 2_000_000_000, "flag over file");
        assert_eq!(cfg.threads, Some(3), "env over file");
        assert_eq!(
            cfg.data_dir,
            PathBuf::from("/from/file"),
            "file over default"
        );
        assert_eq!(cfg.timezone, chrono_tz::Asia::Tokyo);
        assert_eq!(cfg.flight_addr.to_string(), "127.0.0.1:50051", "default");
    }

    #[test]
    fn sizes_parse_like_duckdb() {
        assert_eq!(parse_size("4GB").unwrap(), 4_000_000_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("512 mb").unwrap(), 512_000_000);
        assert_eq!(parse_size("1.5TB").unwrap(), 1_500_000_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("4 parsecs").is_err());
    }

    #[test]
    fn non_loopback_needs_insecure_and_unknown_keys_are_errors() {
        let cli =
            Cli::try_parse_from(["duckflock", "serve", "--flight-addr", "0.0.0.0:50051"]).unwrap();
        let a = serve_args(cli);
        assert!(a.resolve().is_err());
        let cfg = resolve(&[
            "duckflock",
            "serve",
            "--flight-addr",
            "0.0.0.0:50051",
            "--insecure",
        ]);
        assert!(cfg.insecure);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "data_dirr = \"x\"\n").unwrap();
        let cli = Cli::try_parse_from(["duckflock", "serve", "--config", file.to_str().unwrap()])
            .unwrap();
        let a = serve_args(cli);
        assert!(a.resolve().is_err());
    }
}
