//! The control API: HTTP/JSON under `/v1/`, served on a Unix socket. Every
//! request's peer uid (SO_PEERCRED) must be in the allowed list. Errors are
//! JSON `{ "error": ..., "path": ... }` with a 4xx status that says what kind
//! of mistake it was; writes carry the generation they were based on and a
//! stale one gets 409 with nothing changed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put, MethodRouter};
use axum::{Json, Router};
use serde::Serialize;

use axum::extract::Request;
use axum::middleware::Next;

use crate::api_types::{
    Applied, Counters, ErrorBody, OffloadStatus, OffloadView, PlacedRule, Placement, RuleView,
    Status, TunnelStatus, VfView, WhyReport, WhyRequest,
};
use crate::daemon::{ApplyError, Daemon};
use engine::model::{Config, ConfigError};
use engine::trace::{trace_steps, TraceContext, TraceReport};

pub use crate::api_refusal::MAX_BODY;
pub use crate::api_state::{ApiState, Peer};
pub use crate::api_types::TraceRequest;

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
        (self.status, Json(ErrorBody { error: self.error, path: self.path })).into_response()
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

/// Whether a request presents a token the daemon accepts (either kind).
pub fn token_ok(headers: &HeaderMap, s: &ApiState) -> bool {
    use crate::api_tokens::Access;
    matches!(s.tokens.access(headers), Access::ReadWrite | Access::ReadOnly)
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
            use crate::api_tokens::{is_read, Access};
            match s.tokens.access(req.headers()) {
                Access::ReadWrite => {}
                Access::ReadOnly if is_read(req.method(), req.uri().path()) => {}
                Access::ReadOnly => {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "this token is read-only: it may read and scrape /metrics, not change the configuration or capture packets",
                    ))
                }
                Access::Missing => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "a bearer token is required (Authorization: Bearer ...)",
                    ))
                }
                Access::Wrong => {
                    return Err(ApiError::new(StatusCode::UNAUTHORIZED, "the bearer token is wrong"))
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

async fn status(State(s): Api) -> Result<Json<Status>, ApiError> {
    let io = s.daemon.io_status();
    let (rs, counters, now) = s.daemon.observe();
    let tunnels = s.daemon.tunnels_of(&rs, &counters, now, io.as_ref());
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        api: "v1".into(),
        uptime_secs: s.daemon.uptime_secs(),
        generation: s.daemon.generation(),
        io,
        offload: offload_status(&s),
        tunnels,
        cluster: s.daemon.cluster().and_then(|a| a.degraded()),
        memory: s.daemon.memory(),
    }))
}

fn offload_status(s: &ApiState) -> OffloadStatus {
    match s.daemon.offload() {
        Some(o) => o.status(),
        None => {
            let c = s.daemon.config();
            OffloadStatus {
                why: Some("control only: no interface attached".into()),
                enabled: c.offload.enabled,
                software_rules: c.rules.len(),
                ..OffloadStatus::default()
            }
        }
    }
}

/// Where each rule of the published rule set runs, in its order; without
/// an offloader every rule is in software.
fn placed_rules(s: &ApiState) -> Vec<PlacedRule> {
    match s.daemon.offload() {
        Some(o) => o
            .placement()
            .iter()
            .map(|p| PlacedRule { id: p.rule, priority: p.priority, placement: p.into() })
            .collect(),
        None => s
            .daemon
            .rules()
            .rules
            .iter()
            .map(|r| PlacedRule {
                id: r.id,
                priority: r.priority,
                placement: Placement::software("inactive", "offload is not active (control only)"),
            })
            .collect(),
    }
}

/// The rules, each with where it runs and, in software, why not hardware.
async fn rules(State(s): Api) -> Result<Response, ApiError> {
    let c = s.daemon.config();
    let mut place: HashMap<u32, Placement> =
        placed_rules(&s).into_iter().map(|p| (p.id, p.placement)).collect();
    let mut tier = crate::tier_place::rules(&s.daemon.rules(), &trace_context(&s.daemon));
    let list: Vec<RuleView> = c
        .rules
        .iter()
        .map(|r| RuleView {
            rule: r.clone(),
            placement: place.remove(&r.id),
            tier: tier.remove(&r.id),
        })
        .collect();
    Ok(([("etag", format!("\"{}\"", c.generation))], Json(list)).into_response())
}

async fn offload(State(s): Api) -> Result<Json<OffloadView>, ApiError> {
    Ok(Json(OffloadView { status: offload_status(&s), rules: placed_rules(&s) }))
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
) -> Result<Json<VfView>, ApiError> {
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
        error: e.to_string(),
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
) -> Result<Json<Applied>, ApiError> {
    let new: Config = parse(&body)?;
    let base = based_on(&headers, new.generation)?;
    let generation = s.daemon.apply(new, base)?;
    Ok(Json(Applied { generation }))
}

async fn post_ops(
    State(s): Api,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Applied>, ApiError> {
    let batch: engine::ops::Batch = parse(&body)?;
    let base = based_on(&headers, batch.generation)?;
    let generation = s.daemon.apply_ops(&batch.ops, base)?;
    Ok(Json(Applied { generation }))
}

/// One collection of the configuration (tunnels, ports, ...), read-only.
async fn collection<T: Serialize>(s: Arc<ApiState>, pick: fn(Config) -> T) -> Response {
    let c = s.daemon.config();
    let etag = format!("\"{}\"", c.generation);
    ([("etag", etag)], Json(pick(c))).into_response()
}

async fn counters(State(s): Api) -> Result<Json<Counters>, ApiError> {
    Ok(Json(s.daemon.counters_view()))
}

async fn learned_fdb(State(s): Api) -> Json<engine::learn::L2View> {
    Json(s.daemon.learning().view())
}

async fn trace(State(s): Api, body: Bytes) -> Result<Json<TraceReport>, ApiError> {
    let req: TraceRequest = parse(&body)?;
    let rs = s.daemon.rules();
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
    let cx = trace_context(&s.daemon);
    let (steps, mut report) = trace_steps(Arc::clone(&rs), &cx, port, &frame, 0);
    crate::tier_place::add_to_trace(&rs, &cx, port, &steps, &mut report);
    Ok(Json(report))
}

/// What the workers run with right now, and what explains it: the trace
/// runs with the same next hops and interface MACs, and says where rules run.
fn trace_context(d: &Daemon) -> TraceContext {
    let placement = d.offload().map(|o| o.placement()).unwrap_or_default();
    let mut cx = match d.live_inputs() {
        Some(w) => w.trace_context(placement),
        None => TraceContext { placement, ..TraceContext::default() },
    };
    cx.learned = Some(d.learning().snapshot());
    cx.backends = d.io_status().map(|io| io.backends()).unwrap_or_default();
    cx
}

/// `POST /v1/capture`: arms a live capture and streams it as pcapng until
/// its count or duration is reached or the client goes away. The answer's
/// status comes first, so a refused filter is a JSON error as usual.
async fn capture(State(s): Api, body: Bytes) -> Result<Response, ApiError> {
    use crate::api_types::CaptureRequest;
    use crate::capture::{Bounds, CaptureError, Session};

    let req: CaptureRequest = parse(&body)?;
    let unavailable = |m: &str| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m);
    let io = s.daemon.io_status().ok_or_else(|| {
        unavailable("no packet moves: overlayd runs control only, there is nothing to capture")
    })?;
    if !io.running {
        return Err(unavailable("the datapath is down (see the daemon's log): nothing to capture"));
    }
    let refused = |e: CaptureError| {
        let status = match e {
            CaptureError::Busy => StatusCode::CONFLICT,
            CaptureError::Closed => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError { status, path: e.path(), error: e.to_string() }
    };
    let session = Arc::new(Session::new(&s.daemon.rules(), &req).map_err(refused)?);
    let tap = s.daemon.capture_tap();
    tap.arm(Arc::clone(&session)).map_err(refused)?;
    // Ports the XDP tier serves: it pauses while the capture runs (run.rs),
    // and the file says so, port by port.
    let tiered = |port: &str| {
        io.tier
            .as_ref()
            .is_some_and(|t| t.ports.iter().any(|p| p.port == port && p.entries.is_some()))
    };
    let describe: HashMap<String, String> = io
        .ports
        .iter()
        .map(|p| {
            let kind = serde_json::to_value(p.kind).ok().and_then(|v| v.as_str().map(String::from));
            let mut desc = format!(
                "overlayd port {} ({}) on {}",
                p.port,
                kind.unwrap_or_default(),
                p.interface
            );
            if tiered(&p.port) {
                desc +=
                    "; the XDP tier paused for this capture: every packet took the software path";
            }
            (p.port.clone(), desc)
        })
        .collect();
    let bounds = Bounds {
        count: req.count,
        duration: req.duration_ms.map(std::time::Duration::from_millis),
    };
    tracing::info!(filter = ?req, "capture started");
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    tokio::task::spawn_blocking(move || {
        let describe = |p: &str| describe.get(p).cloned().unwrap_or_default();
        let n = crate::capture::stream(&tap, session, bounds, describe, |chunk| {
            tx.blocking_send(chunk).is_ok()
        });
        tracing::info!(packets = n, "capture ended");
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), rx))
    });
    let body = axum::body::Body::from_stream(chunks);
    Ok(([("content-type", "application/x-pcapng")], body).into_response())
}

async fn metrics(State(s): Api) -> Result<Response, ApiError> {
    // One reading of everything, so the series agree with each other.
    let io = s.daemon.io_status();
    let (rs, counters, now) = s.daemon.observe();
    let tunnels = s.daemon.tunnels_of(&rs, &counters, now, io.as_ref());
    let live = crate::metrics::Live { tunnels: &tunnels, io, memory: s.daemon.memory() };
    let text = crate::metrics::encode_metrics(&rs, &counters, s.daemon.uptime_secs(), &live);
    Ok(([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response())
}

// --- tunnel status: traffic, drops and liveness per tunnel ---

async fn tunnel_status(State(s): Api) -> Result<Json<Vec<TunnelStatus>>, ApiError> {
    Ok(Json(s.daemon.tunnel_status()))
}

// --- end of tunnel status ---

// --- why: the path between two addresses, or what blocks it ---

async fn why(State(s): Api, body: Bytes) -> Result<Json<WhyReport>, ApiError> {
    let req: WhyRequest = parse(&body)?;
    let d = Arc::clone(&s.daemon);
    // Reading the I/O's status and offloaded counters asks the kernel.
    let r = tokio::task::spawn_blocking(move || d.why(&req))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    r.map(Json).map_err(|e| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        error: e.to_string(),
        path: Some(e.field().into()),
    })
}

// --- end of why ---

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such resource; the API lives under /v1/")
}

/// The OpenAPI document, generated from `routes()` and the types
/// (`crate::openapi`), once.
pub fn openapi_document() -> &'static serde_json::Value {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DOC.get_or_init(crate::openapi::document)
}

async fn openapi() -> Response {
    Json(openapi_document()).into_response()
}

/// Every route: (method, path, handler). The router is built from this list
/// and the test compares it with the OpenAPI document in both directions.
fn routes() -> Vec<(&'static str, &'static str, MethodRouter<Arc<ApiState>>)> {
    let mut v = vec![
        ("GET", "/v1/status", get(status)),
        ("GET", "/v1/config", get(get_config)),
        ("PUT", "/v1/config", put(put_config)),
        ("POST", "/v1/config/ops", post(post_ops)),
        ("GET", "/v1/rules", get(rules)),
        ("GET", "/v1/tunnels", get(|State(s): Api| collection(s, |c| c.tunnels))),
        ("GET", "/v1/tunnels/status", get(tunnel_status)),
        ("GET", "/v1/ports", get(|State(s): Api| collection(s, |c| c.ports))),
        ("GET", "/v1/fdb", get(|State(s): Api| collection(s, |c| c.fdb))),
        ("GET", "/v1/fdb/learned", get(learned_fdb)),
        ("GET", "/v1/flood", get(|State(s): Api| collection(s, |c| c.flood))),
        ("GET", "/v1/counters", get(counters)),
        ("GET", "/v1/offload", get(offload)),
        ("GET", "/v1/offload/vfs", get(vfs)),
        ("POST", "/v1/trace", post(trace)),
        ("POST", "/v1/why", post(why)),
        ("POST", "/v1/capture", post(capture)),
        ("GET", "/v1/openapi.json", get(openapi)),
        ("GET", "/metrics", get(metrics)),
    ];
    v.extend(crate::cluster::http::routes());
    v.extend(crate::upgrade_http::routes());
    v
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
        .layer(axum::middleware::from_fn(crate::api_refusal::require_json))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), authorize))
        .layer(axum::middleware::from_fn(crate::api_refusal::json_refusals))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_matches_the_routes() {
        let doc = openapi_document();
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
        assert_eq!(documented, served, "routes and crate::openapi::operations disagree");
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (m, op) in ops.as_object().unwrap() {
                assert!(op["responses"]["200"].is_object(), "{m} {path} documents no 200");
                assert!(op["summary"].is_string(), "{m} {path} has no summary");
                // The refusals any request can get, and those of writes.
                let mut refusals = vec!["400", "401", "403", "405", "414", "431"];
                if matches!(m.as_str(), "put" | "post" | "patch") {
                    refusals.extend(["413", "415"]);
                    assert!(
                        op["requestBody"].is_object() || path == "/v1/capture",
                        "{m} {path} documents no body"
                    );
                }
                for code in refusals {
                    assert_eq!(
                        op["responses"][code]["$ref"], "#/components/responses/Error",
                        "{m} {path} does not document the JSON refusal {code}"
                    );
                }
            }
        }
        // Every reference resolves.
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"#/components/").skip(1) {
            let target = r.split('"').next().unwrap();
            let (kind, name) = target.split_once('/').unwrap();
            assert!(doc["components"][kind][name].is_object(), "dangling $ref {target}");
        }
    }

    /// `value` as the daemon sends it satisfies the schema documented for
    /// the answer of `method path`.
    fn admitted<T: Serialize>(method: &str, path: &str, value: T) {
        let doc = openapi_document();
        let schema = crate::openapi::schema_of(doc, method, path, false).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let value = serde_json::to_value(value).unwrap();
        let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{method} {path}: {errors:?}\n{value:#}");
    }

    #[test]
    fn openapi_schemas_admit_the_documents_sent() {
        let offload =
            OffloadStatus { why: Some("control only".into()), ..OffloadStatus::default() };
        admitted(
            "GET",
            "/v1/status",
            Status {
                version: "0".into(),
                api: "v1".into(),
                uptime_secs: 0,
                generation: 0,
                io: None,
                offload: offload.clone(),
                tunnels: vec![],
                cluster: Some(
                    "degraded: store unreachable since 2026-11-27T00:00:00Z (3 s)".into(),
                ),
                memory: crate::api_types::MemoryStatus {
                    resident_kib: 2,
                    anon_kib: 1,
                    purges: 3,
                    at_ms: 4,
                },
            },
        );
        admitted("GET", "/v1/counters", Counters::default());
        admitted("GET", "/v1/fdb/learned", engine::learn::L2View::default());
        let why = crate::why::why(
            Arc::new(engine::compile::compile(&Config::default()).unwrap()),
            &crate::why::Observed::offline(),
            &WhyRequest {
                from: "198.51.100.1".into(),
                to: "198.51.100.2".into(),
                ..Default::default()
            },
        )
        .unwrap();
        admitted("POST", "/v1/why", why);
        admitted(
            "GET",
            "/v1/offload",
            OffloadView {
                status: offload,
                rules: vec![PlacedRule {
                    id: 1,
                    priority: 2,
                    placement: Placement::Hardware { device: "rep0".into(), pref: 1, handle: 2 },
                }],
            },
        );
        admitted(
            "GET",
            "/v1/offload/vfs",
            VfView {
                pf: "eth0".into(),
                sriov: crate::api_types::Sriov::Counts { num_vfs: 0, total_vfs: 0 },
                num_vf: 0,
                vfs: vec![],
                switch_id: None,
                representors: crate::api_types::Representors::Found(vec![]),
            },
        );
    }

    /// A document the schema forbids is refused by the validator: the test
    /// above would catch a field the schema lacks.
    #[test]
    fn openapi_schemas_refuse_unknown_fields_where_the_api_does() {
        let doc = openapi_document();
        let schema = crate::openapi::schema_of(doc, "PUT", "/v1/config", true).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let mut c = Config::default();
        c.offload.enabled = true;
        let mut config = serde_json::to_value(c).unwrap();
        assert!(config.get("offload").is_some(), "{config}");
        assert!(
            v.is_valid(&config),
            "{:?}",
            v.iter_errors(&config).map(|e| e.to_string()).collect::<Vec<_>>()
        );
        config["offlaod"] = serde_json::json!({});
        assert!(!v.is_valid(&config), "a misspelt field is refused by the daemon and the schema");
    }
}
