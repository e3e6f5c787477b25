//! The unified CI/CD model, the `Provider` trait and the cursor codec. No I/O here.

pub mod cursor;
pub mod error;
pub mod events;
pub mod metrics;
pub mod model;
pub mod params;
pub mod provider;
pub mod secret;
pub mod writes;

pub use cursor::{CursorBinding, CursorCodec};
pub use error::{CursorError, ProviderError};
pub use model::{
    Branch, BranchRef, Integration, Job, PullRequest, PullRequestDescription, RemoteData, Repo,
    Step, Variable, VariableScope, Workflow, Workspace,
};
pub use provider::{
    GetResult, JobFilters, ListPage, ListQuery, Provider, ProviderHooks, RateLimit, Record,
    RenderOptions, Rendered, Resource, Unified,
};
pub use secret::Secret;
pub use writes::{
    JobLog, JobLogs, JobOperation, JobRun, ProviderWrites, RepoInput, RunVariable, VariableInput,
    WorkflowInput, WorkspaceInput,
};
