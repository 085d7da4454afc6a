//! HTTP helpers shared by our server and the peer: bounded waits for a health endpoint, GETs, and
//! the query timing both sides use (the peer scripts' rule: first call, then the median of the next
//! four; a call is timed from sending the request to the last byte of the body).

use crate::bench::proc::{ChildProc, POLL};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Calls per timed query: the first, then the median of the rest.
const QUERY_REPS: usize = 5;

/// A client for loopback calls, keep-alive, generous timeouts (queries over millions of samples).
pub(super) fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().connect_timeout(Duration::from_secs(3)).timeout(Duration::from_secs(300)).build()?)
}

/// GET, failing on a non-2xx answer; returns the body.
pub(super) async fn get_bytes(client: &reqwest::Client, url: &str) -> Result<Bytes> {
    let resp = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp.bytes().await.with_context(|| format!("reading the answer of GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url} answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(500)]).trim());
    }
    Ok(body)
}

/// GET and parse JSON.
pub(super) async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value> {
    let body = get_bytes(client, url).await?;
    serde_json::from_slice(&body).with_context(|| format!("GET {url} answered with a body that is not JSON"))
}

/// A query's timing in ms and its last answer.
#[derive(Debug, Clone)]
pub(super) struct Timed {
    pub(super) first_ms: f64,
    pub(super) median_ms: f64,
    pub(super) body: Bytes,
}

/// Runs the GET [`QUERY_REPS`] times: the first call's time and the median of the others.
pub(super) async fn timed_get(client: &reqwest::Client, url: &str) -> Result<Timed> {
    let mut times = Vec::with_capacity(QUERY_REPS);
    let mut body = Bytes::new();
    for _ in 0..QUERY_REPS {
        let t = Instant::now();
        body = get_bytes(client, url).await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Timed { first_ms: times[0], median_ms: median(&mut times[1..]), body })
}

/// Median (mean of the middle two for an even count); 0 when empty.
pub(super) fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Polls `url` every [`POLL`] until it answers 2xx, at most `limit`, failing early when the
/// process that should serve it has exited.
pub(super) async fn wait_healthy(client: &reqwest::Client, url: &str, proc: &mut ChildProc, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        proc.ensure_running()?;
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(2)).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within {limit:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
