//! `CommandStatementIngest` (DoPut bulk ingest) → [`Engine::ingest`]. The
//! uploaded Flight data is decoded batch by batch and handed to the engine
//! through a small bounded channel: gRPC flow control pauses the client
//! while DuckDB inserts, so an upload of any size holds a few batches.

use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{CommandStatementIngest, TableExistsOption, TableNotExistOption};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Status};

use crate::engine::{EngineError, IfExists, IfMissing, IngestTarget};

use super::status::to_status;
use super::{call_context, token, DuckFlightSql};

/// Decoded batches waiting for DuckDB.
const INGEST_DEPTH: usize = 2;

fn target(cmd: &CommandStatementIngest) -> IngestTarget {
    let opts = cmd.table_definition_options.unwrap_or_default();
    let if_missing = match TableNotExistOption::try_from(opts.if_not_exist) {
        Ok(TableNotExistOption::Create) => IfMissing::Create,
        _ => IfMissing::Fail,
    };
    let if_exists = match TableExistsOption::try_from(opts.if_exists) {
        Ok(TableExistsOption::Append) => IfExists::Append,
        Ok(TableExistsOption::Replace) => IfExists::Replace,
        _ => IfExists::Fail,
    };
    IngestTarget {
        schema: cmd.schema.clone().filter(|s| !s.is_empty()),
        table: cmd.table.clone(),
        temporary: cmd.temporary,
        if_missing,
        if_exists,
    }
}

impl DuckFlightSql {
    pub(super) async fn ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let mut ctx = call_context(&request, cmd.transaction_id.as_deref());
        // The command's catalog is the month (it wins over the header).
        if let Some(c) = cmd.catalog.as_ref().filter(|c| !c.is_empty()) {
            ctx.month = Some(c.clone());
        }
        let data = request
            .into_inner()
            .try_filter(|fd| futures::future::ready(!fd.data_header.is_empty()))
            .map_err(FlightError::from);
        let mut stream = FlightRecordBatchStream::new_from_flight_data(data);
        let first = stream.next().await.transpose().map_err(Status::from)?;
        let schema = match (&first, stream.schema()) {
            (Some(b), _) => b.schema(),
            (None, Some(s)) => Arc::clone(s),
            (None, None) => {
                return Err(Status::invalid_argument(
                    "ingest needs an Arrow schema: the upload carried no data",
                ))
            }
        };
        let (tx, rx) = mpsc::channel(INGEST_DEPTH);
        let feeder = tokio::spawn(async move {
            if let Some(b) = first {
                if tx.send(Ok(b)).await.is_err() {
                    return;
                }
            }
            while let Some(b) = stream.next().await {
                let b = b.map_err(|e| EngineError::invalid(format!("upload: {e}")));
                let stop = b.is_err();
                if tx.send(b).await.is_err() || stop {
                    return;
                }
            }
        });
        let out = self
            .engine
            .ingest(&ctx, target(&cmd), schema, rx)
            .await
            .map_err(to_status);
        feeder.abort();
        let (n, t) = out?;
        crate::metrics::get().ingested(n);
        token::set(t);
        Ok(n as i64)
    }
}
