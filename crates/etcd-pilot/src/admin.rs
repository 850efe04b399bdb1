//! The admin HTTP API of one pilot: `/healthz`, `/readyz`, `/v1/status`, `/v1/plan`,
//! `/v1/bootstrap`, `/metrics`, and `POST /v1/reseed`.
//!
//! Handlers only read `watch` snapshots; they never wait on the pilot's loop.
//! `/v1/bootstrap` is what peer pilots ask before they would create a new cluster.
//! `POST /v1/reseed` is the operator's reseed order (`etcd-pilot reseed`): it is only left
//! for the quorum watch, which checks it against its own view before anything happens.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::quorum::{Orders, ReseedOrder};
use crate::state::{Phase, PilotStatus};

/// What the handlers read (and where reseed orders go).
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) status: watch::Receiver<PilotStatus>,
    pub(crate) metrics: Metrics,
    pub(crate) orders: Orders,
}

/// Serves until `cancel`.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AppState,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status_json))
        .route("/v1/bootstrap", get(bootstrap))
        .route("/v1/plan", get(plan_json))
        .route("/v1/reseed", post(reseed_order))
        .route("/metrics", get(metrics_text))
        .with_state(state);
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

/// An operator's reseed order: accepted (202) for the quorum watch to check at its next
/// observation, or refused (409) at once when it is not this pilot's or this pilot sees no
/// lost quorum. The outcome shows in `/v1/status` as `reseed_order`, with the order's id.
async fn reseed_order(State(state): State<AppState>, Json(order): Json<ReseedOrder>) -> Response {
    let status = state.status.borrow().clone();
    let refuse = |why: String| (StatusCode::CONFLICT, format!("{why}\n")).into_response();
    if order.from != status.name {
        return refuse(format!(
            "this is the pilot of {}, not of {}: send the order to the seed's pilot",
            status.name, order.from
        ));
    }
    if !status.quorum.as_ref().is_some_and(|q| q.lost) {
        return refuse(format!(
            "the pilot of {} sees no lost quorum (its etcd has a leader or does not answer): \
             nothing to reseed",
            status.name
        ));
    }
    if let Some(reseed) = &status.reseed {
        return refuse(format!(
            "the pilot of {} is reseeding already ({})",
            status.name, reseed.step
        ));
    }
    tracing::warn!(from = %order.from, by = %order.signed(), force = order.force, "reseed ordered");
    state.orders.put(order);
    (
        StatusCode::ACCEPTED,
        "accepted: checked at the next observation; reseed_order in /v1/status says the outcome\n",
    )
        .into_response()
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
