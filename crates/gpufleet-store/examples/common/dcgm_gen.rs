//! A synthetic DCGM data set generated batch by batch (so the generator holds no more than one
//! batch): 64 hosts × 8 GPUs × 12 metrics, one sample per series per second, per-GPU random walks.
//!
//! The shapes follow the benchmark description: utilisation an integer random walk in 0–100 (one
//! GPU in eight idle), temperature an integer walk, power = 70 + 6.2·util + N(0, 15) rounded to
//! 3 decimals, FB used an integer MiB walk that moves on one tick in five, FB free = total − used,
//! SM clock 1980 (busy) or 345 (idle), memory clock 2619, fan 0, PCIe TX/RX =
//! round(N(250000, 80000)·util/100) and round(N(900000, 250000)·util/100), XID almost always 0.

use gpufleet_core::{BatchBuilder, GpuDesc, SampleBatch};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// Metric names in generation order.
pub(crate) const METRICS: [&str; 12] = [
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
    "DCGM_FI_DEV_FAN_SPEED",
    "DCGM_FI_DEV_PCIE_TX_THROUGHPUT",
    "DCGM_FI_DEV_PCIE_RX_THROUGHPUT",
    "DCGM_FI_DEV_XID_ERRORS",
];

/// First timestamp: 2025-07-18T20:00:00Z.
pub(crate) const START_MS: i64 = 1_752_868_800_000;
const FB_TOTAL: f64 = 81_559.0;

struct GpuState {
    idle: bool,
    util: f64,
    temp: f64,
    fb_used: f64,
}

/// Produces the data set in batches of about `batch_points` points.
pub(crate) struct DcgmGen {
    rng: StdRng,
    gpus: Vec<GpuDesc>,
    state: Vec<GpuState>,
    total: usize,
    produced: usize,
    tick: i64,
    next_gpu: usize,
}

impl DcgmGen {
    /// A generator of `total` samples over `hosts` × 8 GPUs.
    pub(crate) fn new(seed: u64, hosts: usize, total: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut gpus = Vec::new();
        let mut state = Vec::new();
        for h in 0..hosts {
            for i in 0..8u32 {
                let uuid = format!(
                    "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                    rng.gen::<u32>(),
                    rng.gen::<u16>(),
                    rng.gen::<u16>(),
                    rng.gen::<u16>(),
                    rng.gen::<u64>() & 0xffff_ffff_ffff
                );
                gpus.push(GpuDesc {
                    host: format!("gpu-node-{h:02}").into(),
                    uuid: uuid.into(),
                    index: Some(i),
                    device: format!("nvidia{i}"),
                    model: "NVIDIA H100 80GB HBM3".into(),
                    labels: vec![],
                });
                let idle = rng.gen_range(0..8) == 0;
                let util = if idle {
                    0.0
                } else {
                    f64::from(rng.gen_range(20..100u32))
                };
                let fb_used = if idle {
                    0.0
                } else {
                    f64::from(rng.gen_range(2_000..70_000u32))
                };
                state.push(GpuState {
                    idle,
                    util,
                    temp: 32.0 + (util * 0.4).round(),
                    fb_used,
                });
            }
        }
        Self {
            rng,
            gpus,
            state,
            total,
            produced: 0,
            tick: 0,
            next_gpu: 0,
        }
    }

    /// The GPUs.
    pub(crate) fn gpus(&self) -> &[GpuDesc] {
        &self.gpus
    }

    /// The next batch, or None when all samples were produced.
    pub(crate) fn next_batch(&mut self, batch_points: usize) -> Option<SampleBatch> {
        if self.produced >= self.total {
            return None;
        }
        let mut b = BatchBuilder::new();
        let metric_ids: Vec<u32> = METRICS.iter().map(|m| b.metric(&(*m).into())).collect();
        let noise15: Normal<f64> = Normal::new(0.0, 15.0).expect("valid normal");
        let walk: Normal<f64> = Normal::new(0.0, 3.0).expect("valid normal");
        let fb_walk: Normal<f64> = Normal::new(0.0, 256.0).expect("valid normal");
        let tx: Normal<f64> = Normal::new(250_000.0, 80_000.0).expect("valid normal");
        let rx: Normal<f64> = Normal::new(900_000.0, 250_000.0).expect("valid normal");
        let copy: Normal<f64> = Normal::new(0.0, 2.0).expect("valid normal");
        while b.len() < batch_points && self.produced < self.total {
            let gi = self.next_gpu;
            let ts = START_MS + self.tick * 1000;
            let g = b.gpu(&self.gpus[gi]);
            let rng = &mut self.rng;
            let s = &mut self.state[gi];
            if !s.idle {
                s.util = (s.util + walk.sample(rng).round()).clamp(1.0, 100.0);
                s.fb_used = if rng.gen_range(0..5) == 0 {
                    (s.fb_used + fb_walk.sample(rng).round()).clamp(0.0, FB_TOTAL)
                } else {
                    s.fb_used
                };
            }
            if rng.gen_range(0..10) < 3 {
                let target = 32.0 + (s.util * 0.4).round();
                s.temp += if s.temp < target {
                    1.0
                } else if s.temp > target {
                    -1.0
                } else {
                    0.0
                };
            }
            let util = s.util;
            let values = [
                util,
                (util * 0.5 + copy.sample(rng)).round().clamp(0.0, 100.0),
                s.temp,
                ((70.0 + 6.2 * util + noise15.sample(rng)) * 1000.0).round() / 1000.0,
                s.fb_used,
                FB_TOTAL - s.fb_used,
                if s.idle { 345.0 } else { 1980.0 },
                2619.0,
                0.0,
                (tx.sample(rng) * util / 100.0).round(),
                (rx.sample(rng) * util / 100.0).round(),
                if rng.gen_range(0..100_000) == 0 {
                    79.0
                } else {
                    0.0
                },
            ];
            for (m, v) in metric_ids.iter().zip(values) {
                if self.produced >= self.total {
                    break;
                }
                b.push(g, *m, ts, v);
                self.produced += 1;
            }
            self.next_gpu += 1;
            if self.next_gpu == self.gpus.len() {
                self.next_gpu = 0;
                self.tick += 1;
            }
        }
        Some(b.finish())
    }
}
