//! The admin HTTP endpoint (`http_listen`, default 127.0.0.1:9644): Prometheus text at
//! `/metrics`, the tiered-storage summary as JSON at `/v1/tier/status`, and `/health`.
//! Read-only; one task per connection; HTTP/1.1 by hyper.

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::broker::Broker;

/// Serves until the process ends.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin HTTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let broker = broker.clone();
                async move { Ok::<_, Infallible>(route(&broker, &req)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "admin HTTP connection");
            }
        });
    }
}

fn route(broker: &Broker, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", metrics(broker)),
        "/v1/tier/status" => {
            let status = broker
                .tiering
                .status(&broker.metadata.image(), &broker.logs);
            let body = serde_json::to_string_pretty(&status).unwrap_or_default();
            reply(StatusCode::OK, "application/json", body)
        }
        "/health" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /v1/tier/status or /health\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// One metric family: its HELP and TYPE lines, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn labels(topic: &str, partition: i32) -> String {
    // Topic names are [a-zA-Z0-9._-]: nothing to escape.
    format!("{{topic=\"{topic}\",partition=\"{partition}\"}}")
}

/// The Prometheus text exposition of the broker's partitions and tiered storage.
pub fn metrics(broker: &Broker) -> String {
    let mut out = String::new();
    let mut sizes = Vec::new();
    let mut hws = Vec::new();
    for p in broker.logs.all_partitions() {
        let l = labels(p.topic(), p.index());
        sizes.push((l.clone(), p.size_bytes() as f64));
        hws.push((l, p.high_watermark() as f64));
    }
    family(
        &mut out,
        "strata_partition_local_bytes",
        "gauge",
        "Bytes of a partition's segments on local disk.",
        &sizes,
    );
    family(
        &mut out,
        "strata_partition_high_watermark",
        "gauge",
        "A partition's high watermark (next offset readers may see).",
        &hws,
    );
    crate::storage::metrics::FSYNC.render(
        "strata_fsync_duration_seconds",
        "Time of each partition fsync (group commit and background flushes).",
        &mut out,
    );
    crate::storage::metrics::APPEND.render(
        "strata_append_duration_seconds",
        "Time of each produce append (validation and page-cache write, partition locked).",
        &mut out,
    );
    crate::storage::metrics::PRODUCE.render(
        "strata_produce_duration_seconds",
        "Time of each Produce request (acks 1 or all) in the broker, to its response.",
        &mut out,
    );

    let status = broker
        .tiering
        .status(&broker.metadata.image(), &broker.logs);
    let per = |f: &dyn Fn(&crate::tier::status::PartitionStatus) -> f64| -> Vec<(String, f64)> {
        status
            .partitions
            .iter()
            .map(|p| (labels(&p.topic, p.partition), f(p)))
            .collect()
    };
    family(
        &mut out,
        "strata_tier_remote_bytes",
        "gauge",
        "Bytes of a partition's archived objects in the object store.",
        &per(&|p| p.remote_bytes as f64),
    );
    family(
        &mut out,
        "strata_tier_remote_segments",
        "gauge",
        "Archived objects of a partition.",
        &per(&|p| p.remote_segments as f64),
    );
    family(
        &mut out,
        "strata_tier_upload_lag_bytes",
        "gauge",
        "Bytes of sealed segments not archived yet.",
        &per(&|p| p.upload_lag_bytes as f64),
    );
    family(
        &mut out,
        "strata_tier_upload_lag_segments",
        "gauge",
        "Sealed segments not archived yet.",
        &per(&|p| p.upload_lag_segments as f64),
    );
    let one = |v: u64| vec![(String::new(), v as f64)];
    family(
        &mut out,
        "strata_tier_uploads_total",
        "counter",
        "Objects archived.",
        &one(status.uploads_total),
    );
    family(
        &mut out,
        "strata_tier_upload_errors_total",
        "counter",
        "Failed upload attempts (retried).",
        &one(status.upload_errors_total),
    );
    family(
        &mut out,
        "strata_tier_uploaded_bytes_total",
        "counter",
        "Parquet bytes uploaded.",
        &one(status.uploaded_bytes_total),
    );
    family(
        &mut out,
        "strata_tier_remote_reads_total",
        "counter",
        "Fetch reads served from the object store.",
        &one(status.remote_reads_total),
    );
    family(
        &mut out,
        "strata_tier_remote_read_errors_total",
        "counter",
        "Remote reads that failed.",
        &one(status.remote_read_errors_total),
    );
    family(
        &mut out,
        "strata_tier_remote_read_seconds_total",
        "counter",
        "Time spent in remote reads.",
        &[(String::new(), status.remote_read_ms_total as f64 / 1000.0)],
    );
    family(
        &mut out,
        "strata_tier_cache_hits_total",
        "counter",
        "Row groups served from the remote-read cache.",
        &one(status.cache_hits),
    );
    family(
        &mut out,
        "strata_tier_cache_misses_total",
        "counter",
        "Row groups read from the object store.",
        &one(status.cache_misses),
    );
    family(
        &mut out,
        "strata_tier_objects_deleted_total",
        "counter",
        "Archived objects deleted (retention, sweeps).",
        &one(status.objects_deleted_total),
    );
    family(
        &mut out,
        "strata_disk_low",
        "gauge",
        "1 while produce is refused for lack of free disk space.",
        &one(u64::from(status.disk_low)),
    );
    out
}
