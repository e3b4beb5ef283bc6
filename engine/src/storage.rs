//! Where a warehouse keeps its tables and checkpoints.
//!
//! Everything lives under one root URL: `file:///...` on a laptop and in CI,
//! `s3://bucket/prefix` in production. Layout:
//!
//! ```text
//! <root>/<kind>/<layer>/                 the layer's Delta table
//! <root>/<kind>/<layer>_dead_letter/     its dead-letter Delta table
//! <root>/_strata/checkpoints/<layer>/    its checkpoint manifests
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use std::str::FromStr;

use object_store::ObjectStore;
use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path;
use url::Url;

use crate::error::{EngineError, Result};

/// The storage root of a warehouse, with the options object stores need
/// (credentials, region, endpoint).
#[derive(Debug, Clone)]
pub struct StorageRoot {
    url: Url,
    options: HashMap<String, String>,
}

/// A Delta table's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLocation {
    /// The table's URL.
    pub url: Url,
    /// Storage options for deltalake.
    pub options: HashMap<String, String>,
}

impl StorageRoot {
    /// A root from its URL (`file:///abs/dir` or `s3://bucket/prefix`).
    /// An S3 root takes what `options` leave unset from the `AWS_*`
    /// environment variables object_store knows (`AWS_ENDPOINT_URL`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ALLOW_HTTP`, ...), so Delta
    /// tables, checkpoints and the Flight SQL server see the same store.
    pub fn new(root: &str, mut options: HashMap<String, String>) -> Result<Self> {
        let mut url = Url::parse(root)
            .map_err(|e| EngineError::Config(format!("storage root `{root}` is not a URL: {e}")))?;
        match url.scheme() {
            // Listing a `_delta_log` from a version costs what it returns.
            "file" => crate::delta::log_listing::register(),
            "s3" | "s3a" => {
                #[cfg(feature = "s3")]
                deltalake::aws::register_handlers(None);
                if !cfg!(feature = "s3") {
                    return Err(EngineError::Config(format!(
                        "storage root `{root}` is on S3, but this strata was built without S3 support; rebuild with `cargo build --release --features s3`"
                    )));
                }
                with_aws_environment(&mut options, std::env::vars());
            }
            other => {
                return Err(EngineError::Config(format!(
                    "storage scheme `{other}://` is not supported; use a local path or s3://"
                )));
            }
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        Ok(StorageRoot { url, options })
    }

    /// The root URL (with a trailing `/`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The object store options (credentials, region, endpoint).
    pub fn options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// Whether the root is a local directory.
    pub fn is_local(&self) -> bool {
        self.url.scheme() == "file"
    }

    /// A root inside this one, at `<root>/<sub>/`, with the same options
    /// (where a backfill stages its tables).
    pub fn child(&self, sub: &str) -> Result<StorageRoot> {
        let url = self
            .url
            .join(&format!("{}/", sub.trim_end_matches('/')))
            .map_err(|e| EngineError::Config(format!("storage path {sub}: {e}")))?;
        Ok(StorageRoot {
            url,
            options: self.options.clone(),
        })
    }

    /// The location of a table, `<root>/<kind>/<name>/`.
    pub fn table(&self, kind: &str, name: &str) -> Result<TableLocation> {
        let url = self
            .url
            .join(&format!("{kind}/{name}/"))
            .map_err(|e| EngineError::Config(format!("table path {kind}/{name}: {e}")))?;
        Ok(TableLocation {
            url,
            options: self.options.clone(),
        })
    }

    /// An object store rooted at `<root>/<sub>`, with the path prefix inside it.
    pub fn object_store(&self, sub: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
        let url = self
            .url
            .join(sub)
            .map_err(|e| EngineError::Config(format!("storage path {sub}: {e}")))?;
        if self.is_local() {
            let dir = url
                .to_file_path()
                .map_err(|()| EngineError::Config(format!("{url} is not a local path")))?;
            std::fs::create_dir_all(&dir)
                .map_err(EngineError::io(format!("cannot create {}", dir.display())))?;
        }
        let (store, path) =
            object_store::parse_url_opts(&url, self.options.iter()).map_err(|source| {
                EngineError::object_store(url.to_string(), "opening the object store")(source)
            })?;
        Ok((Arc::from(store), path))
    }
}

/// Adds the `AWS_*` variables of `vars` that name an S3 setting and that
/// `options` do not set (as `AmazonS3Builder::from_env` reads them).
fn with_aws_environment(
    options: &mut HashMap<String, String>,
    vars: impl Iterator<Item = (String, String)>,
) {
    let set: Vec<String> = options
        .keys()
        .filter_map(|k| AmazonS3ConfigKey::from_str(&k.to_ascii_lowercase()).ok())
        .map(|k| k.as_ref().to_string())
        .collect();
    for (name, value) in vars {
        if !name.starts_with("AWS_") {
            continue;
        }
        if let Ok(key) = AmazonS3ConfigKey::from_str(&name.to_ascii_lowercase())
            && !set.iter().any(|s| s == key.as_ref())
        {
            options.insert(key.as_ref().to_string(), value);
        }
    }
}

/// The numbers of the objects directly under `prefix` whose file names
/// `number_of` reads (manifests, lease objects), ascending.
pub(crate) async fn numbered_objects(
    store: &dyn ObjectStore,
    prefix: &Path,
    number_of: impl Fn(&str) -> Option<u64>,
) -> std::result::Result<Vec<u64>, object_store::Error> {
    use futures::TryStreamExt;
    let objects: Vec<_> = store.list(Some(prefix)).try_collect().await?;
    let mut numbers: Vec<u64> = objects
        .iter()
        .filter_map(|o| o.location.filename().and_then(&number_of))
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_live_under_kind_directories() {
        let root = StorageRoot::new("file:///tmp/wh", HashMap::new()).unwrap();
        let t = root.table("ods", "deals").unwrap();
        assert_eq!(t.url.as_str(), "file:///tmp/wh/ods/deals/");
    }

    #[test]
    fn a_child_root_keeps_the_options() {
        let root = StorageRoot::new("s3://b/wh", HashMap::from([("k".into(), "v".into())]));
        // s3 may be compiled out: build the child from a local root then.
        let root = root.unwrap_or_else(|_| {
            StorageRoot::new("file:///tmp/wh", HashMap::from([("k".into(), "v".into())])).unwrap()
        });
        let child = root.child("_strata/backfill/x").unwrap();
        assert!(
            child.url().as_str().ends_with("/wh/_strata/backfill/x/"),
            "{}",
            child.url()
        );
        assert_eq!(child.options.get("k").map(String::as_str), Some("v"));
    }

    #[test]
    fn s3_settings_come_from_the_environment_unless_given() {
        let mut options = HashMap::from([("aws_endpoint".to_string(), "http://given".to_string())]);
        let vars = [
            ("AWS_ENDPOINT_URL", "http://from-env"),
            ("AWS_ACCESS_KEY_ID", "key"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_NOT_A_SETTING", "x"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        with_aws_environment(&mut options, vars.into_iter());
        let mut got: Vec<(&str, &str)> = options
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("allow_http", "true"),
                ("aws_access_key_id", "key"),
                ("aws_endpoint", "http://given"),
            ]
        );
    }

    #[test]
    fn unsupported_schemes_are_refused() {
        let err = StorageRoot::new("gs://b/p", HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
    }
}
