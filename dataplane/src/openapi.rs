//! The control API's OpenAPI 3.1 document, generated: its paths from the
//! router's route list (`api::route_list`), its schemas from the very types
//! the handlers parse and answer with (schemars reads their serde
//! attributes: renames, tags, flattening, defaults, `deny_unknown_fields`).
//! A route without an entry here, or an entry without a route, fails the
//! tests; so does a served or accepted document its schema does not admit.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::api_types::{
    Applied, CaptureRequest, Counters, ErrorBody, OffloadView, RuleView, Status, TunnelStatus,
    VfView, WhyReport, WhyRequest,
};

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// What a route answers with on success.
#[derive(Clone, Copy)]
pub enum Answer {
    Json(SchemaFn),
    /// A pcapng stream (`POST /v1/capture`).
    Pcapng,
    /// Prometheus / OpenMetrics text.
    Metrics,
    /// The document itself (an object that is no type of ours).
    OpenApi,
}

/// One operation: the route, and what it takes and gives.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// The JSON body it takes, if any.
    pub request: Option<SchemaFn>,
    /// Required query parameters: (name, description).
    pub query: &'static [(&'static str, &'static str)],
    pub answer: Answer,
    /// Refusals besides those every request can get: (status, when).
    pub refusals: &'static [(u16, &'static str)],
}

const CLUSTER: &[(u16, &str)] = &[(404, "not in cluster mode (no [cluster] section)")];

const CLUSTER_WRITE: &[(u16, &str)] = &[
    (404, "not in cluster mode, or an unknown network or endpoint"),
    (409, "the store holds a conflicting record (another network's VNI, another node's endpoint)"),
    (422, "a field is invalid; `path` names it"),
    (502, "the store refused the write"),
    (503, "degraded: the store is unreachable; the write was not sent"),
    (504, "the store did not answer in time; the write may still commit"),
];

const WRITE: &[(u16, &str)] = &[
    (409, "the change was based on a stale generation; nothing changed"),
    (422, "the result would be invalid; `path` names the field"),
];

/// Every operation the API serves.
pub fn operations() -> Vec<Operation> {
    use Answer::*;
    let op = |method, path, summary, request, answer| Operation {
        method,
        path,
        summary,
        request,
        query: &[],
        answer,
        refusals: &[],
    };
    vec![
        op("GET", "/v1/status", "Version, uptime, generation, I/O, tunnels and offload", None, Json(of::<Status>)),
        op("GET", "/v1/config", "The accepted configuration (ETag: its generation)", None, Json(of::<engine::model::Config>)),
        Operation {
            refusals: WRITE,
            ..op("PUT", "/v1/config", "Replace the configuration (If-Match or `generation`: the generation it is based on)", Some(of::<engine::model::Config>), Json(of::<Applied>))
        },
        Operation {
            refusals: WRITE,
            ..op("POST", "/v1/config/ops", "Apply a batch of operations, all or nothing", Some(of::<engine::ops::Batch>), Json(of::<Applied>))
        },
        op("GET", "/v1/rules", "The rules, each with where it runs", None, Json(of::<Vec<RuleView>>)),
        op("GET", "/v1/tunnels", "The configured tunnels", None, Json(of::<Vec<engine::model::Tunnel>>)),
        op("GET", "/v1/tunnels/status", "Each tunnel's traffic, drops, liveness and next hop", None, Json(of::<Vec<TunnelStatus>>)),
        op("GET", "/v1/ports", "The configured ports", None, Json(of::<Vec<engine::model::Port>>)),
        op("GET", "/v1/fdb", "The static FDB entries", None, Json(of::<Vec<engine::model::FdbEntry>>)),
        op("GET", "/v1/flood", "The flood lists", None, Json(of::<Vec<engine::model::FloodList>>)),
        op(
            "GET",
            "/v1/fdb/learned",
            "Learned MACs and IP bindings of the networks that learn, with their ages, and the learning and ARP/ND suppression counters",
            None,
            Json(of::<engine::learn::L2View>),
        ),
        op("GET", "/v1/counters", "Packet, drop, port, tunnel and rule counters", None, Json(of::<Counters>)),
        op("GET", "/v1/offload", "The offloader's state and where each rule runs", None, Json(of::<OffloadView>)),
        Operation {
            query: &[("pf", "the physical function's interface")],
            refusals: &[(422, "the interface cannot be read"), (503, "offload is not active (control only)")],
            ..op("GET", "/v1/offload/vfs", "A physical function's VFs and representors", None, Json(of::<VfView>))
        },
        Operation {
            refusals: &[(422, "no such port, or the packet cannot be built")],
            ..op("POST", "/v1/trace", "Explain one packet's path through the live rules", Some(of::<crate::api_types::TraceRequest>), Json(of::<engine::trace::TraceReport>))
        },
        Operation {
            refusals: &[(422, "an address or port cannot be understood; `path` names it")],
            ..op("POST", "/v1/why", "Whether one address reaches another, and if not what stops it", Some(of::<WhyRequest>), Json(of::<WhyReport>))
        },
        Operation {
            refusals: &[
                (409, "another capture is running"),
                (422, "a filter names nothing that exists"),
                (503, "no datapath (control only, or down)"),
            ],
            ..op("POST", "/v1/capture", "Record live packets, with their fate, as a pcapng stream", Some(of::<CaptureRequest>), Pcapng)
        },
        Operation {
            refusals: CLUSTER,
            ..op("GET", "/v1/cluster/status", "Cluster mode: this node's standing with the store", None, Json(of::<crate::cluster::agent::ClusterStatus>))
        },
        Operation {
            refusals: CLUSTER,
            ..op("GET", "/v1/cluster/nodes", "Cluster mode: the nodes in this node's view of the store", None, Json(of::<Vec<crate::cluster::agent::NodeView>>))
        },
        Operation {
            refusals: CLUSTER,
            ..op("GET", "/v1/cluster/networks", "Cluster mode: the networks in the store", None, Json(of::<Vec<crate::cluster::agent::NetworkView>>))
        },
        Operation {
            refusals: CLUSTER,
            ..op("GET", "/v1/cluster/endpoints", "Cluster mode: the endpoints in the store", None, Json(of::<Vec<crate::cluster::agent::EndpointView>>))
        },
        Operation {
            refusals: CLUSTER_WRITE,
            ..op("PUT", "/v1/cluster/networks/{name}", "Cluster mode: create or replace a network in the store", Some(of::<crate::cluster::http::NetworkRequest>), Json(of::<serde_json::Value>))
        },
        Operation {
            refusals: CLUSTER_WRITE,
            ..op("POST", "/v1/cluster/endpoints", "Cluster mode: register an endpoint in the store", Some(of::<crate::cluster::http::EndpointRequest>), Json(of::<crate::cluster::agent::EndpointView>))
        },
        Operation {
            refusals: CLUSTER_WRITE,
            ..op("POST", "/v1/cluster/endpoints/delete", "Cluster mode: remove an endpoint from the store", Some(of::<crate::cluster::http::DeleteRequest>), Json(of::<serde_json::Value>))
        },
        Operation {
            refusals: &[
                (409, "another upgrade is under way"),
                (422, "`binary` is not an absolute path to an executable file, or `timeout_secs` is out of range; `path` names the field"),
                (502, "the new binary failed to start or to take over; the running overlayd serves on (the error says why)"),
                (503, "nothing to hand over: control only, or --no-pin"),
            ],
            ..op("POST", "/v1/upgrade", "Planned upgrade: start a new binary with this overlayd's arguments plus --take-over and wait for the handover", Some(of::<crate::upgrade_launch::UpgradeRequest>), Json(of::<crate::upgrade_launch::UpgradeReport>))
        },
        op("GET", "/v1/openapi.json", "This document", None, OpenApi),
        op("GET", "/metrics", "Counters for Prometheus (OpenMetrics text)", None, Metrics),
    ]
}

/// The refusals any request can get, and those only writes can get.
const ANY: &[(u16, &str)] = &[
    (400, "the request is malformed: bad JSON, a wrong field, bad HTTP"),
    (401, "TCP: no bearer token, or a wrong one"),
    (403, "a uid not allowed on the socket, or a read-only token for a write"),
    (405, "the method is not allowed on this resource"),
    (414, "the request target is too long"),
    (431, "the request head is too large"),
];
const WRITES: &[(u16, &str)] = &[
    (413, "the body is larger than the limit"),
    (415, "a write must carry Content-Type: application/json"),
];

/// The whole document.
pub fn document() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut g = settings.into_generator();
    let error = of::<ErrorBody>(&mut g);
    let mut paths = Map::new();
    for o in operations() {
        let mut responses = Map::new();
        let ok = match o.answer {
            Answer::Json(f) => json!({ "application/json": { "schema": f(&mut g) } }),
            Answer::Pcapng => {
                json!({ "application/x-pcapng": { "schema": { "type": "string", "format": "binary" } } })
            }
            Answer::Metrics => {
                json!({ "application/openmetrics-text": { "schema": { "type": "string" } } })
            }
            Answer::OpenApi => json!({ "application/json": { "schema": { "type": "object" } } }),
        };
        responses.insert("200".into(), json!({ "description": "done", "content": ok }));
        let writes = matches!(o.method, "PUT" | "POST" | "PATCH");
        let general = ANY.iter().chain(if writes { WRITES } else { &[] });
        for (code, _) in general {
            responses.insert(code.to_string(), json!({ "$ref": "#/components/responses/Error" }));
        }
        for (code, why) in o.refusals {
            let content = json!({ "application/json": { "schema": error.clone() } });
            responses.insert(code.to_string(), json!({ "description": why, "content": content }));
        }
        let mut operation = json!({ "summary": o.summary, "responses": responses });
        if let Some(f) = o.request {
            operation["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": f(&mut g) } },
            });
        }
        if !o.query.is_empty() {
            operation["parameters"] = o
                .query
                .iter()
                .map(|(name, d)| json!({ "name": name, "in": "query", "required": true, "description": d, "schema": { "type": "string" } }))
                .collect();
        }
        // Path parameters: `{name}` segments.
        let in_path: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if !in_path.is_empty() {
            let mut all = operation["parameters"].as_array().cloned().unwrap_or_default();
            all.extend(in_path);
            operation["parameters"] = Value::Array(all);
        }
        let entry = paths.entry(o.path).or_insert_with(|| json!({}));
        entry[o.method.to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "overlayd control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Served on the daemon's Unix socket (the peer's uid is checked) and, with a token file, on TCP with a bearer token (read-write, or read-only: GET, trace, why). docs/api.md describes the semantics.",
        },
        "security": [{}, { "bearer": [] }],
        "paths": paths,
        "components": {
            "schemas": g.take_definitions(true),
            "responses": {
                "Error": {
                    "description": "refused; `error` says why, `path` names the field at fault",
                    "content": { "application/json": { "schema": error } },
                },
            },
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
    })
}

/// The schema an operation's answer (or, with `request`, its body) must
/// satisfy, as a document a JSON Schema validator takes: a `$ref` into the
/// whole OpenAPI document it carries along.
pub fn schema_of(doc: &Value, method: &str, path: &str, request: bool) -> Option<Value> {
    let op = &doc["paths"][path][method.to_lowercase()];
    let schema = if request {
        &op["requestBody"]["content"]["application/json"]["schema"]
    } else {
        &op["responses"]["200"]["content"]["application/json"]["schema"]
    };
    if schema.is_null() {
        return None;
    }
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
    Some(root)
}

/// The schema of an error answer, likewise.
pub fn error_schema(doc: &Value) -> Value {
    let mut root =
        doc["components"]["responses"]["Error"]["content"]["application/json"]["schema"].clone();
    root["components"] = doc["components"].clone();
    root
}
