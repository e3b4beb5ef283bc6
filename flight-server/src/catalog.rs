//! The warehouse as a DataFusion catalog: `strata.<kind>.<table>`.
//!
//! Tables are discovered from storage rather than from the warehouse file:
//! every `<root>/<kind>/<name>/` holding a Delta log is a table, so a layer's
//! table (and its side tables) can be queried as soon as its pipeline has
//! created it, and the server needs nothing from the engine. The listing is
//! refreshed at most once a second, before a request plans a query or lists
//! tables; a table whose schema changed since (columns merged in by a
//! restarted pipeline) is opened anew then, so clients see the new columns
//! without a server restart.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result};
use deltalake::{DeltaTableBuilder, DeltaTableError};
use object_store::ObjectStore;
use object_store::path::Path;
use tokio::sync::Mutex;
use tracing::{debug, info};
use url::Url;

use crate::latest_table::LatestDeltaTable;

/// The catalog name clients see.
pub const CATALOG: &str = "strata";
/// One schema per layer kind.
pub const SCHEMAS: [&str; 4] = ["ods", "dwd", "dws", "ads"];
/// How stale the table listing may get.
const REFRESH_AFTER: Duration = Duration::from_secs(1);

type Tables = BTreeMap<String, BTreeMap<String, Arc<LatestDeltaTable>>>;

/// The warehouse's tables, discovered under its storage root.
pub struct WarehouseCatalog {
    root: Url,
    options: HashMap<String, String>,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    tables: Arc<RwLock<Tables>>,
    refreshed: Mutex<Option<Instant>>,
}

impl WarehouseCatalog {
    /// A catalog over the warehouse rooted at `root` (a URL ending in `/`).
    pub fn new(root: &Url, options: HashMap<String, String>) -> Result<Self> {
        let (store, prefix) = object_store::parse_url_opts(root, options.iter())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(WarehouseCatalog {
            root: root.clone(),
            options,
            store: Arc::from(store),
            prefix,
            tables: Arc::new(RwLock::new(BTreeMap::new())),
            refreshed: Mutex::new(None),
        })
    }

    /// The DataFusion view of this catalog (shares its table list).
    pub fn provider(&self) -> Arc<dyn CatalogProvider> {
        Arc::new(StrataCatalog {
            tables: self.tables.clone(),
        })
    }

    /// Every table, as `(schema, name, table)`.
    pub fn tables(&self) -> Vec<(String, String, Arc<LatestDeltaTable>)> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        tables
            .iter()
            .flat_map(|(schema, names)| {
                names
                    .iter()
                    .map(move |(name, t)| (schema.clone(), name.clone(), t.clone()))
            })
            .collect()
    }

    /// Discovers tables created since the last look, unless it was recent.
    pub async fn refresh(&self) -> Result<()> {
        self.refresh_if(|last| last.elapsed() >= REFRESH_AFTER)
            .await
    }

    /// Discovers tables now, however recent the last look (a query named a
    /// table that may have been created within the last second).
    pub async fn refresh_now(&self) -> Result<()> {
        self.refresh_if(|_| true).await
    }

    async fn refresh_if(&self, stale: impl Fn(Instant) -> bool) -> Result<()> {
        let mut refreshed = self.refreshed.lock().await;
        if refreshed.is_some_and(|t| !stale(t)) {
            return Ok(());
        }
        let mut added = Vec::new();
        let mut changed = Vec::new();
        for schema in SCHEMAS {
            for name in self.list_dirs(&self.prefix.clone().join(schema)).await? {
                let known = {
                    let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
                    tables.get(schema).and_then(|t| t.get(&name)).cloned()
                };
                if let Some(table) = known {
                    // A merged schema (new columns) is served as soon as it
                    // is committed; the rest of the table is as it was.
                    if !table.schema_changed().await? {
                        continue;
                    }
                    changed.push(format!("{schema}.{name}"));
                }
                if let Some(table) = self.open(schema, &name).await? {
                    debug!(table = %format!("{CATALOG}.{schema}.{name}"), url = %table.url(), "serving table");
                    added.push(format!("{schema}.{name}"));
                    let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
                    tables
                        .entry(schema.to_string())
                        .or_default()
                        .insert(name, Arc::new(table));
                }
            }
        }
        if !changed.is_empty() {
            info!(tables = changed.len(), names = %changed.join(", "), "serving tables whose schema changed");
        }
        added.retain(|t| !changed.contains(t));
        if !added.is_empty() {
            info!(tables = added.len(), names = %added.join(", "), "serving new tables");
        }
        *refreshed = Some(Instant::now());
        Ok(())
    }

    async fn list_dirs(&self, prefix: &Path) -> Result<Vec<String>> {
        match self.store.list_with_delimiter(Some(prefix)).await {
            Ok(listing) => Ok(listing
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_string))
                .collect()),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(DataFusionError::External(Box::new(e))),
        }
    }

    /// Opens `<root>/<schema>/<name>/` if it holds a Delta table yet.
    async fn open(&self, schema: &str, name: &str) -> Result<Option<LatestDeltaTable>> {
        let url = self
            .root
            .join(&format!("{schema}/{name}/"))
            .map_err(|e| DataFusionError::Plan(format!("table path {schema}/{name}: {e}")))?;
        let built = DeltaTableBuilder::from_url(url)
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .with_storage_options(self.options.clone())
            .load()
            .await;
        match built {
            Ok(table) => LatestDeltaTable::new(table).await.map(Some),
            // A directory without a log yet, or a table being created.
            Err(DeltaTableError::NotATable(_)) => {
                debug!(schema, name, "not a delta table (yet)");
                Ok(None)
            }
            Err(e) => Err(DataFusionError::External(Box::new(e))),
        }
    }
}

struct StrataCatalog {
    tables: Arc<RwLock<Tables>>,
}

impl fmt::Debug for StrataCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StrataCatalog")
    }
}

impl CatalogProvider for StrataCatalog {
    fn schema_names(&self) -> Vec<String> {
        SCHEMAS.iter().map(|s| s.to_string()).collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        SCHEMAS.contains(&name).then(|| {
            Arc::new(KindSchema {
                kind: name.to_string(),
                tables: self.tables.clone(),
            }) as Arc<dyn SchemaProvider>
        })
    }
}

struct KindSchema {
    kind: String,
    tables: Arc<RwLock<Tables>>,
}

impl fmt::Debug for KindSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KindSchema({})", self.kind)
    }
}

impl KindSchema {
    fn get(&self, name: &str) -> Option<Arc<LatestDeltaTable>> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        tables.get(&self.kind).and_then(|t| t.get(name).cloned())
    }
}

#[async_trait]
impl SchemaProvider for KindSchema {
    fn table_names(&self) -> Vec<String> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        tables
            .get(&self.kind)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.get(name).map(|t| t as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}
