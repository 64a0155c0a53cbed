//! A Rust client with arrow-flight's `FlightSqlServiceClient`.
//!
//! Run against a server: `cargo run --release --example flight_client -- http://127.0.0.1:50051`

use arrow::util::pretty::pretty_format_batches;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::Channel;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let uri = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let channel = Channel::from_shared(uri)?.connect().await?;
    let mut client = FlightSqlServiceClient::new(channel);
    // Pick the month (catalog) of every call with a header.
    client.set_header("x-duckflock-month", "2026-01");

    client
        .execute_update(
            "CREATE TABLE IF NOT EXISTS rust_demo (id INTEGER, note VARCHAR)".into(),
            None,
        )
        .await?;
    let n = client
        .execute_update(
            "INSERT INTO rust_demo VALUES (1, 'from rust'), (2, 'streamed')".into(),
            None,
        )
        .await?;
    println!("inserted {n} rows");

    let info = client
        .execute("SELECT * FROM rust_demo ORDER BY id".into(), None)
        .await?;
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.ok_or("endpoint without ticket")?;
        let batches: Vec<_> = client.do_get(ticket).await?.try_collect().await?;
        println!("{}", pretty_format_batches(&batches)?);
    }
    Ok(())
}
