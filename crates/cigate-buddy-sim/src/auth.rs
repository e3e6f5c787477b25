//! Token registry and Buddy's scope model (hierarchy INFO ⊂ ADD/RUN ⊂ MANAGE and
//! the 2025 PIPELINE_*/PROJECT_READ aliases).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Every classic scope; a token registered with `--token` gets all of them.
pub const ALL_SCOPES: &[&str] = &[
    "WORKSPACE",
    "PROJECT_DELETE",
    "REPOSITORY_READ",
    "REPOSITORY_WRITE",
    "EXECUTION_INFO",
    "EXECUTION_RUN",
    "EXECUTION_MANAGE",
    "USER_INFO",
    "USER_KEY",
    "USER_EMAIL",
    "MANAGE_EMAILS",
    "MEMBER_EMAIL",
    "INTEGRATION_INFO",
    "INTEGRATION_ADD",
    "INTEGRATION_MANAGE",
    "WEBHOOK_INFO",
    "WEBHOOK_ADD",
    "WEBHOOK_MANAGE",
    "VARIABLE_INFO",
    "VARIABLE_ADD",
    "VARIABLE_MANAGE",
    "TOKEN_INFO",
    "TOKEN_MANAGE",
    "ENVIRONMENT_INFO",
    "ENVIRONMENT_ADD",
    "ENVIRONMENT_MANAGE",
];

/// What a test or the control API asks for when issuing a token.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TokenSpec {
    /// Token value; a UUID v4 is generated when absent.
    pub token: Option<String>,
    pub name: Option<String>,
    /// Granted scopes; empty means every scope.
    pub scopes: Vec<String>,
    /// Lifetime in seconds from now; absent means no expiry.
    pub expires_in: Option<i64>,
    /// Workspace domains the token may access; empty means all.
    pub workspace_restrictions: Vec<String>,
    pub ip_restrictions: Vec<String>,
}

impl TokenSpec {
    pub fn all_scopes() -> Self {
        Self::default()
    }

    pub fn with_scopes(scopes: &[&str]) -> Self {
        Self {
            scopes: scopes.iter().map(|s| (*s).to_string()).collect(),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub id: String,
    pub value: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub workspace_restrictions: Vec<String>,
    pub ip_restrictions: Vec<String>,
}

impl TokenInfo {
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    pub fn has_scope(&self, required: &str) -> bool {
        self.scopes.iter().any(|granted| implies(granted, required))
    }

    pub fn may_access_workspace(&self, domain: &str) -> bool {
        self.workspace_restrictions.is_empty()
            || self.workspace_restrictions.iter().any(|w| w == domain)
    }
}

#[derive(Debug, Default)]
pub struct TokenRegistry {
    pub tokens: HashMap<String, TokenInfo>,
    pub serial: u64,
}

impl TokenRegistry {
    pub fn insert(&mut self, info: TokenInfo) {
        self.tokens.insert(info.value.clone(), info);
    }

    pub fn get(&self, value: &str) -> Option<&TokenInfo> {
        self.tokens.get(value)
    }

    pub fn next_id(&mut self) -> String {
        self.serial += 1;
        format!("{:024x}", self.serial)
    }
}

/// Maps newer names onto the classic family/level they alias.
fn canonical(scope: &str) -> &str {
    match scope {
        "PIPELINE_READ" => "EXECUTION_INFO",
        "PIPELINE_RUN" => "EXECUTION_RUN",
        "PIPELINE_WRITE" | "PIPELINE_MANAGE" => "EXECUTION_MANAGE",
        "VARIABLE_READ" => "VARIABLE_INFO",
        "VARIABLE_WRITE" => "VARIABLE_ADD",
        "INTEGRATION_READ" => "INTEGRATION_INFO",
        "INTEGRATION_USE" => "INTEGRATION_ADD",
        other => other,
    }
}

fn level(suffix: &str) -> Option<u8> {
    match suffix {
        "INFO" | "READ" => Some(1),
        "ADD" | "RUN" | "WRITE" => Some(2),
        "MANAGE" => Some(3),
        _ => None,
    }
}

/// Whether a granted scope satisfies a required one.
pub fn implies(granted: &str, required: &str) -> bool {
    let (g, r) = (canonical(granted), canonical(required));
    if g == r {
        return true;
    }
    if r == "USER_INFO" && matches!(g, "USER_KEY" | "USER_EMAIL" | "MANAGE_EMAILS") {
        return true;
    }
    match (g.rsplit_once('_'), r.rsplit_once('_')) {
        (Some((gf, gl)), Some((rf, rl))) if gf == rf => {
            matches!((level(gl), level(rl)), (Some(a), Some(b)) if a >= b)
        }
        _ => false,
    }
}

/// Scope list from OAuth's space/`+`/comma separated form.
pub fn parse_scope_list(raw: &str) -> Vec<String> {
    raw.split([' ', '+', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_uppercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchy_and_aliases() {
        assert!(implies("EXECUTION_RUN", "EXECUTION_INFO"));
        assert!(implies("EXECUTION_MANAGE", "EXECUTION_RUN"));
        assert!(!implies("EXECUTION_INFO", "EXECUTION_RUN"));
        assert!(implies("PIPELINE_READ", "EXECUTION_INFO"));
        assert!(implies("PIPELINE_RUN", "EXECUTION_INFO"));
        assert!(implies("EXECUTION_INFO", "PIPELINE_READ"));
        assert!(implies("REPOSITORY_WRITE", "REPOSITORY_READ"));
        assert!(implies("WEBHOOK_MANAGE", "WEBHOOK_ADD"));
        assert!(implies("USER_EMAIL", "USER_INFO"));
        assert!(!implies("WORKSPACE", "EXECUTION_INFO"));
        assert!(!implies("VARIABLE_INFO", "EXECUTION_INFO"));
    }
}
