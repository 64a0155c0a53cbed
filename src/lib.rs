//! duckflock: an Arrow Flight SQL server over monthly-partitioned DuckDB.
//!
//! Layers (see ARCHITECTURE.md): `flight` (protocol) → `engine` (routing,
//! sessions, execution) → `duck` (safe DuckDB C API).

pub mod access_log;
pub mod auth;
pub mod config;
pub mod duck;
pub mod engine;
pub mod flight;
pub mod http;
pub mod json_params;
pub mod load;
pub mod metrics;
pub mod server;
pub mod tls;
