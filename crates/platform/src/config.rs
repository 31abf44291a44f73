//! Layered configuration with the `config` crate: typed defaults, then an optional file, then
//! the environment (`SYNERGAI_SECTION__KEY=value`, e.g. `SYNERGAI_NATS__URL`).
//!
//! Only binaries read the process environment: they pass `std::env::vars()` in, tests pass
//! their own pairs.

use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

/// Environment variable prefix.
pub const ENV_PREFIX: &str = "SYNERGAI";
/// Environment variable naming an optional config file.
pub const ENV_CONFIG_FILE: &str = "SYNERGAI_CONFIG";

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The defaults could not be turned into a config layer (a programming error).
    #[error("config defaults: {0}")]
    Defaults(String),
    /// A layer is malformed or a value has the wrong type.
    #[error("configuration: {0}")]
    Invalid(#[from] ::config::ConfigError),
}

/// Loads `T`: `defaults`, overlaid by `file` (TOML, when given), overlaid by the `SYNERGAI_*`
/// entries of `env`. Unknown keys are rejected where `T` denies unknown fields, except that an
/// environment variable whose section `T` does not have is left alone: one shell or compose
/// file sets variables for several services, each taking its own.
pub fn load<T: Serialize + DeserializeOwned>(
    defaults: &T,
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let sections: Vec<String> = match serde_json::to_value(defaults) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let defaults =
        ::config::Config::try_from(defaults).map_err(|e| ConfigError::Defaults(e.to_string()))?;
    let prefix = format!("{ENV_PREFIX}_");
    let env: ::config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k != ENV_CONFIG_FILE)
        .filter(|(k, _)| {
            k.strip_prefix(&prefix).is_some_and(|rest| {
                let section = rest
                    .split("__")
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                sections.contains(&section)
            })
        })
        .collect();
    let mut builder = ::config::Config::builder().add_source(defaults);
    if let Some(path) = file {
        builder = builder.add_source(::config::File::from(path).required(true));
    }
    let built = builder
        .add_source(
            ::config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        )
        .build()?;
    Ok(built.try_deserialize()?)
}

/// The config file a binary should read: `SYNERGAI_CONFIG` if set in `env`.
pub fn file_from_env(env: &[(String, String)]) -> Option<std::path::PathBuf> {
    env.iter()
        .find(|(k, _)| k == ENV_CONFIG_FILE)
        .map(|(_, v)| v.into())
}
