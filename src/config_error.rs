//! The error of an unusable configuration, shared by the config file, the stage
//! configs and the policies (a leaf, so that none of them imports another for it).

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path given.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config {origin}: {message}")]
    Parse {
        /// File or section.
        origin: String,
        /// Parser's message (names the key and line).
        message: String,
    },
    /// A value is out of its allowed range.
    #[error("invalid config: {0}")]
    Invalid(String),
}
