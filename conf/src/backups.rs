//! `[backups]`: the backup store, the age keys, the schedule and retention, validated.

use std::path::PathBuf;
use std::time::Duration;

use tenantgate_contract::settings::BackupRetention;

use crate::raw::RawBackups;
use crate::validate::range;
use crate::ConfigError;

/// Where backup objects are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupStore {
    /// A local directory (created when missing).
    File(PathBuf),
    /// An S3 bucket (AWS or S3-compatible at [`BackupsConfig::endpoint`]), objects under
    /// `prefix` (no leading or trailing `/`; empty for the bucket's root).
    S3 { bucket: String, prefix: String },
}

/// How often every tenant is backed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupSchedule {
    Off,
    Hourly,
    Daily,
}

impl BackupSchedule {
    /// The schedule's period; `None` when off.
    pub fn period(self) -> Option<Duration> {
        match self {
            BackupSchedule::Off => None,
            BackupSchedule::Hourly => Some(Duration::from_secs(3600)),
            BackupSchedule::Daily => Some(Duration::from_secs(86_400)),
        }
    }
}

/// `[backups]` as the components use it.
#[derive(Debug, Clone)]
pub struct BackupsConfig {
    pub store: BackupStore,
    /// S3-compatible endpoint URL for an [`BackupStore::S3`] store.
    pub endpoint: Option<String>,
    /// The age public key backups are encrypted to; `None` refuses backups.
    pub recipient: Option<age::x25519::Recipient>,
    /// The age identity file that decrypts backups (checked to parse when loaded; read again
    /// when a restore or verify needs it, so the secret is not kept in memory meanwhile).
    pub identity_file: Option<PathBuf>,
    pub schedule: BackupSchedule,
    /// The retention policy of tenants without their own `settings.backup_retention`.
    pub retention: BackupRetention,
    /// How long the backups of a purged tenant are kept before they are erased.
    pub deleted_retention: Duration,
}

/// Validate `[backups]`, adding warnings for settings that are accepted but not acted on yet.
pub(crate) fn backups(
    b: &RawBackups,
    warnings: &mut Vec<String>,
) -> Result<BackupsConfig, ConfigError> {
    let store = parse_store(&b.store)?;
    let endpoint = match &b.endpoint {
        None => None,
        Some(url) => {
            if !matches!(store, BackupStore::S3 { .. }) {
                return Err(ConfigError::new(
                    "backups.endpoint",
                    "applies only to an s3:// store",
                ));
            }
            let parsed = url::Url::parse(url).ok().filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
            });
            if parsed.is_none() {
                return Err(ConfigError::new(
                    "backups.endpoint",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            Some(url.clone())
        }
    };
    let recipient = match &b.recipient {
        None => None,
        Some(text) => Some(text.trim().parse::<age::x25519::Recipient>().map_err(|e| {
            ConfigError::new(
                "backups.recipient",
                format!("is not an age public key (age1…): {e}"),
            )
        })?),
    };
    if let Some(path) = &b.identity_file {
        check_identity_file(path)?;
    }
    let schedule = match b.schedule.as_str() {
        "off" => BackupSchedule::Off,
        "hourly" => BackupSchedule::Hourly,
        "daily" => BackupSchedule::Daily,
        other => {
            return Err(ConfigError::new(
                "backups.schedule",
                format!("{other:?} is not one of \"off\", \"hourly\", \"daily\""),
            ))
        }
    };
    if schedule != BackupSchedule::Off && recipient.is_none() {
        warnings.push(format!(
            "backups.schedule = {:?} without backups.recipient: scheduled backups are skipped until a recipient is set",
            b.schedule
        ));
    }
    let retention = BackupRetention::new(b.keep_daily, b.keep_weekly, b.keep_monthly)
        .map_err(|(name, message)| ConfigError::new(format!("backups.{name}"), message))?;
    Ok(BackupsConfig {
        store,
        endpoint,
        recipient,
        identity_file: b.identity_file.clone(),
        schedule,
        retention,
        deleted_retention: Duration::from_secs(
            u64::from(range(
                "backups.deleted_retention_days",
                b.deleted_retention_days,
                0,
                3650,
            )?) * 86_400,
        ),
    })
}

fn parse_store(text: &str) -> Result<BackupStore, ConfigError> {
    let bad = |why: &str| ConfigError::new("backups.store", format!("{text:?} {why}"));
    if let Some(dir) = text.strip_prefix("file://") {
        if dir.is_empty() {
            return Err(bad("names no directory (file://DIR)"));
        }
        return Ok(BackupStore::File(PathBuf::from(dir)));
    }
    if let Some(rest) = text.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's bucket naming rules: 3-63 of lower-case letters, digits, '.', '-'.
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
        if !valid_bucket {
            return Err(bad("does not name a valid bucket (s3://BUCKET/PREFIX)"));
        }
        return Ok(BackupStore::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        });
    }
    Err(bad("must start with file:// or s3://"))
}

/// The identity file must exist and hold at least one age identity. Only a yes or no comes
/// out of here: the file is a secret, so no part of it goes into an error.
fn check_identity_file(path: &std::path::Path) -> Result<(), ConfigError> {
    let key = "backups.identity_file";
    let file = std::fs::File::open(path)
        .map_err(|e| ConfigError::new(key, format!("{}: {e}", path.display())))?;
    let parsed = age::IdentityFile::from_buffer(std::io::BufReader::new(file))
        .ok()
        .and_then(|f| f.into_identities().ok())
        .is_some_and(|ids| !ids.is_empty());
    if !parsed {
        return Err(ConfigError::new(
            key,
            format!(
                "{} holds no age identity (AGE-SECRET-KEY-1…)",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_parse() {
        assert_eq!(
            parse_store("file:///var/backups").unwrap(),
            BackupStore::File("/var/backups".into())
        );
        assert_eq!(
            parse_store("file://data/backups").unwrap(),
            BackupStore::File("data/backups".into())
        );
        assert_eq!(
            parse_store("s3://tg-backups/prod/tenants/").unwrap(),
            BackupStore::S3 {
                bucket: "tg-backups".into(),
                prefix: "prod/tenants".into()
            }
        );
        assert_eq!(
            parse_store("s3://tg-backups").unwrap(),
            BackupStore::S3 {
                bucket: "tg-backups".into(),
                prefix: String::new()
            }
        );
        for bad in [
            "",
            "file://",
            "s3://",
            "s3://A_b/x",
            "gs://bucket",
            "/var/backups",
        ] {
            let err = parse_store(bad).unwrap_err();
            assert_eq!(err.key, "backups.store", "{bad}");
        }
    }

    #[test]
    fn identity_file_must_hold_an_identity() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("id.txt");
        let identity = age::x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        std::fs::write(
            &good,
            format!("# test\n{}\n", identity.to_string().expose_secret()),
        )
        .unwrap();
        check_identity_file(&good).unwrap();
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "not a key\n").unwrap();
        let err = check_identity_file(&bad).unwrap_err();
        assert_eq!(err.key, "backups.identity_file");
        assert!(!err.message.contains("not a key"));
        let err = check_identity_file(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.key, "backups.identity_file");
    }
}
