//! The control API's upgrade route, `POST /v1/upgrade` (upgrade_launch.rs
//! does the work): 200 with the old and new process once the new binary
//! serves; a 4xx naming the field of a bad request; 409 while another
//! upgrade runs; 503 where there is nothing to hand over; 502 when the new
//! binary failed (the old overlayd serves on).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Json;

use crate::api_state::ApiState;
use crate::api_types::ErrorBody;
use crate::upgrade_launch::{UpgradeError, UpgradeRequest};

type Api = State<Arc<ApiState>>;

fn refusal(status: StatusCode, error: String, path: Option<String>) -> Response {
    (status, Json(ErrorBody { error, path })).into_response()
}

async fn upgrade(State(s): Api, body: Bytes) -> Response {
    // An empty body asks for the defaults.
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &body };
    let de = &mut serde_json::Deserializer::from_slice(body);
    let req: UpgradeRequest = match serde_path_to_error::deserialize(de) {
        Ok(r) => r,
        Err(e) => {
            let path = e.path().to_string();
            let error = e.into_inner().to_string();
            return refusal(StatusCode::BAD_REQUEST, error, (path != ".").then_some(path));
        }
    };
    let Some(u) = s.daemon.upgrader().cloned() else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            UpgradeError::Unavailable.to_string(),
            None,
        );
    };
    // It waits for another process: off the runtime's threads.
    let r = tokio::task::spawn_blocking(move || u.upgrade(&req)).await;
    match r {
        Ok(Ok(report)) => {
            tracing::info!(
                new_pid = report.new.pid,
                silence_ms = report.silence_ms,
                "upgrade: answered"
            );
            Json(report).into_response()
        }
        Ok(Err(e)) => {
            let status = match e {
                UpgradeError::Binary(_) | UpgradeError::Timeout(_) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                UpgradeError::Busy => StatusCode::CONFLICT,
                UpgradeError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                UpgradeError::Spawn { .. }
                | UpgradeError::Exited { .. }
                | UpgradeError::Failed { .. }
                | UpgradeError::TimedOut { .. } => StatusCode::BAD_GATEWAY,
            };
            tracing::warn!(reason = %e, "upgrade refused or failed");
            refusal(status, e.to_string(), e.field().map(String::from))
        }
        Err(e) => refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

/// The upgrade route, for the router (api.rs) and the OpenAPI document.
pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<Arc<ApiState>>)> {
    vec![("POST", "/v1/upgrade", post(upgrade))]
}
