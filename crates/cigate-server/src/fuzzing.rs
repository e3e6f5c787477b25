//! The bodies of the fuzz targets in `fuzz/`, one per decoder of outside input.
//!
//! They live here, not in the fuzz crate, so that the corpus replay test
//! (`tests/fuzz_corpus.rs`) runs exactly what libFuzzer runs, and so that the decoders
//! private to their routes are reached without copies. Each body panics when an invariant
//! fails: a panic is what libFuzzer records as a crash.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue};
use cigate_buddy::client::join_url;
use cigate_buddy::error::{parse_error_body, BuddyError};
use cigate_buddy::mapping::{self, JobContext};
use cigate_buddy::provider::{hooks, writes};
use cigate_buddy::wire;
use cigate_core::cursor::{CursorBinding, CursorCodec};
use cigate_core::model::{job_conclusion, job_status, workflow_status, RemoteData};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use url::Url;

use crate::routes::link::{CallbackQuery, ConnectForm, PageQuery, UiParams};
use crate::routes::provision;
use crate::routes::proxy::{self, Mode};

/// A target's body: one input, a panic when an invariant fails.
pub type Body = fn(&[u8]);

/// Every target: its name (the `fuzz/fuzz_targets/<name>.rs` binary and the
/// `fuzz/corpus/<name>/` seeds) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("cursor", cursor),
    ("buddy_execution", buddy_execution),
    ("buddy_pipeline", buddy_pipeline),
    ("buddy_project", buddy_project),
    ("buddy_variable", buddy_variable),
    ("buddy_error", buddy_error),
    ("buddy_webhook", buddy_webhook),
    ("proxy_path", proxy_path),
    ("link_form", link_form),
    ("oauth_callback", oauth_callback),
    ("provision", provision),
];

/// The key the cursor target signs with; seeds that are valid cursors are made with it.
pub const CURSOR_KEY: &[u8] = b"cigate-fuzz-cursor-key-0123456789";

/// The binding the cursor target's cursors are made for.
pub fn cursor_binding() -> CursorBinding {
    CursorBinding {
        environment_id: "env_fuzz".into(),
        account_id: "acc_fuzz".into(),
        resource: "jobs".into(),
        filters: r#"["acme",null,null,50]"#.into(),
    }
}

/// Cursors: any text is refused or opened without a panic, and what opens is exactly
/// what was signed (encoding it again gives the same cursor); any JSON position survives
/// encode → decode, and a cursor changed in one byte or cut short is refused.
pub fn cursor(data: &[u8]) {
    let codec = CursorCodec::new(CURSOR_KEY);
    let binding = cursor_binding();
    let text = String::from_utf8_lossy(data);
    if let Ok(position) = codec.decode(&binding, &text) {
        assert_eq!(
            codec.encode(&binding, &position),
            text,
            "a verified cursor is not what encoding its position gives"
        );
    }
    let Ok(position) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let encoded = codec.encode(&binding, &position);
    assert!(encoded
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    assert_eq!(codec.decode(&binding, &encoded).ok(), Some(position));
    let bytes = encoded.as_bytes();
    let at = data.len() % bytes.len();
    let mut tampered = bytes.to_vec();
    tampered[at] = match data.first() {
        Some(&b) if b != bytes[at] => b,
        _ => bytes[at] ^ 1,
    };
    if let Ok(tampered) = std::str::from_utf8(&tampered) {
        assert!(codec.decode(&binding, tampered).is_err(), "{tampered}");
    }
    assert!(codec.decode(&binding, &encoded[..at]).is_err());
    let other = CursorBinding {
        account_id: "acc_other".into(),
        ..binding
    };
    assert!(codec.decode(&other, &encoded).is_err());
}

/// The body as JSON, or `None` for bytes Buddy's JSON decoder refuses anyway.
fn json(data: &[u8]) -> Option<Value> {
    serde_json::from_slice(data).ok()
}

/// The body itself and, when it is a list envelope, each item under `key`.
fn objects(body: &Value, key: &str) -> Vec<Value> {
    let mut all = wire::list_items(body, key);
    all.push(body.clone());
    all
}

/// A unified object's JSON form reads back as itself.
fn stable_json<T: Serialize + DeserializeOwned>(object: &T) {
    let first = serde_json::to_value(object).expect("a unified object serializes");
    let back: T = serde_json::from_value(first.clone()).expect("its JSON reads back");
    let second = serde_json::to_value(&back).expect("a unified object serializes");
    assert_eq!(first, second, "the JSON form changed on a round trip");
}

/// A conclusion only on a completed status, and a normalised status stays normalised.
fn status_consistent(status: Option<&str>, conclusion: Option<&str>) {
    if let Some(conclusion) = conclusion {
        assert_eq!(status, Some(job_status::COMPLETED));
        assert!(job_conclusion::ALL.contains(&conclusion));
    }
}

/// Buddy executions (a list page or one object): every body maps to a job without a
/// panic, whatever the fields' types, and the job agrees with what it was read from.
pub fn buddy_execution(data: &[u8]) {
    let Some(body) = json(data) else { return };
    let _counters: wire::PageCounters = wire::parse(&body);
    let ctx = JobContext {
        workspace: Some("acme".into()),
        repo: Some("shop".into()),
        workflow: None,
        workflow_name: Some("Build".into()),
    };
    for raw in objects(&body, "executions") {
        let execution: wire::Execution = wire::parse(&raw);
        let job = mapping::job(&execution, &ctx, RemoteData::from_value(&raw));
        assert_eq!(job.id, execution.id.clone().unwrap_or_default());
        status_consistent(job.status.as_deref(), job.conclusion.as_deref());
        assert_eq!(
            job.steps.as_ref().map(Vec::len),
            execution.action_executions.as_ref().map(Vec::len)
        );
        for step in job.steps.iter().flatten() {
            status_consistent(step.status.as_deref(), step.conclusion.as_deref());
        }
        if let (Some(start), Some(finish)) = (execution.start_date, execution.finish_date) {
            assert_eq!(job.duration_ms, Some((finish - start).num_milliseconds()));
        }
        assert_eq!(job.remote_data, RemoteData::from_value(&raw));
        stable_json(&job);
        let mut pr = cigate_core::PullRequest::default();
        mapping::enrich_pull_request(&mut pr, &execution);
        stable_json(&pr);
    }
}

/// Buddy pipelines of every model generation map to workflows: a trigger always, a
/// normalised status, `branch` only for a single concrete branch ref.
pub fn buddy_pipeline(data: &[u8]) {
    let Some(body) = json(data) else { return };
    for raw in objects(&body, "pipelines") {
        let pipeline: wire::Pipeline = wire::parse(&raw);
        let workflow =
            mapping::workflow(&pipeline, Some("acme"), None, RemoteData::from_value(&raw));
        assert_eq!(workflow.id, pipeline.id.clone().unwrap_or_default());
        assert!(workflow.trigger.is_some());
        assert!(matches!(
            workflow.status.as_deref(),
            Some(workflow_status::ACTIVE | workflow_status::DISABLED)
        ));
        if let Some(branch) = &workflow.branch {
            assert_eq!(
                workflow.refs.as_deref(),
                Some(&[format!("refs/heads/{branch}")][..])
            );
        }
        status_consistent(
            workflow.last_job_status.as_deref(),
            workflow.last_job_conclusion.as_deref(),
        );
        stable_json(&workflow);
    }
}

/// Buddy projects, workspaces, branches and pull requests map to the unified objects
/// without a panic, their ids taken from the fields Buddy's paths use.
pub fn buddy_project(data: &[u8]) {
    let Some(body) = json(data) else { return };
    for raw in objects(&body, "projects") {
        let project: wire::Project = wire::parse(&raw);
        let repo = mapping::repo(&project, Some("acme"), RemoteData::from_value(&raw));
        assert_eq!(
            repo.id,
            project
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_default()
        );
        stable_json(&repo);
    }
    for raw in objects(&body, "workspaces") {
        let workspace: wire::Workspace = wire::parse(&raw);
        stable_json(&mapping::workspace(
            &workspace,
            RemoteData::from_value(&raw),
        ));
    }
    for raw in objects(&body, "branches") {
        let branch: wire::Branch = wire::parse(&raw);
        let mapped = mapping::branch(&branch, Some("shop"), RemoteData::from_value(&raw));
        assert_eq!(mapped.id, mapped.name);
        stable_json(&mapped);
    }
    for raw in objects(&body, "pull_requests") {
        let pr: wire::PullRequest = wire::parse(&raw);
        stable_json(&mapping::pull_request(&pr, RemoteData::from_value(&raw)));
    }
    if let Some(integration) = mapping::integration(&body) {
        stable_json(&integration);
    }
}

/// Buddy variables: an encrypted one (flagged, or holding Buddy's ciphertext) never shows
/// its value, neither in the unified variable nor in the raw object passed along.
pub fn buddy_variable(data: &[u8]) {
    let Some(body) = json(data) else { return };
    for raw in objects(&body, "variables") {
        let (variable, scrubbed) = writes::variable(&raw, "acme");
        let ciphertext = raw
            .get("value")
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with("secure!"));
        let flagged = raw.get("encrypted").and_then(Value::as_bool) == Some(true);
        assert_eq!(variable.encrypted, ciphertext || flagged);
        if variable.encrypted {
            assert_eq!(variable.value, None);
            assert!(scrubbed.get("value").is_none());
            let passed_on = variable.remote_data.as_ref();
            assert!(passed_on
                .map(RemoteData::to_value)
                .and_then(|r| r.get("value").cloned())
                .is_none());
        } else {
            assert_eq!(
                variable.value.as_deref(),
                raw.get("value").and_then(Value::as_str)
            );
        }
        assert_eq!(variable.scope.workspace.as_deref(), Some("acme"));
        stable_json(&variable);
    }
}

/// Buddy error bodies, JSON or not: a bounded message, the body kept (as text when it is
/// not JSON), and a missing scope only when the message names one.
pub fn buddy_error(data: &[u8]) {
    let (message, body) = parse_error_body(data);
    assert!(message.chars().count() <= 501, "{} chars", message.len());
    if serde_json::from_slice::<Value>(data).is_err() {
        assert_eq!(
            body,
            Value::String(String::from_utf8_lossy(data).into_owned())
        );
    }
    let _ = cigate_buddy::error::message_from_value(&body);
    let typed: wire::ErrorBody = wire::parse(&body);
    let _ = typed.message();
    for status in [401, 403, 404, 429] {
        let error = BuddyError::Api {
            status,
            message: message.clone(),
            body: body.clone(),
        };
        if let Some(scope) = error.missing_scope() {
            assert!(matches!(status, 401 | 403));
            assert!(message.contains(scope));
            assert!(scope.len() >= 4);
            assert!(scope.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        }
        let _ = (error.is_rate_limited(), error.is_transient());
    }
}

/// A secret nothing in a fuzzed body can carry but by containing it.
const WEBHOOK_SECRET: &str = "whsec-fuzz-6f1c2a9e0b7d4e35";

/// Incoming Buddy webhooks: the hint never names a job with an empty part, the secrets
/// it reports are the body's, and the body proves the shared secret only by carrying it.
pub fn buddy_webhook(data: &[u8]) {
    let Some(body) = json(data) else { return };
    let hint = hooks::hint(&body);
    if let Some(job) = &hint.job {
        for part in [&job.workspace, &job.repo, &job.workflow, &job.job] {
            assert!(!part.is_empty());
        }
        let id = body.get("execution").and_then(|e| e.get("id"));
        assert_eq!(id.and_then(wire::id_of).as_ref(), Some(&job.job));
    }
    for secret in &hint.secrets {
        assert!(body
            .as_object()
            .is_some_and(|o| o.values().any(|v| v.as_str() == Some(secret))));
        let trimmed = secret.trim();
        if !trimmed.is_empty() {
            let carried =
                crate::watch::hooks::carries_secret(trimmed, &hint, &HeaderMap::new(), None, data);
            assert!(carried, "the body's own secret was not recognised");
        }
    }
    let query = std::str::from_utf8(data).ok();
    let in_query = query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(_, v)| v.contains(WEBHOOK_SECRET))
    });
    let in_body = hint.secrets.iter().any(|s| s.contains(WEBHOOK_SECRET));
    if !in_query && !in_body && !String::from_utf8_lossy(data).contains(WEBHOOK_SECRET) {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_bytes(data) {
            headers.insert("x-buddy-signature", value);
        }
        let carried =
            crate::watch::hooks::carries_secret(WEBHOOK_SECRET, &hint, &headers, query, data);
        assert!(!carried, "a body without the secret passed as carrying it");
    }
}

/// Base URLs the proxy target joins paths onto: Buddy's cloud, and a self-hosted Buddy
/// under a path prefix.
const PROXY_BASES: [&str; 2] = ["https://api.buddy.works", "https://buddy.example.com/api/"];

/// The proxy path normaliser: whatever raw request path comes in, an accepted Buddy path
/// has no dot segment, empty segment, encoded separator or dot, control character,
/// userinfo, query or fragment (raw or percent-decoded), and joined onto the account's
/// base URL it stays on the same host, under the base path.
pub fn proxy_path(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for (mode, prefix) in [(Mode::Proxy, "/proxy"), (Mode::Custom, "/custom")] {
        for raw in [text.to_string(), format!("{prefix}/{text}")] {
            let Ok(path) = proxy::buddy_path(&raw, mode) else {
                continue;
            };
            check_buddy_path(&raw, prefix, &path);
        }
    }
}

fn check_buddy_path(raw: &str, prefix: &str, path: &str) {
    assert_eq!(Some(path), raw.strip_prefix(prefix), "{raw:?}");
    assert!(path.starts_with('/'), "{path:?}");
    let decoded = percent_decode(path);
    assert_eq!(
        decoded.split('/').count(),
        path.split('/').count(),
        "an encoded separator in {path:?}"
    );
    assert!(!path.contains(';'), "a path parameter in {path:?}");
    assert!(!path.chars().any(char::is_control), "{path:?}");
    // Decoded, only what could change where the request goes, or split it.
    for text in [path, decoded.as_str()] {
        assert!(!text.contains("//"), "{path:?}");
        assert!(!text.contains(['\\', '?', '#', '@']), "{path:?}");
        assert!(!text.chars().any(|c| c.is_ascii_control()), "{path:?}");
        assert!(
            text.split('/').all(|s| s != "." && s != ".."),
            "a dot segment in {path:?}"
        );
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    assert!(!first.contains(':'), "a scheme in {path:?}");
    for base in PROXY_BASES {
        let Ok(base) = Url::parse(base) else {
            panic!("{base} is a URL");
        };
        let url = join_url(&base, path, &[("page".into(), "2".into())])
            .unwrap_or_else(|err| panic!("{path:?} was accepted but does not join: {err}"));
        assert_eq!(url.host_str(), base.host_str(), "{path:?}");
        assert_eq!(url.port(), base.port());
        assert_eq!(url.scheme(), base.scheme());
        assert!(url.username().is_empty() && url.password().is_none());
        assert_eq!(url.fragment(), None);
        assert_eq!(url.query(), Some("page=2"), "{path:?}");
        let under = format!("{}/", base.path().trim_end_matches('/'));
        assert!(url.path().starts_with(&under), "{path:?} left {under}");
        let reparsed = Url::parse(url.as_str()).unwrap_or_else(|err| panic!("{url}: {err}"));
        assert_eq!(reparsed, url, "{path:?} does not survive serialization");
    }
}

/// `%XY` escapes decoded, byte by byte (invalid UTF-8 lossily).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `from_str(to_string(value)) == value` for a form-encoded type.
fn form_round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let encoded = serde_urlencoded::to_string(value).expect("a form serializes");
    let back: T = serde_urlencoded::from_str(&encoded)
        .unwrap_or_else(|err| panic!("{encoded:?} does not read back: {err}"));
    assert_eq!(&back, value, "{encoded:?}");
}

/// The Link page: its query and its form posts decode (or are refused) without a panic,
/// and what the page writes back into its form (the SDK's parameters kept as hidden
/// fields) reads back as what it came from.
pub fn link_form(data: &[u8]) {
    if let Ok(form) = serde_urlencoded::from_bytes::<ConnectForm>(data) {
        form_round_trip(&form);
        let kept = serde_urlencoded::to_string(form.ui.pairs()).expect("pairs serialize");
        let back: UiParams = serde_urlencoded::from_str(&kept)
            .unwrap_or_else(|err| panic!("{kept:?} does not read back: {err}"));
        assert_eq!(back, form.ui, "{kept:?}");
    }
    if let Ok(query) = serde_urlencoded::from_bytes::<PageQuery>(data) {
        form_round_trip(&query);
    }
}

/// The OAuth callback's query decodes (or is refused) without a panic, and reads back
/// as itself.
pub fn oauth_callback(data: &[u8]) {
    if let Ok(query) = serde_urlencoded::from_bytes::<CallbackQuery>(data) {
        form_round_trip(&query);
    }
}

/// The provision document, as JSON and as YAML: decoding never panics, every workflow
/// YAML is read for its name without a panic, and the YAML form of an accepted JSON
/// document is accepted and means the same.
pub fn provision(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    let as_json = provision::document(&HeaderMap::new(), &body);
    let mut yaml_headers = HeaderMap::new();
    yaml_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    let as_yaml = provision::document(&yaml_headers, &body);
    for doc in [&as_json, &as_yaml].into_iter().flatten() {
        assert!(!doc.name.trim().is_empty());
        for repo in &doc.repos {
            for workflow in &repo.workflows {
                if let Some(yaml) = &workflow.yaml {
                    let _ = provision::yaml_name(yaml);
                }
            }
        }
    }
    let Ok(doc) = as_json else { return };
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        panic!("a document that is not JSON was read as JSON");
    };
    let yaml = serde_norway::to_string(&value).expect("JSON values are YAML");
    let again = provision::document(&yaml_headers, &Bytes::from(yaml.clone()));
    match again {
        Ok(again) => assert_eq!(again, doc, "{yaml}"),
        Err(err) => panic!("the YAML form of an accepted document is refused: {err}\n{yaml}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Text that YAML and form encoding treat specially, and anything else.
    fn tricky() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "", "yes", "no", "on", "off", "true", "null", "~", "1e3", "0x10", "0o7", ".inf",
                "- a", "a: b", "#x", "&a", "*a", "!!str", "'", "\"", "%", "+", "&", "=", " x ",
                "\u{0}", "\t", "\r\n", "ü", "\u{feff}", "{}", "[]", "|", ">",
            ])
            .prop_map(str::to_owned),
            ".{0,12}",
        ]
    }

    proptest! {
        #[test]
        fn link_forms_round_trip(
            link_token in prop::option::of(tricky()),
            csrf in prop::option::of("[0-9a-f]{0,64}"),
            region in prop::option::of(tricky()),
            base_url in prop::option::of(tricky()),
            api_key in prop::option::of(tricky()),
            integration in prop::option::of(tricky()),
            auth_format in prop::option::of(tricky()),
            no_back in prop::option::of(tricky()),
            iframe in prop::option::of(tricky()),
        ) {
            let form = ConnectForm {
                link_token: link_token.clone(),
                csrf,
                region,
                base_url,
                api_key,
                ui: UiParams { integration, auth_format, no_back, iframe },
            };
            let encoded = serde_urlencoded::to_string(&form).expect("a form serializes");
            link_form(encoded.as_bytes());
            let back: ConnectForm = serde_urlencoded::from_str(&encoded).expect("reads back");
            prop_assert_eq!(&back, &form);
            let query = PageQuery { link_token, ui: form.ui };
            let encoded = serde_urlencoded::to_string(&query).expect("a query serializes");
            let back: PageQuery = serde_urlencoded::from_str(&encoded).expect("reads back");
            prop_assert_eq!(back, query);
        }

        #[test]
        fn oauth_callbacks_round_trip(
            code in prop::option::of(tricky()),
            state in prop::option::of(tricky()),
            error in prop::option::of(tricky()),
            error_description in prop::option::of(tricky()),
        ) {
            let query = CallbackQuery { code, state, error, error_description };
            let encoded = serde_urlencoded::to_string(&query).expect("a query serializes");
            oauth_callback(encoded.as_bytes());
            let back: CallbackQuery = serde_urlencoded::from_str(&encoded).expect("reads back");
            prop_assert_eq!(back, query);
        }

        #[test]
        fn plain_buddy_paths_are_kept_and_stay_under_the_base(
            segments in prop::collection::vec("[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,11}", 1..6),
        ) {
            let path = format!("/{}", segments.join("/"));
            for (mode, prefix) in [(Mode::Proxy, "/proxy"), (Mode::Custom, "/custom")] {
                let raw = format!("{prefix}{path}");
                let kept = proxy::buddy_path(&raw, mode).expect("a plain path is accepted");
                prop_assert_eq!(&kept, &path);
                check_buddy_path(&raw, prefix, &kept);
            }
        }

        #[test]
        fn any_proxy_path_keeps_the_invariants(raw in r"(/proxy)?[/a-z.%2eEfF5cC@:?#;\\]{0,24}") {
            proxy_path(raw.as_bytes());
        }

        #[test]
        fn provision_documents_read_the_same_as_json_and_yaml(
            name in "[a-z][a-z0-9 -]{0,11}",
            repo in tricky(),
            display_name in prop::option::of(tricky()),
            allow_pull_requests in prop::option::of(any::<bool>()),
            refs in prop::option::of(prop::collection::vec(tricky(), 0..3)),
            key in tricky(),
            value in tricky(),
            encrypted in prop::option::of(any::<bool>()),
            yaml in prop::option::of(tricky()),
        ) {
            let doc = json!({
                "name": name,
                "repos": [{
                    "name": repo,
                    "display_name": display_name,
                    "allow_pull_requests": allow_pull_requests,
                    "workflows": [{"name": "Build", "refs": refs, "yaml": yaml}],
                    "variables": [{"key": key, "value": value, "encrypted": encrypted}],
                }],
                "webhook": {"target_url": "https://hooks.example.com/x", "event_types": ["job.completed"]},
            });
            let text = serde_json::to_vec(&doc).expect("JSON");
            let json_headers = HeaderMap::new();
            let read = provision::document(&json_headers, &Bytes::from(text.clone()));
            prop_assert!(read.is_ok(), "{:?}", read.err());
            provision(&text);
        }
    }

    #[test]
    fn trivial_inputs_pass_every_target() {
        for (_, body) in TARGETS {
            body(b"");
            body(b"{}");
            body(b"null");
        }
    }
}
