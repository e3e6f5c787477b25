//! Status badges: what a public badge URL draws (one branch of one repo of an account).
//!
//! A badge is viewed without an API token, so its id is its only protection: 32 random
//! bytes from the OS (`bdg_` + 43 characters of base64url), the table's primary key,
//! and looked up by itself alone ([`Store::badge`]) for the public view. Everything
//! else (reading, deleting) is scoped by environment like any other record.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;

use crate::db::on_pool;
use crate::{now, Store, StoreError};

/// Prefix of every badge id, so one is recognisable in a URL or a log.
pub const BADGE_PREFIX: &str = "bdg_";
/// Random bytes of a badge id (256 bits: far beyond guessing).
const ID_BYTES: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Badge {
    pub id: String,
    pub environment_id: String,
    pub account_id: String,
    pub workspace: String,
    pub repo: String,
    pub workflow: Option<String>,
    pub branch: String,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A badge to create; scoping values are checked by the caller.
#[derive(Clone, Debug)]
pub struct NewBadge {
    pub environment_id: String,
    pub account_id: String,
    pub workspace: String,
    pub repo: String,
    pub workflow: Option<String>,
    pub branch: String,
    pub label: Option<String>,
}

type BadgeRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    DateTime<Utc>,
);

const BADGE_COLUMNS: &str =
    "id, environment_id, account_id, workspace, repo, workflow, branch, label, created_at";

fn badge_from_row(r: BadgeRow) -> Badge {
    Badge {
        id: r.0,
        environment_id: r.1,
        account_id: r.2,
        workspace: r.3,
        repo: r.4,
        workflow: r.5,
        branch: r.6,
        label: r.7,
        created_at: r.8,
    }
}

fn new_badge_id() -> String {
    let mut bytes = [0u8; ID_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{BADGE_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

impl Store {
    /// Creates a badge for an account of `new.environment_id`. The insert selects the
    /// account in that environment, so a badge can never point at another
    /// environment's account: [`StoreError::NotFound`] when there is no such account.
    pub async fn create_badge(&self, new: NewBadge) -> Result<Badge, StoreError> {
        let id = new_badge_id();
        let at = now();
        let row: Option<BadgeRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "INSERT INTO badges ({BADGE_COLUMNS}) \
                 SELECT $1, environment_id, id, $2, $3, $4, $5, $6, $7 FROM accounts \
                 WHERE id = $8 AND environment_id = $9 \
                 RETURNING {BADGE_COLUMNS}"
            ))
            .bind(&id)
            .bind(&new.workspace)
            .bind(&new.repo)
            .bind(&new.workflow)
            .bind(&new.branch)
            .bind(&new.label)
            .bind(at)
            .bind(&new.account_id)
            .bind(&new.environment_id)
            .fetch_optional(p)
            .await?
        });
        row.map(badge_from_row).ok_or(StoreError::NotFound)
    }

    /// A badge by its id alone, whatever its environment: for the public view, where
    /// the unguessable id is the credential.
    pub async fn badge(&self, id: &str) -> Result<Option<Badge>, StoreError> {
        let row: Option<BadgeRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!("SELECT {BADGE_COLUMNS} FROM badges WHERE id = $1"))
                .bind(id)
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(badge_from_row))
    }

    /// A badge of this environment (`None` for another environment's, as if missing).
    pub async fn badge_in(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<Badge>, StoreError> {
        let row: Option<BadgeRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "SELECT {BADGE_COLUMNS} FROM badges WHERE environment_id = $1 AND id = $2"
            ))
            .bind(environment_id)
            .bind(id)
            .fetch_optional(p)
            .await?
        });
        Ok(row.map(badge_from_row))
    }

    /// Deletes a badge of this environment; `false` when there was none.
    pub async fn delete_badge(&self, environment_id: &str, id: &str) -> Result<bool, StoreError> {
        let n = on_pool!(self.pool(), p => {
            sqlx::query("DELETE FROM badges WHERE environment_id = $1 AND id = $2")
                .bind(environment_id)
                .bind(id)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }
}
