//! Wide CSV: one row per GPU sample, one column per metric, schema from the header through
//! [`classify_column`]. Covers hand-made fixtures and `nvidia-smi --query-gpu=... --format=csv`.
//!
//! Cells are trimmed; a trailing unit is stripped from numbers (`25 MiB`); empty, `N/A`,
//! `Not Supported` and any `[bracketed note]` mean "no value" and are skipped silently. Text in a
//! known metric column rejects the row (naming the column); text in an unknown column is a string
//! attribute and is skipped. A missing host becomes the default host, a missing uuid
//! `<host>:<gpu_id>`, and a `gpu_id` like `gpu_3` index 3. Identity columns that repeat an earlier
//! one (and metric columns that map to an earlier column's metric) are ignored: the first wins.

use super::decoder::{column_name, Cache};
use super::long::shorten;
use super::scan::{unescape, Field};
use super::value::{is_absent, parse_cell, trim, Cell};
use super::{DecodeOptions, SourceError};
use gpufleet_core::metric_names::{classify_column, Column, IdentityField};
use gpufleet_core::{BatchBuilder, GpuDesc, MetricName};

/// One metric column.
#[derive(Debug)]
struct MetricCol {
    col: usize,
    name: MetricName,
    known: bool,
}

/// The column plan of a wide header.
#[derive(Debug)]
pub(crate) struct WideLayout {
    names: Vec<String>,
    ts: Option<usize>,
    index: Option<usize>,
    uuid: Option<usize>,
    device: Option<usize>,
    model: Option<usize>,
    host: Option<usize>,
    labels: Vec<(&'static str, usize)>,
    metrics: Vec<MetricCol>,
    /// Identity columns (not the timestamp); their raw bytes key the GPU cache.
    key_cols: Vec<usize>,
    /// Scratch: `(metric slot, value)` of the row being decoded.
    values: Vec<(usize, f64)>,
}

impl WideLayout {
    /// Classifies every header column.
    pub(crate) fn from_names(names: &[String]) -> Result<Self, SourceError> {
        let mut l = WideLayout {
            names: names.to_vec(),
            ts: None,
            index: None,
            uuid: None,
            device: None,
            model: None,
            host: None,
            labels: Vec::new(),
            metrics: Vec::new(),
            key_cols: Vec::new(),
            values: Vec::new(),
        };
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            match classify_column(name) {
                Column::Identity(field) => {
                    let slot = match field {
                        IdentityField::Timestamp => &mut l.ts,
                        IdentityField::GpuIndex => &mut l.index,
                        IdentityField::Uuid => &mut l.uuid,
                        IdentityField::Device => &mut l.device,
                        IdentityField::Model => &mut l.model,
                        IdentityField::Host => &mut l.host,
                        IdentityField::Label(key) => {
                            if !l.labels.iter().any(|(k, _)| *k == key) {
                                l.labels.push((key, i));
                                l.key_cols.push(i);
                            }
                            continue;
                        }
                    };
                    if slot.is_none() {
                        *slot = Some(i);
                        if field != IdentityField::Timestamp {
                            l.key_cols.push(i);
                        }
                    }
                }
                Column::Metric { name, known } => {
                    if !l.metrics.iter().any(|m| m.name.as_str() == name) {
                        l.metrics.push(MetricCol {
                            col: i,
                            name: name.into(),
                            known,
                        });
                    }
                }
            }
        }
        if l.metrics.is_empty() {
            return Err(SourceError::BadHeader(format!(
                "no metric column in {:?}: expected a DCGM long header (timestamp,metric_name,...,value,labels_raw) \
                 or a wide header with at least one metric column such as utilization.gpu",
                names.join(",")
            )));
        }
        let identifies = [l.ts, l.index, l.uuid, l.device, l.model, l.host]
            .iter()
            .any(Option::is_some)
            || !l.labels.is_empty();
        if !identifies && !l.metrics.iter().any(|m| m.known) {
            return Err(SourceError::BadHeader(format!(
                "no column in {:?} is a known metric or identifies the GPU (timestamp, gpu_id, uuid, hostname, ...); is this a GPU CSV?",
                names.join(",")
            )));
        }
        l.labels.sort_by_key(|(k, _)| *k);
        l.key_cols.sort_unstable();
        Ok(l)
    }

    /// Number of metric columns.
    pub(crate) fn metric_count(&self) -> usize {
        self.metrics.len()
    }

    /// Decodes one record into one point per present metric; nothing when the row is rejected.
    pub(crate) fn decode_row(
        &mut self,
        body: &[u8],
        fields: &[Field],
        opts: &DecodeOptions,
        cache: &mut Cache,
        out: &mut BatchBuilder,
    ) -> Result<(), String> {
        let mut values = std::mem::take(&mut self.values);
        let result = self.row(&mut values, body, fields, opts, cache, out);
        self.values = values;
        result
    }

    fn row(
        &self,
        values: &mut Vec<(usize, f64)>,
        body: &[u8],
        fields: &[Field],
        opts: &DecodeOptions,
        cache: &mut Cache,
        out: &mut BatchBuilder,
    ) -> Result<(), String> {
        super::decoder::check_field_count(&self.names, fields.len())?;
        let ts = match self.ts {
            Some(i) => {
                let raw = unescape(body, &fields[i]);
                let t = trim(&raw);
                if is_absent(t) {
                    opts.ingest_ms
                } else {
                    cache.timestamp(t, opts.ingest_ms)?
                }
            }
            None => opts.ingest_ms,
        };
        values.clear();
        for (slot, m) in self.metrics.iter().enumerate() {
            let raw = unescape(body, &fields[m.col]);
            match parse_cell(&raw) {
                Cell::Absent => {}
                Cell::Number(v) => values.push((slot, v)),
                Cell::Text if m.known => {
                    return Err(format!(
                        "column {} holds {:?}, not a number",
                        column_name(&self.names, m.col),
                        shorten(trim(&raw))
                    ))
                }
                Cell::Text => {}
            }
        }
        cache.gpu_key.clear();
        for &i in &self.key_cols {
            let f = &fields[i];
            let raw = &body[f.raw_start..f.raw_end];
            cache
                .gpu_key
                .extend_from_slice(&(raw.len() as u64).to_le_bytes());
            cache.gpu_key.extend_from_slice(raw);
        }
        let gpu = match cache.gpu_lookup() {
            Some(g) => g,
            None => {
                let g = out.gpu(&self.describe(body, fields, opts)?);
                cache.gpu_insert(g);
                g
            }
        };
        for &(slot, v) in values.iter() {
            let metric = match cache.column_metrics[slot] {
                Some(m) => m,
                None => {
                    let m = out.metric(&self.metrics[slot].name);
                    cache.column_metrics[slot] = Some(m);
                    m
                }
            };
            out.push(gpu, metric, ts, v);
        }
        Ok(())
    }

    /// Builds the GPU description of a row (cache miss path).
    fn describe(
        &self,
        body: &[u8],
        fields: &[Field],
        opts: &DecodeOptions,
    ) -> Result<GpuDesc, String> {
        let text = |col: Option<usize>| -> Option<String> {
            let raw = unescape(body, &fields[col?]);
            let t = trim(&raw);
            (!is_absent(t)).then(|| String::from_utf8_lossy(t).into_owned())
        };
        let host = text(self.host)
            .or_else(|| opts.default_host.clone())
            .unwrap_or_else(|| "localhost".to_owned());
        let gpu_text = text(self.index);
        let index = gpu_text.as_deref().map(parse_gpu_index).transpose()?;
        let uuid = match (text(self.uuid), &gpu_text) {
            (Some(u), _) => u,
            (None, Some(g)) => format!("{host}:{g}"),
            (None, None) => String::new(),
        };
        let labels = self
            .labels
            .iter()
            .filter_map(|&(k, i)| Some((k.to_owned(), text(Some(i))?)))
            .collect();
        Ok(GpuDesc {
            host: host.into(),
            uuid: uuid.into(),
            index,
            device: text(self.device).unwrap_or_default(),
            model: text(self.model).unwrap_or_default(),
            labels,
        })
    }
}

/// `3`, `gpu_3`, `GPU3`, `gpu-3` → 3.
fn parse_gpu_index(t: &str) -> Result<u32, String> {
    let digits_at = t.find(|c: char| c.is_ascii_digit()).unwrap_or(t.len());
    let (prefix, digits) = t.split_at(digits_at);
    let prefix_ok = prefix.is_empty()
        || (prefix.starts_with(|c: char| c.is_ascii_alphabetic())
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphabetic() || c == '_' || c == '-'));
    match digits.parse::<u32>() {
        Ok(n) if prefix_ok => Ok(n),
        _ => Err(format!(
            "gpu_id {t:?} is not a GPU index (expected a number such as 3 or gpu_3)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_index_forms() {
        assert_eq!(parse_gpu_index("3"), Ok(3));
        assert_eq!(parse_gpu_index("gpu_3"), Ok(3));
        assert_eq!(parse_gpu_index("GPU-12"), Ok(12));
        assert!(parse_gpu_index("gpu").is_err());
        assert!(parse_gpu_index("3a").is_err());
        assert!(parse_gpu_index("-3").is_err());
        assert!(parse_gpu_index("").is_err());
    }

    #[test]
    fn identity_only_header_is_rejected() {
        let names: Vec<String> = ["timestamp", "uuid", "hostname"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = WideLayout::from_names(&names).unwrap_err().to_string();
        assert!(e.contains("no metric column"), "{e}");
    }

    #[test]
    fn header_of_unknown_columns_only_is_rejected() {
        let names: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        assert!(WideLayout::from_names(&names)
            .unwrap_err()
            .to_string()
            .contains("is this a GPU CSV"));
        let names: Vec<String> = ["gpu", "b"].iter().map(|s| s.to_string()).collect();
        assert!(WideLayout::from_names(&names).is_ok());
    }

    #[test]
    fn duplicate_metric_columns_first_wins() {
        let names: Vec<String> = ["gpu_id", "utilization", "gpu_util", "clocks.max.sm [MHz]"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let l = WideLayout::from_names(&names).unwrap();
        assert_eq!(l.metrics.len(), 2);
        assert_eq!(l.metrics[0].col, 1);
        assert_eq!(l.metrics[1].name.as_str(), "clocks_max_sm");
        assert!(!l.metrics[1].known);
    }
}
