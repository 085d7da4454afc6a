//! CSV and Parquet export over any [`MetricStore`].
//!
//! Both walk the series matching a filter one at a time and page through each with the
//! query cursor, so memory stays bounded by one page (plus, for Parquet, one row group of
//! [`ROW_GROUP_ROWS`] rows) whatever the export size. Rows are
//! `timestamp, host, gpu_uuid, gpu_index, device, model, metric, value`, series in key order,
//! points in time order.

use crate::{Agg, MetricStore, RangeQuery, SeriesFilter, StoreError};
use gpufleet_core::{time::format_rfc3339, GpuDesc, SeriesKey};
use parquet::{
    basic::Compression,
    data_type::{ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type},
    file::{properties::WriterProperties, writer::SerializedFileWriter},
    schema::parser::parse_message_type,
};
use std::{io::Write, sync::Arc};

/// Points fetched per query page.
const PAGE_POINTS: usize = 65_536;
/// Rows per Parquet row group.
pub const ROW_GROUP_ROWS: usize = 65_536;

/// The Parquet schema of an export.
pub const PARQUET_SCHEMA: &str = "message gpufleet_telemetry {
  required int64 timestamp (TIMESTAMP(MILLIS,true));
  required binary host (UTF8);
  required binary gpu_uuid (UTF8);
  optional int32 gpu_index;
  required binary device (UTF8);
  required binary model (UTF8);
  required binary metric (UTF8);
  required double value;
}";

fn export_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Export(e.to_string())
}

/// Calls `f` for every page of points of every matching series, in key then time order.
async fn for_each_page(
    store: &dyn MetricStore,
    filter: &SeriesFilter,
    start_ms: i64,
    end_ms: i64,
    mut f: impl FnMut(&SeriesKey, &GpuDesc, &[(i64, f64)]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for (key, desc) in store.series(filter).await? {
        let mut q = RangeQuery {
            uuid: key.uuid.clone(),
            host: Some(key.host.clone()),
            metrics: vec![key.metric.clone()],
            start_ms,
            end_ms,
            step_ms: None,
            agg: Agg::Avg,
            limit: PAGE_POINTS,
            cursor: None,
        };
        loop {
            let page = store.query_range(&q).await?;
            for s in page.series.iter().filter(|s| s.key == key) {
                f(&key, &desc, &s.points)?;
            }
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
    }
    Ok(())
}

/// Appends one CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// Writes matching samples in `[start_ms, end_ms)` as CSV with a header; returns rows written.
pub async fn export_csv<W: Write + Send>(
    store: &dyn MetricStore,
    filter: &SeriesFilter,
    start_ms: i64,
    end_ms: i64,
    mut out: W,
) -> Result<u64, StoreError> {
    out.write_all(b"timestamp,host,gpu_uuid,gpu_index,device,model,metric,value\n")
        .map_err(export_err)?;
    let mut rows = 0u64;
    let mut line = String::new();
    for_each_page(store, filter, start_ms, end_ms, |key, desc, points| {
        let mut prefix = String::new();
        for (i, field) in [key.host.as_str(), key.uuid.as_str()].iter().enumerate() {
            if i > 0 {
                prefix.push(',');
            }
            csv_field(&mut prefix, field);
        }
        prefix.push(',');
        if let Some(i) = desc.index {
            prefix.push_str(&i.to_string());
        }
        for field in [
            desc.device.as_str(),
            desc.model.as_str(),
            key.metric.as_str(),
        ] {
            prefix.push(',');
            csv_field(&mut prefix, field);
        }
        for (ts, v) in points {
            line.clear();
            line.push_str(&format_rfc3339(*ts));
            line.push(',');
            line.push_str(&prefix);
            line.push(',');
            line.push_str(&v.to_string());
            line.push('\n');
            out.write_all(line.as_bytes()).map_err(export_err)?;
        }
        rows += points.len() as u64;
        Ok(())
    })
    .await?;
    out.flush().map_err(export_err)?;
    Ok(rows)
}

/// Columns of one Parquet row group being filled.
#[derive(Default)]
struct RowGroup {
    ts: Vec<i64>,
    host: Vec<ByteArray>,
    uuid: Vec<ByteArray>,
    index: Vec<i32>,
    index_def: Vec<i16>,
    device: Vec<ByteArray>,
    model: Vec<ByteArray>,
    metric: Vec<ByteArray>,
    value: Vec<f64>,
}

impl RowGroup {
    fn len(&self) -> usize {
        self.ts.len()
    }

    fn write<W: Write + Send>(
        &mut self,
        w: &mut SerializedFileWriter<W>,
    ) -> Result<(), StoreError> {
        if self.len() == 0 {
            return Ok(());
        }
        let mut rg = w.next_row_group().map_err(export_err)?;
        let mut col = 0;
        while let Some(mut c) = rg.next_column().map_err(export_err)? {
            match col {
                0 => c.typed::<Int64Type>().write_batch(&self.ts, None, None),
                1 => c
                    .typed::<ByteArrayType>()
                    .write_batch(&self.host, None, None),
                2 => c
                    .typed::<ByteArrayType>()
                    .write_batch(&self.uuid, None, None),
                3 => c
                    .typed::<Int32Type>()
                    .write_batch(&self.index, Some(&self.index_def), None),
                4 => c
                    .typed::<ByteArrayType>()
                    .write_batch(&self.device, None, None),
                5 => c
                    .typed::<ByteArrayType>()
                    .write_batch(&self.model, None, None),
                6 => c
                    .typed::<ByteArrayType>()
                    .write_batch(&self.metric, None, None),
                _ => c.typed::<DoubleType>().write_batch(&self.value, None, None),
            }
            .map_err(export_err)?;
            c.close().map_err(export_err)?;
            col += 1;
        }
        rg.close().map_err(export_err)?;
        *self = RowGroup::default();
        Ok(())
    }
}

/// Writes matching samples in `[start_ms, end_ms)` as a Snappy-compressed Parquet file
/// ([`PARQUET_SCHEMA`], row groups of [`ROW_GROUP_ROWS`]); returns rows written.
pub async fn export_parquet<W: Write + Send>(
    store: &dyn MetricStore,
    filter: &SeriesFilter,
    start_ms: i64,
    end_ms: i64,
    out: W,
) -> Result<u64, StoreError> {
    let schema = Arc::new(parse_message_type(PARQUET_SCHEMA).map_err(export_err)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut w = SerializedFileWriter::new(out, schema, props).map_err(export_err)?;
    let mut rg = RowGroup::default();
    let mut rows = 0u64;
    for_each_page(store, filter, start_ms, end_ms, |key, desc, points| {
        let text = |s: &str| ByteArray::from(s.as_bytes().to_vec());
        let (host, uuid, device, model, metric) = (
            text(key.host.as_str()),
            text(key.uuid.as_str()),
            text(&desc.device),
            text(&desc.model),
            text(key.metric.as_str()),
        );
        let index = desc.index.and_then(|i| i32::try_from(i).ok());
        for (ts, v) in points {
            rg.ts.push(*ts);
            rg.host.push(host.clone());
            rg.uuid.push(uuid.clone());
            if let Some(i) = index {
                rg.index.push(i);
            }
            rg.index_def.push(i16::from(index.is_some()));
            rg.device.push(device.clone());
            rg.model.push(model.clone());
            rg.metric.push(metric.clone());
            rg.value.push(*v);
            rows += 1;
            if rg.len() >= ROW_GROUP_ROWS {
                rg.write(&mut w)?;
            }
        }
        Ok(())
    })
    .await?;
    rg.write(&mut w)?;
    w.close().map_err(export_err)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsuite::{batch, T0};
    use crate::{EmbeddedStore, StoreConfig};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    async fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(StoreConfig::new(dir.path())).unwrap();
        let mut rows = Vec::new();
        for i in 0..70_000i64 {
            rows.push((
                "node,1",
                "GPU-\"a\"",
                "DCGM_FI_DEV_GPU_UTIL",
                T0 + i * 10,
                (i % 100) as f64,
            ));
        }
        rows.push(("node2", "GPU-b", "DCGM_FI_DEV_POWER_USAGE", T0, 512.347));
        s.write(&batch(&rows[..30_000]), T0).await.unwrap();
        s.flush().await.unwrap();
        s.write(&batch(&rows[30_000..]), T0).await.unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn csv_quotes_fields_and_formats_times() {
        let (_d, s) = store().await;
        let mut out = Vec::new();
        let n = export_csv(&s, &SeriesFilter::default(), T0, T0 + 20, &mut out)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(n, 3);
        assert_eq!(
            lines[0],
            "timestamp,host,gpu_uuid,gpu_index,device,model,metric,value"
        );
        assert_eq!(lines[1], "2025-07-18T20:00:00Z,\"node,1\",\"GPU-\"\"a\"\"\",0,nvidia0,NVIDIA H100 80GB HBM3,DCGM_FI_DEV_GPU_UTIL,0");
        assert_eq!(lines[2], "2025-07-18T20:00:00.010Z,\"node,1\",\"GPU-\"\"a\"\"\",0,nvidia0,NVIDIA H100 80GB HBM3,DCGM_FI_DEV_GPU_UTIL,1");
        assert_eq!(lines[3], "2025-07-18T20:00:00Z,node2,GPU-b,0,nvidia0,NVIDIA H100 80GB HBM3,DCGM_FI_DEV_POWER_USAGE,512.347");
    }

    #[tokio::test]
    async fn parquet_reads_back_the_same_rows() {
        let (d, s) = store().await;
        let path = d.path().join("out.parquet");
        let n = export_parquet(
            &s,
            &SeriesFilter::default(),
            T0,
            T0 + 1_000_000,
            std::fs::File::create(&path).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(n, 70_001);
        let mut csv = Vec::new();
        export_csv(&s, &SeriesFilter::default(), T0, T0 + 1_000_000, &mut csv)
            .await
            .unwrap();
        let csv = String::from_utf8(csv).unwrap();
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 2);
        let mut got = 0;
        for (row, line) in reader.get_row_iter(None).unwrap().zip(csv.lines().skip(1)) {
            let row = row.unwrap();
            let f: Vec<&Field> = row.get_column_iter().map(|(_, f)| f).collect();
            let Field::TimestampMillis(ts) = f[0] else {
                panic!("timestamp type {:?}", f[0])
            };
            let Field::Str(host) = f[1] else {
                panic!("host type")
            };
            let Field::Double(v) = f[7] else {
                panic!("value type")
            };
            let cols: Vec<&str> = line.rsplitn(2, ',').collect();
            assert!(line.starts_with(&format_rfc3339(*ts)));
            assert!(line.contains(host.split(',').next().unwrap()));
            assert_eq!(cols[0], v.to_string());
            assert_eq!(f[3], &Field::Int(0));
            got += 1;
        }
        assert_eq!(got, 70_001);
    }
}
