//! The control API: HTTP/JSON under `/v1/`, served on a Unix socket. Every
//! request's peer uid (SO_PEERCRED) must be in the allowed list. Errors are
//! JSON `{ "error": ..., "path": ... }` with a 4xx status that says what kind
//! of mistake it was; writes carry the generation they were based on and a
//! stale one gets 409 with nothing changed.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put, MethodRouter};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::middleware::Next;
use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::daemon::{ApplyError, Daemon};
use engine::model::{Config, ConfigError};

/// Largest request body accepted (a configuration with tens of thousands of rules fits).
pub const MAX_BODY: usize = 8 << 20;

pub struct ApiState {
    pub daemon: Arc<Daemon>,
    pub allowed_uids: Vec<u32>,
    /// The bearer token TCP clients must present (TCP is only served with one).
    pub token: Option<String>,
}

/// Who is connected: a local process (its uid, from SO_PEERCRED) or a TCP
/// client (which must present the bearer token).
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    Unix { uid: Option<u32> },
    Tcp,
}

impl Connected<IncomingStream<'_, Limited<UnixListener>>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Limited<UnixListener>>) -> Self {
        Peer::Unix { uid: stream.io().inner().peer_cred().ok().map(|c| c.uid()) }
    }
}

impl Connected<IncomingStream<'_, Limited<TcpListener>>> for Peer {
    fn connect_info(_: IncomingStream<'_, Limited<TcpListener>>) -> Self {
        Peer::Tcp
    }
}

/// An API error: status, message and, where it applies, the field path.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    path: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError { status, error: error.into(), path: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.error, "path": self.path }))).into_response()
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        tracing::info!(reason = %e, "change refused");
        match e {
            ApplyError::Stale { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            ApplyError::Invalid(ConfigError::Invalid { path, reason }) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                error: reason,
                path: Some(path),
            },
            ApplyError::Invalid(e) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            ApplyError::Store(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

type Api = State<Arc<ApiState>>;

/// Compares without an early exit, so response time does not reveal how much
/// of a guessed token was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every request passes here first: Unix peers by uid, TCP peers by token.
async fn authorize(
    State(s): Api,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match peer {
        Peer::Unix { uid: Some(uid) } if s.allowed_uids.contains(&uid) => {}
        Peer::Unix { uid: Some(uid) } => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("uid {uid} is not allowed to use this socket"),
            ))
        }
        Peer::Unix { uid: None } => {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "the peer's credentials are unknown"))
        }
        Peer::Tcp => {
            let given = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match (given, &s.token) {
                (Some(g), Some(t)) if same_secret(g.trim().as_bytes(), t.as_bytes()) => {}
                (None, _) => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "a bearer token is required (Authorization: Bearer ...)",
                    ))
                }
                _ => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "the bearer token is wrong",
                    ))
                }
            }
        }
    }
    Ok(next.run(req).await)
}

/// Parses a JSON body into `T`, naming the field path of any error.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: e.into_inner().to_string(),
            path: (path != ".").then_some(path),
        }
    })
}

async fn status(State(s): Api) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "api": "v1",
        "uptime_secs": s.daemon.uptime_secs(),
        "generation": s.daemon.generation(),
        "io": s.daemon.io_status(),
        "offload": offload_summary(&s),
    })))
}

fn offload_summary(s: &ApiState) -> Value {
    match s.daemon.offload() {
        Some(o) => o.status(),
        None => json!({ "active": false, "why": "control only: no interface attached" }),
    }
}

/// One rule's placement as the API shows it.
fn placement_json(p: &engine::placement::RulePlacement) -> Value {
    match (&p.hardware, &p.software) {
        (Some(f), _) => json!({
            "runs_in": "hardware", "device": f.dev, "pref": f.pref, "handle": f.handle,
        }),
        (None, Some(w)) => json!({ "runs_in": "software", "code": w.code, "reason": w.text }),
        (None, None) => json!({ "runs_in": "software" }),
    }
}

/// Placement by rule id; without an offloader every rule is in software.
fn placements(s: &ApiState) -> std::collections::HashMap<u32, Value> {
    let inactive = json!({ "runs_in": "software", "code": "inactive", "reason": "offload is not active (control only)" });
    match s.daemon.offload() {
        Some(o) => o.placement().iter().map(|p| (p.rule, placement_json(p))).collect(),
        None => s.daemon.rules().rules.iter().map(|r| (r.id, inactive.clone())).collect(),
    }
}

/// The rules, each with where it runs and, in software, why not hardware.
async fn rules(State(s): Api) -> Result<Response, ApiError> {
    let c = s.daemon.config();
    let place = placements(&s);
    let list: Vec<Value> = c
        .rules
        .iter()
        .map(|r| {
            let mut v = json!(r);
            v["placement"] = place.get(&r.id).cloned().unwrap_or(Value::Null);
            v
        })
        .collect();
    Ok(([("etag", format!("\"{}\"", c.generation))], Json(Value::Array(list))).into_response())
}

async fn offload(State(s): Api) -> Result<Json<Value>, ApiError> {
    let mut v = offload_summary(&s);
    let place = placements(&s);
    let rs = s.daemon.rules();
    v["rules"] = rs
        .rules
        .iter()
        .map(|r| {
            let mut p = place.get(&r.id).cloned().unwrap_or(Value::Null);
            p["id"] = json!(r.id);
            p["priority"] = json!(r.priority);
            p
        })
        .collect();
    Ok(Json(v))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VfQuery {
    pf: String,
}

/// A physical function's VFs and representors, as the device reports them.
async fn vfs(
    State(s): Api,
    q: Result<axum::extract::Query<VfQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = q.map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        error: e.body_text(),
        path: Some("pf".into()),
    })?;
    let o = s.daemon.offload().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "offload is not active: overlayd runs control only",
        )
    })?;
    let pf = q.0.pf;
    let o = Arc::clone(o);
    let r = tokio::task::spawn_blocking(move || o.vf_show(&pf))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    r.map(Json).map_err(|e| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        error: e,
        path: Some("pf".into()),
    })
}

async fn get_config(State(s): Api) -> Result<Response, ApiError> {
    let c = s.daemon.config();
    let etag = format!("\"{}\"", c.generation);
    Ok(([("etag", etag)], Json(c)).into_response())
}

/// The generation a write was based on: `If-Match`, else the body's `generation`.
fn based_on(headers: &HeaderMap, body_generation: u64) -> Result<u64, ApiError> {
    match headers.get("if-match") {
        None => Ok(body_generation),
        Some(v) => v
            .to_str()
            .ok()
            .map(|v| v.trim().trim_matches('"'))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, "If-Match must be a generation number")
            }),
    }
}

async fn put_config(
    State(s): Api,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let new: Config = parse(&body)?;
    let base = based_on(&headers, new.generation)?;
    let generation = s.daemon.apply(new, base)?;
    Ok(Json(json!({ "generation": generation })))
}

async fn post_ops(State(s): Api, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    let batch: engine::ops::Batch = parse(&body)?;
    let base = based_on(&headers, batch.generation)?;
    let generation = s.daemon.apply_ops(&batch.ops, base)?;
    Ok(Json(json!({ "generation": generation })))
}

/// One collection of the configuration (rules, tunnels, ...), read-only.
async fn collection(s: Arc<ApiState>, pick: fn(&Config) -> Value) -> Result<Response, ApiError> {
    let c = s.daemon.config();
    Ok(([("etag", format!("\"{}\"", c.generation))], Json(pick(&c))).into_response())
}

async fn counters(State(s): Api) -> Result<Json<Value>, ApiError> {
    let rs = s.daemon.rules();
    Ok(Json(crate::render::counters_json(&rs, &s.daemon.counters())))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceRequest {
    in_port: String,
    #[serde(default)]
    packet: Option<String>,
    #[serde(default)]
    hex: Option<String>,
}

async fn trace(
    State(s): Api,
    body: Bytes,
) -> Result<Json<engine::pipeline::TraceReport>, ApiError> {
    let req: TraceRequest = parse(&body)?;
    let rs = s.daemon.rules();
    let place = s.daemon.offload().map(|o| o.placement());
    let bad = |path: &str, error: String| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        error,
        path: Some(path.to_string()),
    };
    let port = rs
        .port_index(&req.in_port)
        .ok_or_else(|| bad("in_port", format!("no port named {:?}", req.in_port)))?;
    let frame = match (req.packet, req.hex) {
        (Some(p), None) => {
            engine::packet_spec::build(&p).map_err(|e| bad("packet", e.to_string()))?
        }
        (None, Some(h)) => engine::packet_spec::parse_hex(&h).map_err(|e| bad("hex", e))?,
        _ => return Err(bad("packet", "give exactly one of packet and hex".into())),
    };
    let mut report = engine::pipeline::trace_packet(rs, port, &frame, 0);
    // Say where the matched rule runs: a packet like this one may never
    // reach the software path the trace just walked.
    if let Some(place) = place {
        use engine::trace::Step;
        if let Some(at) = report.steps.iter().position(|st| matches!(st, Step::Matched { .. })) {
            let Step::Matched { rule, .. } = report.steps[at] else { unreachable!() };
            if let Some(p) = place.iter().find(|p| p.rule == rule) {
                let step = match (&p.hardware, &p.software) {
                    (Some(f), _) => Step::Placement {
                        rule,
                        hardware: true,
                        detail: format!(
                            "tc flower on {}, pref {}, handle {}",
                            f.dev, f.pref, f.handle
                        ),
                    },
                    (None, w) => Step::Placement {
                        rule,
                        hardware: false,
                        detail: w.as_ref().map_or_else(String::new, |w| w.text.clone()),
                    },
                };
                report.steps.insert(at + 1, step);
            }
        }
    }
    Ok(Json(report))
}

async fn metrics(State(s): Api) -> Result<Response, ApiError> {
    let tier = s.daemon.io_status().and_then(|io| io.tier);
    let text = crate::metrics::encode_metrics(
        &s.daemon.rules(),
        &s.daemon.counters(),
        tier.as_ref(),
        s.daemon.uptime_secs(),
    );
    Ok(([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such resource; the API lives under /v1/")
}

/// The OpenAPI document, kept in step with `routes()` by a test.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([("content-type", "application/json")], OPENAPI).into_response()
}

/// Every route: (method, path, handler). The router is built from this list
/// and the test compares it with the OpenAPI document in both directions.
fn routes() -> Vec<(&'static str, &'static str, MethodRouter<Arc<ApiState>>)> {
    vec![
        ("GET", "/v1/status", get(status)),
        ("GET", "/v1/config", get(get_config)),
        ("PUT", "/v1/config", put(put_config)),
        ("POST", "/v1/config/ops", post(post_ops)),
        ("GET", "/v1/rules", get(rules)),
        ("GET", "/v1/tunnels", get(|State(s): Api| collection(s, |c: &Config| json!(c.tunnels)))),
        ("GET", "/v1/ports", get(|State(s): Api| collection(s, |c: &Config| json!(c.ports)))),
        ("GET", "/v1/fdb", get(|State(s): Api| collection(s, |c: &Config| json!(c.fdb)))),
        ("GET", "/v1/flood", get(|State(s): Api| collection(s, |c: &Config| json!(c.flood)))),
        ("GET", "/v1/counters", get(counters)),
        ("GET", "/v1/offload", get(offload)),
        ("GET", "/v1/offload/vfs", get(vfs)),
        ("POST", "/v1/trace", post(trace)),
        ("GET", "/v1/openapi.json", get(openapi)),
        ("GET", "/metrics", get(metrics)),
    ]
}

/// (method, path) of every route.
pub fn route_list() -> Vec<(&'static str, &'static str)> {
    routes().into_iter().map(|(m, p, _)| (m, p)).collect()
}

pub fn router(state: Arc<ApiState>) -> Router {
    let mut r = Router::new();
    for (_, path, handler) in routes() {
        r = r.route(path, handler);
    }
    r.fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), authorize))
        .with_state(state)
}

/// Most connections served at once on one listener; more wait in the
/// kernel's accept queue, so no client can exhaust the daemon.
pub const MAX_CONNECTIONS: usize = 64;

/// A listener that holds a permit per open connection.
pub struct Limited<L> {
    inner: L,
    permits: Arc<Semaphore>,
}

impl<L> Limited<L> {
    pub fn new(inner: L) -> Self {
        Limited { inner, permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)) }
    }
}

/// A connection and its permit, released when the connection closes.
pub struct LimitedIo<S> {
    io: S,
    _permit: OwnedSemaphorePermit,
}

impl<S> LimitedIo<S> {
    pub fn inner(&self) -> &S {
        &self.io
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LimitedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LimitedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<L: Listener> Listener for Limited<L>
where
    L::Io: Unpin,
{
    type Io = LimitedIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit =
            Arc::clone(&self.permits).acquire_owned().await.expect("the semaphore is never closed");
        let (io, addr) = self.inner.accept().await;
        (LimitedIo { io, _permit: permit }, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Serves the API on a Unix socket until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<Peer>();
    axum::serve(Limited::new(listener), app).with_graceful_shutdown(shutdown).await
}

/// Serves the API on TCP (bearer token required) until `shutdown` resolves.
pub async fn serve_tcp(
    listener: TcpListener,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<Peer>();
    axum::serve(Limited::new(listener), app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_matches_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect();
        let mut served: Vec<(String, String)> =
            route_list().into_iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served, "docs and code disagree: update dataplane/src/openapi.json");
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (m, op) in ops.as_object().unwrap() {
                assert!(op["responses"]["200"].is_object(), "{m} {path} documents no 200");
                assert!(op["summary"].is_string(), "{m} {path} has no summary");
            }
        }
    }
}
