//! The control API's cluster routes, under `/v1/cluster/`: this node's view
//! of the store, and the writes `overlayctl cluster` makes through it. The
//! daemon holds the store session, so the command line needs neither etcd's
//! address nor its certificates.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Json;
use serde::Deserialize;

use super::agent::{Agent, EndpointView, WriteError};
use super::layout::{Encap, Endpoint, Network};
use crate::api_state::ApiState;
use crate::api_types::ErrorBody;

type Api = State<Arc<ApiState>>;

/// A refused request: its status and the API's error document.
struct Refusal {
    status: StatusCode,
    body: ErrorBody,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Refusal {
    Refusal { status, body: ErrorBody { error: msg.into(), path: None } }
}

fn agent(s: &ApiState) -> Result<Arc<Agent>, Refusal> {
    s.daemon.cluster().cloned().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "cluster mode is off: overlayd runs without a [cluster] section (docs/cluster.md)",
        )
    })
}

fn refused(e: WriteError) -> Refusal {
    let status = match e {
        WriteError::Degraded(_) => StatusCode::SERVICE_UNAVAILABLE,
        WriteError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        WriteError::NotFound(_) => StatusCode::NOT_FOUND,
        WriteError::Conflict(_) => StatusCode::CONFLICT,
        WriteError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        WriteError::Store(_) => StatusCode::BAD_GATEWAY,
    };
    error(status, e.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let body =
            ErrorBody { error: e.into_inner().to_string(), path: (path != ".").then_some(path) };
        Refusal { status: StatusCode::BAD_REQUEST, body }
    })
}

async fn status(State(s): Api) -> Result<Response, Refusal> {
    let a = agent(&s)?;
    Ok(Json(a.status()).into_response())
}

async fn nodes(State(s): Api) -> Result<Response, Refusal> {
    let a = agent(&s)?;
    Ok(Json(a.nodes()).into_response())
}

async fn networks(State(s): Api) -> Result<Response, Refusal> {
    let a = agent(&s)?;
    Ok(Json(a.networks()).into_response())
}

async fn endpoints(State(s): Api) -> Result<Response, Refusal> {
    let a = agent(&s)?;
    Ok(Json(a.endpoints()).into_response())
}

/// `PUT /v1/cluster/networks/{name}`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkRequest {
    vni: u32,
    #[serde(default)]
    encap: Encap,
    #[serde(default)]
    udp_port: Option<u16>,
    #[serde(default)]
    mtu: Option<u16>,
}

async fn put_network(State(s): Api, Path(name): Path<String>, body: Bytes) -> Response {
    let run = async {
        let a = agent(&s)?;
        let r: NetworkRequest = parse(&body)?;
        let n = Network {
            vni: r.vni,
            encap: r.encap,
            udp_port: r.udp_port.unwrap_or(4789),
            mtu: r.mtu.unwrap_or(1500),
        };
        a.set_network(&name, n).await.map_err(refused)?;
        Ok::<_, Refusal>(Json(serde_json::json!({ "network": name })).into_response())
    };
    run.await.unwrap_or_else(|r| r.into_response())
}

/// `POST /v1/cluster/endpoints`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndpointRequest {
    network: String,
    mac: engine::model::Mac,
    #[serde(default)]
    ip: Option<std::net::IpAddr>,
    /// The owning node; this node when absent.
    #[serde(default)]
    node: Option<String>,
}

async fn add_endpoint(State(s): Api, body: Bytes) -> Response {
    let run = async {
        let a = agent(&s)?;
        let r: EndpointRequest = parse(&body)?;
        let node = r.node.unwrap_or_else(|| a.settings().node.clone());
        let e =
            EndpointView { network: r.network, mac: r.mac, endpoint: Endpoint { node, ip: r.ip } };
        a.add_endpoint(e.clone()).await.map_err(refused)?;
        Ok::<_, Refusal>(Json(e).into_response())
    };
    run.await.unwrap_or_else(|r| r.into_response())
}

/// `POST /v1/cluster/endpoints/delete`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteRequest {
    network: String,
    mac: engine::model::Mac,
    #[serde(default)]
    any_owner: bool,
}

async fn del_endpoint(State(s): Api, body: Bytes) -> Response {
    let run = async {
        let a = agent(&s)?;
        let r: DeleteRequest = parse(&body)?;
        a.del_endpoint(&r.network, r.mac, r.any_owner).await.map_err(refused)?;
        Ok::<_, Refusal>(
            Json(serde_json::json!({ "network": r.network, "mac": r.mac.to_string() }))
                .into_response(),
        )
    };
    run.await.unwrap_or_else(|r| r.into_response())
}

/// The cluster's routes, for `api::routes`.
pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<Arc<ApiState>>)> {
    vec![
        ("GET", "/v1/cluster/status", get(status)),
        ("GET", "/v1/cluster/nodes", get(nodes)),
        ("GET", "/v1/cluster/networks", get(networks)),
        ("PUT", "/v1/cluster/networks/{name}", axum::routing::put(put_network)),
        ("GET", "/v1/cluster/endpoints", get(endpoints)),
        ("POST", "/v1/cluster/endpoints", post(add_endpoint)),
        ("POST", "/v1/cluster/endpoints/delete", post(del_endpoint)),
    ]
}
