//! Opening the object store named by a URL, with retries and a bound on concurrent requests.

use std::sync::Arc;
#[cfg(feature = "cloud")]
use std::time::Duration;

use object_store::limit::LimitStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

use super::StoreError;

/// How to reach and use the object store. Every field has a default that suits a real cloud
/// store; tests shorten the retry budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Requests in flight at once, across uploads and downloads (a semaphore in front of the
    /// store). Bounds sockets, file descriptors and memory held by streaming bodies.
    pub max_concurrent_requests: usize,
    /// Retries of one request on connection errors, 5xx and throttling (429/503 SlowDown),
    /// with exponential backoff and jitter. Cloud stores only: local ones do not fail that way.
    pub retry: RetryOptions,
    /// Whole-request timeout (cloud stores).
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub s3: S3Options,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_concurrent_requests: 16,
            retry: RetryOptions::default(),
            request_timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            s3: S3Options::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOptions {
    /// 0 disables retries.
    pub max_retries: usize,
    /// No retry starts after this long since the first attempt.
    pub retry_timeout_ms: u64,
    pub init_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryOptions {
    fn default() -> Self {
        // object_store's own defaults, spelled out so the broker config can show them.
        RetryOptions {
            max_retries: 10,
            retry_timeout_ms: 180_000,
            init_backoff_ms: 100,
            max_backoff_ms: 15_000,
        }
    }
}

/// Settings for S3 and S3-compatible servers (MinIO, Ceph, R2, moto). Unset fields fall back
/// to the `AWS_*` environment (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...), then
/// to web identity, ECS or EC2 instance credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// e.g. `http://127.0.0.1:9000` for a local server.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `Some(true)`: `endpoint/bucket/key` requests (most S3-compatible servers);
    /// `Some(false)`: `bucket.endpoint/key` (virtual-hosted).
    pub path_style: Option<bool>,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

/// Opens the store a URL names:
///
/// - `file:///abs/dir` a local directory (created if missing); objects are files under it,
///   written to a temporary file, fsynced and renamed into place.
/// - `memory://` a fresh in-memory store (tests, experiments).
/// - `s3://bucket[/prefix]` S3 or an S3-compatible server (feature `s3`, on by default).
/// - `gs://bucket[/prefix]` Google Cloud Storage (feature `gcp`; `GOOGLE_*` environment).
/// - `az://container[/prefix]` Azure Blob Storage (feature `azure`; `AZURE_*` environment).
///
/// The prefix, if any, is prepended to every key, so `s3://b/strata` puts
/// `topics/orders/partition=0/...` at `s3://b/strata/topics/orders/partition=0/...`.
pub fn open_store(url: &str, options: &StoreOptions) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| StoreError::InvalidUrl {
            url: url.to_owned(),
            reason: "expected scheme://...",
        })?;
    let store: Arc<dyn ObjectStore> = match scheme {
        "file" => {
            if !rest.starts_with('/') {
                return Err(StoreError::InvalidUrl {
                    url: url.to_owned(),
                    reason: "file URLs need an absolute path: file:///dir",
                });
            }
            std::fs::create_dir_all(rest).map_err(|source| StoreError::LocalDir {
                path: rest.into(),
                source,
            })?;
            let fs = LocalFileSystem::new_with_prefix(rest).map_err(|source| StoreError::Open {
                url: url.to_owned(),
                source,
            })?;
            // The local directory is the remote tier of an embedded broker: once an upload
            // is committed the local segment may be deleted, so the object must survive a
            // power cut (file and directory fsync; one per segment, so cheap).
            Arc::new(fs.with_fsync(true))
        }
        "memory" => {
            if !rest.trim_matches('/').is_empty() {
                return Err(StoreError::InvalidUrl {
                    url: url.to_owned(),
                    reason: "memory:// takes no bucket or path",
                });
            }
            Arc::new(InMemory::new())
        }
        "s3" | "gs" | "az" => {
            let (bucket, prefix) = split_bucket(url, rest)?;
            let inner = cloud_store(url, scheme, bucket, options)?;
            if prefix.is_empty() {
                inner
            } else {
                let prefix = Path::parse(prefix).map_err(|_| StoreError::InvalidUrl {
                    url: url.to_owned(),
                    reason: "the prefix is not a valid object path",
                })?;
                Arc::new(PrefixStore::new(inner, prefix))
            }
        }
        _ => {
            return Err(StoreError::InvalidUrl {
                url: url.to_owned(),
                reason: "unknown scheme (file, memory, s3, gs, az)",
            })
        }
    };
    Ok(Arc::new(LimitStore::new(
        store,
        options.max_concurrent_requests.max(1),
    )))
}

fn split_bucket<'a>(url: &str, rest: &'a str) -> Result<(&'a str, &'a str), StoreError> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(StoreError::InvalidUrl {
            url: url.to_owned(),
            reason: "missing bucket",
        });
    }
    Ok((bucket, prefix.trim_matches('/')))
}

#[cfg(feature = "cloud")]
fn retry_config(options: &StoreOptions) -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(options.retry.init_backoff_ms),
            max_backoff: Duration::from_millis(options.retry.max_backoff_ms),
            base: 2.0,
        },
        max_retries: options.retry.max_retries,
        retry_timeout: Duration::from_millis(options.retry.retry_timeout_ms),
    }
}

#[cfg(feature = "cloud")]
fn client_options(options: &StoreOptions) -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_timeout(Duration::from_millis(options.request_timeout_ms))
        .with_connect_timeout(Duration::from_millis(options.connect_timeout_ms))
        .with_allow_http(options.s3.allow_http)
}

/// reqwest is built on rustls without a bundled crypto provider (see Cargo.toml), so rustls
/// needs a process-wide default before the first HTTP client is built. A provider installed
/// earlier (say, by the broker's own TLS setup) is kept.
#[cfg(feature = "cloud")]
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn disabled(scheme: &str) -> StoreError {
    StoreError::FeatureDisabled {
        scheme: scheme.to_owned(),
        feature: match scheme {
            "s3" => "s3",
            "gs" => "gcp",
            _ => "azure",
        },
    }
}

#[cfg(not(feature = "cloud"))]
fn cloud_store(
    _url: &str,
    scheme: &str,
    _bucket: &str,
    _options: &StoreOptions,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    Err(disabled(scheme))
}

#[cfg(feature = "cloud")]
fn cloud_store(
    url: &str,
    scheme: &str,
    bucket: &str,
    options: &StoreOptions,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    install_tls_provider();
    let opened: Result<Arc<dyn ObjectStore>, object_store::Error> = match scheme {
        #[cfg(feature = "s3")]
        "s3" => {
            let s3 = &options.s3;
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry_config(options))
                .with_client_options(client_options(options))
                .with_allow_http(s3.allow_http);
            if let Some(endpoint) = &s3.endpoint {
                b = b.with_endpoint(endpoint);
            }
            if let Some(region) = &s3.region {
                b = b.with_region(region);
            }
            if let Some(path_style) = s3.path_style {
                b = b.with_virtual_hosted_style_request(!path_style);
            }
            if let Some(key) = &s3.access_key_id {
                b = b.with_access_key_id(key);
            }
            if let Some(secret) = &s3.secret_access_key {
                b = b.with_secret_access_key(secret);
            }
            if let Some(token) = &s3.session_token {
                b = b.with_token(token);
            }
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        #[cfg(feature = "gcp")]
        "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry_config(options))
            .with_client_options(client_options(options))
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        #[cfg(feature = "azure")]
        "az" => object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_container_name(bucket)
            .with_retry(retry_config(options))
            .with_client_options(client_options(options))
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        _ => return Err(disabled(scheme)),
    };
    opened.map_err(|source| StoreError::Open {
        url: url.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = StoreOptions::default();
        assert!(open_store("memory://", &o).is_ok());
        assert!(matches!(
            open_store("memory://x", &o),
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            open_store("ftp://x", &o),
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            open_store("/tmp/x", &o),
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            open_store("file://relative/dir", &o),
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            open_store("s3:///prefix", &o),
            Err(StoreError::InvalidUrl { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let url = format!("file://{}", nested.display());
        assert!(open_store(&url, &o).is_ok());
        assert!(nested.is_dir());
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_with_prefix_opens_without_network() {
        let o = StoreOptions {
            s3: S3Options {
                endpoint: Some("http://127.0.0.1:1".into()),
                region: Some("us-east-1".into()),
                path_style: Some(true),
                allow_http: true,
                access_key_id: Some("k".into()),
                secret_access_key: Some("s".into()),
                session_token: None,
            },
            ..StoreOptions::default()
        };
        let store = open_store("s3://bucket/some/prefix/", &o).unwrap();
        assert!(store.to_string().contains("some/prefix"), "{store}");
    }

    #[cfg(not(feature = "gcp"))]
    #[test]
    fn disabled_feature_says_which() {
        let err = open_store("gs://b", &StoreOptions::default()).unwrap_err();
        assert!(err.to_string().contains("gcp"), "{err}");
    }
}
