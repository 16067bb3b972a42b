//! Tenant settings (`tenants.settings`): one typed schema that the admin API validates with and
//! the app tier reads (DESIGN §9).
//!
//! | key | type | default |
//! |---|---|---|
//! | `locale` | language tag: `en`, `de`, `pt-BR`, `es-419` | `en` |
//! | `timezone` | IANA zone name: `UTC`, `Europe/Berlin` | `UTC` |
//! | `theme.color` | CSS hex colour `#rgb` or `#rrggbb` (stored lower-case) | none |
//! | `theme.mode` | `light`, `dark` or `system` | none |
//! | `features` | object of flag name → `true`/`false` | `{}` |
//! | `data_retention_days` | 1-36500: app rows in retention-managed tables older than this are deleted | none (kept) |
//! | `backup_retention` | `{keep_daily, keep_weekly, keep_monthly}` (all three), replacing `[backups]`'s | the config's |
//! | `per_client_share` | fraction, more than 0 and at most 1: the share of the tenant's rate limit one client address may use at the edge | `edge.per_client_share` |
//! | `https_only` | `true`: the edge answers plain-HTTP requests with a 308 to `https://` (ACME HTTP-01 challenges excepted) | `false` |
//! | `hsts_max_age` | 0-63072000 seconds: the edge sends `Strict-Transport-Security: max-age=N` on TLS responses | none (no header) |
//!
//! Unknown keys are refused, so a typo (`loacle`) never silently does nothing. Every value is
//! checked when it is parsed, so a [`TenantSettings`] always holds valid values (a theme colour
//! is safe to put into HTML). Settings stored before this schema wrote `theme` as a plain mode
//! name (`"dark"`); that form is still read, and written back as `{"mode": "dark"}`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest feature flag name, in bytes.
pub const MAX_FEATURE_NAME: usize = 64;
/// Most feature flags per tenant.
pub const MAX_FEATURES: usize = 100;

/// A tenant's settings. `Default` is "nothing set".
///
/// Its OpenAPI schema (feature `openapi`) says the same as the checks below: the patterns of
/// [`Locale`], [`TimeZone`] and [`Color`] are those of `check_locale`, `check_timezone` and
/// `check_color` (a test holds them together).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// Language tag, default `en`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<String>, pattern = "^[a-z]{2,3}(-([A-Z]{2}|[0-9]{3}))?$", example = "pt-BR")
    )]
    pub locale: Option<Locale>,
    /// IANA time zone, default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<String>, max_length = 64,
            pattern = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z][A-Za-z0-9_+-]*)*$", example = "Europe/Berlin")
    )]
    pub timezone: Option<TimeZone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<Theme>,
    #[serde(default, skip_serializing_if = "Features::is_empty")]
    pub features: Features,
    /// Days app rows are kept (the daily `data_retention` job deletes older ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u32>, minimum = 1, maximum = 36500)
    )]
    pub data_retention_days: Option<RetentionDays>,
    /// This tenant's backup retention, instead of `[backups]`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<RetentionFields>))]
    pub backup_retention: Option<BackupRetention>,
    /// The share of the tenant's rate limit one client address may use at the edge, instead of
    /// `edge.per_client_share`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<f64>, exclusive_minimum = 0.0, maximum = 1.0, example = 0.25)
    )]
    pub per_client_share: Option<crate::ClientShare>,
    /// Plain-HTTP requests get a 308 to https (ACME HTTP-01 challenges excepted); default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_only: Option<bool>,
    /// Seconds of `Strict-Transport-Security` sent on TLS responses; none sends no header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u32>, minimum = 0, maximum = 63072000)
    )]
    pub hsts_max_age: Option<HstsMaxAge>,
}

/// Longest `hsts_max_age`: two years, the most browsers' preload lists ask for.
pub const MAX_HSTS_MAX_AGE: u32 = 63_072_000;

/// Seconds of `Strict-Transport-Security: max-age`, 0 (tells browsers to forget) to
/// [`MAX_HSTS_MAX_AGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct HstsMaxAge(u32);

impl HstsMaxAge {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for HstsMaxAge {
    type Error = String;

    fn try_from(secs: u32) -> Result<Self, String> {
        if secs <= MAX_HSTS_MAX_AGE {
            Ok(HstsMaxAge(secs))
        } else {
            Err(format!("must be at most {MAX_HSTS_MAX_AGE} seconds"))
        }
    }
}

impl From<HstsMaxAge> for u32 {
    fn from(secs: HstsMaxAge) -> u32 {
        secs.0
    }
}

/// Most days `data_retention_days` may be (100 years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// Days app rows are kept (`data_retention_days`), 1 to [`MAX_RETENTION_DAYS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct RetentionDays(u32);

impl RetentionDays {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for RetentionDays {
    type Error = String;

    fn try_from(days: u32) -> Result<Self, String> {
        if (1..=MAX_RETENTION_DAYS).contains(&days) {
            Ok(RetentionDays(days))
        } else {
            Err(format!("must be between 1 and {MAX_RETENTION_DAYS} days"))
        }
    }
}

impl From<RetentionDays> for u32 {
    fn from(days: RetentionDays) -> u32 {
        days.0
    }
}

/// Grandfather-father-son backup retention: how many of the newest days, ISO weeks (Monday to
/// Sunday) and calendar months (UTC) keep their newest backup. The same type is `[backups]`'s
/// default and a tenant's `backup_retention` override; the bounds are checked in one place,
/// [`BackupRetention::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RetentionFields")]
pub struct BackupRetention {
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}

/// Most daily, weekly and monthly backups a retention policy may keep.
pub const MAX_KEEP: (u32, u32, u32) = (3650, 520, 1200);

impl BackupRetention {
    /// A checked policy; the error names the first count out of bounds (`keep_daily`, ...)
    /// and its bound.
    pub fn new(
        keep_daily: u32,
        keep_weekly: u32,
        keep_monthly: u32,
    ) -> Result<BackupRetention, (&'static str, String)> {
        for (name, value, max) in [
            ("keep_daily", keep_daily, MAX_KEEP.0),
            ("keep_weekly", keep_weekly, MAX_KEEP.1),
            ("keep_monthly", keep_monthly, MAX_KEEP.2),
        ] {
            if value > max {
                return Err((name, format!("must be at most {max}")));
            }
        }
        Ok(BackupRetention {
            keep_daily,
            keep_weekly,
            keep_monthly,
        })
    }
}

/// `backup_retention` as written; checked into a [`BackupRetention`]. Its schema's maxima are
/// [`MAX_KEEP`] (a test holds them together).
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = BackupRetention))]
#[serde(deny_unknown_fields)]
struct RetentionFields {
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 3650))]
    keep_daily: u32,
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 520))]
    keep_weekly: u32,
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1200))]
    keep_monthly: u32,
}

impl TryFrom<RetentionFields> for BackupRetention {
    type Error = String;

    fn try_from(f: RetentionFields) -> Result<Self, String> {
        BackupRetention::new(f.keep_daily, f.keep_weekly, f.keep_monthly)
            .map_err(|(name, message)| format!("{name} {message}"))
    }
}

/// Why a settings document was refused: every invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsErrors(pub Vec<SettingsError>);

impl fmt::Display for SettingsErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsErrors {}

/// One invalid field of a settings document: the dotted field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct SettingsError {
    /// `settings.theme.color`, `settings.features.beta`, `settings` for the document itself.
    pub field: String,
    pub message: String,
}

impl TenantSettings {
    /// Parse and check a settings document. Every invalid key is reported, each error naming
    /// its field under `settings.`.
    pub fn from_value(value: &serde_json::Value) -> Result<TenantSettings, SettingsErrors> {
        if !value.is_object() {
            // serde would read a struct from an array too (`["en"]` as the locale).
            return Err(SettingsErrors(vec![SettingsError {
                field: "settings".into(),
                message: "must be a JSON object".into(),
            }]));
        }
        let whole = match parse(value) {
            Ok(settings) => return Ok(settings),
            Err(e) => e,
        };
        // Parsing stops at the first problem; check each key alone to report all of them.
        let mut errors: Vec<SettingsError> = value
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(key, v)| {
                let one =
                    serde_json::Value::Object([(key.clone(), v.clone())].into_iter().collect());
                parse(&one).err()
            })
            .collect();
        if errors.is_empty() {
            errors.push(whole);
        }
        Err(SettingsErrors(errors))
    }

    /// Read the stored settings of a tenant for display. The admin API validated them when
    /// they were written; a document this version cannot read (written by a newer one) gives the
    /// defaults rather than an error page.
    pub fn read_stored(value: &serde_json::Value) -> TenantSettings {
        TenantSettings::from_value(value).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "stored tenant settings do not parse; using defaults");
            TenantSettings::default()
        })
    }

    /// Apply a JSON merge patch (RFC 7396: `null` removes a key, objects merge) to `current`
    /// and check the result.
    pub fn merge(
        current: &serde_json::Value,
        patch: &serde_json::Value,
    ) -> Result<TenantSettings, SettingsErrors> {
        if !patch.is_object() {
            return Err(SettingsErrors(vec![SettingsError {
                field: "settings".into(),
                message: "must be a JSON object".into(),
            }]));
        }
        let mut merged = current.clone();
        merge_patch(&mut merged, patch);
        TenantSettings::from_value(&merged)
    }

    /// The document as stored and shown.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("settings serialise")
    }

    /// The locale, `en` when unset.
    pub fn locale(&self) -> &str {
        self.locale.as_ref().map_or("en", |l| l.0.as_str())
    }

    /// The time zone, `UTC` when unset.
    pub fn timezone(&self) -> &str {
        self.timezone.as_ref().map_or("UTC", |t| t.0.as_str())
    }

    /// The theme colour (`#rrggbb` or `#rgb`, lower-case), if set.
    pub fn theme_color(&self) -> Option<&str> {
        self.theme
            .as_ref()
            .and_then(|t| t.color.as_ref())
            .map(|c| c.0.as_str())
    }

    /// Whether plain-HTTP requests are redirected to https (off when unset).
    pub fn https_only(&self) -> bool {
        self.https_only.unwrap_or(false)
    }

    /// Whether feature flag `name` is on (off when unset).
    pub fn feature(&self, name: &str) -> bool {
        self.features.0.get(name).copied().unwrap_or(false)
    }
}

/// One parse of a whole document; stops at the first problem.
fn parse(value: &serde_json::Value) -> Result<TenantSettings, SettingsError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "settings".to_string()
        } else {
            format!("settings.{path}")
        };
        SettingsError {
            field,
            message: e.into_inner().to_string(),
        }
    })
}

fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(serde_json::Map::new());
    }
    let map = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(
                map.entry(key.clone()).or_insert(serde_json::Value::Null),
                value,
            );
        }
    }
}

/// The dashboard's look.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Theme {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<Color>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<ThemeMode>,
}

/// `theme` as an object; what [`Theme`] reads besides a bare mode name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeObject {
    #[serde(default)]
    color: Option<Color>,
    #[serde(default)]
    mode: Option<ThemeMode>,
}

impl<'de> Deserialize<'de> for Theme {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Theme, D::Error> {
        use serde::de::{self, IntoDeserializer};

        struct ThemeVisitor;

        impl<'de> de::Visitor<'de> for ThemeVisitor {
            type Value = Theme;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object {\"color\": \"#rrggbb\", \"mode\": \"light|dark|system\"}")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Theme, E> {
                let mode = ThemeMode::deserialize(v.into_deserializer())?;
                Ok(Theme {
                    color: None,
                    mode: Some(mode),
                })
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Theme, A::Error> {
                // Through the map itself, so errors keep their path (`theme.color`).
                let o = ThemeObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Theme {
                    color: o.color,
                    mode: o.mode,
                })
            }
        }

        d.deserialize_any(ThemeVisitor)
    }
}

/// Light, dark, or the browser's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ThemeMode {
    Light,
    Dark,
    System,
}

/// Define a checked string: its `TryFrom<String>` is the only way in.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(value: String) -> Result<Self, String> {
                $check(value).map($name)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

checked_string!(
    /// A language tag: a 2-3 letter language, optionally `-` and a 2-letter or 3-digit region.
    Locale,
    check_locale
);
checked_string!(
    /// An IANA time zone name such as `UTC` or `America/Sao_Paulo`.
    TimeZone,
    check_timezone
);
checked_string!(
    /// A CSS hex colour, `#rgb` or `#rrggbb`, kept in lower case.
    Color,
    check_color
);

fn check_locale(s: String) -> Result<String, String> {
    let mut parts = s.split('-');
    let lang = parts.next().unwrap_or("");
    let lang_ok = (2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_lowercase());
    let rest_ok = match (parts.next(), parts.next()) {
        (None, _) => true,
        (Some(region), None) => {
            (region.len() == 2 && region.bytes().all(|b| b.is_ascii_uppercase()))
                || (region.len() == 3 && region.bytes().all(|b| b.is_ascii_digit()))
        }
        _ => false,
    };
    if lang_ok && rest_ok {
        Ok(s)
    } else {
        Err("must be a locale such as \"en\" or \"pt-BR\"".into())
    }
}

fn check_timezone(s: String) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.split('/').all(|part| {
            !part.is_empty()
                && part.as_bytes()[0].is_ascii_alphabetic()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        });
    if ok {
        Ok(s)
    } else {
        Err("must be an IANA time zone such as \"Europe/Berlin\"".into())
    }
}

fn check_color(s: String) -> Result<String, String> {
    match s.strip_prefix('#') {
        Some(hex) if matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(s.to_ascii_lowercase())
        }
        _ => Err("must be a CSS hex colour such as \"#1f6feb\" or \"#abc\"".into()),
    }
}

/// Feature flags: name (letters, digits, `-`, `_`, `.`; at most 64 bytes) → on/off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<String, bool>")]
pub struct Features(BTreeMap<String, bool>);

impl Features {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, bool)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl TryFrom<BTreeMap<String, bool>> for Features {
    type Error = String;

    fn try_from(flags: BTreeMap<String, bool>) -> Result<Self, String> {
        if flags.len() > MAX_FEATURES {
            return Err(format!("at most {MAX_FEATURES} feature flags"));
        }
        for name in flags.keys() {
            let ok = !name.is_empty()
                && name.len() <= MAX_FEATURE_NAME
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                return Err(format!(
                    "flag name {name:?} must be 1-{MAX_FEATURE_NAME} letters, digits, '-', '_' or '.'"
                ));
            }
        }
        Ok(Features(flags))
    }
}

/// The OpenAPI schemas of the settings parts whose serde form is hand-written.
#[cfg(feature = "openapi")]
mod schema {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
    use utoipa::openapi::{RefOr, Schema};
    use utoipa::{PartialSchema, ToSchema};

    use super::{Features, Theme, ThemeMode, MAX_FEATURES, MAX_FEATURE_NAME};

    /// `check_color`'s rule.
    pub(super) const COLOR_PATTERN: &str = "^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$";

    fn nullable(ty: Type) -> utoipa::openapi::schema::SchemaType {
        utoipa::openapi::schema::SchemaType::from_iter([ty, Type::Null])
    }

    impl PartialSchema for Theme {
        /// An object `{color, mode}`, or (the older form) a mode name alone.
        fn schema() -> RefOr<Schema> {
            let object = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "color",
                    ObjectBuilder::new()
                        .schema_type(nullable(Type::String))
                        .pattern(Some(COLOR_PATTERN))
                        .examples(["#1f6feb"]),
                )
                .property(
                    "mode",
                    utoipa::openapi::schema::OneOfBuilder::new()
                        .item(ObjectBuilder::new().schema_type(Type::Null))
                        .item(ThemeMode::schema()),
                )
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            OneOfBuilder::new()
                .item(object)
                .item(ThemeMode::schema())
                .into()
        }
    }

    impl ToSchema for Theme {
        fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
            schemas.push((ThemeMode::name().into(), ThemeMode::schema()));
        }
    }

    impl PartialSchema for Features {
        /// Flag name → on/off.
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(ObjectBuilder::new().schema_type(Type::Boolean)))
                .property_names(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(format!("^[A-Za-z0-9._-]{{1,{MAX_FEATURE_NAME}}}$"))),
                ))
                .max_properties(Some(MAX_FEATURES))
                .into()
        }
    }

    impl ToSchema for Features {}

    /// A JSON merge patch of [`super::TenantSettings`] (RFC 7396): the same keys, where `null`
    /// removes a key or a feature flag.
    pub struct SettingsPatch;

    impl PartialSchema for SettingsPatch {
        fn schema() -> RefOr<Schema> {
            let mut schema = super::TenantSettings::schema();
            if let RefOr::T(Schema::Object(o)) = &mut schema {
                o.properties.insert(
                    "features".into(),
                    ObjectBuilder::new()
                        .schema_type(Type::Object)
                        .additional_properties(Some(
                            ObjectBuilder::new().schema_type(nullable(Type::Boolean)),
                        ))
                        .property_names(Some(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .pattern(Some(format!("^[A-Za-z0-9._-]{{1,{MAX_FEATURE_NAME}}}$"))),
                        ))
                        .max_properties(Some(MAX_FEATURES))
                        .into(),
                );
                o.description = Some("merged into the current settings; null removes a key".into());
            }
            schema
        }
    }

    impl ToSchema for SettingsPatch {
        fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
            <super::TenantSettings as ToSchema>::schemas(schemas);
        }
    }
}

#[cfg(feature = "openapi")]
pub use schema::SettingsPatch;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn retention_settings_are_checked() {
        let ok = TenantSettings::from_value(&json!({
            "data_retention_days": 30,
            "backup_retention": {"keep_daily": 3, "keep_weekly": 0, "keep_monthly": 12},
        }))
        .unwrap();
        assert_eq!(ok.data_retention_days.map(RetentionDays::get), Some(30));
        assert_eq!(
            ok.backup_retention,
            Some(BackupRetention::new(3, 0, 12).unwrap())
        );
        assert_eq!(
            ok.to_value()["backup_retention"],
            json!({"keep_daily": 3, "keep_weekly": 0, "keep_monthly": 12})
        );
        for (bad, field) in [
            (
                json!({"data_retention_days": 0}),
                "settings.data_retention_days",
            ),
            (
                json!({"data_retention_days": 36501}),
                "settings.data_retention_days",
            ),
            (
                json!({"data_retention_days": "30"}),
                "settings.data_retention_days",
            ),
            (
                json!({"backup_retention": {"keep_daily": 3, "keep_weekly": 1}}),
                "settings.backup_retention",
            ),
            (
                json!({"backup_retention": {"keep_daily": 3, "keep_weekly": 1, "keep_monthly": 1201}}),
                "settings.backup_retention",
            ),
            (
                json!({"backup_retention": {"keep_daily": 3, "keep_weekly": 1, "keep_monthly": 1, "keep_yearly": 1}}),
                "settings.backup_retention",
            ),
            (
                json!({"backup_retention": {"keep_daily": -1, "keep_weekly": 1, "keep_monthly": 1}}),
                "settings.backup_retention",
            ),
        ] {
            let errors = TenantSettings::from_value(&bad).unwrap_err().0;
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert!(errors[0].field.starts_with(field), "{bad}: {errors:?}");
        }
        let e = TenantSettings::from_value(
            &json!({"backup_retention": {"keep_daily": 4000, "keep_weekly": 1, "keep_monthly": 1}}),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("keep_daily must be at most 3650"),
            "{e}"
        );
    }

    #[test]
    fn per_client_share_is_a_fraction() {
        let ok = TenantSettings::from_value(&json!({"per_client_share": 0.25})).unwrap();
        assert_eq!(ok.per_client_share.map(crate::ClientShare::get), Some(0.25));
        assert_eq!(ok.to_value(), json!({"per_client_share": 0.25}));
        for bad in [json!(0), json!(1.5), json!(-1), json!("0.5")] {
            assert_eq!(
                field_of(json!({ "per_client_share": bad })),
                "settings.per_client_share"
            );
        }
    }

    fn field_of(value: serde_json::Value) -> String {
        let errors = TenantSettings::from_value(&value).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].field.clone()
    }

    #[test]
    fn https_settings_are_checked() {
        let s = TenantSettings::from_value(&json!({"https_only": true, "hsts_max_age": 31536000}))
            .unwrap();
        assert!(s.https_only());
        assert_eq!(s.hsts_max_age.map(HstsMaxAge::get), Some(31_536_000));
        assert_eq!(TenantSettings::from_value(&s.to_value()).unwrap(), s);
        let none = TenantSettings::default();
        assert!(!none.https_only() && none.hsts_max_age.is_none());
        for (bad, field) in [
            (json!({"https_only": "yes"}), "settings.https_only"),
            (json!({"hsts_max_age": 63072001}), "settings.hsts_max_age"),
            (json!({"hsts_max_age": -1}), "settings.hsts_max_age"),
        ] {
            assert_eq!(field_of(bad), field);
        }
    }

    #[test]
    fn reads_a_full_document_and_its_defaults() {
        let s = TenantSettings::from_value(&json!({
            "locale": "pt-BR", "timezone": "America/Sao_Paulo",
            "theme": {"color": "#AbC", "mode": "dark"}, "features": {"beta": true}
        }))
        .unwrap();
        assert_eq!(s.locale(), "pt-BR");
        assert_eq!(s.timezone(), "America/Sao_Paulo");
        assert_eq!(s.theme_color(), Some("#abc"));
        assert!(s.feature("beta"));
        assert!(!s.feature("other"));
        let empty = TenantSettings::from_value(&json!({})).unwrap();
        assert_eq!((empty.locale(), empty.timezone()), ("en", "UTC"));
        assert_eq!(empty.theme_color(), None);
        assert_eq!(empty.to_value(), json!({}));
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(json!({"loacle": "en"})), "settings.loacle");
        let all = TenantSettings::from_value(&json!({"locale": 5, "colour": "red"})).unwrap_err();
        let mut fields: Vec<&str> = all.0.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(fields, ["settings.colour", "settings.locale"]);
        assert_eq!(field_of(json!({"locale": "english"})), "settings.locale");
        assert_eq!(field_of(json!({"timezone": ""})), "settings.timezone");
        assert_eq!(
            field_of(json!({"theme": {"color": "red;}</style>"}})),
            "settings.theme.color"
        );
        assert_eq!(
            field_of(json!({"theme": {"colour": "#abc"}})),
            "settings.theme.colour"
        );
        assert_eq!(
            field_of(json!({"features": {"beta": "yes"}})),
            "settings.features.beta"
        );
        assert_eq!(
            field_of(json!({"features": {"a b": true}})),
            "settings.features"
        );
        assert_eq!(field_of(json!([1])), "settings");
        assert_eq!(field_of(json!(["en"])), "settings");
        assert_eq!(field_of(json!({"theme": ["#abc"]})), "settings.theme");
        // null is "not set" in a whole document (in a merge patch it removes the key).
        assert_eq!(
            TenantSettings::from_value(&json!({"locale": null})),
            Ok(TenantSettings::default())
        );
    }

    #[test]
    fn colours_are_css_hex_only() {
        let colour = |c: &str| {
            TenantSettings::from_value(&json!({"theme": {"color": c}}))
                .ok()
                .and_then(|s| s.theme_color().map(str::to_string))
        };
        assert_eq!(colour("#fff").as_deref(), Some("#fff"));
        assert_eq!(colour("#A0B1C2").as_deref(), Some("#a0b1c2"));
        for bad in [
            "fff",
            "#ffff",
            "#ggg",
            "#12345",
            "#1234567",
            "",
            "#",
            "red;}</style>",
        ] {
            assert_eq!(colour(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_old_theme_name_reads_as_the_mode() {
        let s = TenantSettings::from_value(&json!({"theme": "dark"})).unwrap();
        assert_eq!(s.theme.as_ref().unwrap().mode, Some(ThemeMode::Dark));
        assert_eq!(s.to_value(), json!({"theme": {"mode": "dark"}}));
        assert_eq!(field_of(json!({"theme": "purple"})), "settings.theme");
    }

    #[test]
    fn merge_patch_sets_merges_and_removes() {
        let current = json!({"locale": "de", "theme": {"mode": "dark"}, "features": {"a": true}});
        let s = TenantSettings::merge(
            &current,
            &json!({"locale": null, "theme": {"color": "#123456"}, "features": {"b": false}}),
        )
        .unwrap();
        assert_eq!(
            s.to_value(),
            json!({"theme": {"color": "#123456", "mode": "dark"}, "features": {"a": true, "b": false}})
        );
        assert_eq!(
            TenantSettings::merge(&current, &json!({"theme": {"color": "x"}}))
                .unwrap_err()
                .0[0]
                .field,
            "settings.theme.color"
        );
        assert_eq!(
            TenantSettings::merge(&current, &json!([])).unwrap_err().0[0].field,
            "settings"
        );
    }
}
