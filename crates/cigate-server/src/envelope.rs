//! Truto's list envelope, used by every list the API serves.

use serde::Serialize;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListEnvelope<T> {
    pub result: Vec<T>,
    /// Pass back as `next_cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    pub prev_cursor: Option<String>,
    pub result_count: usize,
}

impl<T> ListEnvelope<T> {
    pub fn new(result: Vec<T>, next_cursor: Option<String>) -> Self {
        Self {
            result_count: result.len(),
            result,
            next_cursor,
            prev_cursor: None,
        }
    }
}
