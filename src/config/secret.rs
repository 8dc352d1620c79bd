//! `Secret`: a configured credential that never shows in `Debug` output or logs.
//!
//! Invariant: the only way to read the value is [`Secret::expose`], at the point of use.

use serde::{Deserialize, Serialize};

/// A credential from the configuration (an API key, a client secret).
///
/// It serialises as its value, because the configuration layers are merged through serde;
/// nothing prints a configuration as JSON or TOML.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the request that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret(********)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(********)");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(Secret(********))");
        assert_eq!(secret.expose(), "hunter2");
        let read: Secret = serde_json::from_str("\"hunter2\"").expect("string");
        assert_eq!(read, secret);
    }
}
