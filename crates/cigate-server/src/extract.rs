//! Extractors whose rejections are problem+json instead of axum's plain text, and the
//! reading of the query parameters every account-scoped route shares.

use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts};
use chrono::{DateTime, Utc};
use cigate_core::params;
use cigate_core::{JobFilters, ListQuery, RenderOptions};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// `axum::Json` with malformed JSON → 400, wrong types → 422, oversized → 413, all
/// rendered by [`ApiError`].
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path` with its rejections (a segment that is not UTF-8, a value of
/// the wrong type) rendered by [`ApiError`] as problem+json.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters that name upstream objects spliced into upstream URLs.
const SCOPING_PARAMS: [&str; 4] = ["workspace", "repo", "project", "workflow"];

/// Refuses, before any lookup or upstream call, scoping parameters that cannot name an
/// upstream object (`workspace=a%2Fb`, `repo=..`, `workspace=acme%00`) and job filter
/// values outside the normalised vocabularies: the caller's mistake, answered 400
/// naming the parameter, instead of an upstream error.
pub fn check_scope_params(query: &QueryPairs) -> Result<(), ApiError> {
    for name in SCOPING_PARAMS {
        if let Some(value) = query.get(name) {
            params::check_identifier(name, value)?;
        }
    }
    if let Some(status) = query.get("status") {
        params::check_job_status(status)?;
    }
    if let Some(conclusion) = query.get("conclusion") {
        params::check_job_conclusion(conclusion)?;
    }
    Ok(())
}

/// A JSON body that may be absent: an empty body or `null` is `None`, anything else
/// must parse.
pub fn optional_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<Option<T>>(body).map_err(|err| match err.classify() {
        serde_json::error::Category::Data => ApiError::Validation(err.to_string()),
        _ => ApiError::InvalidBody(err.to_string()),
    })
}

/// A JSON body that must be present, for handlers that read the body only after
/// checks that decide the answer first (a 405 before a body complaint).
pub fn required_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    optional_json(body)?.ok_or_else(|| ApiError::InvalidBody("a JSON body is required".into()))
}

/// The raw query string as ordered pairs. Truto's conventions use bracketed keys
/// (`remote_query[key]`, `created_at[gte]`, `truto_exclude_fields[]`) that a typed
/// struct cannot express, so handlers read pairs and validate them explicitly.
#[derive(Debug, Default)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .map(QueryPairs)
            .map_err(|err| {
                ApiError::bad_request(
                    "/problems/invalid-parameter",
                    format!("malformed query string: {err}"),
                )
            })
    }
}

impl QueryPairs {
    /// The last value of `name`; an empty value counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
    }

    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(other) => Err(ApiError::bad_request(
                "/problems/invalid-parameter",
                format!("query parameter `{name}` must be true or false, not `{other}`"),
            )),
        }
    }

    /// Every value of a list parameter given as `name[]=a&name[]=b`, `name=a,b` or both.
    pub fn list(&self, name: &str) -> Vec<String> {
        let bracketed = format!("{name}[]");
        self.0
            .iter()
            .filter(|(key, _)| key == name || *key == bracketed)
            .flat_map(|(_, value)| value.split(','))
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `prefix[key]=value` pairs, e.g. `remote_query[status]=ACTIVE` → (`status`, `ACTIVE`).
    pub fn bracketed(&self, prefix: &str) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|(key, value)| {
                let inner = key
                    .strip_prefix(prefix)?
                    .strip_prefix('[')?
                    .strip_suffix(']')?;
                (!inner.is_empty()).then(|| (inner.to_owned(), value.clone()))
            })
            .collect()
    }

    /// A bounded integer parameter with a default.
    pub fn int_in(&self, name: &str, default: u32, min: u32, max: u32) -> Result<u32, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.parse::<u32>() {
            Ok(value) if (min..=max).contains(&value) => Ok(value),
            _ => Err(ApiError::bad_request(
                "/problems/invalid-parameter",
                format!("query parameter `{name}` must be a whole number from {min} to {max}, not `{raw}`"),
            )),
        }
    }
}

/// The query parameter carrying the caller's per-call deadline (never forwarded).
pub const TIMEOUT_PARAM: &str = "truto_timeout_ms";

/// The parameters of Truto's conventions that every account-scoped route reads.
impl QueryPairs {
    /// `integrated_account_id`, required by `api` (named in the 400).
    pub fn account_id(&self, api: &str) -> ApiResult<&str> {
        self.get("integrated_account_id")
            .ok_or_else(|| ApiError::missing(vec!["integrated_account_id".into()], api))
    }

    /// `truto_timeout_ms`: the caller's deadline for this call, retries and rate-limit
    /// waits included (1 ms to 5 min); absent → `default`.
    pub fn timeout(&self, default: Duration) -> ApiResult<Duration> {
        match self.get(TIMEOUT_PARAM) {
            None => Ok(default),
            Some(_) => Ok(Duration::from_millis(u64::from(self.int_in(
                TIMEOUT_PARAM,
                0,
                1,
                300_000,
            )?))),
        }
    }

    /// How records leave the API, from `truto_response_format`,
    /// `truto_ignore_remote_data` and `truto_exclude_fields`.
    pub fn render_options(&self) -> ApiResult<RenderOptions> {
        let raw = match self.get("truto_response_format") {
            None | Some("unified") | Some("normalized") => false,
            Some("raw") => true,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "/problems/invalid-parameter",
                    format!("`truto_response_format` must be `raw` or `unified`, not `{other}`"),
                ))
            }
        };
        Ok(RenderOptions {
            raw,
            ignore_remote_data: self.flag("truto_ignore_remote_data")?,
            exclude_fields: self.list("truto_exclude_fields"),
        })
    }

    /// An RFC 3339 timestamp parameter.
    pub fn timestamp(&self, name: &str) -> ApiResult<Option<DateTime<Utc>>> {
        self.get(name)
            .map(|raw| {
                DateTime::parse_from_rfc3339(raw)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        ApiError::bad_request(
                            "/problems/invalid-parameter",
                            format!("`{name}` must be an RFC 3339 timestamp, not `{raw}`"),
                        )
                    })
            })
            .transpose()
    }

    /// The scoping parameters and filters; `repo` and `project` are aliases, and
    /// `workspace` defaults to the account's own (`account_context.workspace`).
    /// Scoping identifiers and filter values are checked first (400 naming the
    /// parameter), so a caller's mistake never reaches Buddy as a path.
    pub fn list_query(&self, account_context: &Value) -> ApiResult<ListQuery> {
        check_scope_params(self)?;
        let repo = self.get("repo");
        let project = self.get("project");
        if let (Some(r), Some(p)) = (repo, project) {
            if r != p {
                return Err(ApiError::bad_request(
                    "/problems/invalid-parameter",
                    "`repo` and `project` name the same thing; they disagree",
                ));
            }
        }
        let workspace = self.get("workspace").map(str::to_owned).or_else(|| {
            account_context
                .get("workspace")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        Ok(ListQuery {
            workspace,
            repo: repo.or(project).map(str::to_owned),
            workflow: self.get("workflow").map(str::to_owned),
            limit: self.int_in("limit", 100, 1, 1000)?,
            filters: JobFilters {
                status: self.get("status").map(str::to_owned),
                conclusion: self.get("conclusion").map(str::to_owned),
                branch: self.get("branch").map(str::to_owned),
                created_after: self.timestamp("created_at[gte]")?,
                created_before: self.timestamp("created_at[lte]")?,
            },
            remote_query: self.bracketed("remote_query"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> QueryPairs {
        QueryPairs(serde_urlencoded::from_str(q).unwrap())
    }

    #[test]
    fn lists_accept_brackets_and_commas() {
        let q = pairs("truto_exclude_fields[]=a&truto_exclude_fields=b,c&other=x");
        assert_eq!(q.list("truto_exclude_fields"), vec!["a", "b", "c"]);
    }

    #[test]
    fn bracketed_pairs() {
        let q =
            pairs("remote_query%5Bstatus%5D=ACTIVE&remote_query[sort_by]=name&remote_query[]=x");
        assert_eq!(
            q.bracketed("remote_query"),
            vec![
                ("status".to_owned(), "ACTIVE".to_owned()),
                ("sort_by".to_owned(), "name".to_owned())
            ]
        );
    }

    #[test]
    fn ints_are_bounded() {
        let q = pairs("limit=0");
        assert!(q.int_in("limit", 100, 1, 1000).is_err());
        let q = pairs("limit=1001");
        assert!(q.int_in("limit", 100, 1, 1000).is_err());
        let q = pairs("limit=abc");
        assert!(q.int_in("limit", 100, 1, 1000).is_err());
        assert_eq!(pairs("limit=37").int_in("limit", 100, 1, 1000).unwrap(), 37);
        assert_eq!(pairs("").int_in("limit", 100, 1, 1000).unwrap(), 100);
    }

    #[test]
    fn flags_reject_garbage() {
        assert!(pairs("x=maybe").flag("x").is_err());
        assert!(pairs("x=true").flag("x").unwrap());
        assert!(!pairs("").flag("x").unwrap());
    }
}
