//! Why a configuration was refused. Its own module because the validators
//! of the model's parts (the rule model, Geneve options) all return it.

/// Why a configuration was refused: the field's path and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Syntax(String),
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl ConfigError {
    pub fn path(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { path, .. } => Some(path),
            ConfigError::Syntax(_) => None,
        }
    }
}
