//! The Flight SQL front door: one `FlightSqlService` method per command,
//! each translating to one engine call. No SQL runs here.

mod actions;
mod auth;
mod ingest;
mod metadata;
mod observe;
pub mod session;
mod status;
mod token;

use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginTransactionRequest, ActionBeginTransactionResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionEndTransactionRequest, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, EndTransaction, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{BatchStream, CallContext, Caller, Engine, Planned};

pub use auth::AuthLayer;
pub use observe::MetricsLayer;
pub use token::{TokenLayer, TOKEN_HEADER};

use session::session_from_cookie;
use status::{arrow_status, to_status};

pub use arrow_flight::flight_service_server::FlightServiceServer;

/// Header choosing the month of a call.
pub const MONTH_HEADER: &str = "x-duckflock-month";
/// Response header naming the node(s) that served a read.
pub const NODE_HEADER: &str = "x-duckflock-node";
/// Header asking for a cross-month read (`2026-01,2026-02` or `all`).
pub const MONTHS_HEADER: &str = "x-duckflock-months";

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct DuckFlightSql {
    engine: Arc<Engine>,
    sql_info: SqlInfoData,
    xdbc: XdbcTypeInfoData,
}

impl DuckFlightSql {
    /// The foreign keys of `catalog` that `keep` selects, as a DoGet answer.
    async fn foreign_keys_answer(
        &self,
        caller: &Caller,
        catalog: Option<&str>,
        keep: impl Fn(&crate::engine::ForeignKey) -> bool,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let keys = self
            .engine
            .foreign_keys(caller, catalog)
            .await
            .map_err(to_status)?;
        let keys: Vec<_> = keys.iter().filter(|k| keep(k)).collect();
        let batch = metadata::foreign_keys_batch(&keys).map_err(arrow_status)?;
        Ok(one_batch(batch))
    }

    pub fn new(engine: Arc<Engine>) -> Result<Self, FlightError> {
        let sql_info = metadata::sql_info(engine.keywords())?;
        Ok(DuckFlightSql {
            engine,
            sql_info,
            xdbc: metadata::xdbc_types()?,
        })
    }
}

/// The call context from request headers and an optional transaction id.
fn call_context<T>(req: &Request<T>, transaction: Option<&[u8]>) -> CallContext {
    let md = req.metadata();
    let header = |name: &str| {
        md.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let session = md
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session_from_cookie);
    CallContext {
        month: header(MONTH_HEADER),
        months: header(MONTHS_HEADER),
        token: header(TOKEN_HEADER),
        session,
        transaction: transaction
            .filter(|t| !t.is_empty())
            .map(|t| String::from_utf8_lossy(t).into_owned()),
        caller: auth::caller_of(req),
    }
}

/// The schema as the Flight encoder sends it: arrow-flight rebuilds union
/// fields as non-nullable (`Field::new_union`), so FlightInfo and prepared
/// statements must describe them that way too, or clients (the Go driver)
/// reject the stream as inconsistent.
fn as_sent(schema: &Schema) -> Schema {
    fn field(f: &Field) -> Field {
        let dt = match f.data_type() {
            DataType::Struct(fs) => DataType::Struct(fs.iter().map(|c| field(c)).collect()),
            DataType::List(c) => DataType::List(Arc::new(field(c))),
            DataType::LargeList(c) => DataType::LargeList(Arc::new(field(c))),
            DataType::FixedSizeList(c, n) => DataType::FixedSizeList(Arc::new(field(c)), *n),
            DataType::Map(c, sorted) => DataType::Map(Arc::new(field(c)), *sorted),
            DataType::Union(fs, mode) => {
                let (ids, children): (Vec<i8>, Vec<Field>) =
                    fs.iter().map(|(id, c)| (id, field(c))).unzip();
                return Field::new_union(f.name(), ids, children, *mode);
            }
            other => other.clone(),
        };
        f.clone().with_data_type(dt)
    }
    Schema::new_with_metadata(
        schema.fields().iter().map(|f| field(f)).collect::<Vec<_>>(),
        schema.metadata().clone(),
    )
}

fn flight_info(
    schema: &SchemaRef,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(&as_sent(schema))
        .map_err(arrow_status)?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket {
            ticket: ticket.into(),
        }))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// Encodes record batches as Flight data. Dictionaries (DuckDB ENUMs) are
/// sent as dictionaries, as DuckDB itself exports them.
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> BoxStream<arrow_flight::FlightData> {
    let metrics = crate::metrics::get();
    let note = crate::access_log::current();
    let batches = batches.inspect_ok(move |b| {
        metrics.streamed("flight", b.num_rows() as u64, 0);
        if let Some(n) = &note {
            n.add_rows(b.num_rows() as u64);
        }
    });
    let s = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_dictionary_handling(DictionaryHandling::Resend)
        .build(batches)
        .inspect_ok(|fd| {
            let bytes = fd.data_header.len() + fd.data_body.len();
            metrics.streamed("flight", 0, bytes as u64)
        })
        .map_err(Status::from);
    Box::pin(s)
}

fn stream_response(stream: BatchStream) -> Response<BoxStream<arrow_flight::FlightData>> {
    let head = futures::stream::iter(stream.head.into_iter().map(Ok));
    let rest = stream.rest.map(|rx| {
        ReceiverStream::new(rx).map(|r| r.map_err(|e| FlightError::Tonic(Box::new(to_status(e)))))
    });
    let batches = head.chain(futures::stream::iter(rest).flatten());
    token::set(stream.token);
    with_node(Response::new(encode(stream.schema, batches)), &stream.node)
}

/// Names the node(s) that served a read in the `x-duckflock-node` header.
fn with_node<T>(mut resp: Response<T>, node: &str) -> Response<T> {
    if let Ok(v) = node.parse() {
        resp.metadata_mut().insert(NODE_HEADER, v);
    }
    resp
}

/// A FlightInfo whose one endpoint fetches the parked result `planned.id`.
fn planned_info(
    planned: Planned,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = TicketStatementQuery {
        statement_handle: planned.id.into_bytes().into(),
    };
    let resp = flight_info(&planned.schema, ticket.as_any().encode_to_vec(), descriptor)?;
    token::set(planned.token);
    Ok(with_node(resp, &planned.node))
}

/// Most bytes of parameters one DoPut may bind (they are held until the
/// statement runs; bulk data belongs in `CommandStatementIngest`).
const MAX_PARAMETER_BYTES: usize = 64 << 20;

/// Collects the parameter batches a client uploads with DoPut, at most
/// [`MAX_PARAMETER_BYTES`] of them.
async fn read_batches(
    request: Request<PeekableFlightDataStream>,
) -> Result<Vec<RecordBatch>, Status> {
    // The first message may carry only the command descriptor (no IPC data).
    let mut held = 0usize;
    let stream = request
        .into_inner()
        .try_filter(|fd| futures::future::ready(!fd.data_header.is_empty()))
        .map_err(FlightError::from)
        .and_then(move |fd| {
            held += fd.data_header.len() + fd.data_body.len();
            futures::future::ready(if held > MAX_PARAMETER_BYTES {
                Err(FlightError::Tonic(Box::new(Status::resource_exhausted(
                    format!(
                        "the parameters sent exceed {} MiB: load bulk data with bulk ingest \
                     (CommandStatementIngest, ADBC adbc_ingest) and use the table in the statement",
                        MAX_PARAMETER_BYTES >> 20
                    ),
                ))))
            } else {
                Ok(fd)
            })
        });
    let batches: Vec<RecordBatch> =
        arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
            .try_filter(|b| futures::future::ready(b.num_rows() > 0))
            .try_collect()
            .await
            .map_err(Status::from)?;
    Ok(batches)
}

/// A DoGet answer holding one (metadata) batch.
fn one_batch(batch: RecordBatch) -> Response<BoxStream<arrow_flight::FlightData>> {
    Response::new(encode(
        batch.schema(),
        futures::stream::iter(vec![Ok(batch)]),
    ))
}

#[tonic::async_trait]
impl FlightSqlService for DuckFlightSql {
    type FlightService = DuckFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        // The credentials came in the authorization header (checked by
        // `AuthLayer`, which also sets the Bearer answer header); the token
        // is the payload too, for clients that read it there.
        let payload = auth::issued_of(&request)
            .map(|i| i.token.into_bytes())
            .unwrap_or_default();
        let out = futures::stream::iter(vec![Ok(HandshakeResponse {
            protocol_version: 0,
            payload: payload.into(),
        })]);
        Ok(Response::new(Box::pin(out)))
    }

    // ----- statements ------------------------------------------------------

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = call_context(&request, query.transaction_id.as_deref());
        let planned = self
            .engine
            .plan_query(&ctx, &query.query)
            .await
            .map_err(to_status)?;
        planned_info(planned, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let id = String::from_utf8_lossy(&ticket.statement_handle);
        let stream = self
            .engine
            .take_parked(&auth::caller_of(&request), &id)
            .map_err(to_status)?;
        Ok(stream_response(stream))
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let ctx = call_context(&request, cmd.transaction_id.as_deref());
        let (n, t) = self
            .engine
            .execute_update(&ctx, &cmd.query, Vec::new())
            .await
            .map_err(to_status)?;
        token::set(t);
        Ok(n as i64)
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.ingest(cmd, request).await
    }

    // ----- prepared statements ---------------------------------------------

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let ctx = call_context(&request, query.transaction_id.as_deref());
        let info = self
            .engine
            .create_prepared(&ctx, &query.query)
            .await
            .map_err(to_status)?;
        let schema_bytes = |s: &SchemaRef| -> Result<bytes::Bytes, Status> {
            let opts = arrow::ipc::writer::IpcWriteOptions::default();
            let arrow_flight::IpcMessage(b) = arrow_flight::SchemaAsIpc::new(s, &opts)
                .try_into()
                .map_err(arrow_status)?;
            Ok(b)
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: info.handle.into_bytes().into(),
            dataset_schema: schema_bytes(&Arc::new(as_sent(&info.dataset_schema)))?,
            parameter_schema: schema_bytes(&info.parameter_schema)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.engine.close_prepared(
            &auth::caller_of(&request),
            &String::from_utf8_lossy(&query.prepared_statement_handle),
        );
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).into_owned();
        let caller = auth::caller_of(&request);
        let batches = read_batches(request).await?;
        self.engine
            .bind_prepared(&caller, &handle, batches)
            .map_err(to_status)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = call_context(&request, None);
        let handle = String::from_utf8_lossy(&cmd.prepared_statement_handle).into_owned();
        let planned = self
            .engine
            .plan_prepared(&ctx, &handle)
            .await
            .map_err(to_status)?;
        planned_info(planned, request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let ctx = call_context(&request, None);
        let handle = String::from_utf8_lossy(&cmd.prepared_statement_handle).into_owned();
        let stream = self
            .engine
            .stream_prepared(&ctx, &handle)
            .await
            .map_err(to_status)?;
        Ok(stream_response(stream))
    }

    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let ctx = call_context(&request, None);
        let handle = String::from_utf8_lossy(&cmd.prepared_statement_handle).into_owned();
        let batches = read_batches(request).await?;
        let (n, t) = self
            .engine
            .update_prepared(&ctx, &handle, batches)
            .await
            .map_err(to_status)?;
        token::set(t);
        Ok(n as i64)
    }

    // ----- transactions ----------------------------------------------------

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        request: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        let ctx = call_context(&request, None);
        let id = self
            .engine
            .begin_transaction(&ctx)
            .await
            .map_err(to_status)?;
        Ok(ActionBeginTransactionResult {
            transaction_id: id.into_bytes().into(),
        })
    }

    async fn do_action_end_transaction(
        &self,
        query: ActionEndTransactionRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let id = String::from_utf8_lossy(&query.transaction_id).into_owned();
        let commit = match EndTransaction::try_from(query.action) {
            Ok(EndTransaction::Commit) => true,
            Ok(EndTransaction::Rollback) => false,
            _ => {
                return Err(Status::invalid_argument(
                    "EndTransaction needs COMMIT or ROLLBACK",
                ))
            }
        };
        let t = self
            .engine
            .end_transaction(&auth::caller_of(&request), &id, commit)
            .await
            .map_err(to_status)?;
        token::set(t);
        Ok(())
    }

    async fn do_action_cancel_query(
        &self,
        query: arrow_flight::sql::ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<arrow_flight::sql::ActionCancelQueryResult, Status> {
        let ctx = call_context(&request, None);
        let info = FlightInfo::decode(query.info.as_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let cancelled = actions::cancel(&self.engine, &ctx, &info);
        Ok(arrow_flight::sql::ActionCancelQueryResult {
            // CANCELLED, or NOT_CANCELLABLE.
            result: if cancelled { 1 } else { 3 },
        })
    }

    // ----- metadata --------------------------------------------------------

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(
            &query.into_builder().schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        let months = self
            .engine
            .list_months(&auth::caller_of(&request))
            .map_err(to_status)?;
        for m in months {
            b.append(m.to_string());
        }
        let batch = b.build().map_err(arrow_status)?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(
            &query.clone().into_builder().schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let rows = self
            .engine
            .db_schemas(&auth::caller_of(&request), query.catalog.as_deref())
            .await
            .map_err(to_status)?;
        let mut b = query.into_builder();
        for (c, s) in rows {
            b.append(c, s);
        }
        let batch = b.build().map_err(arrow_status)?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(
            &query.clone().into_builder().schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let tables = self
            .engine
            .tables(
                &auth::caller_of(&request),
                query.catalog.as_deref(),
                query.include_schema,
            )
            .await
            .map_err(to_status)?;
        let mut b = query.into_builder();
        let empty = arrow::datatypes::Schema::empty();
        for t in tables {
            b.append(
                &t.catalog,
                &t.schema,
                &t.name,
                &t.table_type,
                t.arrow_schema.as_deref().unwrap_or(&empty),
            )
            .map_err(arrow_status)?;
        }
        let batch = b.build().map_err(arrow_status)?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(
            &query.into_builder().schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for t in ["TABLE", "VIEW"] {
            b.append(t);
        }
        let batch = b.build().map_err(arrow_status)?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(
            &query.clone().into_builder(&self.sql_info).schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = query
            .into_builder(&self.sql_info)
            .build()
            .map_err(arrow_status)?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(
            &query.into_builder(&self.xdbc).schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = query
            .into_builder(&self.xdbc)
            .build()
            .map_err(arrow_status)?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(
            &metadata::primary_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let keys = self
            .engine
            .primary_keys(&auth::caller_of(&request), query.catalog.as_deref())
            .await
            .map_err(to_status)?;
        let keys: Vec<_> = keys
            .into_iter()
            .filter(|k| {
                k.table == query.table && query.db_schema.as_deref().is_none_or(|s| s == k.schema)
            })
            .collect();
        let batch = metadata::primary_keys_batch(&keys).map_err(arrow_status)?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(
            &metadata::foreign_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.foreign_keys_answer(&auth::caller_of(&request), query.catalog.as_deref(), |k| {
            k.pk_table == query.table && query.db_schema.as_deref().is_none_or(|s| s == k.fk_schema)
        })
        .await
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(
            &metadata::foreign_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.foreign_keys_answer(&auth::caller_of(&request), query.catalog.as_deref(), |k| {
            k.fk_table == query.table && query.db_schema.as_deref().is_none_or(|s| s == k.fk_schema)
        })
        .await
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(
            &metadata::foreign_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.foreign_keys_answer(
            &auth::caller_of(&request),
            query.fk_catalog.as_deref(),
            |k| k.pk_table == query.pk_table && k.fk_table == query.fk_table,
        )
        .await
    }

    // ----- session options and admin actions -------------------------------

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(actions::list())
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let ctx = call_context(&request, None);
        actions::dispatch(&self.engine, &ctx, request.into_inner()).await
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
