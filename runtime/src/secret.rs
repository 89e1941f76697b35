//! Secrets from files or environment variables, never from argv or config text.
//!
//! Contract: a secret is read from a file (a Kubernetes Secret volume, a Docker secret, a
//! file of mode 0600) or, failing that, from a named environment variable. The value is the
//! file's first line with surrounding white space trimmed; an empty value is an error, not an
//! empty password ("fail closed"). Errors name the file or variable, never the value.

use std::path::{Path, PathBuf};

use crate::redact::Secret;

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The file could not be read.
    #[error("{what}: cannot read {path}: {reason}")]
    Unreadable {
        /// What the secret is for.
        what: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file or variable is empty.
    #[error("{what}: {source_name} is empty")]
    Empty {
        /// What the secret is for.
        what: String,
        /// The file or `$VARIABLE`.
        source_name: String,
    },
    /// Neither a file nor the variable was given, and the secret is required.
    #[error("{what}: no secret configured (set {hint})")]
    Missing {
        /// What the secret is for.
        what: String,
        /// Where it may come from.
        hint: String,
    },
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

/// Reads a secret from the first line of `path`.
pub fn from_file(path: &Path, what: &str) -> Result<Secret, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|e| SecretError::Unreadable {
        what: what.into(),
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let value = first_line(&text);
    if value.is_empty() {
        return Err(SecretError::Empty {
            what: what.into(),
            source_name: path.display().to_string(),
        });
    }
    Ok(Secret::new(value))
}

/// Reads a secret from `file` if given, else from the environment variable `env_var` if set.
/// `Ok(None)` when neither is configured; an empty value is an error.
pub fn lookup(
    file: Option<&Path>,
    env_var: &str,
    what: &str,
) -> Result<Option<Secret>, SecretError> {
    if let Some(path) = file {
        return from_file(path, what).map(Some);
    }
    match std::env::var(env_var) {
        Ok(v) if first_line(&v).is_empty() => Err(SecretError::Empty {
            what: what.into(),
            source_name: format!("${env_var}"),
        }),
        Ok(v) => Ok(Some(Secret::new(first_line(&v)))),
        Err(_) => Ok(None),
    }
}

/// Like [`lookup`], but a secret that is not configured is an error (fail closed).
pub fn require(file: Option<&Path>, env_var: &str, what: &str) -> Result<Secret, SecretError> {
    lookup(file, env_var, what)?.ok_or_else(|| SecretError::Missing {
        what: what.into(),
        hint: format!("a file, or ${env_var}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_env_and_failing_closed() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "  s3cret \nsecond line\n").unwrap();
        assert_eq!(from_file(&good, "t").unwrap().expose(), "s3cret");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(matches!(
            from_file(&empty, "t"),
            Err(SecretError::Empty { .. })
        ));
        let missing = dir.path().join("missing");
        let err = from_file(&missing, "api token").unwrap_err().to_string();
        assert!(err.starts_with("api token: cannot read"), "{err}");
        let var = "PANOPTES_TEST_SECRET_LOOKUP_UNSET_7D1";
        assert_eq!(lookup(None, var, "t").unwrap(), None);
        assert!(matches!(
            require(None, var, "t"),
            Err(SecretError::Missing { .. })
        ));
        // A file wins over the variable.
        assert_eq!(require(Some(&good), var, "t").unwrap().expose(), "s3cret");
    }
}
