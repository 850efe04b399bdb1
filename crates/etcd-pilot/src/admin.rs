//! The admin HTTP API of one pilot: `/healthz`, `/readyz`, `/v1/status`, `/v1/plan`,
//! `/v1/bootstrap`, `/metrics`.
//!
//! Handlers only read `watch` snapshots; they never wait on the pilot's loop.
//! `/v1/bootstrap` is what peer pilots ask before they would create a new cluster.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::state::{Phase, PilotStatus};

#[derive(Clone)]
struct AppState {
    status: watch::Receiver<PilotStatus>,
    metrics: Metrics,
}

/// Serves until `cancel`.
pub(crate) async fn serve(
    listener: TcpListener,
    status: watch::Receiver<PilotStatus>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status_json))
        .route("/v1/bootstrap", get(bootstrap))
        .route("/v1/plan", get(plan_json))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { status, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await?;
    Ok(())
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.status.borrow().phase {
        Phase::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response(),
        _ => (StatusCode::OK, "ok\n").into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.status.borrow().clone();
    if status.ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let why = if status.member.is_learner {
            "the local member is a learner, not yet promoted".to_owned()
        } else if status.phase != Phase::Running {
            format!("{}: {}", status.phase.as_str(), status.reason)
        } else {
            "the local member is not healthy".to_owned()
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response()
    }
}

async fn status_json(State(state): State<AppState>) -> Json<PilotStatus> {
    Json(state.status.borrow().clone())
}

async fn plan_json(State(state): State<AppState>) -> Response {
    let status = state.status.borrow().clone();
    Json(serde_json::json!({
        "name": status.name,
        "plan": status.plan,
        "last_action": status.last_action,
    }))
    .into_response()
}

async fn bootstrap(State(state): State<AppState>) -> Response {
    Json(state.status.borrow().report.clone()).into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
