//! A string that must never leak: redacted in `Debug`, `Display` and serialization.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Wraps credentials (API keys, access and refresh tokens, client secrets) so that a
/// stray `{:?}`, log field or `serde_json::to_string` cannot reveal them. The only way
/// to read the value is [`Secret::expose`], which makes every use greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plaintext. Call only where the value leaves for its one legitimate use
    /// (an `Authorization` header, the encryption routine).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

/// Deserializing accepts the plaintext so request bodies can carry credentials in.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("tok-123-plaintext");
        assert!(!format!("{s:?}").contains("plaintext"));
        assert!(!format!("{s}").contains("plaintext"));
        assert!(!serde_json::to_string(&s).unwrap().contains("plaintext"));
        assert_eq!(s.expose(), "tok-123-plaintext");
    }

    #[test]
    fn deserializes_plaintext() {
        let s: Secret = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(s.expose(), "abc");
    }
}
