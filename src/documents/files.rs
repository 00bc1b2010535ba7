//! Where uploaded files live: a `bytea` row in PostgreSQL by default, or an object in
//! `DOCUMENTS_BUCKET` (server-side encrypted: SSE-KMS with `DOCUMENTS_KMS_KEY_ID`, SSE-S3
//! without), so large files stay out of the database when the operator prefers.

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use sqlx::PgConnection;
use uuid::Uuid;

use super::DocumentsState;

/// Where a new file goes: (`storage`, `storage_key`) as stored on the document row.
pub fn placement(state: &DocumentsState, id: Uuid) -> (&'static str, Option<String>) {
    match &state.config.bucket {
        Some(_) => ("s3", Some(format!("documents/{id}"))),
        None => ("postgres", None),
    }
}

/// Stores the file. For PostgreSQL, in the caller's transaction (the document and its bytes
/// commit together); for S3 before the transaction commits, so a committed document always has
/// its object (an object whose row never committed is removed by [`delete`] on the error path).
pub async fn put(
    state: &DocumentsState,
    tx: &mut PgConnection,
    id: Uuid,
    bytes: &[u8],
) -> anyhow::Result<()> {
    match &state.config.bucket {
        None => {
            sqlx::query!(
                "INSERT INTO document_contents (document_id, content) VALUES ($1, $2)",
                id,
                bytes
            )
            .execute(&mut *tx)
            .await?;
        }
        Some(bucket) => {
            let mut put = state
                .s3()
                .await
                .put_object()
                .bucket(bucket)
                .key(format!("documents/{id}"))
                .body(ByteStream::from(bytes.to_vec()))
                .content_type("application/octet-stream");
            put = match &state.config.kms_key_id {
                Some(key) => put
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .ssekms_key_id(key),
                None => put.server_side_encryption(ServerSideEncryption::Aes256),
            };
            put.send()
                .await
                .with_context(|| format!("storing the file in s3://{bucket}"))?;
        }
    }
    Ok(())
}

/// The file's bytes; `None` when it was removed (retention).
pub async fn get(
    state: &DocumentsState,
    id: Uuid,
    storage: &str,
    key: Option<&str>,
) -> anyhow::Result<Option<Vec<u8>>> {
    if storage == "s3" {
        let bucket = state
            .config
            .bucket
            .as_deref()
            .context("the document is in S3 but DOCUMENTS_BUCKET is not set")?;
        let key = key.context("the document has no S3 key")?;
        let object = state
            .s3()
            .await
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await;
        let object = match object {
            Ok(o) => o,
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(err) => {
                return Err(err).with_context(|| format!("reading s3://{bucket}/{key}"));
            }
        };
        let bytes = object
            .body
            .collect()
            .await
            .with_context(|| format!("reading s3://{bucket}/{key}"))?;
        return Ok(Some(bytes.to_vec()));
    }
    Ok(sqlx::query_scalar!(
        "SELECT content FROM document_contents WHERE document_id = $1",
        id
    )
    .fetch_optional(&state.db)
    .await?)
}

/// Removes the stored file (the PostgreSQL row goes with its document by cascade; this is for
/// S3 objects and for retention).
pub async fn delete(
    state: &DocumentsState,
    id: Uuid,
    storage: &str,
    key: Option<&str>,
) -> anyhow::Result<()> {
    if storage == "s3" {
        let (Some(bucket), Some(key)) = (state.config.bucket.as_deref(), key) else {
            return Ok(());
        };
        state
            .s3()
            .await
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("deleting s3://{bucket}/{key}"))?;
    } else {
        sqlx::query!("DELETE FROM document_contents WHERE document_id = $1", id)
            .execute(&state.db)
            .await?;
    }
    Ok(())
}
