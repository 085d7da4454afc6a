//! Samples in columnar batches.
//!
//! A sample is `(timestamp, host, gpu uuid, gpu index, device, model name, metric, value, labels)`.
//! Batches store the GPU description and metric name once (dictionaries) and each point as
//! `(gpu ref, metric ref, timestamp, value)`, so a batch of thousands of rows costs a few bytes a
//! point. The series key is `(host, gpu uuid, metric)`; index, device, model and labels describe
//! the GPU and follow its latest sample.

use crate::ids::{GpuUuid, HostName, MetricName};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Everything known about one GPU (or, with an empty uuid, one host) at sample time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuDesc {
    /// Host the GPU is in.
    pub host: HostName,
    /// GPU UUID; empty for host-level series.
    pub uuid: GpuUuid,
    /// GPU index on the host (`gpu` label), when known.
    pub index: Option<u32>,
    /// Device name, e.g. `nvidia0`.
    pub device: String,
    /// Model name, e.g. `NVIDIA H100 80GB HBM3`.
    pub model: String,
    /// Extra labels (container, pod, namespace, driver version, …), sorted by key.
    pub labels: Vec<(String, String)>,
}

/// The identity of one time series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Host.
    pub host: HostName,
    /// GPU UUID (empty for host-level series).
    pub uuid: GpuUuid,
    /// Metric.
    pub metric: MetricName,
}

/// One measurement inside a [`SampleBatch`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Index into [`SampleBatch::gpus`].
    pub gpu: u32,
    /// Index into [`SampleBatch::metrics`].
    pub metric: u32,
    /// Milliseconds since the Unix epoch, UTC.
    pub ts_ms: i64,
    /// The value.
    pub value: f64,
}

/// A columnar batch of samples with GPU and metric dictionaries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampleBatch {
    /// GPU dictionary.
    pub gpus: Vec<GpuDesc>,
    /// Metric dictionary.
    pub metrics: Vec<MetricName>,
    /// The points; `gpu` and `metric` index the dictionaries.
    pub points: Vec<Point>,
}

impl SampleBatch {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }
    /// True when there are no points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
    /// The series key of a point.
    pub fn key_of(&self, p: &Point) -> SeriesKey {
        let g = &self.gpus[p.gpu as usize];
        SeriesKey { host: g.host.clone(), uuid: g.uuid.clone(), metric: self.metrics[p.metric as usize].clone() }
    }
    /// Checks that every point's references are inside the dictionaries and values are finite
    /// timestamps; returns the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        for (i, p) in self.points.iter().enumerate() {
            if p.gpu as usize >= self.gpus.len() {
                return Err(format!("point {i}: gpu ref {} out of range", p.gpu));
            }
            if p.metric as usize >= self.metrics.len() {
                return Err(format!("point {i}: metric ref {} out of range", p.metric));
            }
        }
        Ok(())
    }
    /// Appends all points of `other`, merging dictionaries. To merge many batches, use one
    /// [`BatchBuilder`] and [`BatchBuilder::append_batch`] instead (this rebuilds the dictionary
    /// index on every call).
    pub fn extend_from(&mut self, other: &SampleBatch) {
        let mut b = BatchBuilder::from_batch(std::mem::take(self));
        b.append_batch(other);
        *self = b.finish();
    }
}

/// Builds a [`SampleBatch`], interning GPUs and metrics.
#[derive(Default)]
pub struct BatchBuilder {
    batch: SampleBatch,
    gpu_ids: FxHashMap<GpuDesc, u32>,
    metric_ids: FxHashMap<MetricName, u32>,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }
    /// Continues building on an existing batch.
    pub fn from_batch(batch: SampleBatch) -> Self {
        let gpu_ids = batch.gpus.iter().enumerate().map(|(i, g)| (g.clone(), i as u32)).collect();
        let metric_ids = batch.metrics.iter().enumerate().map(|(i, m)| (m.clone(), i as u32)).collect();
        Self { batch, gpu_ids, metric_ids }
    }
    /// The reference of a GPU description, adding it when new.
    pub fn gpu(&mut self, g: &GpuDesc) -> u32 {
        if let Some(&id) = self.gpu_ids.get(g) {
            return id;
        }
        let id = self.batch.gpus.len() as u32;
        self.batch.gpus.push(g.clone());
        self.gpu_ids.insert(g.clone(), id);
        id
    }
    /// The reference of a metric, adding it when new.
    pub fn metric(&mut self, m: &MetricName) -> u32 {
        if let Some(&id) = self.metric_ids.get(m) {
            return id;
        }
        let id = self.batch.metrics.len() as u32;
        self.batch.metrics.push(m.clone());
        self.metric_ids.insert(m.clone(), id);
        id
    }
    /// Adds a point whose refs came from [`Self::gpu`] and [`Self::metric`].
    pub fn push(&mut self, gpu: u32, metric: u32, ts_ms: i64, value: f64) {
        self.batch.points.push(Point { gpu, metric, ts_ms, value });
    }
    /// Appends every point of `batch`, interning each of its dictionary entries once.
    pub fn append_batch(&mut self, batch: &SampleBatch) {
        let gpus: Vec<u32> = batch.gpus.iter().map(|g| self.gpu(g)).collect();
        let metrics: Vec<u32> = batch.metrics.iter().map(|m| self.metric(m)).collect();
        self.batch.points.reserve(batch.points.len());
        for p in &batch.points {
            // Refs were checked by the codec or `validate`; an out-of-range ref is skipped, not a panic.
            if let (Some(&g), Some(&m)) = (gpus.get(p.gpu as usize), metrics.get(p.metric as usize)) {
                self.batch.points.push(Point { gpu: g, metric: m, ts_ms: p.ts_ms, value: p.value });
            }
        }
    }

    /// Points so far.
    pub fn len(&self) -> usize {
        self.batch.points.len()
    }
    /// True when no point was pushed.
    pub fn is_empty(&self) -> bool {
        self.batch.points.is_empty()
    }
    /// Takes the batch out, leaving the builder empty.
    pub fn finish(&mut self) -> SampleBatch {
        self.gpu_ids.clear();
        self.metric_ids.clear();
        std::mem::take(&mut self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(host: &str, uuid: &str) -> GpuDesc {
        GpuDesc {
            host: host.into(),
            uuid: uuid.into(),
            index: Some(0),
            device: "nvidia0".into(),
            model: "H100".into(),
            labels: vec![],
        }
    }

    #[test]
    fn builder_interns_gpus_and_metrics() {
        let mut b = BatchBuilder::new();
        let g1 = b.gpu(&gpu("h1", "GPU-1"));
        let g1again = b.gpu(&gpu("h1", "GPU-1"));
        let g2 = b.gpu(&gpu("h2", "GPU-2"));
        let m = b.metric(&"DCGM_FI_DEV_GPU_UTIL".into());
        b.push(g1, m, 1, 1.0);
        b.push(g2, m, 1, 2.0);
        let batch = b.finish();
        assert_eq!(g1, g1again);
        assert_ne!(g1, g2);
        assert_eq!(batch.gpus.len(), 2);
        assert_eq!(batch.metrics.len(), 1);
        assert_eq!(batch.key_of(&batch.points[1]).host.as_str(), "h2");
        batch.validate().unwrap();
    }

    #[test]
    fn validate_rejects_dangling_refs() {
        let batch = SampleBatch { gpus: vec![], metrics: vec![], points: vec![Point { gpu: 0, metric: 0, ts_ms: 0, value: 0.0 }] };
        assert!(batch.validate().unwrap_err().contains("gpu ref"));
    }

    #[test]
    fn extend_merges_dictionaries() {
        let mut b = BatchBuilder::new();
        let g = b.gpu(&gpu("h1", "GPU-1"));
        let m = b.metric(&"A".into());
        b.push(g, m, 1, 1.0);
        let mut a = b.finish();
        let mut b2 = BatchBuilder::new();
        let g2 = b2.gpu(&gpu("h1", "GPU-1"));
        let m2 = b2.metric(&"B".into());
        b2.push(g2, m2, 2, 2.0);
        a.extend_from(&b2.finish());
        assert_eq!(a.gpus.len(), 1);
        assert_eq!(a.metrics.len(), 2);
        assert_eq!(a.points.len(), 2);
        assert_eq!(a.key_of(&a.points[1]).metric.as_str(), "B");
    }
}
