//! The series and GPU dictionary: dense ids for GPUs, metrics and series, the latest GPU
//! description, and what `gpus()` reports per series (oldest, newest and latest value) and per
//! GPU (last ingest wall time).
//!
//! Ids are assigned on first sight and never reused. Every new or changed definition ([`Def`])
//! travels inside the WAL record of the write that introduced it, so it is as durable as the
//! samples that use it; a flush appends the definitions not yet in `catalog.log` to that file
//! before any partition file refers to them: one CRC-framed, deflate-compressed record per
//! append (append-only; a torn tail is cut on open).

use super::bin::{begin_frame, end_frame, put_str, put_varint, read_frames, Reader};
use crate::StoreError;
use gpufleet_core::{GpuDesc, GpuUuid, HostName, MetricName, SeriesKey};
use rustc_hash::FxHashMap;
use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
};
use tracing::warn;

/// A catalog definition.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Def {
    /// GPU `id` has this (latest) description.
    Gpu { id: u32, desc: GpuDesc },
    /// Metric `id` has this name.
    Metric { id: u32, name: MetricName },
    /// Series `id` is metric `metric` of GPU `gpu`.
    Series { id: u32, gpu: u32, metric: u32 },
}

impl Def {
    /// Appends the binary form.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Def::Gpu { id, desc } => {
                out.push(1);
                put_varint(out, u64::from(*id));
                put_str(out, desc.host.as_str());
                put_str(out, desc.uuid.as_str());
                put_varint(out, desc.index.map_or(0, |i| u64::from(i) + 1));
                put_str(out, &desc.device);
                put_str(out, &desc.model);
                put_varint(out, desc.labels.len() as u64);
                for (k, v) in &desc.labels {
                    put_str(out, k);
                    put_str(out, v);
                }
            }
            Def::Metric { id, name } => {
                out.push(2);
                put_varint(out, u64::from(*id));
                put_str(out, name.as_str());
            }
            Def::Series { id, gpu, metric } => {
                out.push(3);
                put_varint(out, u64::from(*id));
                put_varint(out, u64::from(*gpu));
                put_varint(out, u64::from(*metric));
            }
        }
    }

    /// Reads one definition.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Def, StoreError> {
        let tag = r.u8()?;
        let id = r.u32v()?;
        Ok(match tag {
            1 => {
                let host = HostName::new(r.str()?);
                let uuid = GpuUuid::new(r.str()?);
                let index = match r.varint()? {
                    0 => None,
                    i => Some(
                        u32::try_from(i - 1)
                            .map_err(|_| StoreError::Corrupt("gpu index out of range".into()))?,
                    ),
                };
                let device = r.str()?.to_owned();
                let model = r.str()?.to_owned();
                let n = r.count(2)?;
                let mut labels = Vec::with_capacity(n);
                for _ in 0..n {
                    labels.push((r.str()?.to_owned(), r.str()?.to_owned()));
                }
                Def::Gpu {
                    id,
                    desc: GpuDesc {
                        host,
                        uuid,
                        index,
                        device,
                        model,
                        labels,
                    },
                }
            }
            2 => Def::Metric {
                id,
                name: MetricName::new(r.str()?),
            },
            3 => Def::Series {
                id,
                gpu: r.u32v()?,
                metric: r.u32v()?,
            },
            t => {
                return Err(StoreError::Corrupt(format!(
                    "unknown catalog record tag {t}"
                )))
            }
        })
    }
}

/// One GPU.
#[derive(Clone, Debug)]
pub(crate) struct GpuEntry {
    /// Latest description.
    pub(crate) desc: GpuDesc,
    /// `(metric id, series id)` of its series.
    pub(crate) series: Vec<(u32, u32)>,
    /// Wall-clock arrival of its newest write (epoch ms; `i64::MIN` when unknown).
    pub(crate) last_ingest_ms: i64,
}

/// One series.
#[derive(Clone, Debug)]
pub(crate) struct SeriesEntry {
    /// Its GPU.
    pub(crate) gpu: u32,
    /// Its metric.
    pub(crate) metric: u32,
    /// Oldest stored timestamp (`i64::MAX` when none).
    pub(crate) oldest_ts: i64,
    /// Newest stored timestamp (`i64::MIN` when none); newer writes take the O(1) path.
    pub(crate) newest_ts: i64,
    /// Value at `newest_ts`.
    pub(crate) newest_val: f64,
}

impl SeriesEntry {
    /// Records a stored point.
    pub(crate) fn saw(&mut self, ts: i64, v: f64) {
        self.oldest_ts = self.oldest_ts.min(ts);
        if ts > self.newest_ts {
            self.newest_ts = ts;
            self.newest_val = v;
        }
    }
}

/// The in-memory dictionary.
#[derive(Default)]
pub(crate) struct Catalog {
    /// GPUs by id.
    pub(crate) gpus: Vec<GpuEntry>,
    gpu_ids: FxHashMap<(HostName, GpuUuid), u32>,
    /// GPU ids per UUID (normally one).
    pub(crate) by_uuid: FxHashMap<GpuUuid, Vec<u32>>,
    /// Metric names by id.
    pub(crate) metrics: Vec<MetricName>,
    metric_ids: FxHashMap<MetricName, u32>,
    /// Series by id.
    pub(crate) series: Vec<SeriesEntry>,
    pending: Vec<Def>,
}

impl Catalog {
    /// Id of a GPU, adding or updating it; new definitions go to `defs` (and to the pending list).
    pub(crate) fn resolve_gpu(&mut self, desc: &GpuDesc, defs: &mut Vec<Def>) -> u32 {
        let key = (desc.host.clone(), desc.uuid.clone());
        if let Some(&id) = self.gpu_ids.get(&key) {
            if self.gpus[id as usize].desc != *desc {
                self.define(
                    Def::Gpu {
                        id,
                        desc: desc.clone(),
                    },
                    defs,
                );
            }
            return id;
        }
        let id = self.gpus.len() as u32;
        self.define(
            Def::Gpu {
                id,
                desc: desc.clone(),
            },
            defs,
        );
        id
    }

    /// Id of a metric, adding it when new.
    pub(crate) fn resolve_metric(&mut self, name: &MetricName, defs: &mut Vec<Def>) -> u32 {
        if let Some(&id) = self.metric_ids.get(name) {
            return id;
        }
        let id = self.metrics.len() as u32;
        self.define(
            Def::Metric {
                id,
                name: name.clone(),
            },
            defs,
        );
        id
    }

    /// Id of the series of `metric` on `gpu`, adding it when new.
    pub(crate) fn resolve_series(&mut self, gpu: u32, metric: u32, defs: &mut Vec<Def>) -> u32 {
        if let Some(&(_, s)) = self.gpus[gpu as usize]
            .series
            .iter()
            .find(|(m, _)| *m == metric)
        {
            return s;
        }
        let id = self.series.len() as u32;
        self.define(Def::Series { id, gpu, metric }, defs);
        id
    }

    fn define(&mut self, def: Def, defs: &mut Vec<Def>) {
        // Ids handed out here are always the next ones, so applying cannot fail.
        let applied = self.apply(def.clone());
        debug_assert!(applied.is_ok(), "catalog ids are assigned in order");
        self.pending.push(def.clone());
        defs.push(def);
    }

    /// Applies a definition read back from the catalog file or the WAL. Returns whether it
    /// changed anything. Definitions must arrive in id order (they are written that way).
    pub(crate) fn apply(&mut self, def: Def) -> Result<bool, StoreError> {
        match def {
            Def::Gpu { id, desc } => {
                if let Some(g) = self.gpus.get_mut(id as usize) {
                    if g.desc == desc {
                        return Ok(false);
                    }
                    g.desc = desc;
                    return Ok(true);
                }
                if id as usize != self.gpus.len() {
                    return Err(StoreError::Corrupt(format!(
                        "gpu id {id} defined out of order"
                    )));
                }
                self.gpu_ids
                    .insert((desc.host.clone(), desc.uuid.clone()), id);
                self.by_uuid.entry(desc.uuid.clone()).or_default().push(id);
                self.gpus.push(GpuEntry {
                    desc,
                    series: Vec::new(),
                    last_ingest_ms: i64::MIN,
                });
            }
            Def::Metric { id, name } => {
                if (id as usize) < self.metrics.len() {
                    return Ok(false);
                }
                if id as usize != self.metrics.len() {
                    return Err(StoreError::Corrupt(format!(
                        "metric id {id} defined out of order"
                    )));
                }
                self.metric_ids.insert(name.clone(), id);
                self.metrics.push(name);
            }
            Def::Series { id, gpu, metric } => {
                if (id as usize) < self.series.len() {
                    return Ok(false);
                }
                if id as usize != self.series.len()
                    || gpu as usize >= self.gpus.len()
                    || metric as usize >= self.metrics.len()
                {
                    return Err(StoreError::Corrupt(format!(
                        "series id {id} defined out of order or with unknown refs"
                    )));
                }
                self.gpus[gpu as usize].series.push((metric, id));
                self.series.push(SeriesEntry {
                    gpu,
                    metric,
                    oldest_ts: i64::MAX,
                    newest_ts: i64::MIN,
                    newest_val: f64::NAN,
                });
            }
        }
        Ok(true)
    }

    /// Marks a definition replayed from the WAL as not yet in the catalog file.
    pub(crate) fn mark_pending(&mut self, def: Def) {
        self.pending.push(def);
    }

    /// Takes the definitions not yet in the catalog file.
    pub(crate) fn take_pending(&mut self) -> Vec<Def> {
        std::mem::take(&mut self.pending)
    }

    /// Puts back definitions whose write to the catalog file failed.
    pub(crate) fn restore_pending(&mut self, mut defs: Vec<Def>) {
        defs.append(&mut self.pending);
        self.pending = defs;
    }

    /// The key of a series.
    pub(crate) fn key(&self, series: u32) -> SeriesKey {
        let s = &self.series[series as usize];
        let g = &self.gpus[s.gpu as usize].desc;
        SeriesKey {
            host: g.host.clone(),
            uuid: g.uuid.clone(),
            metric: self.metrics[s.metric as usize].clone(),
        }
    }

    /// Metric id by name.
    pub(crate) fn metric_id(&self, name: &MetricName) -> Option<u32> {
        self.metric_ids.get(name).copied()
    }
}

/// The append-only catalog file.
pub(crate) struct CatalogFile {
    file: File,
    path: PathBuf,
}

const MAGIC: &[u8; 4] = b"GFC1";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl CatalogFile {
    /// Opens (or creates) the catalog file and loads it, cutting a torn tail.
    pub(crate) fn open(path: &Path) -> Result<(CatalogFile, Catalog), StoreError> {
        let mut cat = Catalog::default();
        let buf = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(path)(e)),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        if buf.len() < MAGIC.len() {
            file.set_len(0).map_err(io(path))?;
            file.write_all(MAGIC).map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
            return Ok((
                CatalogFile {
                    file,
                    path: path.to_path_buf(),
                },
                cat,
            ));
        }
        if &buf[..4] != MAGIC {
            return Err(StoreError::Corrupt(format!(
                "{} is not a catalog file",
                path.display()
            )));
        }
        let (frames, end) = read_frames(&buf[4..]);
        for f in frames {
            let mut defs = Vec::new();
            flate2::read::DeflateDecoder::new(f)
                .read_to_end(&mut defs)
                .map_err(|e| StoreError::Corrupt(format!("catalog record: {e}")))?;
            let mut r = Reader::new(&defs, "catalog record");
            while !r.is_empty() {
                cat.apply(Def::decode(&mut r)?)?;
            }
        }
        if 4 + end < buf.len() {
            warn!(path = %path.display(), kept = 4 + end, len = buf.len(), "catalog has a torn tail; truncating it");
            file.set_len((4 + end) as u64).map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
        }
        Ok((
            CatalogFile {
                file,
                path: path.to_path_buf(),
            },
            cat,
        ))
    }

    /// Appends definitions and syncs.
    pub(crate) fn append(&mut self, defs: &[Def]) -> Result<(), StoreError> {
        if defs.is_empty() {
            return Ok(());
        }
        let mut raw = Vec::new();
        defs.iter().for_each(|d| d.encode(&mut raw));
        let mut out = Vec::new();
        let at = begin_frame(&mut out);
        let mut z = flate2::write::DeflateEncoder::new(out, flate2::Compression::best());
        z.write_all(&raw).map_err(io(&self.path))?;
        let mut out = z.finish().map_err(io(&self.path))?;
        end_frame(&mut out, at);
        self.file.write_all(&out).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(host: &str, uuid: &str) -> GpuDesc {
        GpuDesc {
            host: host.into(),
            uuid: uuid.into(),
            index: Some(3),
            device: "nvidia3".into(),
            model: "H100".into(),
            labels: vec![("pod".into(), "p".into())],
        }
    }

    #[test]
    fn definitions_survive_the_file_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.log");
        let (mut f, mut cat) = CatalogFile::open(&path).unwrap();
        let mut defs = Vec::new();
        let g = cat.resolve_gpu(&desc("h", "GPU-1"), &mut defs);
        let m = cat.resolve_metric(&"M".into(), &mut defs);
        let s = cat.resolve_series(g, m, &mut defs);
        assert_eq!(cat.resolve_series(g, m, &mut defs), s);
        assert_eq!(defs.len(), 3);
        f.append(&cat.take_pending()).unwrap();
        drop(f);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1]);
        std::fs::write(&path, &bytes).unwrap();
        let (_f, cat2) = CatalogFile::open(&path).unwrap();
        assert_eq!(cat2.key(s), cat.key(s));
        assert_eq!(cat2.gpus[0].desc, desc("h", "GPU-1"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            bytes.len() - 5
        );
    }

    #[test]
    fn a_changed_description_is_a_new_definition() {
        let mut cat = Catalog::default();
        let mut defs = Vec::new();
        cat.resolve_gpu(&desc("h", "GPU-1"), &mut defs);
        let mut d2 = desc("h", "GPU-1");
        d2.labels.clear();
        assert_eq!(cat.resolve_gpu(&d2, &mut defs), 0);
        assert_eq!(defs.len(), 2);
        assert_eq!(cat.gpus[0].desc, d2);
    }
}
