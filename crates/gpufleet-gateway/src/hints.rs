//! [`StoreGpuHints`]: the [`GpuHints`] the balancer reads, filled from the telemetry store.
//!
//! The request path never touches the store: [`HintRefresher`] (a worker) reads the latest
//! samples of every GPU UUID named in `[[gateway.backends]] gpus = [...]` every `interval` and
//! swaps in a new snapshot; `hint()` reads the snapshot under a short read lock.
//!
//! Per GPU it uses `DCGM_FI_DEV_FB_FREE` / `DCGM_FI_DEV_FB_USED` (MiB), `DCGM_FI_DEV_GPU_TEMP`
//! (°C) and, when present, the clock-event (throttle) reason bitmask
//! (`DCGM_FI_DEV_CLOCK_THROTTLE_REASONS` or `DCGM_FI_DEV_CLOCKS_EVENT_REASONS`): a set SW/HW
//! thermal-slowdown or HW-slowdown bit means throttling. Samples older than `stale_after`
//! (by sample time) are ignored, so a GPU whose telemetry stopped is neither preferred nor
//! avoided. A backend with several GPUs gets the sum of free/total VRAM, the hottest
//! temperature, and throttling when any GPU throttles.

use crate::balance::{GpuHint, GpuHints};
use async_trait::async_trait;
use gpufleet_core::GpuUuid;
use gpufleet_runtime::{Worker, WorkerContext, WorkerError};
use gpufleet_store::{GpuInfo, MetricStore};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Clock-event reason bits that mean the GPU is slowed down for heat or power-brake reasons:
/// HW slowdown (0x8), SW thermal (0x20), HW thermal (0x40), HW power brake (0x80).
const THROTTLE_BITS: u64 = 0x8 | 0x20 | 0x40 | 0x80;

/// What telemetry knows about one GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct GpuState {
    free_mib: Option<f64>,
    used_mib: Option<f64>,
    temp_c: Option<f64>,
    throttling: bool,
}

/// GPU hints from the telemetry store (see the module docs).
#[derive(Default)]
pub struct StoreGpuHints {
    gpus: RwLock<HashMap<String, GpuState>>,
}

impl StoreGpuHints {
    /// An empty snapshot (no hints until the refresher ran).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn state_of(info: &GpuInfo, now_ms: i64, stale_after_ms: i64) -> GpuState {
        let fresh = |name: &str| {
            info.latest
                .iter()
                .find(|(m, _)| m.as_str() == name)
                .and_then(|(_, &(ts, v))| (now_ms - ts <= stale_after_ms).then_some(v))
        };
        let reasons = fresh("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS").or_else(|| fresh("DCGM_FI_DEV_CLOCKS_EVENT_REASONS"));
        GpuState {
            free_mib: fresh("DCGM_FI_DEV_FB_FREE"),
            used_mib: fresh("DCGM_FI_DEV_FB_USED"),
            temp_c: fresh("DCGM_FI_DEV_GPU_TEMP"),
            throttling: reasons.is_some_and(|r| r >= 0.0 && (r as u64) & THROTTLE_BITS != 0),
        }
    }

    /// Reads the latest samples of `uuids` from `store` and replaces the snapshot.
    pub async fn refresh(&self, store: &dyn MetricStore, uuids: &[String], now_ms: i64, stale_after: Duration) -> Result<usize, gpufleet_store::StoreError> {
        let stale_ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
        let mut next = HashMap::with_capacity(uuids.len());
        for uuid in uuids {
            if let Some(info) = store.gpu(&GpuUuid::new(uuid)).await? {
                next.insert(uuid.clone(), Self::state_of(&info, now_ms, stale_ms));
            }
        }
        let n = next.len();
        *self.gpus.write() = next;
        Ok(n)
    }
}

impl GpuHints for StoreGpuHints {
    fn hint(&self, _backend: &str, gpus: &[String]) -> Option<GpuHint> {
        let map = self.gpus.read();
        let states: Vec<GpuState> = gpus.iter().filter_map(|g| map.get(g).copied()).collect();
        if states.is_empty() {
            return None;
        }
        let free: Option<f64> = states.iter().map(|s| s.free_mib).sum();
        let total: Option<f64> = states.iter().map(|s| Some(s.free_mib? + s.used_mib?)).sum();
        Some(GpuHint {
            vram_free_bytes: free.map(|f| (f.max(0.0) * MIB as f64) as u64),
            vram_total_bytes: total.map(|t| (t.max(0.0) * MIB as f64) as u64),
            temperature_c: states.iter().filter_map(|s| s.temp_c).reduce(f64::max),
            throttling: states.iter().any(|s| s.throttling),
        })
    }
}

/// Refreshes a [`StoreGpuHints`] snapshot every `interval`.
pub struct HintRefresher {
    /// The snapshot the balancer reads.
    pub hints: Arc<StoreGpuHints>,
    /// The telemetry store.
    pub store: Arc<dyn MetricStore>,
    /// Every GPU UUID named by a backend.
    pub uuids: Vec<String>,
    /// How often.
    pub interval: Duration,
    /// Samples older than this are ignored.
    pub stale_after: Duration,
}

#[async_trait]
impl Worker for HintRefresher {
    fn name(&self) -> String {
        "gateway-gpu-hints".into()
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = ctx.shutdown.wait() => return Ok(()),
                _ = tick.tick() => {}
            }
            let t = Instant::now();
            let r = self.hints.refresh(self.store.as_ref(), &self.uuids, gpufleet_core::time::now_ms(), self.stale_after).await;
            ctx.record(r.is_ok(), t.elapsed(), r.err().map(|e| e.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_core::{BatchBuilder, GpuDesc, MetricName};
    use gpufleet_store::{EmbeddedStore, StoreConfig};

    fn desc(uuid: &str) -> GpuDesc {
        GpuDesc { host: "h".into(), uuid: uuid.into(), index: Some(0), device: "nvidia0".into(), model: "H100".into(), labels: vec![] }
    }

    async fn store_with(rows: &[(&str, &str, i64, f64)]) -> (tempfile::TempDir, Arc<dyn MetricStore>) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(dir.path());
        cfg.raw_retention = None;
        let store: Arc<dyn MetricStore> = Arc::new(EmbeddedStore::open(cfg).unwrap());
        let mut b = BatchBuilder::new();
        for (uuid, metric, ts, v) in rows {
            let g = b.gpu(&desc(uuid));
            let m = b.metric(&MetricName::new(*metric));
            b.push(g, m, *ts, *v);
        }
        store.write(&b.finish(), 0).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn hints_combine_gpus_and_ignore_stale_samples() {
        let now = 1_800_000_000_000;
        let (_d, store) = store_with(&[
            ("GPU-a", "DCGM_FI_DEV_FB_FREE", now - 1000, 1024.0),
            ("GPU-a", "DCGM_FI_DEV_FB_USED", now - 1000, 3072.0),
            ("GPU-a", "DCGM_FI_DEV_GPU_TEMP", now - 1000, 70.0),
            ("GPU-b", "DCGM_FI_DEV_FB_FREE", now - 1000, 512.0),
            ("GPU-b", "DCGM_FI_DEV_FB_USED", now - 1000, 512.0),
            ("GPU-b", "DCGM_FI_DEV_GPU_TEMP", now - 1000, 81.0),
            ("GPU-b", "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", now - 1000, 0x40 as f64),
            ("GPU-c", "DCGM_FI_DEV_GPU_TEMP", now - 600_000, 95.0),
            ("GPU-c", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS", now - 600_000, 0x40 as f64),
        ])
        .await;
        let hints = StoreGpuHints::new();
        let uuids: Vec<String> = ["GPU-a", "GPU-b", "GPU-c", "GPU-missing"].map(String::from).to_vec();
        assert_eq!(hints.refresh(store.as_ref(), &uuids, now, Duration::from_secs(30)).await.unwrap(), 3);

        let a = hints.hint("x", &["GPU-a".into()]).unwrap();
        assert_eq!(a, GpuHint { vram_free_bytes: Some(1024 * MIB), vram_total_bytes: Some(4096 * MIB), temperature_c: Some(70.0), throttling: false });
        let ab = hints.hint("x", &["GPU-a".into(), "GPU-b".into()]).unwrap();
        assert_eq!(ab.vram_free_bytes, Some(1536 * MIB));
        assert_eq!(ab.vram_total_bytes, Some(5120 * MIB));
        assert_eq!(ab.temperature_c, Some(81.0), "the hottest GPU counts");
        assert!(ab.throttling, "HW thermal slowdown bit on GPU-b");
        // GPU-c's samples are 10 minutes old: known GPU, but nothing fresh to say.
        let c = hints.hint("x", &["GPU-c".into()]).unwrap();
        assert_eq!(c, GpuHint::default());
        assert_eq!(hints.hint("x", &["GPU-missing".into()]), None);
        assert_eq!(hints.hint("x", &[]), None);
    }

    #[tokio::test]
    async fn a_non_thermal_reason_is_not_throttling() {
        let now = 1_800_000_000_000;
        // 0x1 = GPU idle, 0x4 = applications clocks setting: not heat.
        let (_d, store) = store_with(&[("GPU-a", "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", now, 0x5 as f64)]).await;
        let hints = StoreGpuHints::new();
        hints.refresh(store.as_ref(), &["GPU-a".into()], now, Duration::from_secs(30)).await.unwrap();
        assert!(!hints.hint("x", &["GPU-a".into()]).unwrap().throttling);
    }
}
