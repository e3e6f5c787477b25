//! Truto's list envelope, used by every list the API serves.

use serde::Serialize;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListEnvelope<T> {
    pub result: Vec<T>,
    /// Pass back as `next_cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    pub prev_cursor: Option<String>,
    pub result_count: usize,
    /// Tenant-wide lists: the tenant's accounts left out (not active), never silently.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<crate::gateway::SkippedAccount>>)]
    pub skipped_accounts: Option<Vec<crate::gateway::SkippedAccount>>,
}

impl<T> ListEnvelope<T> {
    pub fn new(result: Vec<T>, next_cursor: Option<String>) -> Self {
        Self {
            result_count: result.len(),
            result,
            next_cursor,
            prev_cursor: None,
            skipped_accounts: None,
        }
    }
}
