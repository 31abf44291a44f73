//! Subject builders. Every SynergAI subject is built here and nowhere else, under a root
//! that carries the contract version (`synergai.v1`); tests give each run its own root so
//! runs sharing one NATS server never see each other's traffic.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ContractError;

/// The root of every subject of this contract version.
pub const ROOT: &str = "synergai.v1";

/// Longest model name accepted.
pub const MAX_MODEL_NAME: usize = 64;

/// A model name: 1 to 64 ASCII letters, digits, `_` or `-`, so that it is always exactly one
/// NATS subject token and one URL path segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(String);

impl ModelName {
    /// Validates a model name.
    pub fn parse(name: impl Into<String>) -> Result<Self, ContractError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= MAX_MODEL_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(ModelName(name))
        } else {
            Err(ContractError::BadRequest(format!(
                "invalid model name {name:?}: 1 to {MAX_MODEL_NAME} of A-Z a-z 0-9 _ -"
            )))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModelName {
    type Error = ContractError;
    fn try_from(s: String) -> Result<Self, ContractError> {
        ModelName::parse(s)
    }
}

impl From<ModelName> for String {
    fn from(m: ModelName) -> String {
        m.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds the subjects of one SynergAI deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    root: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects { root: ROOT.into() }
    }
}

impl Subjects {
    /// Subjects under `<prefix>.synergai.v1`; an empty prefix gives the production root.
    pub fn with_prefix(prefix: &str) -> Self {
        if prefix.is_empty() {
            Subjects::default()
        } else {
            Subjects {
                root: format!("{prefix}.{ROOT}"),
            }
        }
    }

    /// The root every subject starts with.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Public request-reply subject of a model: `synergai.v1.infer.<model>`.
    pub fn infer(&self, model: &ModelName) -> String {
        format!("{}.infer.{model}", self.root)
    }

    /// Wildcard over every model's inference subject: `synergai.v1.infer.*`.
    pub fn infer_any(&self) -> String {
        format!("{}.infer.*", self.root)
    }

    /// The model token of an inference subject, if `subject` is one.
    pub fn model_of_infer<'s>(&self, subject: &'s str) -> Option<&'s str> {
        subject
            .strip_prefix(self.root.as_str())?
            .strip_prefix(".infer.")
            .filter(|m| !m.is_empty() && !m.contains('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_are_single_tokens() {
        assert!(ModelName::parse("inception_v1").is_ok());
        assert!(ModelName::parse("ppocr-det").is_ok());
        for bad in ["", "a.b", "a*", ">", "a b", "é", &"x".repeat(65)] {
            assert!(ModelName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn infer_subjects() {
        let s = Subjects::default();
        let m = ModelName::parse("resnet50").expect("valid");
        assert_eq!(s.infer(&m), "synergai.v1.infer.resnet50");
        assert_eq!(s.infer_any(), "synergai.v1.infer.*");
        assert_eq!(
            s.model_of_infer("synergai.v1.infer.resnet50"),
            Some("resnet50")
        );
        assert_eq!(s.model_of_infer("synergai.v1.infer."), None);
        assert_eq!(s.model_of_infer("synergai.v2.infer.resnet50"), None);

        let t = Subjects::with_prefix("t42");
        assert_eq!(t.infer(&m), "t42.synergai.v1.infer.resnet50");
        assert_eq!(
            t.model_of_infer("t42.synergai.v1.infer.vgg19"),
            Some("vgg19")
        );
        assert_eq!(t.model_of_infer("synergai.v1.infer.vgg19"), None);
    }
}
