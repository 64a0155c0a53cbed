//! `duckflock load`: sends a CSV, Parquet, JSON or xlsx file to a running
//! server through bulk ingest (Flight SQL `CommandStatementIngest`, the path
//! ADBC's `adbc_ingest` takes), with a progress bar (rows, MB/s, ETA). The
//! file is read batch by batch on a blocking thread and sent as it is read;
//! a small channel in between keeps memory bounded.

mod files;

use std::time::Instant;

use anyhow::Context;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandStatementIngest, TableDefinitionOptions};
use arrow_flight::sql::{TableExistsOption, TableNotExistOption};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::config::{LoadArgs, LoadMode};
use files::Source;

fn options(mode: LoadMode) -> TableDefinitionOptions {
    let (missing, exists) = match mode {
        LoadMode::Create => (TableNotExistOption::Create, TableExistsOption::Fail),
        LoadMode::Append => (TableNotExistOption::Fail, TableExistsOption::Append),
        LoadMode::Replace => (TableNotExistOption::Create, TableExistsOption::Replace),
        LoadMode::CreateAppend => (TableNotExistOption::Create, TableExistsOption::Append),
    };
    TableDefinitionOptions {
        if_not_exist: missing as i32,
        if_exists: exists as i32,
    }
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let source = Source::for_path(&args.file)?;
    let addr = if args.flight_addr.contains("://") {
        args.flight_addr.clone()
    } else {
        format!("http://{}", args.flight_addr)
    };
    let channel = Channel::from_shared(addr.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some(user) = &args.user {
        // The password comes from the environment, never the command line.
        let password = std::env::var("DUCKFLOCK_PASSWORD")
            .context("--user needs the password in DUCKFLOCK_PASSWORD")?;
        client
            .handshake(user, &password)
            .await
            .context("signing in")?;
    }
    if let Some(m) = &args.month {
        client.set_header("x-duckflock-month", m);
    }

    let started = Instant::now();
    let (source, total) = tokio::task::spawn_blocking(move || {
        let n = source.count_rows();
        (source, n)
    })
    .await?;
    let total = total.context("counting the file's rows")?;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {human_pos}/{human_len} rows  {msg}  ETA {eta}",
        )?
        .progress_chars("=> "),
    );

    let (tx, rx) = mpsc::channel(4);
    let progress = bar.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut bytes = 0usize;
        source.read(|batch| {
            bytes += batch.get_array_memory_size();
            progress.inc(batch.num_rows() as u64);
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            progress.set_message(format!("{:.1} MB/s", bytes as f64 / secs / 1e6));
            tx.blocking_send(Ok(batch)).is_ok()
        })
    });
    let cmd = CommandStatementIngest {
        table_definition_options: Some(options(args.mode)),
        table: args.table.clone(),
        schema: args.schema.clone(),
        catalog: args.month.clone(),
        ..Default::default()
    };
    let sent = client.execute_ingest(cmd, ReceiverStream::new(rx)).await;
    let read = reader.await?;
    bar.finish_and_clear();
    read.with_context(|| format!("reading {}", args.file.display()))?;
    let n = sent.context("the server refused the upload")?;
    println!(
        "loaded {n} rows from {} into {} in {:.1} s",
        args.file.display(),
        args.table,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
