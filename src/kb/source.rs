//! Where a KB comes from: a directory, or a `.tar.gz` bundle at an `https://` or `s3://` URL
//! (so operators can refresh the KB without a new image).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Bundles larger than this are refused: the real KB is a few MB.
const MAX_BUNDLE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Dir(PathBuf),
    Https(String),
    S3 { bucket: String, key: String },
}

impl Source {
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        if raw.starts_with("https://") || raw.starts_with("http://") {
            url::Url::parse(raw).with_context(|| format!("{raw:?} is not a URL"))?;
            return Ok(Self::Https(raw.to_string()));
        }
        if let Some(rest) = raw.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() || key.is_empty() {
                bail!("{raw:?} must look like s3://bucket/path/kb.tar.gz");
            }
            return Ok(Self::S3 {
                bucket: bucket.into(),
                key: key.into(),
            });
        }
        Ok(Self::Dir(PathBuf::from(raw)))
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Dir(p) => p.display().to_string(),
            Self::Https(u) => u.clone(),
            Self::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
        }
    }
}

/// A directory holding `manifest.json`; removed on drop when it was extracted from a bundle.
pub struct Materialized {
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// Makes the source available as a directory (downloading and extracting bundles).
pub async fn materialize(source: &Source) -> anyhow::Result<Materialized> {
    let bytes = match source {
        Source::Dir(dir) => {
            return Ok(Materialized {
                dir: dir.clone(),
                _temp: None,
            });
        }
        Source::Https(url) => download_https(url).await?,
        Source::S3 { bucket, key } => download_s3(bucket, key).await?,
    };
    tokio::task::spawn_blocking(move || extract(&bytes)).await?
}

async fn download_https(url: &str) -> anyhow::Result<Vec<u8>> {
    crate::ensure_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()?;
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("downloading {url}"))?;
    if !response.status().is_success() {
        bail!("downloading {url}: HTTP {}", response.status());
    }
    if response
        .content_length()
        .is_some_and(|n| n as usize > MAX_BUNDLE_BYTES)
    {
        bail!("{url} is larger than {MAX_BUNDLE_BYTES} bytes");
    }
    let bytes = response
        .bytes()
        .await
        .with_context(|| format!("downloading {url}"))?;
    Ok(bytes.to_vec())
}

async fn download_s3(bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
    let client = crate::aws::s3_client().await;
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "s3://{bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    let bytes = object
        .body
        .collect()
        .await
        .with_context(|| format!("reading s3://{bucket}/{key}"))?;
    Ok(bytes.to_vec())
}

fn extract(bytes: &[u8]) -> anyhow::Result<Materialized> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        bail!("bundle is larger than {MAX_BUNDLE_BYTES} bytes");
    }
    let temp = tempfile::Builder::new()
        .prefix("co-kb-")
        .tempdir()
        .context("creating a temporary directory")?;
    let decoder = flate2::read::GzDecoder::new(bytes).take(MAX_BUNDLE_BYTES as u64 * 4);
    let mut archive = tar::Archive::new(decoder);
    for entry in archive.entries().context("bundle is not a .tar.gz")? {
        let mut entry = entry.context("bundle is not a .tar.gz")?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue; // No links or devices from a download.
        }
        // `unpack_in` refuses paths that escape the directory.
        if !entry
            .unpack_in(temp.path())
            .context("extracting the bundle")?
        {
            bail!("bundle contains a path outside its root");
        }
    }
    let dir = find_manifest(temp.path())
        .context("bundle has no manifest.json at its root or in one top directory")?;
    Ok(Materialized {
        dir,
        _temp: Some(temp),
    })
}

fn find_manifest(root: &Path) -> Option<PathBuf> {
    if root.join(super::model::MANIFEST).is_file() {
        return Some(root.to_path_buf());
    }
    let mut dirs = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| e.path().is_dir());
    let only = dirs.next()?;
    if dirs.next().is_some() {
        return None;
    }
    only.path()
        .join(super::model::MANIFEST)
        .is_file()
        .then(|| only.path())
}
