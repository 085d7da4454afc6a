//! Prometheus text for `/metrics`: the registered pipeline metrics, broker and store gauges, and
//! the latest value of every GPU metric under its DCGM name with dcgm-exporter's labels
//! (`gpu`, `UUID`, `device`, `modelName`, `Hostname`), so existing Grafana dashboards work.

use crate::error::ApiError;
use crate::state::{now_ms, AppState};
use gpufleet_core::metric_names::prometheus_safe;
use std::collections::BTreeMap;
use std::fmt::Write;

pub(crate) async fn render(st: &AppState) -> Result<String, ApiError> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &st.registry).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(stripped) = out.strip_suffix("# EOF\n") {
        out.truncate(stripped.len());
    }

    let topics = st.broker.stats().await?;
    let mut gauge = |name: &str, help: &str, kind: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    let per_topic = |f: &dyn Fn(&gpufleet_broker::TopicStats) -> u64| -> Vec<(String, u64)> {
        topics.iter().map(|t| (format!("topic=\"{}\"", esc(t.topic.as_str())), f(t))).collect()
    };
    let per_group = |f: &dyn Fn(&gpufleet_broker::GroupStats) -> u64| -> Vec<(String, u64)> {
        topics
            .iter()
            .flat_map(|t| t.groups.iter().map(move |g| (format!("topic=\"{}\",group=\"{}\"", esc(t.topic.as_str()), esc(g.group.as_str())), f(g))))
            .collect()
    };
    gauge("gpufleet_broker_depth", "Messages retained (not acked by every group)", "gauge", per_topic(&|t| t.depth));
    gauge("gpufleet_broker_dead_letters", "Messages in the dead-letter topic", "gauge", per_topic(&|t| t.dead_letters));
    gauge("gpufleet_broker_lag", "Messages not yet delivered to the group", "gauge", per_group(&|g| g.lag));
    gauge("gpufleet_broker_in_flight", "Messages delivered and not yet acked", "gauge", per_group(&|g| g.in_flight));
    gauge("gpufleet_broker_redelivered_total", "Redeliveries", "counter", per_group(&|g| g.redeliveries));
    gauge("gpufleet_broker_dead_lettered_total", "Messages dead-lettered by the group", "counter", per_group(&|g| g.dead_lettered));

    let s = st.store.stats().await?;
    for (name, help, v) in [
        ("gpufleet_store_series", "Distinct series", s.series),
        ("gpufleet_store_samples", "Samples stored", s.samples),
        ("gpufleet_store_head_samples", "Samples in the in-memory window", s.head_samples),
        ("gpufleet_store_bytes_on_disk", "Bytes under the store directory", s.bytes_on_disk),
        ("gpufleet_store_partitions", "Time partitions on disk", s.partitions),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }

    // Latest GPU values, grouped by metric like dcgm-exporter.
    let gpus = st.store.gpus().await?;
    let now = now_ms();
    let mut by_metric: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let _ = writeln!(out, "# HELP gpufleet_gpu_stale 1 when no sample arrived within stale_after\n# TYPE gpufleet_gpu_stale gauge");
    for g in &gpus {
        let d = &g.desc;
        let labels = format!(
            "gpu=\"{}\",UUID=\"{}\",device=\"{}\",modelName=\"{}\",Hostname=\"{}\"",
            d.index.map(|i| i.to_string()).unwrap_or_default(),
            esc(d.uuid.as_str()),
            esc(&d.device),
            esc(&d.model),
            esc(d.host.as_str())
        );
        let stale = u8::from(now - g.last_ingest_ms > st.settings.stale_after_ms);
        let _ = writeln!(out, "gpufleet_gpu_stale{{{labels}}} {stale}");
        for (metric, (_, v)) in &g.latest {
            by_metric.entry(prometheus_safe(metric.as_str())).or_default().push(format!("{{{labels}}} {v}"));
        }
    }
    for (metric, rows) in by_metric {
        let _ = writeln!(out, "# HELP {metric} Latest value from gpufleet telemetry\n# TYPE {metric} gauge");
        for r in rows {
            let _ = writeln!(out, "{metric}{r}");
        }
    }
    Ok(out)
}

/// Escapes a label value (backslash, quote, newline).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
