//! API keys: generation, hashing and storage.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

/// Every key starts with this, so secret scanners (and people) recognise a leaked one.
pub const KEY_PREFIX: &str = "co_";
const SHOWN_PREFIX_LEN: usize = 10;

pub use crate::web::Scope;

/// A validated key name: 1-100 printable characters.
#[derive(Clone, Debug)]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("name must not be empty".into());
        }
        if name.chars().count() > 100 {
            return Err("name must be at most 100 characters".into());
        }
        if name.chars().any(char::is_control) {
            return Err("name must not contain control characters".into());
        }
        Ok(Self(name.to_string()))
    }
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// 256 bits from the OS generator, URL-safe base64.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub name: String,
    pub scope: Scope,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    #[serde(with = "crate::web::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::web::timestamp::option")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::web::timestamp::option")]
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The key itself. Shown once: store it now, only its hash is kept.
    pub key: String,
}

struct KeyRow {
    id: Uuid,
    name: String,
    scope: String,
    prefix: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<KeyRow> for ApiKeyInfo {
    fn from(row: KeyRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            scope: row.scope.parse().unwrap_or(Scope::User),
            prefix: row.prefix,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Two active keys with one name cannot be told apart in `keys list` or the logs.
    #[error("an active API key named {0:?} exists already: revoke it or choose another name")]
    DuplicateName(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<CreateError> for crate::error::ApiError {
    fn from(err: CreateError) -> Self {
        match err {
            CreateError::DuplicateName(_) => Self::Conflict("duplicate_name", err.to_string()),
            CreateError::Database(err) => err.into(),
        }
    }
}

/// Serialises key creation, so two concurrent creations with one name cannot both pass the
/// check (a unique index could not be added: deployments may hold duplicates already).
const CREATE_LOCK: i64 = 0x636f_6b65_7973; // "cokeys"

pub async fn create(
    pool: &PgPool,
    name: &KeyName,
    scope: Scope,
) -> Result<CreatedApiKey, CreateError> {
    let key = generate_key();
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", CREATE_LOCK)
        .execute(&mut *tx)
        .await?;
    let taken = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM api_keys WHERE name = $1 AND revoked_at IS NULL) AS "taken!""#,
        &name.0
    )
    .fetch_one(&mut *tx)
    .await?;
    if taken {
        return Err(CreateError::DuplicateName(name.0.clone()));
    }
    let row = sqlx::query_as!(
        KeyRow,
        "INSERT INTO api_keys (id, name, prefix, key_hash, scope) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, name, scope, prefix, created_at, last_used_at, revoked_at",
        Uuid::new_v4(),
        &name.0,
        &key[..SHOWN_PREFIX_LEN],
        &hash_key(&key)[..],
        scope.as_str(),
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(CreatedApiKey {
        info: row.into(),
        key,
    })
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<ApiKeyInfo>> {
    let rows = sqlx::query_as!(
        KeyRow,
        "SELECT id, name, scope, prefix, created_at, last_used_at, revoked_at
         FROM api_keys ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// One page of keys, oldest first, and how many there are.
pub async fn page(pool: &PgPool, limit: i64, offset: i64) -> sqlx::Result<(Vec<ApiKeyInfo>, i64)> {
    let rows = sqlx::query_as!(
        KeyRow,
        "SELECT id, name, scope, prefix, created_at, last_used_at, revoked_at
         FROM api_keys ORDER BY created_at, id LIMIT $1 OFFSET $2",
        limit,
        offset
    )
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM api_keys"#)
        .fetch_one(pool)
        .await?;
    Ok((rows.into_iter().map(Into::into).collect(), total))
}

pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<ApiKeyInfo>> {
    let row = sqlx::query_as!(
        KeyRow,
        "SELECT id, name, scope, prefix, created_at, last_used_at, revoked_at
         FROM api_keys WHERE id = $1",
        id
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

/// What `revoke` did.
pub enum Revocation {
    Revoked(ApiKeyInfo),
    /// Revoked before: the first revocation time is kept.
    AlreadyRevoked(ApiKeyInfo),
    NotFound,
}

/// Revokes a key. Revoking twice keeps the first time and says so.
pub async fn revoke(pool: &PgPool, id: Uuid) -> sqlx::Result<Revocation> {
    let row = sqlx::query_as!(
        KeyRow,
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL
         RETURNING id, name, scope, prefix, created_at, last_used_at, revoked_at",
        id,
    )
    .fetch_optional(pool)
    .await?;
    if let Some(row) = row {
        return Ok(Revocation::Revoked(row.into()));
    }
    let row = sqlx::query_as!(
        KeyRow,
        "SELECT id, name, scope, prefix, created_at, last_used_at, revoked_at FROM api_keys WHERE id = $1",
        id,
    )
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(row) => Revocation::AlreadyRevoked(row.into()),
        None => Revocation::NotFound,
    })
}

/// Ids of the keys whose shown prefix (as in `keys list`, e.g. `co_AbC1dEf`) is `prefix`.
pub async fn ids_with_prefix(pool: &PgPool, prefix: &str) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM api_keys WHERE prefix = $1 ORDER BY created_at, id",
        prefix
    )
    .fetch_all(pool)
    .await
}

pub async fn any_active(pool: &PgPool) -> sqlx::Result<bool> {
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL) AS "exists!""#
    )
    .fetch_one(pool)
    .await?;
    Ok(exists)
}

/// What a presented key resolves to.
pub enum Lookup {
    Active {
        id: Uuid,
        name: String,
        scope: Scope,
    },
    Revoked,
    Unknown,
}

pub async fn lookup(pool: &PgPool, hash: &[u8; 32]) -> sqlx::Result<Lookup> {
    let row = sqlx::query!(
        "SELECT id, name, scope, revoked_at FROM api_keys WHERE key_hash = $1",
        &hash[..],
    )
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => Lookup::Unknown,
        Some(row) if row.revoked_at.is_some() => Lookup::Revoked,
        Some(row) => Lookup::Active {
            id: row.id,
            name: row.name,
            scope: row.scope.parse().unwrap_or(Scope::User),
        },
    })
}

pub async fn touch(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1)",
        ids
    )
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_prefixed() {
        let a = generate_key();
        let b = generate_key();
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), 3 + 43);
        assert_ne!(a, b);
        assert_ne!(hash_key(&a), hash_key(&b));
    }

    #[test]
    fn names_are_validated() {
        assert!(KeyName::parse("  ").is_err());
        assert!(KeyName::parse(&"x".repeat(101)).is_err());
        assert!(KeyName::parse("ci\u{7}bot").is_err());
        assert!(KeyName::parse("ci bot").is_ok());
    }
}
