//! Writing an archived segment to the store so that it is either wholly visible or absent.
//!
//! Small objects go up in one PUT; large ones as a multipart upload, which the store only
//! makes visible on completion (and which is aborted on failure). Either way a reader never
//! sees a partial object, and because the key is a pure function of the segment, repeating an
//! upload after a crash or an error just writes the same object again.

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use super::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOptions {
    /// Objects larger than this use a multipart upload.
    pub multipart_threshold_bytes: usize,
    /// Part size of a multipart upload (S3 needs at least 5 MiB for all but the last part).
    pub part_size_bytes: usize,
    /// Parts in flight at once within one upload.
    pub max_parts_in_flight: usize,
    pub verify: Verify,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            multipart_threshold_bytes: 64 * 1024 * 1024,
            part_size_bytes: 16 * 1024 * 1024,
            max_parts_in_flight: 4,
            verify: Verify::Size,
        }
    }
}

/// What to check after an upload, before the caller commits it to the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    None,
    /// HEAD the object and compare its size.
    Size,
    /// GET the object back and compare every byte.
    Content,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub location: Path,
    pub size_bytes: u64,
    pub e_tag: Option<String>,
}

/// Uploads `data` to `location`, replacing any object there.
pub async fn upload(
    store: &dyn ObjectStore,
    location: &Path,
    data: Bytes,
    options: &UploadOptions,
) -> Result<Uploaded, StoreError> {
    let size_bytes = data.len() as u64;
    let result = if data.len() <= options.multipart_threshold_bytes {
        store
            .put(location, PutPayload::from_bytes(data.clone()))
            .await
    } else {
        upload_multipart(store, location, data.clone(), options).await
    };
    let put = result.map_err(|source| StoreError::Upload {
        location: location.clone(),
        source,
    })?;
    verify(store, location, &data, options.verify).await?;
    tracing::debug!(%location, size_bytes, "uploaded");
    Ok(Uploaded {
        location: location.clone(),
        size_bytes,
        e_tag: put.e_tag,
    })
}

async fn upload_multipart(
    store: &dyn ObjectStore,
    location: &Path,
    data: Bytes,
    options: &UploadOptions,
) -> Result<object_store::PutResult, object_store::Error> {
    let part_size = options.part_size_bytes.max(1);
    let upload = store.put_multipart(location).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
    let mut sent = 0;
    while sent < data.len() {
        if let Err(e) = writer
            .wait_for_capacity(options.max_parts_in_flight.max(1))
            .await
        {
            abort(writer, location).await;
            return Err(e);
        }
        let end = (sent + part_size).min(data.len());
        writer.put(data.slice(sent..end));
        sent = end;
    }
    // `finish` aborts the upload itself when a part or the completion fails.
    writer.finish().await
}

async fn abort(writer: WriteMultipart, location: &Path) {
    if let Err(e) = writer.abort().await {
        // The store expires abandoned parts (S3: a bucket lifecycle rule); nothing visible
        // was created, so this is only worth a warning.
        tracing::warn!(%location, error = %e, "could not abort a failed multipart upload");
    }
}

async fn verify(
    store: &dyn ObjectStore,
    location: &Path,
    data: &Bytes,
    mode: Verify,
) -> Result<(), StoreError> {
    let found = match mode {
        Verify::None => return Ok(()),
        Verify::Size => store
            .head(location)
            .await
            .map(|m| m.size == data.len() as u64),
        Verify::Content => match store.get(location).await {
            Ok(get) => get.bytes().await.map(|b| b == *data),
            Err(e) => Err(e),
        },
    };
    match found {
        Ok(true) => Ok(()),
        Ok(false) => Err(StoreError::VerifyMismatch {
            location: location.clone(),
        }),
        Err(source) => Err(StoreError::Upload {
            location: location.clone(),
            source,
        }),
    }
}
