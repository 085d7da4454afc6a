//! The one table that maps source column names onto canonical DCGM metric names.
//!
//! Wide CSV headers, nvidia-smi `--query-gpu` fields and NVML readings all pass through
//! [`classify_column`]. A header is normalised first: the unit in brackets is dropped
//! (`memory.used [MiB]` → `memory.used`), surrounding space trimmed and the name lower-cased.
//! Columns that identify the GPU (timestamp, uuid, index, host, …) are [`Column::Identity`];
//! known metrics map to their DCGM name; any other column is kept as a metric under its own
//! name made Prometheus-safe (`clocks.max.sm` → `clocks_max_sm`). `docs/metric-names.md`
//! renders [`METRIC_ALIASES`]; a test keeps the two in step.

/// `(alias, DCGM name, unit)`. Aliases are matched after normalisation (lower case, no unit).
pub const METRIC_ALIASES: &[(&str, &str, &str)] = &[
    ("utilization.gpu", "DCGM_FI_DEV_GPU_UTIL", "%"),
    ("gpu_utilization", "DCGM_FI_DEV_GPU_UTIL", "%"),
    ("gpu_util", "DCGM_FI_DEV_GPU_UTIL", "%"),
    ("utilization", "DCGM_FI_DEV_GPU_UTIL", "%"),
    ("util", "DCGM_FI_DEV_GPU_UTIL", "%"),
    ("utilization.memory", "DCGM_FI_DEV_MEM_COPY_UTIL", "%"),
    ("memory_utilization", "DCGM_FI_DEV_MEM_COPY_UTIL", "%"),
    ("mem_util", "DCGM_FI_DEV_MEM_COPY_UTIL", "%"),
    ("utilization.encoder", "DCGM_FI_DEV_ENC_UTIL", "%"),
    ("utilization.decoder", "DCGM_FI_DEV_DEC_UTIL", "%"),
    ("temperature.gpu", "DCGM_FI_DEV_GPU_TEMP", "°C"),
    ("temperature", "DCGM_FI_DEV_GPU_TEMP", "°C"),
    ("gpu_temp", "DCGM_FI_DEV_GPU_TEMP", "°C"),
    ("temp", "DCGM_FI_DEV_GPU_TEMP", "°C"),
    ("temperature.memory", "DCGM_FI_DEV_MEMORY_TEMP", "°C"),
    ("power.draw", "DCGM_FI_DEV_POWER_USAGE", "W"),
    ("power.draw.instant", "DCGM_FI_DEV_POWER_USAGE_INSTANT", "W"),
    ("power_draw", "DCGM_FI_DEV_POWER_USAGE", "W"),
    ("power_usage", "DCGM_FI_DEV_POWER_USAGE", "W"),
    ("power", "DCGM_FI_DEV_POWER_USAGE", "W"),
    ("power.limit", "DCGM_FI_DEV_POWER_MGMT_LIMIT", "W"),
    ("enforced.power.limit", "DCGM_FI_DEV_ENFORCED_POWER_LIMIT", "W"),
    ("memory.used", "DCGM_FI_DEV_FB_USED", "MiB"),
    ("memory_used", "DCGM_FI_DEV_FB_USED", "MiB"),
    ("memory_used_mb", "DCGM_FI_DEV_FB_USED", "MiB"),
    ("fb_used", "DCGM_FI_DEV_FB_USED", "MiB"),
    ("memory.free", "DCGM_FI_DEV_FB_FREE", "MiB"),
    ("memory_free", "DCGM_FI_DEV_FB_FREE", "MiB"),
    ("memory_free_mb", "DCGM_FI_DEV_FB_FREE", "MiB"),
    ("fb_free", "DCGM_FI_DEV_FB_FREE", "MiB"),
    ("memory.total", "DCGM_FI_DEV_FB_TOTAL", "MiB"),
    ("memory_total", "DCGM_FI_DEV_FB_TOTAL", "MiB"),
    ("memory_total_mb", "DCGM_FI_DEV_FB_TOTAL", "MiB"),
    ("memory.reserved", "DCGM_FI_DEV_FB_RESERVED", "MiB"),
    ("clocks.current.sm", "DCGM_FI_DEV_SM_CLOCK", "MHz"),
    ("clocks.sm", "DCGM_FI_DEV_SM_CLOCK", "MHz"),
    ("sm_clock", "DCGM_FI_DEV_SM_CLOCK", "MHz"),
    ("sm_clock_mhz", "DCGM_FI_DEV_SM_CLOCK", "MHz"),
    ("clocks.current.memory", "DCGM_FI_DEV_MEM_CLOCK", "MHz"),
    ("clocks.mem", "DCGM_FI_DEV_MEM_CLOCK", "MHz"),
    ("mem_clock", "DCGM_FI_DEV_MEM_CLOCK", "MHz"),
    ("memory_clock_mhz", "DCGM_FI_DEV_MEM_CLOCK", "MHz"),
    ("fan.speed", "DCGM_FI_DEV_FAN_SPEED", "%"),
    ("fan_speed", "DCGM_FI_DEV_FAN_SPEED", "%"),
    ("pcie.link.gen.current", "DCGM_FI_DEV_PCIE_LINK_GEN", ""),
    ("pcie.link.width.current", "DCGM_FI_DEV_PCIE_LINK_WIDTH", ""),
    ("pcie_tx", "DCGM_FI_DEV_PCIE_TX_THROUGHPUT", "KB/s"),
    ("pcie_rx", "DCGM_FI_DEV_PCIE_RX_THROUGHPUT", "KB/s"),
    ("ecc.errors.corrected.volatile.total", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", ""),
    ("ecc.errors.uncorrected.volatile.total", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", ""),
    ("ecc.errors.corrected.aggregate.total", "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", ""),
    ("ecc.errors.uncorrected.aggregate.total", "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", ""),
    ("xid_errors", "DCGM_FI_DEV_XID_ERRORS", ""),
    ("xid", "DCGM_FI_DEV_XID_ERRORS", ""),
    ("energy", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "mJ"),
];

/// Columns that identify a sample rather than measure something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityField {
    /// Sample time.
    Timestamp,
    /// GPU index on the host.
    GpuIndex,
    /// GPU UUID.
    Uuid,
    /// Device name (`nvidia0`).
    Device,
    /// Model name.
    Model,
    /// Host name.
    Host,
    /// A descriptive string kept as a label (driver version, PCI bus id, serial, …).
    Label(&'static str),
}

/// What a column of a wide CSV holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Column {
    /// Identifies the GPU or the time.
    Identity(IdentityField),
    /// A metric with its canonical name; `known` tells whether it came from the table.
    Metric {
        /// Canonical name.
        name: String,
        /// True when the alias table knew the column.
        known: bool,
    },
}

/// Normalises a header: drops a bracketed unit, trims and lower-cases.
pub fn normalise_header(h: &str) -> String {
    let base = match h.find('[') {
        Some(i) => &h[..i],
        None => h,
    };
    base.trim().trim_matches('"').trim().to_ascii_lowercase()
}

/// Classifies one wide-CSV header.
pub fn classify_column(header: &str) -> Column {
    let n = normalise_header(header);
    let id = match n.as_str() {
        "timestamp" | "time" | "ts" | "date" => Some(IdentityField::Timestamp),
        "gpu_id" | "gpu" | "index" | "gpu_index" | "gpu_idx" => Some(IdentityField::GpuIndex),
        "uuid" | "gpu_uuid" => Some(IdentityField::Uuid),
        "device" => Some(IdentityField::Device),
        "name" | "model" | "model_name" | "modelname" | "gpu_name" => Some(IdentityField::Model),
        "hostname" | "host" | "node" | "instance" => Some(IdentityField::Host),
        "driver_version" => Some(IdentityField::Label("driver_version")),
        "pci.bus_id" | "gpu_bus_id" => Some(IdentityField::Label("pci_bus_id")),
        "serial" | "gpu_serial" => Some(IdentityField::Label("serial")),
        "pstate" => Some(IdentityField::Label("pstate")),
        _ => None,
    };
    if let Some(f) = id {
        return Column::Identity(f);
    }
    if let Some((_, dcgm, _)) = METRIC_ALIASES.iter().find(|(a, _, _)| *a == n) {
        return Column::Metric { name: (*dcgm).to_owned(), known: true };
    }
    if n.starts_with("dcgm_fi_") {
        return Column::Metric { name: n.to_ascii_uppercase(), known: true };
    }
    Column::Metric { name: prometheus_safe(&n), known: false }
}

/// Makes a name valid as a Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn prometheus_safe(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_headers_with_units_map_to_dcgm() {
        assert_eq!(classify_column(" memory.used [MiB]"), Column::Metric { name: "DCGM_FI_DEV_FB_USED".into(), known: true });
        assert_eq!(classify_column("utilization.gpu [%]"), Column::Metric { name: "DCGM_FI_DEV_GPU_UTIL".into(), known: true });
        assert_eq!(classify_column(" uuid"), Column::Identity(IdentityField::Uuid));
        assert_eq!(classify_column("index"), Column::Identity(IdentityField::GpuIndex));
    }

    #[test]
    fn unknown_columns_keep_a_safe_name() {
        assert_eq!(classify_column("clocks.max.sm [MHz]"), Column::Metric { name: "clocks_max_sm".into(), known: false });
        assert_eq!(prometheus_safe("1x"), "_1x");
    }

    #[test]
    fn docs_table_lists_every_alias() {
        let doc = include_str!("../../../docs/metric-names.md");
        for (alias, dcgm, _) in METRIC_ALIASES {
            let row = format!("| `{alias}` | `{dcgm}` |");
            assert!(doc.contains(&row), "docs/metric-names.md lacks the row {row}");
        }
    }
}
