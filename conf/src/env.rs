//! Environment overrides: `TENANTGATE__SECTION__KEY=value` replaces `key` of `[section]` in the
//! file before it is parsed, so the override is checked like the file.

use crate::ConfigError;

/// Prefix of environment overrides: `TENANTGATE__EDGE__LISTEN=127.0.0.1:9000`.
pub const ENV_PREFIX: &str = "TENANTGATE__";

/// The variable that overrides the dotted `key` (`security.credential_key` →
/// `TENANTGATE__SECURITY__CREDENTIAL_KEY`).
pub fn variable_for(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

pub(crate) fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        let key = parts.join(".");
        if parts.iter().any(String::is_empty) || parts.len() > 2 {
            return Err(ConfigError::new(
                name,
                "environment overrides are TENANTGATE__KEY or TENANTGATE__SECTION__KEY",
            ));
        }
        // A value that parses as TOML (number, bool, array, inline table) is taken as such;
        // anything else is a string, so `127.0.0.1:9000` needs no quoting.
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        let (section, leaf) = match parts.as_slice() {
            [leaf] => (None, leaf),
            [section, leaf] => (Some(section), leaf),
            _ => unreachable!("checked above"),
        };
        let target = match section {
            None => &mut *table,
            Some(section) => match table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                toml::Value::Table(t) => t,
                _ => return Err(ConfigError::new(key, "is not a section")),
            },
        };
        target.insert(leaf.clone(), parsed);
    }
    Ok(())
}
