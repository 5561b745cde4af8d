//! The `[tiering]` section: where sealed segments of tiered topics go, how they are uploaded,
//! and the cache that serves them back. Which topics are tiered, and for how long data stays
//! in each tier, are topic configs (`remote.storage.enable`, `local.retention.*`,
//! `retention.*`), optionally taken from a named `[tier_profiles.<name>]`.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TieringConfig {
    /// The object store: `file:///abs/dir`, `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix`. Empty = the local directory `<data_dir>/objects`. One cluster
    /// per bucket/prefix (marked by `strata-cluster.json` there).
    pub url: String,
    /// How often the broker looks for sealed segments to upload and applies the local and
    /// remote retention of tiered topics, ms.
    pub upload_interval_ms: u64,
    /// Partitions converting and uploading at once.
    pub upload_concurrency: usize,
    /// Largest stretch of a sealed segment archived as one object, in bytes of segment data;
    /// a larger segment becomes several objects (bounds the memory one upload needs).
    pub max_object_bytes: u64,
    /// A Parquet row group closes past this many bytes of keys, values and headers. A remote
    /// read fetches and caches whole row groups.
    pub row_group_bytes: usize,
    /// zstd level of the Parquet columns (1-22).
    pub zstd_level: i32,
    /// Requests to the store in flight at once, uploads and reads together.
    pub max_concurrent_requests: usize,
    /// Whole-request timeout of cloud stores, ms.
    pub request_timeout_ms: u64,
    /// Connect timeout of cloud stores, ms.
    pub connect_timeout_ms: u64,
    /// Memory of the remote-read cache (rebuilt record batches), bytes.
    pub cache_memory_bytes: usize,
    /// Local disk of the remote-read cache, bytes; 0 = memory only.
    pub cache_disk_bytes: usize,
    /// Directory of the disk cache. Empty = `<data_dir>/cache`.
    pub cache_dir: String,
    /// Row groups read ahead of a sequential remote reader.
    pub prefetch_row_groups: usize,
    /// Longest a Fetch waits for a remote read (Kafka `remote.fetch.max.wait.ms`), ms, when
    /// the client's own max wait is shorter. A read still running then is answered empty
    /// and finishes into the cache for the client's next fetch.
    pub remote_fetch_max_wait_ms: u64,
    pub retry: RetryConfig,
    pub s3: S3Config,
}

impl Default for TieringConfig {
    fn default() -> Self {
        TieringConfig {
            url: String::new(),
            upload_interval_ms: 1000,
            upload_concurrency: 2,
            max_object_bytes: 128 * 1024 * 1024,
            row_group_bytes: 4 * 1024 * 1024,
            zstd_level: 3,
            max_concurrent_requests: 16,
            request_timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            cache_memory_bytes: 256 * 1024 * 1024,
            cache_disk_bytes: 1024 * 1024 * 1024,
            cache_dir: String::new(),
            prefetch_row_groups: 2,
            remote_fetch_max_wait_ms: 500,
            retry: RetryConfig::default(),
            s3: S3Config::default(),
        }
    }
}

/// Retries of one store request on connection errors, 5xx and throttling, with exponential
/// backoff. An upload that still fails is retried as a whole at the next upload interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub max_retries: usize,
    /// No retry starts after this long since the first attempt, ms.
    pub retry_timeout_ms: u64,
    pub init_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let d = tiering::store::RetryOptions::default();
        RetryConfig {
            max_retries: d.max_retries,
            retry_timeout_ms: d.retry_timeout_ms,
            init_backoff_ms: d.init_backoff_ms,
            max_backoff_ms: d.max_backoff_ms,
        }
    }
}

/// S3 and S3-compatible servers. Empty values fall back to the AWS environment
/// (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...), then instance credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:9000` for MinIO or another S3-compatible server.
    pub endpoint: String,
    pub region: String,
    /// `endpoint/bucket/key` requests (true) or `bucket.endpoint/key` (false).
    pub path_style: bool,
    /// Allow a plain `http://` endpoint.
    pub allow_http: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            region: String::new(),
            path_style: true,
            allow_http: false,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: String::new(),
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl TieringConfig {
    /// The store URL, with the embedded default resolved against the data dir.
    /// Checks values that have a valid range.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=22).contains(&self.zstd_level) {
            return Err("tiering.zstd_level must be between 1 and 22".into());
        }
        if self.upload_interval_ms == 0 || self.upload_concurrency == 0 {
            return Err("tiering.upload_interval_ms and upload_concurrency must be >= 1".into());
        }
        if self.max_object_bytes < 1024 {
            return Err("tiering.max_object_bytes must be >= 1024".into());
        }
        if !self.url.is_empty() && !self.url.contains("://") {
            return Err(format!(
                "tiering.url '{}' is not a URL: expected file:///dir, s3://bucket/prefix, gs://... or az://...",
                self.url
            ));
        }
        Ok(())
    }

    pub fn store_url(&self, data_dir: &Path) -> String {
        if !self.url.is_empty() {
            return self.url.clone();
        }
        let dir = data_dir.join("objects");
        let abs = std::path::absolute(&dir).unwrap_or(dir);
        format!("file://{}", abs.display())
    }

    pub fn cache_dir(&self, data_dir: &Path) -> std::path::PathBuf {
        if self.cache_dir.is_empty() {
            data_dir.join("cache")
        } else {
            self.cache_dir.clone().into()
        }
    }

    pub fn store_options(&self) -> tiering::StoreOptions {
        tiering::StoreOptions {
            max_concurrent_requests: self.max_concurrent_requests.max(1),
            retry: tiering::store::RetryOptions {
                max_retries: self.retry.max_retries,
                retry_timeout_ms: self.retry.retry_timeout_ms,
                init_backoff_ms: self.retry.init_backoff_ms,
                max_backoff_ms: self.retry.max_backoff_ms,
            },
            request_timeout_ms: self.request_timeout_ms,
            connect_timeout_ms: self.connect_timeout_ms,
            s3: tiering::store::S3Options {
                endpoint: non_empty(&self.s3.endpoint),
                region: non_empty(&self.s3.region),
                path_style: Some(self.s3.path_style),
                allow_http: self.s3.allow_http,
                access_key_id: non_empty(&self.s3.access_key_id),
                secret_access_key: non_empty(&self.s3.secret_access_key),
                session_token: non_empty(&self.s3.session_token),
            },
        }
    }

    pub fn write_options(&self) -> tiering::WriteOptions {
        tiering::WriteOptions {
            row_group_max_bytes: self.row_group_bytes.max(1),
            zstd_level: self.zstd_level,
            ..Default::default()
        }
    }
}
