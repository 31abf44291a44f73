//! Secrets in configuration (passwords, tokens): kept out of `Debug` output and logs, read from
//! the environment or from a file (a mounted Kubernetes Secret, a Docker secret), compared in
//! constant time.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A secret string. `Debug` prints `Secret(***)`; the value is reached only through
/// [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Reads a secret file: its whole content, less one trailing newline (what `echo` and
    /// `kubectl create secret --from-file` leave). An empty file is an error.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
        let value = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        if value.is_empty() {
            return Err(format!("secret file {} is empty", path.display()));
        }
        Ok(Secret(value.to_owned()))
    }

    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this secret, in time that does not depend on where the two first
    /// differ (only on their lengths).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Byte-string equality whose running time depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The one secret named by an inline value or a file, if any: an error when both are set.
pub fn resolve(
    what: &str,
    inline: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("{what} is set both inline and as a file: set one")),
        (Some(s), None) if s.expose().is_empty() => Err(format!("{what} is empty")),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(path)) => Secret::from_file(path).map(Some),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn comparison() {
        let s = Secret::new("abc");
        assert!(s.matches(b"abc"));
        assert!(!s.matches(b"abd"));
        assert!(!s.matches(b"ab"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn files_and_conflicts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").expect("written");
        let got = resolve("nats.password", None, Some(&path)).expect("read");
        assert_eq!(got.as_ref().map(Secret::expose), Some("s3cret"));
        std::fs::write(&path, "\n").expect("written");
        assert!(resolve("nats.password", None, Some(&path)).is_err());
        let inline = Secret::new("x");
        assert!(resolve("nats.password", Some(&inline), Some(&path)).is_err());
        assert!(
            resolve("nats.password", None, None)
                .expect("none")
                .is_none()
        );
        let missing = dir.path().join("missing");
        let err = resolve("t", None, Some(&missing)).expect_err("missing file");
        assert!(err.contains("missing"), "{err}");
    }
}
