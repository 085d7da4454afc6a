//! A seeded synthetic DCGM-exporter long CSV, for benchmarks and tests.
//!
//! A Rust port of `bench/peers/telemetry-ingest/gen_dcgm.py`: 64 hosts `gpu-node-000..063` × 8
//! GPUs × the 12 metrics of [`METRICS`] in that order, one sample per series per second from
//! 2025-06-01T00:00:00Z, a random walk per GPU (75 % of GPUs busy with a Kubernetes pod), quoted
//! like Python's `csv` module writes it (a field is quoted only when it holds `,`, `"` or a line
//! break). The same seed gives the same bytes; the bytes differ from the Python script's because
//! the random generators differ. About 400 bytes a row.

use gpufleet_core::time::format_rfc3339;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use std::io::{BufWriter, Write};

/// The header line, without its newline.
pub const HEADER: &str =
    "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw";

/// The metrics of every GPU, in row order.
pub const METRICS: [&str; 12] = [
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

/// Hosts in the synthetic fleet.
pub const HOSTS: usize = 64;
/// GPUs per host.
pub const GPUS_PER_HOST: usize = 8;
/// First timestamp: 2025-06-01T00:00:00Z in ms.
pub const START_MS: i64 = 1_748_736_000_000;

const MODEL: &str = "NVIDIA H100 80GB HBM3";
const FB_TOTAL: f64 = 81559.0;
const DRIVER: &str = "550.54.15";

/// One GPU's fixed description and random-walk state.
struct Gpu {
    /// `gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,` already CSV-encoded.
    middle: String,
    /// `,labels_raw\n` already CSV-encoded.
    tail: String,
    busy: bool,
    util: f64,
    fb: f64,
    temp: f64,
}

/// A value as Python's `str()` prints it: integers bare, floats with at least one decimal.
enum Value {
    Int(i64),
    Float(f64),
}

fn gauss(rng: &mut StdRng, sigma: f64) -> f64 {
    let z: f64 = rng.sample(StandardNormal);
    z * sigma
}

fn uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.gen::<f64>()
}

fn clamp(x: f64, lo: f64, hi: f64) -> f64 {
    x.clamp(lo, hi)
}

/// Python's `round(x)`: ties to even.
fn round_int(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// Appends `s` as a CSV field, quoted only when needed (Python `csv.QUOTE_MINIMAL`).
fn push_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn build_gpus(rng: &mut StdRng) -> Vec<Gpu> {
    let mut gpus = Vec::with_capacity(HOSTS * GPUS_PER_HOST);
    for h in 0..HOSTS {
        let host = format!("gpu-node-{h:03}");
        for g in 0..GPUS_PER_HOST {
            let bits: u128 = rng.gen();
            // uuid.UUID(int=..., version=4): set the version and variant bits.
            let bits = (bits & !(0xf000u128 << 64) | (0x4000u128 << 64)) & !(0xc000u128 << 48)
                | (0x8000u128 << 48);
            let hex = format!("{bits:032x}");
            let uuid = format!(
                "GPU-{}-{}-{}-{}-{}",
                &hex[0..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..32]
            );
            let busy = rng.gen::<f64>() < 0.75;
            let (ns, pod, cont) = if busy {
                let ns = ["ml-train", "ml-infer", "research"][rng.gen_range(0..3)];
                let pod = format!(
                    "{ns}-job-{:04}-{:02}",
                    rng.gen_range(0..10_000),
                    rng.gen_range(0..100)
                );
                let cont = match ns {
                    "ml-train" => "trainer",
                    "ml-infer" => "vllm",
                    _ => "notebook",
                };
                (ns, pod, cont)
            } else {
                ("", String::new(), "")
            };
            let util = if busy {
                uniform(rng, 60.0, 98.0)
            } else {
                uniform(rng, 0.0, 3.0)
            };
            let fb = if busy {
                uniform(rng, 40_000.0, 79_000.0)
            } else {
                uniform(rng, 0.0, 600.0)
            };
            let temp = if busy {
                uniform(rng, 55.0, 75.0)
            } else {
                uniform(rng, 30.0, 38.0)
            };
            let mut labels = format!(
                "gpu=\"{g}\",UUID=\"{uuid}\",device=\"nvidia{g}\",modelName=\"{MODEL}\",Hostname=\"{host}\",DCGM_FI_DRIVER_VERSION=\"{DRIVER}\""
            );
            if busy {
                labels.push_str(&format!(
                    ",container=\"{cont}\",pod=\"{pod}\",namespace=\"{ns}\""
                ));
            }
            let mut middle = String::new();
            for f in [
                g.to_string(),
                format!("nvidia{g}"),
                uuid,
                MODEL.to_owned(),
                host.clone(),
                cont.to_owned(),
                pod,
                ns.to_owned(),
            ] {
                push_field(&mut middle, &f);
                middle.push(',');
            }
            let mut tail = String::from(",");
            push_field(&mut tail, &labels);
            tail.push('\n');
            gpus.push(Gpu {
                middle,
                tail,
                busy,
                util,
                fb,
                temp,
            });
        }
    }
    gpus
}

/// Steps one GPU's random walk and returns its 12 values in [`METRICS`] order.
fn step(rng: &mut StdRng, s: &mut Gpu) -> [Value; 12] {
    s.util = clamp(
        s.util + gauss(rng, if s.busy { 4.0 } else { 0.5 }),
        0.0,
        100.0,
    );
    s.fb = clamp(
        s.fb + gauss(rng, if s.busy { 200.0 } else { 5.0 }),
        0.0,
        FB_TOTAL - 500.0,
    );
    s.temp = clamp(
        s.temp + 0.05 * ((30.0 + 0.5 * s.util) - s.temp) + gauss(rng, 0.3),
        25.0,
        90.0,
    );
    let util = round_int(s.util);
    let fb = round_int(s.fb);
    let power = 70.0 + 6.2 * s.util + gauss(rng, 15.0);
    let mem_copy = round_int(clamp(0.45 * s.util + gauss(rng, 5.0), 0.0, 100.0));
    let tx = round_int((gauss(rng, 80_000.0) + 250_000.0) * s.util / 100.0).max(0);
    let rx = round_int((gauss(rng, 250_000.0) + 900_000.0) * s.util / 100.0).max(0);
    let xid = if rng.gen::<f64>() < 2e-5 {
        [13, 31, 43, 48, 79][rng.gen_range(0..5)]
    } else {
        0
    };
    [
        Value::Int(util),
        Value::Int(mem_copy),
        Value::Int(round_int(s.temp)),
        Value::Float((clamp(power, 60.0, 700.0) * 1000.0).round_ties_even() / 1000.0),
        Value::Int(fb),
        Value::Int(FB_TOTAL as i64 - fb - 500),
        Value::Int(if util > 5 { 1980 } else { 345 }),
        Value::Int(2619),
        Value::Int(0),
        Value::Int(tx),
        Value::Int(rx),
        Value::Int(xid),
    ]
}

/// Writes the header and exactly `rows` data rows; returns `rows`. Deterministic for a seed.
pub fn write_dcgm_csv<W: Write>(out: W, rows: u64, seed: u64) -> std::io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 16, out);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut gpus = build_gpus(&mut rng);
    writeln!(w, "{HEADER}")?;
    let mut n = 0u64;
    let mut sec = 0i64;
    let mut value = String::with_capacity(32);
    while n < rows {
        let ts = format_rfc3339(START_MS + sec * 1000);
        for s in gpus.iter_mut() {
            let vals = step(&mut rng, s);
            for (metric, v) in METRICS.iter().zip(&vals) {
                if n >= rows {
                    break;
                }
                value.clear();
                match *v {
                    Value::Int(i) => value.push_str(&i.to_string()),
                    Value::Float(f) if f.fract() == 0.0 => value.push_str(&format!("{f:.1}")),
                    Value::Float(f) => value.push_str(&f.to_string()),
                }
                w.write_all(ts.as_bytes())?;
                w.write_all(b",")?;
                w.write_all(metric.as_bytes())?;
                w.write_all(b",")?;
                w.write_all(s.middle.as_bytes())?;
                w.write_all(value.as_bytes())?;
                w.write_all(s.tail.as_bytes())?;
                n += 1;
            }
        }
        sec += 1;
    }
    w.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(rows: u64, seed: u64) -> String {
        let mut buf = Vec::new();
        assert_eq!(write_dcgm_csv(&mut buf, rows, seed).unwrap(), rows);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        assert_eq!(generate(500, 7), generate(500, 7));
        assert_ne!(generate(500, 7), generate(500, 8));
    }

    #[test]
    fn shape_matches_the_python_generator() {
        let text = generate(6144 + 5, 42);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(lines.len(), 6144 + 5 + 1);
        assert!(
            lines[1].starts_with("2025-06-01T00:00:00Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains(",NVIDIA H100 80GB HBM3,gpu-node-000,"));
        assert!(
            lines[1].contains(",\"gpu=\"\"0\"\",UUID=\"\"GPU-"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].contains("DCGM_FI_DRIVER_VERSION=\"\"550.54.15\"\""),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with("\"\"\""), "{}", lines[1]);
        assert!(lines[12].starts_with("2025-06-01T00:00:00Z,DCGM_FI_DEV_XID_ERRORS,0,"));
        assert!(lines[13].starts_with("2025-06-01T00:00:00Z,DCGM_FI_DEV_GPU_UTIL,1,nvidia1,"));
        assert!(lines[6144].contains(",gpu-node-063,"));
        assert!(lines[6145].starts_with("2025-06-01T00:00:01Z,DCGM_FI_DEV_GPU_UTIL,0,"));
        let avg = text.len() as f64 / (lines.len() as f64);
        assert!(
            (300.0..500.0).contains(&avg),
            "about 400 bytes a row, got {avg}"
        );
    }

    #[test]
    fn uuids_are_version_4() {
        let text = generate(1, 1);
        let uuid = text
            .lines()
            .nth(1)
            .unwrap()
            .split(',')
            .nth(4)
            .unwrap()
            .to_owned();
        assert_eq!(uuid.len(), 40);
        assert_eq!(&uuid[18..19], "4", "{uuid}");
        assert!("89ab".contains(&uuid[23..24]), "{uuid}");
    }
}
