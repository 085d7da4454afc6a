//! The HTTP API of gpufleet (axum). It turns requests into calls on the `Broker`, `MetricStore` and
//! telemetry services it is handed in [`AppState`], and their answers into JSON, CSV, Parquet or
//! Prometheus text. It holds no business logic and picks no backend.
//!
//! # Layout
//! - [`app`]: builds the router from an [`AppState`] (separate from `main` so tests use `oneshot`).
//! - [`ApiService`] (`fast`): what the listener serves: the inference calls straight to the
//!   gateway (guard, security headers), everything else through [`app`].
//! - [`lane`]: the inference lane: plain-TCP connections start there (inference calls served
//!   without hyper); the first other request hands the connection to hyper ([`lane::Handoff`]).
//! - [`state`]: [`AppState`] and [`ApiSettings`].
//! - [`auth`]: the security middleware (headers, request ids, guard, audit of changes).
//! - [`error`]: [`ApiError`], the one place domain errors become HTTP statuses.
//! - [`params`]: query-string parsing that names the bad parameter.
//! - `routes/`: one module per resource (`system`, `gpus`, `ingest`, `broker`, `export`), each
//!   exposing `router()`.
//! - `openapi.json`: the OpenAPI document served at `/api/v1/openapi.json`; a test checks it lists
//!   every route.

pub mod auth;
pub mod error;
mod fast;
pub mod lane;
pub mod params;
mod prom;
mod routes;
pub mod state;

pub use error::ApiError;
pub use fast::ApiService;
pub use routes::{app, audited, guard_of, Guard, RouteSpec, ROUTES};
pub use state::{ApiSettings, AppState};
