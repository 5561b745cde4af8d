//! `strata tier status`: a summary of tiered storage that the running broker rewrites every
//! upload interval to `<data_dir>/tier-status.json`, and the table the CLI prints from it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::Tiering;
use crate::cluster::MetadataImage;
use crate::config::BrokerConfig;
use crate::storage::LogManager;

pub const FILE: &str = "tier-status.json";

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// First offset readers may get (remote or local).
    pub log_start_offset: i64,
    /// First offset held on local disk.
    pub local_start_offset: i64,
    pub high_watermark: i64,
    pub remote_segments: usize,
    pub remote_bytes: u64,
    /// The offset after the last archived one; -1 when nothing is archived.
    pub remote_end_offset: i64,
    pub local_bytes: u64,
    /// Sealed local data not archived yet.
    pub upload_lag_bytes: u64,
    pub upload_lag_segments: usize,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TierStatus {
    pub store: String,
    pub updated_ms: i64,
    pub disk_low: bool,
    pub partitions: Vec<PartitionStatus>,
    pub uploads_total: u64,
    pub upload_errors_total: u64,
    pub uploaded_bytes_total: u64,
    pub uploaded_segment_bytes_total: u64,
    pub upload_ms_total: u64,
    pub remote_reads_total: u64,
    pub remote_read_errors_total: u64,
    pub remote_read_ms_total: u64,
    pub remote_read_ms_max: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub objects_deleted_total: u64,
}

impl Tiering {
    pub fn status(&self, image: &MetadataImage, logs: &LogManager) -> TierStatus {
        let mut partitions = Vec::new();
        for p in logs.all_partitions() {
            let Some(meta) = image.topic(p.topic()) else {
                continue;
            };
            let remote = image.remote_log(&meta.id, p.index());
            if !p.tiered() && remote.is_none() {
                continue;
            }
            let o = p.offsets();
            let spans = p.segment_spans();
            let remote_end = remote.and_then(|r| r.manifest.end_offset());
            let pending: Vec<_> = spans[..spans.len().saturating_sub(1)]
                .iter()
                .filter(|(_, next, _)| remote_end.is_none_or(|end| *next > end))
                .collect();
            partitions.push(PartitionStatus {
                topic: p.topic().to_owned(),
                partition: p.index(),
                log_start_offset: remote.and_then(|r| r.start_offset()).unwrap_or(o.log_start),
                local_start_offset: o.log_start,
                high_watermark: o.high_watermark,
                remote_segments: remote.map_or(0, |r| r.manifest.segments.len()),
                remote_bytes: remote.map_or(0, |r| r.manifest.size_bytes()),
                remote_end_offset: remote_end.unwrap_or(-1),
                local_bytes: spans.iter().map(|s| s.2).sum(),
                upload_lag_bytes: pending.iter().map(|s| s.2).sum(),
                upload_lag_segments: pending.len(),
                last_error: self.error_of(&p.name()),
            });
        }
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let m = &self.metrics;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        TierStatus {
            store: self.url.clone(),
            updated_ms: crate::now_ms(),
            disk_low: self.disk_low(),
            partitions,
            uploads_total: get(&m.uploads_total),
            upload_errors_total: get(&m.upload_errors_total),
            uploaded_bytes_total: get(&m.uploaded_bytes_total),
            uploaded_segment_bytes_total: get(&m.uploaded_segment_bytes_total),
            upload_ms_total: get(&m.upload_ms_total),
            remote_reads_total: get(&m.remote_reads_total),
            remote_read_errors_total: get(&m.remote_read_errors_total),
            remote_read_ms_total: get(&m.remote_read_ms_total),
            remote_read_ms_max: get(&m.remote_read_ms_max),
            cache_hits: get(&m.cache_hits),
            cache_misses: get(&m.cache_misses),
            objects_deleted_total: get(&m.objects_deleted_total),
        }
    }

    /// Rewrites the status file (atomically: readers never see half of it).
    pub(super) fn write_status(
        &self,
        config: &BrokerConfig,
        image: &MetadataImage,
        logs: &LogManager,
    ) {
        let status = self.status(image, logs);
        let lag: u64 = status.partitions.iter().map(|p| p.upload_lag_bytes).sum();
        if lag > 0 {
            tracing::debug!(upload_lag_bytes = lag, "tiered data awaiting upload");
        }
        let path = path(&config.data_dir);
        let tmp = path.with_extension("json.tmp");
        let write = serde_json::to_vec_pretty(&status)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(&tmp, json))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = write {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the tier status file");
        }
    }
}

/// The table `strata tier status` prints.
pub fn render(status: &TierStatus, now_ms: i64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let age_s = (now_ms - status.updated_ms).max(0) as f64 / 1000.0;
    let _ = writeln!(
        out,
        "store: {}   (status written {age_s:.1} s ago)",
        status.store
    );
    if status.disk_low {
        let _ = writeln!(
            out,
            "WARNING: the data dir is nearly full; produce is refused"
        );
    }
    let _ = writeln!(
        out,
        "uploads: {} ({} errors), {} archived from {} of segments in {:.1} s; objects deleted: {}",
        status.uploads_total,
        status.upload_errors_total,
        human(status.uploaded_bytes_total),
        human(status.uploaded_segment_bytes_total),
        status.upload_ms_total as f64 / 1000.0,
        status.objects_deleted_total,
    );
    let lookups = status.cache_hits + status.cache_misses;
    let _ = writeln!(
        out,
        "remote reads: {} ({} errors), mean {:.1} ms, max {} ms; cache hit ratio {}",
        status.remote_reads_total,
        status.remote_read_errors_total,
        status.remote_read_ms_total as f64 / status.remote_reads_total.max(1) as f64,
        status.remote_read_ms_max,
        if lookups == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * status.cache_hits as f64 / lookups as f64)
        },
    );
    let _ = writeln!(
        out,
        "\n{:<32} {:>10} {:>12} {:>12} {:>12} {:>8} {:>10} {:>10} {:>12}  LAST ERROR",
        "PARTITION",
        "LOG START",
        "LOCAL START",
        "REMOTE END",
        "HW",
        "OBJECTS",
        "REMOTE",
        "LOCAL",
        "UPLOAD LAG",
    );
    for p in &status.partitions {
        let _ = writeln!(
            out,
            "{:<32} {:>10} {:>12} {:>12} {:>12} {:>8} {:>10} {:>10} {:>12}  {}",
            format!("{}-{}", p.topic, p.partition),
            p.log_start_offset,
            p.local_start_offset,
            if p.remote_end_offset < 0 {
                "-".to_string()
            } else {
                p.remote_end_offset.to_string()
            },
            p.high_watermark,
            p.remote_segments,
            human(p.remote_bytes),
            human(p.local_bytes),
            format!("{} ({})", human(p.upload_lag_bytes), p.upload_lag_segments),
            p.last_error.as_deref().unwrap_or("-"),
        );
    }
    if status.partitions.is_empty() {
        let _ = writeln!(
            out,
            "(no tiered partitions: set remote.storage.enable=true on a topic)"
        );
    }
    out
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// SQL that queries a topic's archive where the objects live.
pub fn sql(store_url: &str, topic: &str, engine: &str) -> Result<String, String> {
    let base = store_url.trim_end_matches('/');
    let (location, duckdb_setup) = match base.split_once("://") {
        Some(("file", path)) => (path.to_string(), String::new()),
        Some(("s3", _)) => (
            base.to_string(),
            "-- S3: INSTALL httpfs; LOAD httpfs; CREATE SECRET (TYPE s3, PROVIDER credential_chain);\n".to_string(),
        ),
        Some(("gs", _)) => (
            base.to_string(),
            "-- GCS: INSTALL httpfs; LOAD httpfs; CREATE SECRET (TYPE gcs, PROVIDER credential_chain);\n".to_string(),
        ),
        Some(("az", rest)) => (
            format!("az://{rest}"),
            "-- Azure: INSTALL azure; LOAD azure; CREATE SECRET (TYPE azure, PROVIDER credential_chain, ACCOUNT_NAME '<account>');\n".to_string(),
        ),
        _ => return Err(format!("cannot build SQL for the store {store_url}")),
    };
    let glob = format!("{location}/topics/{topic}/*/*.parquet");
    match engine {
        "duckdb" => Ok(format!(
            "{duckdb_setup}SELECT partition, \"offset\", \"timestamp\", key, value, headers \
             FROM read_parquet('{glob}', hive_partitioning = true) \
             WHERE NOT is_control ORDER BY partition, \"offset\";"
        )),
        "spark" => {
            let spark_location = match base.split_once("://") {
                Some(("file", path)) => format!("file://{path}"),
                Some(("s3", rest)) => format!("s3a://{rest}"),
                _ => location.clone(),
            };
            Ok(format!(
                "CREATE TEMPORARY VIEW {view} USING parquet OPTIONS (path '{spark_location}/topics/{topic}');\n\
                 SELECT partition, `offset`, `timestamp`, key, value, headers FROM {view} \
                 WHERE NOT is_control ORDER BY partition, `offset`;",
                view = topic.replace(['.', '-'], "_"),
            ))
        }
        other => Err(format!(
            "unknown engine '{other}': expected duckdb or spark"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_for_each_store_and_engine() {
        let q = sql("file:///var/lib/strata/objects", "orders", "duckdb").unwrap();
        assert!(q.starts_with("SELECT"), "{q}");
        assert!(q.contains("read_parquet('/var/lib/strata/objects/topics/orders/*/*.parquet', hive_partitioning = true)"));
        let q = sql("s3://bucket/prefix/", "orders", "duckdb").unwrap();
        assert!(
            q.contains("httpfs") && q.contains("'s3://bucket/prefix/topics/orders/*/*.parquet'")
        );
        let q = sql("s3://bucket/prefix", "my.topic", "spark").unwrap();
        assert!(q.contains("s3a://bucket/prefix/topics/my.topic") && q.contains("VIEW my_topic"));
        assert!(sql("s3://b", "t", "trino").is_err());
        assert!(sql("nonsense", "t", "duckdb").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(10), "10 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
