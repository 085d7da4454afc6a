//! From an HTTP request to a forwarded one: size limits, the routing fields of the body (parsed
//! as far as routing needs: `model`, `stream`, `async`, `priority`, and `endpoint` for jobs), the
//! model (header `X-Model` over body `model` over `default_model`; aliases resolved), the
//! caller's allowed models ([`CallerModels`]), the priority (`X-Priority` over body `priority`),
//! and the answer. The body is passed on byte for byte unless the model name sent upstream must
//! change (alias or `X-Model`) or it becomes a job (then `stream`, `async`, `priority` and
//! `endpoint` are removed).

use crate::error::{ErrorKind, GatewayError};
use crate::jobs::JobId;
use crate::proxy::{self, Answer, Endpoint, Outgoing};
use crate::queue::Priority;
use crate::Gateway;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

/// The models the caller's key may use, inserted as a request extension by the API's
/// authentication layer. `None` (or no extension) allows every model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallerModels(pub Option<Vec<String>>);

impl CallerModels {
    /// Whether the caller may use a model asked for as `requested` that resolves to `resolved`.
    pub fn allows(&self, requested: &str, resolved: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|list| list.iter().any(|m| m == requested || m == resolved))
    }
}

#[derive(Deserialize)]
struct Routing {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, rename = "async")]
    run_async: Option<bool>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    endpoint: Option<Endpoint>,
}

/// A request with its route decided.
struct Routed {
    model: String,
    stream: bool,
    run_async: bool,
    priority: Priority,
    endpoint: Endpoint,
    body: Bytes,
}

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::downstream(ErrorKind::BadRequest, message)
}

impl Gateway {
    /// Reads the body within the size limit and checks the header size.
    pub(crate) async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Bytes, GatewayError> {
        let header_bytes: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > self.settings.max_header_bytes {
            return Err(GatewayError::downstream(
                ErrorKind::HeadersTooLarge,
                format!(
                    "request headers exceed {} bytes",
                    self.settings.max_header_bytes
                ),
            ));
        }
        axum::body::to_bytes(body, self.settings.max_body_bytes)
            .await
            .map_err(|_| {
                GatewayError::downstream(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "request body exceeds {} bytes",
                        self.settings.max_body_bytes
                    ),
                )
            })
    }

    fn route(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        body: Bytes,
        caller: &CallerModels,
        as_job: bool,
    ) -> Result<Routed, GatewayError> {
        let routing: Routing = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("the body is not a JSON object: {e}")))?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let requested = header("x-model")
            .map(str::to_owned)
            .or(routing.model.clone())
            .or_else(|| self.settings.default_model.clone())
            .ok_or_else(|| bad("no model: set `model` in the body or the X-Model header"))?;
        let model = self.resolve(&requested).to_owned();
        if !caller.allows(&requested, &model) {
            return Err(GatewayError::downstream(
                ErrorKind::ModelNotAllowed,
                format!("this key may not use the model {requested:?}"),
            ));
        }
        self.pool(&model)?;
        let priority = match header("x-priority").or(routing.priority.as_deref()) {
            Some(p) => p.parse()?,
            None => Priority::Normal,
        };
        let endpoint = if as_job {
            routing.endpoint.unwrap_or(endpoint)
        } else {
            endpoint
        };
        let run_async = as_job || routing.run_async.unwrap_or(false);
        let stream =
            !run_async && endpoint != Endpoint::Embeddings && routing.stream.unwrap_or(false);
        let body = if run_async || routing.model.as_deref() != Some(model.as_str()) {
            rewrite(&body, &model, run_async)?
        } else {
            body
        };
        Ok(Routed {
            model,
            stream,
            run_async,
            priority,
            endpoint,
            body,
        })
    }

    /// Serves one OpenAI request (`endpoint`), or queues it as a job when it says `"async": true`.
    pub async fn serve(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        body: Body,
        caller: &CallerModels,
    ) -> Response {
        match self
            .serve_inner(endpoint, headers, body, caller, false)
            .await
        {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        }
    }

    /// `POST /v1/jobs`: queues the body as a job (default endpoint chat) → 202 `{"job_id"}`.
    pub async fn serve_job(
        &self,
        headers: &HeaderMap,
        body: Body,
        caller: &CallerModels,
    ) -> Response {
        match self
            .serve_inner(Endpoint::Chat, headers, body, caller, true)
            .await
        {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        }
    }

    async fn serve_inner(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        body: Body,
        caller: &CallerModels,
        as_job: bool,
    ) -> Result<Response, GatewayError> {
        let bytes = self.read_body(headers, body).await?;
        let r = self.route(endpoint, headers, bytes, caller, as_job)?;
        if r.run_async {
            let id = self
                .submit_job(r.endpoint, &r.model, r.priority, r.body)
                .await?;
            return Ok(accepted(&id));
        }
        let pool = self.pool(&r.model)?;
        let out = Outgoing {
            endpoint: r.endpoint,
            body: r.body,
            stream: r.stream,
            priority: r.priority,
            deadline: Instant::now() + self.settings.queue.max_wait,
            admit: true,
        };
        let (answer, hint) = proxy::forward(self, &pool, out).await?;
        let mut resp = match answer {
            Answer::Stream(resp) => resp,
            Answer::Full {
                status,
                content_type,
                body,
            } => {
                let mut resp = Response::new(Body::from(body));
                *resp.status_mut() = status;
                // Room for the API layer's security headers without regrowing the map.
                resp.headers_mut().reserve(8);
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    content_type.unwrap_or(HeaderValue::from_static("application/json")),
                );
                resp
            }
        };
        if let Some(secs) = hint {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        Ok(resp)
    }
}

fn accepted(id: &JobId) -> Response {
    let mut resp = (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "job_id": id, "status": "queued" })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Sets the model sent upstream; for a job also drops the gateway-only fields and streaming.
fn rewrite(body: &[u8], model: &str, as_job: bool) -> Result<Bytes, GatewayError> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not a JSON object: {e}")))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| bad("the body is not a JSON object"))?;
    obj.insert("model".into(), Value::String(model.to_owned()));
    if as_job {
        for k in ["async", "priority", "endpoint", "stream"] {
            obj.remove(k);
        }
    }
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| GatewayError::internal(ErrorKind::Internal, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_models_allow_by_requested_or_resolved_name() {
        assert!(CallerModels(None).allows("a", "b"));
        let only = CallerModels(Some(vec!["qwen".into()]));
        assert!(only.allows("gpt-4o-mini", "qwen"));
        assert!(!only.allows("llama", "llama"));
    }

    #[test]
    fn job_bodies_lose_gateway_fields() {
        let out = rewrite(
            br#"{"model":"alias","stream":true,"async":true,"priority":"low","messages":[]}"#,
            "real",
            true,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, json!({"model": "real", "messages": []}));
    }
}
