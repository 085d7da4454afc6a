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
use crate::reply::{Reply, ReplyBody, JSON};
use crate::Gateway;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use crate::balance::Pool;
use std::sync::Arc;
use serde_json::{json, Value};

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

/// The request headers routing reads: `X-Model` and `X-Priority`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteHints<'a> {
    /// `X-Model`: overrides the body's `model`.
    pub x_model: Option<&'a str>,
    /// `X-Priority`: overrides the body's `priority`.
    pub x_priority: Option<&'a str>,
}

impl<'a> RouteHints<'a> {
    /// The hints of a header map.
    pub fn of(headers: &'a HeaderMap) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Self { x_model: get("x-model"), x_priority: get("x-priority") }
    }
}

/// A request with its route decided.
struct Routed {
    /// The pool of the resolved model (its name: `pool.model`).
    pool: Arc<Pool>,
    stream: bool,
    run_async: bool,
    priority: Priority,
    endpoint: Endpoint,
    body: Bytes,
}

/// A header value, trimmed, unless empty.
fn present(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
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
        hints: RouteHints<'_>,
        body: Bytes,
        caller: &CallerModels,
        as_job: bool,
    ) -> Result<Routed, GatewayError> {
        let routing = crate::fields::routing(&body)
            .map_err(|e| bad(format!("the body is not a JSON object: {e}")))?;
        let requested: &str = present(hints.x_model)
            .or(routing.model.as_deref())
            .or(self.settings.default_model.as_deref())
            .ok_or_else(|| bad("no model: set `model` in the body or the X-Model header"))?;
        let resolved = self.resolve(requested);
        if !caller.allows(requested, resolved) {
            return Err(GatewayError::downstream(
                ErrorKind::ModelNotAllowed,
                format!("this key may not use the model {requested:?}"),
            ));
        }
        let pool = self.pool(resolved)?;
        let priority = match present(hints.x_priority).or(routing.priority.as_deref()) {
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
        let body = if run_async || routing.model.as_deref() != Some(pool.model.as_str()) {
            rewrite(&body, &pool.model, run_async)?
        } else {
            drop(routing);
            body
        };
        Ok(Routed {
            pool,
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
        self.serve_http(endpoint, headers, body, caller, false).await
    }

    /// `POST /v1/jobs`: queues the body as a job (default endpoint chat) → 202 `{"job_id"}`.
    pub async fn serve_job(
        &self,
        headers: &HeaderMap,
        body: Body,
        caller: &CallerModels,
    ) -> Response {
        self.serve_http(Endpoint::Chat, headers, body, caller, true).await
    }

    /// [`Self::serve_reply`] of a request as axum hands it over (body read within the limits).
    async fn serve_http(&self, endpoint: Endpoint, headers: &HeaderMap, body: Body, caller: &CallerModels, as_job: bool) -> Response {
        let reply = match self.read_body(headers, body).await {
            Ok(bytes) => self.serve_reply(endpoint, RouteHints::of(headers), bytes, caller, as_job).await,
            Err(e) => e.into(),
        };
        reply.into_response()
    }

    /// One request whose body was read (within [`GatewaySettings::max_body_bytes`], headers
    /// within `max_header_bytes`: the caller's checks): routed, forwarded or queued as a job
    /// (`as_job`, or `"async": true` in the body), answered.
    ///
    /// [`GatewaySettings::max_body_bytes`]: crate::GatewaySettings::max_body_bytes
    pub async fn serve_reply(
        &self,
        endpoint: Endpoint,
        hints: RouteHints<'_>,
        body: Bytes,
        caller: &CallerModels,
        as_job: bool,
    ) -> Reply {
        match self.reply_inner(endpoint, hints, body, caller, as_job).await {
            Ok(r) => r,
            Err(e) => e.into(),
        }
    }

    async fn reply_inner(
        &self,
        endpoint: Endpoint,
        hints: RouteHints<'_>,
        body: Bytes,
        caller: &CallerModels,
        as_job: bool,
    ) -> Result<Reply, GatewayError> {
        let r = self.route(endpoint, hints, body, caller, as_job)?;
        if r.run_async {
            let id = self
                .submit_job(r.endpoint, &r.pool.model, r.priority, r.body)
                .await?;
            return Ok(accepted(&id));
        }
        let pool = r.pool;
        let out = Outgoing {
            endpoint: r.endpoint,
            body: r.body,
            stream: r.stream,
            priority: r.priority,
            max_wait: self.settings.queue.max_wait,
            admit: true,
        };
        let (answer, hint) = proxy::forward(self, &pool, out).await?;
        let mut reply = match answer {
            Answer::Stream { status, content_type, relay } => Reply {
                status,
                content_type: content_type.unwrap_or(EVENT_STREAM),
                retry_after: None,
                location: None,
                body: ReplyBody::Stream(relay),
            },
            Answer::Full { status, content_type, body } => Reply {
                content_type: content_type.unwrap_or(JSON),
                ..Reply::json(status, body)
            },
        };
        reply.retry_after = hint;
        Ok(reply)
    }
}

const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

fn accepted(id: &JobId) -> Reply {
    let body = json!({ "job_id": id, "status": "queued" }).to_string();
    Reply {
        location: HeaderValue::from_str(&format!("/v1/jobs/{id}")).ok(),
        ..Reply::json(StatusCode::ACCEPTED, Bytes::from(body))
    }
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
