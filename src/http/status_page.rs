//! `GET /status`: a page for people (plain HTML and JS inside the binary,
//! no external assets) that polls `GET /status/data` every two seconds.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, Response};
use serde_json::json;

use super::auth::Who;
use super::error::ApiResult;
use super::{answer, json_bytes, timestamp, Shared};

const PAGE: &str = include_str!("status.html");

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// What the page shows: every month's nodes, request rates, sessions,
/// health.
pub async fn data(State(state): Shared, Who(who): Who) -> ApiResult<Response> {
    let months = state.engine.node_status(&who, None).await?;
    let health = state.engine.health().await;
    let (sessions, transactions) = state.engine.open_sessions();
    let m = crate::metrics::get();
    let rates = |secs| {
        m.recent_rates(secs)
            .into_iter()
            .map(|(p, r)| (p.to_string(), json!(r)))
            .collect::<serde_json::Map<_, _>>()
    };
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "health": health,
        "months": months,
        "requests_per_second": {"last_10s": rates(10), "last_60s": rates(60)},
        "open_sessions": sessions,
        "open_transactions": transactions,
        "flight_sql": state.flight_uri.clone(),
        "timestamp": timestamp(),
    });
    Ok(answer(StatusCode::OK, json_bytes(&body)?, None, None))
}
