//! Flags over environment over file: clap already puts a flag over its environment variable;
//! [`load`] puts both over the file, key by key, through the options' own serde form.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A config file that cannot be read or is not a config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid config: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("encoding a config: {0}")]
    Encode(String),
}

/// The options of `flags` (flags and environment, as clap parsed them) over those of the
/// config file at `file`, if any.
pub fn load<O: Serialize + DeserializeOwned>(file: Option<&Path>, flags: O) -> Result<O, Error> {
    let parse = |path: &Path, message: String| Error::Parse {
        path: path.to_path_buf(),
        message,
    };
    let mut merged = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
            // Checked as the options first, so an unknown key or a wrong type is refused with
            // the file's own line.
            toml::from_str::<O>(&text).map_err(|e| parse(path, e.to_string()))?;
            toml::from_str::<toml::Table>(&text).map_err(|e| parse(path, e.to_string()))?
        }
        None => toml::Table::new(),
    };
    let over = toml::Table::try_from(&flags).map_err(|e| Error::Encode(e.to_string()))?;
    merged.extend(over);
    merged
        .try_into()
        .map_err(|e: toml::de::Error| parse(file.unwrap_or(Path::new("(flags)")), e.to_string()))
}

/// The options as a config file's text.
pub fn to_toml<O: Serialize>(options: &O) -> Result<String, Error> {
    toml::to_string(options).map_err(|e| Error::Encode(e.to_string()))
}
