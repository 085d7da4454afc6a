//! The dictionary: ids of GPUs, metrics and series, cached per store so a warm write touches no
//! dictionary table. Unknown entries (and GPU descriptions that changed, which are stored as
//! the latest) are upserted in their own short statements, in key order, before the data
//! transaction; ids never change once assigned, so the cache never goes stale.

use super::conn::db_err;
use super::PostgresStore;
use crate::StoreError;
use gpufleet_core::{GpuDesc, GpuUuid, HostName, MetricName, SampleBatch};
use std::collections::HashMap;

/// Cached ids.
#[derive(Default)]
pub(crate) struct Dict {
    /// `(host, uuid)` → id and the description last stored.
    gpus: HashMap<(HostName, GpuUuid), (i32, GpuDesc)>,
    /// Metric name → id.
    metrics: HashMap<MetricName, i32>,
    /// `(gpu id, metric id)` → series id.
    series: HashMap<(i32, i32), i32>,
}

/// Labels as stored in `gpus.labels`: a JSON array of `[key, value]` pairs.
pub(crate) fn labels_json(labels: &[(String, String)]) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "[]".into())
}

/// Inverse of [`labels_json`].
pub(crate) fn parse_labels(s: &str) -> Result<Vec<(String, String)>, StoreError> {
    serde_json::from_str(s)
        .map_err(|e| StoreError::Corrupt(format!("postgres: gpus.labels is not a label list: {e}")))
}

/// Upserts GPU descriptions (one per `(host, uuid)`), returning their ids.
async fn upsert_gpus(
    store: &PostgresStore,
    descs: &[&GpuDesc],
) -> Result<Vec<(String, String, i32)>, StoreError> {
    let host: Vec<&str> = descs.iter().map(|d| d.host.as_str()).collect();
    let uuid: Vec<&str> = descs.iter().map(|d| d.uuid.as_str()).collect();
    let idx: Vec<Option<i64>> = descs.iter().map(|d| d.index.map(i64::from)).collect();
    let device: Vec<&str> = descs.iter().map(|d| d.device.as_str()).collect();
    let model: Vec<&str> = descs.iter().map(|d| d.model.as_str()).collect();
    let labels: Vec<String> = descs.iter().map(|d| labels_json(&d.labels)).collect();
    sqlx::query_as(
        "INSERT INTO gpus AS g (host, uuid, idx, device, model, labels) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[]) \
           AS u(host, uuid, idx, device, model, labels) ORDER BY host, uuid \
         ON CONFLICT (host, uuid) DO UPDATE SET idx = excluded.idx, device = excluded.device, \
           model = excluded.model, labels = excluded.labels \
         RETURNING g.host, g.uuid, g.id",
    )
    .bind(host)
    .bind(uuid)
    .bind(idx)
    .bind(device)
    .bind(model)
    .bind(labels)
    .fetch_all(&store.pool)
    .await
    .map_err(db_err)
}

async fn upsert_metrics(
    store: &PostgresStore,
    names: &[&str],
) -> Result<Vec<(String, i32)>, StoreError> {
    sqlx::query(
        "INSERT INTO metrics (name) SELECT n FROM unnest($1::text[]) AS u(n) ORDER BY n \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(names)
    .execute(&store.pool)
    .await
    .map_err(db_err)?;
    sqlx::query_as("SELECT name, id FROM metrics WHERE name = ANY($1)")
        .bind(names)
        .fetch_all(&store.pool)
        .await
        .map_err(db_err)
}

async fn upsert_series(
    store: &PostgresStore,
    pairs: &[(i32, i32)],
) -> Result<Vec<(i32, i32, i32)>, StoreError> {
    let g: Vec<i32> = pairs.iter().map(|p| p.0).collect();
    let m: Vec<i32> = pairs.iter().map(|p| p.1).collect();
    sqlx::query(
        "INSERT INTO series (gpu_id, metric_id) \
         SELECT g, m FROM unnest($1::int4[], $2::int4[]) AS u(g, m) ORDER BY g, m \
         ON CONFLICT (gpu_id, metric_id) DO NOTHING",
    )
    .bind(&g)
    .bind(&m)
    .execute(&store.pool)
    .await
    .map_err(db_err)?;
    sqlx::query_as(
        "SELECT s.gpu_id, s.metric_id, s.id FROM series s \
         JOIN unnest($1::int4[], $2::int4[]) AS u(g, m) ON s.gpu_id = u.g AND s.metric_id = u.m",
    )
    .bind(&g)
    .bind(&m)
    .fetch_all(&store.pool)
    .await
    .map_err(db_err)
}

fn missing(what: &str, name: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "postgres: {what} {name:?} has no id after its upsert"
    ))
}

/// Series id of every `(batch gpu, batch metric)` slot the batch's points use, indexed
/// `gpu * metrics.len() + metric` (`-1` for unused slots).
pub(crate) async fn resolve(
    store: &PostgresStore,
    batch: &SampleBatch,
) -> Result<Vec<i32>, StoreError> {
    let n_metrics = batch.metrics.len();
    let mut used = vec![false; batch.gpus.len() * n_metrics];
    for p in &batch.points {
        used[p.gpu as usize * n_metrics + p.metric as usize] = true;
    }
    // GPUs: the last description of a (host, uuid) in the batch is the latest seen.
    let mut latest: HashMap<(&HostName, &GpuUuid), &GpuDesc> = HashMap::new();
    for d in &batch.gpus {
        latest.insert((&d.host, &d.uuid), d);
    }
    let (stale_gpus, new_metrics) = {
        let dict = store.dict.lock();
        let mut stale: Vec<&GpuDesc> = latest
            .values()
            .filter(|d| {
                dict.gpus
                    .get(&(d.host.clone(), d.uuid.clone()))
                    .is_none_or(|(_, known)| known != **d)
            })
            .copied()
            .collect();
        stale.sort_by(|a, b| (&a.host, &a.uuid).cmp(&(&b.host, &b.uuid)));
        let mut metrics: Vec<&str> = batch
            .metrics
            .iter()
            .filter(|m| !dict.metrics.contains_key(*m))
            .map(|m| m.as_str())
            .collect();
        metrics.sort_unstable();
        metrics.dedup();
        (stale, metrics)
    };
    if !stale_gpus.is_empty() {
        let ids = upsert_gpus(store, &stale_gpus).await?;
        let mut dict = store.dict.lock();
        for (host, uuid, id) in ids {
            let key = (HostName::new(host), GpuUuid::new(uuid));
            if let Some(d) = latest.get(&(&key.0, &key.1)).map(|d| (*d).clone()) {
                dict.gpus.insert(key, (id, d));
            }
        }
    }
    if !new_metrics.is_empty() {
        let ids = upsert_metrics(store, &new_metrics).await?;
        let mut dict = store.dict.lock();
        for (name, id) in ids {
            dict.metrics.insert(MetricName::new(name), id);
        }
    }
    // Series of the used slots.
    let (mut table, new_pairs) = {
        let dict = store.dict.lock();
        let gpu_ids = batch
            .gpus
            .iter()
            .map(|d| {
                dict.gpus
                    .get(&(d.host.clone(), d.uuid.clone()))
                    .map(|(id, _)| *id)
                    .ok_or_else(|| missing("gpu", d.uuid.as_str()))
            })
            .collect::<Result<Vec<i32>, _>>()?;
        let metric_ids = batch
            .metrics
            .iter()
            .map(|m| {
                dict.metrics
                    .get(m)
                    .copied()
                    .ok_or_else(|| missing("metric", m.as_str()))
            })
            .collect::<Result<Vec<i32>, _>>()?;
        let mut table: Vec<(i32, i32, i32)> = Vec::with_capacity(used.len());
        let mut new_pairs = Vec::new();
        for (slot, u) in used.iter().enumerate() {
            let (g, m) = (gpu_ids[slot / n_metrics], metric_ids[slot % n_metrics]);
            let sid = match (u, dict.series.get(&(g, m))) {
                (false, _) => -1,
                (true, Some(s)) => *s,
                (true, None) => {
                    new_pairs.push((g, m));
                    -1
                }
            };
            table.push((g, m, sid));
        }
        new_pairs.sort_unstable();
        new_pairs.dedup();
        (table, new_pairs)
    };
    if !new_pairs.is_empty() {
        let ids = upsert_series(store, &new_pairs).await?;
        let mut dict = store.dict.lock();
        for (g, m, id) in ids {
            dict.series.insert((g, m), id);
        }
        for (slot, (g, m, sid)) in table.iter_mut().enumerate() {
            if used[slot] && *sid < 0 {
                *sid = *dict.series.get(&(*g, *m)).ok_or_else(|| {
                    missing("series of metric", batch.metrics[slot % n_metrics].as_str())
                })?;
            }
        }
    }
    Ok(table.into_iter().map(|(_, _, s)| s).collect())
}
