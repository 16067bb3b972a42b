//! The backup store: a local directory or an S3 bucket, through the `object_store` crate.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;
use tenantgate_config::{BackupStore, BackupsConfig};
use uuid::Uuid;

use super::BackupError;

/// An opened backup store and the key prefix of its objects.
#[derive(Clone)]
pub(crate) struct Store {
    pub(crate) objects: Arc<dyn ObjectStore>,
    prefix: String,
}

impl Store {
    /// Open the store `config` names. A local directory is created when missing; S3 takes its
    /// credentials and region from the standard `AWS_*` environment variables.
    pub(crate) fn open(config: &BackupsConfig) -> Result<Store, BackupError> {
        match &config.store {
            BackupStore::File(dir) => {
                std::fs::create_dir_all(dir)?;
                Ok(Store {
                    objects: Arc::new(LocalFileSystem::new_with_prefix(dir)?),
                    prefix: String::new(),
                })
            }
            BackupStore::S3 { bucket, prefix } => {
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(endpoint) = &config.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                Ok(Store {
                    objects: Arc::new(builder.build()?),
                    prefix: prefix.clone(),
                })
            }
        }
    }

    /// The key of a backup's object: `[prefix/]<tenant id>/<backup id>.age`. It is what the
    /// catalog records as the backup's `location`.
    pub(crate) fn key(&self, tenant_id: Uuid, backup_id: Uuid) -> String {
        let name = format!("{tenant_id}/{backup_id}.age");
        if self.prefix.is_empty() {
            name
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// A recorded `location` as an object path.
    pub(crate) fn path(location: &str) -> Result<Path, BackupError> {
        Ok(Path::parse(location).map_err(object_store::Error::from)?)
    }
}
