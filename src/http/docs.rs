//! The OpenAPI document, generated from the handlers' annotations
//! (utoipa), and Swagger UI (bundled in the binary by
//! `utoipa-swagger-ui`'s vendored assets: no download at build or run
//! time).

use std::sync::Arc;

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use super::{admin, exports, modify, query, tables, AppState};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "duckflock HTTP gateway",
        description = "The original DuckDB Web API (monthly partitions, 8 nodes per month) served by duckflock. \
            Every endpoint takes `month` (YYYY-MM, default: the current month). Errors are \
            `{\"status\": \"error\", \"error\": \"...\"}` with a 4xx code for bad input and 5xx for server faults. \
            Large results belong to Flight SQL, which streams Arrow."
    ),
    paths(
        admin::root,
        admin::health,
        admin::metrics,
        query::query_async,
        query::query_stored,
        query::query_result,
        modify::modify_async,
        tables::create_table,
        tables::list_tables,
        tables::table_schema,
        admin::nodes,
        admin::months,
        admin::files,
        exports::export,
        exports::list,
        exports::download,
        admin::sync,
        admin::verify,
        admin::sessions,
        admin::kill_session,
    ),
    components(schemas(
        query::QueryRequest,
        modify::ModifyRequest,
        tables::CreateTableRequest,
        tables::Column,
        admin::SyncRequest,
        admin::VerifyRequest,
        exports::ExportRequest
    ))
)]
pub struct ApiDoc;

/// `/docs` (Swagger UI) and `/openapi.json`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::from(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
