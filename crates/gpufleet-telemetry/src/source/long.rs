//! The DCGM-exporter long CSV: one row per (timestamp, metric, GPU).
//!
//! Columns are found by name (case-insensitive), so `metric_name` and `value` are the only ones
//! required. The GPU is described by `gpu_id`, `device`, `uuid`, `modelName`, `Hostname`,
//! `container`, `pod`, `namespace` and `labels_raw`; its reference is cached by the raw bytes of
//! those fields, so the thousands of rows of one GPU build its [`GpuDesc`] once.

use super::decoder::Cache;
use super::labels::parse_labels;
use super::scan::{field_string, Field};
use super::value::{parse_f64, trim};
use super::{DecodeOptions, SourceError};
use gpufleet_core::{BatchBuilder, GpuDesc, MetricName};

/// Prometheus labels in `labels_raw` that duplicate a column and are dropped.
const DUPLICATE_LABELS: [&str; 6] = ["__name__", "Hostname", "UUID", "gpu", "device", "modelName"];

/// Where each DCGM column sits in the header.
#[derive(Debug)]
pub(crate) struct LongLayout {
    names: Vec<String>,
    ts: Option<usize>,
    metric: usize,
    value: usize,
    gpu_id: Option<usize>,
    device: Option<usize>,
    uuid: Option<usize>,
    model: Option<usize>,
    host: Option<usize>,
    /// `container`, `pod`, `namespace`: label name and column.
    k8s: Vec<(&'static str, usize)>,
    labels_raw: Option<usize>,
    /// Inclusive runs of adjacent identity columns; their raw bytes key the GPU cache.
    key_runs: Vec<(usize, usize)>,
}

impl LongLayout {
    /// Maps header names onto DCGM columns. Unknown extra columns are ignored.
    pub(crate) fn from_names(names: &[String]) -> Result<Self, SourceError> {
        let find = |want: &str| names.iter().position(|n| n.eq_ignore_ascii_case(want));
        let metric = find("metric_name").ok_or_else(|| {
            SourceError::BadHeader("a DCGM long CSV header needs a metric_name column".into())
        })?;
        let value = find("value").ok_or_else(|| {
            SourceError::BadHeader(
                "the header has metric_name but no value column; expected timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw".into(),
            )
        })?;
        let k8s: Vec<(&'static str, usize)> = ["container", "pod", "namespace"]
            .into_iter()
            .filter_map(|k| find(k).map(|i| (k, i)))
            .collect();
        let mut layout = LongLayout {
            names: names.to_vec(),
            ts: find("timestamp"),
            metric,
            value,
            gpu_id: find("gpu_id"),
            device: find("device"),
            uuid: find("uuid"),
            model: find("modelName"),
            host: find("Hostname"),
            k8s,
            labels_raw: find("labels_raw"),
            key_runs: Vec::new(),
        };
        let mut identity: Vec<usize> = [
            layout.gpu_id,
            layout.device,
            layout.uuid,
            layout.model,
            layout.host,
            layout.labels_raw,
        ]
        .into_iter()
        .flatten()
        .chain(layout.k8s.iter().map(|&(_, i)| i))
        .collect();
        identity.sort_unstable();
        identity.dedup();
        for i in identity {
            match layout.key_runs.last_mut() {
                Some((_, end)) if *end + 1 == i => *end = i,
                _ => layout.key_runs.push((i, i)),
            }
        }
        Ok(layout)
    }

    /// Decodes one record into one point.
    #[inline]
    pub(crate) fn decode_row(
        &self,
        body: &[u8],
        fields: &[Field],
        opts: &DecodeOptions,
        cache: &mut Cache,
        out: &mut BatchBuilder,
    ) -> Result<(), String> {
        super::decoder::check_field_count(&self.names, fields.len())?;
        let ts = match self.ts {
            Some(i) => cache.timestamp(content(body, &fields[i]), opts.ingest_ms)?,
            None => opts.ingest_ms,
        };
        let raw_value = trim(content(body, &fields[self.value]));
        let value = parse_f64(raw_value).ok_or_else(|| value_error(raw_value))?;
        let raw_metric = content(body, &fields[self.metric]);
        let metric = cache.metric_lookup(raw_metric);
        if metric.is_none() {
            check_metric_name(raw_metric)?;
        }
        cache.gpu_key.clear();
        for &(a, b) in &self.key_runs {
            let run = &body[fields[a].raw_start..fields[b].raw_end];
            cache
                .gpu_key
                .extend_from_slice(&(run.len() as u64).to_le_bytes());
            cache.gpu_key.extend_from_slice(run);
        }
        let gpu = match cache.gpu_lookup() {
            Some(g) => g,
            None => {
                let g = out.gpu(&self.describe(body, fields, opts)?);
                cache.gpu_insert(g);
                g
            }
        };
        let metric = match metric {
            Some(m) => m,
            None => {
                // check_metric_name accepted only ASCII, so this is the name as written.
                let m = out.metric(&MetricName::new(String::from_utf8_lossy(raw_metric)));
                cache.metric_insert(raw_metric, m);
                m
            }
        };
        out.push(gpu, metric, ts, value);
        Ok(())
    }

    /// Builds the GPU description of a row (cache miss path).
    fn describe(
        &self,
        body: &[u8],
        fields: &[Field],
        opts: &DecodeOptions,
    ) -> Result<GpuDesc, String> {
        let text = |col: Option<usize>| {
            col.map(|i| field_string(body, &fields[i]).trim().to_owned())
                .unwrap_or_default()
        };
        let mut host = text(self.host);
        if host.is_empty() {
            host = opts
                .default_host
                .clone()
                .unwrap_or_else(|| "localhost".to_owned());
        }
        let gpu_text = text(self.gpu_id);
        let index = if gpu_text.is_empty() {
            None
        } else {
            Some(
                gpu_text
                    .parse::<u32>()
                    .map_err(|_| format!("gpu_id {gpu_text:?} is not a non-negative integer"))?,
            )
        };
        let mut uuid = text(self.uuid);
        if uuid.is_empty() && !gpu_text.is_empty() {
            uuid = format!("{host}:{gpu_text}");
        }
        let mut labels = match self.labels_raw {
            Some(i) => parse_labels(&field_string(body, &fields[i]))?,
            None => Vec::new(),
        };
        labels.retain(|(k, _)| {
            !DUPLICATE_LABELS.contains(&k.as_str()) && !self.k8s.iter().any(|(name, _)| name == k)
        });
        for &(name, i) in &self.k8s {
            let v = text(Some(i));
            if !v.is_empty() {
                labels.push((name.to_owned(), v));
            }
        }
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|a, b| a.0 == b.0);
        Ok(GpuDesc {
            host: host.into(),
            uuid: uuid.into(),
            index,
            device: text(self.device),
            model: text(self.model),
            labels,
        })
    }
}

/// The content bytes of a field (escapes not undone: numbers, names and times never hold quotes).
#[inline]
fn content<'a>(body: &'a [u8], f: &Field) -> &'a [u8] {
    &body[f.start..f.end]
}

fn value_error(raw: &[u8]) -> String {
    if raw.is_empty() {
        return "value is empty; expected a number".into();
    }
    format!("value {:?} is not a number", shorten(raw))
}

/// At most 64 bytes of `raw` as text, for messages.
pub(crate) fn shorten(raw: &[u8]) -> String {
    let n = raw.len().min(64);
    String::from_utf8_lossy(&raw[..n]).into_owned()
}

/// A metric name must match `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn check_metric_name(raw: &[u8]) -> Result<(), String> {
    let ok_first = |c: &u8| c.is_ascii_alphabetic() || *c == b'_' || *c == b':';
    match raw.first() {
        None => Err("metric_name is empty".into()),
        Some(c) if ok_first(c) && raw.iter().all(|c| ok_first(c) || c.is_ascii_digit()) => Ok(()),
        Some(_) => Err(format!(
            "metric_name {:?} is not a valid metric name (letters, digits, '_' and ':', not starting with a digit)",
            shorten(raw)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_runs_group_adjacent_identity_columns() {
        let names: Vec<String> =
            "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw"
                .split(',')
                .map(String::from)
                .collect();
        let l = LongLayout::from_names(&names).unwrap();
        assert_eq!(l.key_runs, vec![(2, 9), (11, 11)]);
    }

    #[test]
    fn metric_names_are_checked() {
        assert!(check_metric_name(b"DCGM_FI_DEV_GPU_UTIL").is_ok());
        assert!(check_metric_name(b"ns:metric_1").is_ok());
        assert_eq!(check_metric_name(b"").unwrap_err(), "metric_name is empty");
        assert!(check_metric_name(b"1abc")
            .unwrap_err()
            .contains("not a valid metric name"));
        assert!(check_metric_name(b"gpu util").is_err());
    }

    #[test]
    fn header_without_value_is_rejected() {
        let names = vec!["metric_name".to_string(), "v".to_string()];
        let e = LongLayout::from_names(&names).unwrap_err().to_string();
        assert!(e.contains("no value column"), "{e}");
    }
}
