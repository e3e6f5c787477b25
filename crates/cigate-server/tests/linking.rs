//! Link tokens, the Link page, OAuth against the simulator, and token refresh (single
//! flight across instances), all over HTTP.

mod common;

use std::time::Duration;

use chrono::Utc;
use cigate_buddy_sim::SimConfig;
use cigate_store::{AccountPatch, AccountStatus, Credential, NewLinkToken, Secret};
use common::{Backend, Harness};
use serde_json::{json, Value};

use common::{OAUTH_CLIENT_ID as CLIENT_ID, OAUTH_CLIENT_SECRET as CLIENT_SECRET};

/// Decodes the entities askama writes into attribute values.
fn unescape(text: &str) -> String {
    let mut text = text.to_owned();
    for code in 32u8..127 {
        let c = char::from(code).to_string();
        text = text
            .replace(&format!("&#{code};"), &c)
            .replace(&format!("&#x{code:x};"), &c);
    }
    text.replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of the first `attr="…"` after `marker`.
fn attr_after(html: &str, marker: &str, attr: &str) -> Option<String> {
    let start = html.find(marker)?;
    let rest = &html[start..];
    let key = format!("{attr}=\"");
    let at = rest.find(&key)? + key.len();
    let end = rest[at..].find('"')?;
    Some(unescape(&rest[at..at + end]))
}

fn hidden(html: &str, name: &str) -> String {
    attr_after(html, &format!("name=\"{name}\""), "value").unwrap_or_default()
}

async fn new_link(h: &Harness, body: Value) -> (String, String) {
    let response = h.post("/link-token").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (
        body["link_token"].as_str().unwrap().to_owned(),
        body["link_url"].as_str().unwrap().to_owned(),
    )
}

async fn get_page(h: &Harness, url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let response = h.http.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// Posts the page's form to `action` with the given choices.
async fn submit(h: &Harness, page: &str, action: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let mut form: Vec<(String, String)> = vec![
        ("link_token".into(), hidden(page, "link_token")),
        ("csrf".into(), hidden(page, "csrf")),
    ];
    for (k, v) in extra {
        form.push(((*k).to_owned(), (*v).to_owned()));
    }
    let response = h.http.post(h.url(action)).form(&form).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn result_account(html: &str) -> String {
    attr_after(html, "id=\"cigate-result\"", "data-account-id").unwrap_or_default()
}

/// Starts OAuth from a fresh link page; returns the authorize URL and the link token.
async fn start_oauth(h: &Harness, redirect_uri: Option<&str>) -> String {
    let (_, link_url) = new_link(
        h,
        json!({ "tenant_id": "acme", "redirect_uri": redirect_uri }),
    )
    .await;
    let (status, _, page) = get_page(h, &link_url).await;
    assert_eq!(status, 200);
    assert!(page.contains("Connect with Buddy"), "{page}");
    let base = h.sim.base_url();
    let (status, interstitial) = submit(
        h,
        &page,
        "/connect/oauth",
        &[("region", "self_hosted"), ("base_url", &base)],
    )
    .await;
    assert_eq!(status, 200, "{interstitial}");
    attr_after(&interstitial, "id=\"cigate-continue\"", "href").expect("authorize link")
}

/// Links the simulator's account through the whole OAuth round trip; returns its id.
async fn oauth_link(h: &Harness) -> String {
    let authorize = start_oauth(h, None).await;
    let (status, _, done) = get_page(h, &authorize).await;
    assert_eq!(status, 200, "{done}");
    let id = result_account(&done);
    assert!(!id.is_empty(), "{done}");
    id
}

/// An OAuth app configured and an account linked through it: (account id, environment).
async fn oauth_account(h: &Harness, scopes: &[&str]) -> (String, String) {
    h.configure_oauth_with(scopes).await;
    let id = oauth_link(h).await;
    let env = account(h, &id).await["environment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, env)
}

async fn account(h: &Harness, id: &str) -> Value {
    let (status, body) = h.get_json(&format!("/integrated-account/{id}")).await;
    assert_eq!(status, 200);
    body
}

async fn workspaces(base: &str, h: &Harness, id: &str) -> (u16, Value) {
    let response = h
        .http
        .get(format!(
            "{base}/unified/ci-cd/workspaces?integrated_account_id={id}"
        ))
        .bearer_auth(&h.api_token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Rewrites the stored OAuth credential (as if time had passed or Buddy had rotated).
async fn set_credential(
    h: &Harness,
    env: &str,
    id: &str,
    change: impl FnOnce(&mut Option<Secret>, &mut Option<chrono::DateTime<Utc>>),
) -> Secret {
    let store = &h.server.state.store;
    let Some(Credential::OAuth2 {
        access_token,
        mut refresh_token,
        mut expires_at,
    }) = store.credential(env, id).await.unwrap()
    else {
        panic!("not an OAuth account");
    };
    change(&mut refresh_token, &mut expires_at);
    store
        .update_account(
            env,
            id,
            AccountPatch {
                credential: Some(Credential::OAuth2 {
                    access_token: access_token.clone(),
                    refresh_token,
                    expires_at,
                }),
                ..AccountPatch::default()
            },
        )
        .await
        .unwrap();
    access_token
}

both_backends!(
    link_page_links_a_personal_access_token,
    |h: Harness| async move {
        let (token, link_url) = new_link(
        &h,
        json!({ "tenant_id": "acme", "redirect_uri": "https://app.example.com/done?x=1", "context": { "plan": "pro" } }),
    )
    .await;
        assert!(link_url.starts_with(&h.server.base_url()));
        assert!(link_url.contains(&token));

        // Truto's SDK path and parameters render the same page, token-only when asked.
        let (status, headers, page) = get_page(
        &h,
        &h.url(&format!("/connect-account?link_token={token}&integration=buddy&auth_format=api_key&no_back=true")),
    )
    .await;
        assert_eq!(status, 200);
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("form-action 'self'"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors *"), "{csp}");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(page.contains("<label for=\"api_key\">"));
        assert!(
            !page.contains("Connect with Buddy"),
            "no OAuth app, and auth_format=api_key"
        );
        assert!(
            !page.contains("http://") && !page.contains("https://cdn"),
            "no outside assets"
        );

        // A wrong token is explained in the page; the link stays usable.
        let base = h.sim.base_url();
        let (status, again) = submit(
            &h,
            &page,
            "/connect/token",
            &[
                ("region", "self_hosted"),
                ("base_url", &base),
                ("api_key", "00000000-0000-4000-8000-000000000000"),
            ],
        )
        .await;
        assert_eq!(status, 422);
        assert!(again.contains("Buddy did not accept this token"), "{again}");
        assert!(again.contains("value=\"self_hosted\" checked"));

        // A forged form is refused.
        let (status, forged) = h
            .http
            .post(h.url("/connect/token"))
            .form(&[
                ("link_token", token.as_str()),
                ("csrf", "00"),
                ("api_key", "x"),
            ])
            .send()
            .await
            .map(|r| (r.status().as_u16(), r))
            .unwrap();
        assert_eq!(status, 403);
        drop(forged);

        let (status, done) = submit(
            &h,
            &again,
            "/connect/token",
            &[
                ("region", "self_hosted"),
                ("base_url", &base),
                ("api_key", &h.buddy_token),
            ],
        )
        .await;
        assert_eq!(status, 200, "{done}");
        let id = result_account(&done);
        let redirect = attr_after(&done, "id=\"cigate-result\"", "data-redirect").unwrap();
        assert_eq!(
            redirect,
            format!(
                "https://app.example.com/done?x=1&integrated_account_id={id}&integration=buddy"
            )
        );
        assert_eq!(
            attr_after(&done, "id=\"cigate-result\"", "data-target-origin").unwrap(),
            "https://app.example.com"
        );
        let linked = account(&h, &id).await;
        assert_eq!(linked["tenant_id"], "acme");
        assert_eq!(linked["status"], "active");
        assert_eq!(linked["authentication_method"], "api_key");
        assert_eq!(linked["context"]["plan"], "pro");
        let (status, _) = workspaces(&h.server.base_url(), &h, &id).await;
        assert_eq!(status, 200);

        // The link is spent.
        let (status, _, used) = get_page(&h, &link_url).await;
        assert_eq!(status, 410);
        assert!(used.contains("already been used"), "{used}");
    }
);

both_backends!(
    unknown_and_expired_links_are_explained,
    |h: Harness| async move {
        let (status, _, page) = get_page(&h, &h.url("/connect?link_token=clt_nope")).await;
        assert_eq!(status, 404);
        assert!(page.contains("This link is not valid"));
        let (status, _, page) = get_page(&h, &h.url("/connect")).await;
        assert_eq!(status, 400);
        assert!(page.contains("needs a link"));
        let (status, _, page) =
            get_page(&h, &h.url("/connect?link_token=x&integration=github")).await;
        assert_eq!(status, 400);
        assert!(page.contains("Buddy accounts only"));

        let env = h
            .server
            .state
            .store
            .ensure_environment("default")
            .await
            .unwrap()
            .id;
        let (_, token) = h
            .server
            .state
            .store
            .create_link_token(NewLinkToken {
                environment_id: env,
                tenant_id: None,
                integrated_account_id: None,
                redirect_uri: None,
                context: json!({}),
                ttl: Duration::from_millis(1),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (status, _, page) = get_page(
            &h,
            &h.url(&format!("/connect?link_token={}", token.expose())),
        )
        .await;
        assert_eq!(status, 410);
        assert!(page.contains("This link has expired"), "{page}");

        let bad = h
            .post("/link-token")
            .json(&json!({ "redirect_uri": "javascript:alert(1)" }))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 422);
        let missing = h
            .post("/link-token")
            .json(&json!({ "integrated_account_id": "nope" }))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);

        let script = h.http.get(h.url("/link.js")).send().await.unwrap();
        assert_eq!(script.status(), 200);
        assert!(script.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript"));
        assert!(script.text().await.unwrap().contains("authenticate"));
    }
);

both_backends!(
    oauth_round_trip_links_and_refuses_replays,
    |h: Harness| async move {
        let body = h.configure_oauth().await;
        assert!(!body.to_string().contains(CLIENT_SECRET));
        assert_eq!(body["oauth"]["has_client_secret"], true);
        let authorize = start_oauth(&h, Some("https://app.example.com/cb")).await;
        let url = url::Url::parse(&authorize).unwrap();
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["client_id"], CLIENT_ID);
        assert!(query["scope"].contains("EXECUTION_INFO"));
        assert!(authorize.starts_with(&h.sim.base_url()));

        // Follow Buddy's redirect back to our callback.
        let response = h.http.get(&authorize).send().await.unwrap();
        let callback = response.url().clone();
        assert_eq!(callback.path(), "/oauth/callback");
        let done = response.text().await.unwrap();
        let id = result_account(&done);
        assert!(!id.is_empty(), "{done}");
        let linked = account(&h, &id).await;
        assert_eq!(linked["authentication_method"], "oauth2");
        assert_eq!(linked["status"], "active");
        assert!(!linked.to_string().contains("token\":"));
        let (status, _) = workspaces(&h.server.base_url(), &h, &id).await;
        assert_eq!(status, 200);

        // The same state again: refused, clearly.
        let (status, _, replay) = get_page(&h, callback.as_str()).await;
        assert_eq!(status, 400);
        assert!(replay.contains("already completed"), "{replay}");

        // A declined authorization.
        let authorize = start_oauth(&h, None).await;
        let state = url::Url::parse(&authorize)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        let (status, _, denied) = get_page(
            &h,
            &h.url(&format!(
                "/oauth/callback?error=access_denied&state={state}"
            )),
        )
        .await;
        assert_eq!(status, 400);
        assert!(denied.contains("You declined access"), "{denied}");
        assert!(denied.contains("data-error-type=\"oauth_denied\""));
    }
);

both_backends!(a_wrong_pkce_verifier_is_refused, |h: Harness| async move {
    h.configure_oauth().await;
    let authorize = start_oauth(&h, None).await;
    let mut url = url::Url::parse(&authorize).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "code_challenge" {
                (k, "A".repeat(43))
            } else {
                (k, v)
            }
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let (status, _, page) = get_page(&h, url.as_str()).await;
    assert_eq!(status, 400);
    assert!(page.contains("Buddy did not accept the sign-in"), "{page}");
    assert!(page.contains("PKCE"), "{page}");
    let (_, list) = h.get_json("/integrated-account").await;
    assert_eq!(list["result_count"], 0);
});

/// Makes the simulator refuse the account's current access token, as Buddy does
/// when it invalidates one without warning.
async fn expire_access_token(h: &Harness, env: &str, id: &str) {
    let Some(Credential::OAuth2 { access_token, .. }) =
        h.server.state.store.credential(env, id).await.unwrap()
    else {
        panic!("not an OAuth account")
    };
    assert!(h.sim.sim().expire_token(access_token.expose()));
}

both_backends!(
    refresh_happens_once_before_expiry_and_on_401,
    |h: Harness| async move {
        let (id, env) = oauth_account(&h, common::OAUTH_SCOPES).await;
        let sim = h.sim.sim();
        let base = h.server.base_url();
        let linked_calls = sim.oauth_token_calls();

        // Expiring by our clock: refreshed first, once for many concurrent calls.
        set_credential(&h, &env, &id, |_, at| {
            *at = Some(Utc::now() - chrono::Duration::seconds(5))
        })
        .await;
        let before = sim.oauth_token_calls();
        let calls = (0..20).map(|_| workspaces(&base, &h, &id));
        for (status, body) in futures::future::join_all(calls).await {
            assert_eq!(status, 200, "{body}");
        }
        assert_eq!(sim.oauth_token_calls() - before, 1);

        // Invalidated by Buddy without warning: one refresh, the call retried.
        expire_access_token(&h, &env, &id).await;
        let before = sim.oauth_token_calls();
        let calls = (0..20).map(|_| workspaces(&base, &h, &id));
        for (status, body) in futures::future::join_all(calls).await {
            assert_eq!(status, 200, "{body}");
        }
        assert_eq!(sim.oauth_token_calls() - before, 1);

        // The same through the passthrough: one refresh, every call sent again.
        expire_access_token(&h, &env, &id).await;
        let before = sim.oauth_token_calls();
        let calls = (0..10).map(|_| {
            h.get(&format!("/custom/workspaces?integrated_account_id={id}"))
                .send()
        });
        for response in futures::future::join_all(calls).await {
            let response = response.unwrap();
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            assert!(body["workspaces"].is_array(), "{body}");
        }
        assert_eq!(sim.oauth_token_calls() - before, 1);

        // Forced refresh.
        let before = sim.oauth_token_calls();
        let forced = h
            .post("/integrated-account/refresh-credentials")
            .json(&json!({ "id": id }))
            .send()
            .await
            .unwrap();
        assert_eq!(forced.status(), 200);
        assert_eq!(
            forced.json::<Value>().await.unwrap(),
            json!({ "success": true })
        );
        assert_eq!(sim.oauth_token_calls() - before, 1);
        let (status, _) = workspaces(&base, &h, &id).await;
        assert_eq!(status, 200);

        // Every call to the token endpoint since the link was a counted refresh.
        let metrics = h.metrics().await;
        let refreshed = metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix("cigate_oauth_refreshes_total{outcome=\"success\"} ")
            })
            .unwrap_or_else(|| panic!("no refresh counter in {metrics}"));
        assert_eq!(
            refreshed.trim().parse::<u64>().unwrap(),
            sim.oauth_token_calls() - linked_calls
        );
    }
);

/// The status the account row has now, set directly in the store.
async fn set_status(h: &Harness, env: &str, id: &str, status: AccountStatus) {
    h.server
        .state
        .store
        .update_account(
            env,
            id,
            AccountPatch {
                status: Some(status),
                ..AccountPatch::default()
            },
        )
        .await
        .unwrap();
    h.server.state.cache.forget_account(id);
}

both_backends!(
    writes_and_the_proxy_take_the_same_road_as_reads,
    |h: Harness| async move {
        let scopes = [common::OAUTH_SCOPES, &["EXECUTION_RUN", "VARIABLE_MANAGE"]].concat();
        let (id, env) = oauth_account(&h, &scopes).await;
        let sim = h.sim.sim();
        let ws = sim.workspace_domains()[0].clone();
        let project = sim.project_names(&ws)[0].clone();
        let pipeline = sim.pipeline_ids(&ws, &project)[0];
        let run = format!(
            "/unified/ci-cd/jobs?integrated_account_id={id}&workspace={ws}&project={project}&workflow={pipeline}"
        );

        // A run on a token Buddy invalidated: refreshed once, sent again, run once.
        let runs = sim.execution_count(&ws, &project, pipeline);
        expire_access_token(&h, &env, &id).await;
        let before = sim.oauth_token_calls();
        let response = h.post(&run).json(&json!({})).send().await.unwrap();
        let status = response.status();
        assert_eq!(status, 201, "{}", response.text().await.unwrap());
        assert_eq!(sim.oauth_token_calls() - before, 1);
        assert_eq!(sim.execution_count(&ws, &project, pipeline), runs + 1);

        // A variable write the same way.
        expire_access_token(&h, &env, &id).await;
        let before = sim.oauth_token_calls();
        let response = h
            .post(&format!(
                "/unified/ci-cd/variables?integrated_account_id={id}&workspace={ws}"
            ))
            .json(&json!({ "key": "GATEWAY_CHECK", "value": "1" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(sim.oauth_token_calls() - before, 1);

        // A success through a write, the proxy or /custom makes a `needs_reauth`
        // account active again, as a unified read does.
        let workspaces = format!("workspaces?integrated_account_id={id}");
        for (method, path) in [
            ("POST", run.clone()),
            ("GET", format!("/proxy/{workspaces}")),
            ("GET", format!("/custom/{workspaces}")),
        ] {
            set_status(&h, &env, &id, AccountStatus::NeedsReauth).await;
            let request = match method {
                "POST" => h.post(&path).json(&json!({})),
                _ => h.get(&path),
            };
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{method} {path}");
            assert_eq!(
                account(&h, &id).await["status"],
                "active",
                "{method} {path}"
            );
        }

        // A write whose token Buddy refuses and whose grant is dead: 401, the account
        // `needs_reauth`, nothing run.
        expire_access_token(&h, &env, &id).await;
        set_credential(&h, &env, &id, |rt, _| {
            *rt = Some(Secret::new("revoked-refresh-token"))
        })
        .await;
        h.server.state.cache.forget_account(&id);
        let response = h.post(&run).json(&json!({})).send().await.unwrap();
        assert_eq!(response.status(), 401);
        let after = account(&h, &id).await;
        assert_eq!(after["status"], "needs_reauth", "{after}");
        assert_eq!(sim.execution_count(&ws, &project, pipeline), runs + 2);
    }
);

both_backends!(
    linking_while_buddy_throttles_is_429,
    |h: Harness| async move {
        use cigate_buddy_sim::{FaultKind, FaultSpec};
        h.sim
            .sim()
            .inject(FaultSpec::new(FaultKind::RateLimit, 1000));
        let response = h.link_with(&h.buddy_token).await;
        assert_eq!(response.status(), 429);
        assert!(response.headers().contains_key("retry-after"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "/problems/upstream-rate-limited", "{body}");
        h.sim.sim().clear_faults();
        let (_, list) = h.get_json("/integrated-account").await;
        assert_eq!(list["result_count"], 0, "nothing stored");
    }
);

both_backends!(
    a_revoked_refresh_token_needs_reauth_in_one_call,
    |h: Harness| async move {
        let (id, env) = oauth_account(&h, common::OAUTH_SCOPES).await;
        set_credential(&h, &env, &id, |rt, at| {
            *rt = Some(Secret::new("revoked-refresh-token"));
            *at = Some(Utc::now() - chrono::Duration::seconds(5));
        })
        .await;
        let before = h.sim.sim().oauth_token_calls();
        let (status, body) = workspaces(&h.server.base_url(), &h, &id).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["truto_is_remote_error"], true);
        assert_eq!(h.sim.sim().oauth_token_calls() - before, 1);
        let after = account(&h, &id).await;
        assert_eq!(after["status"], "needs_reauth");
        assert!(
            after["last_error"]
                .as_str()
                .unwrap()
                .contains("refresh token"),
            "{after}"
        );
        let events = h
            .server
            .state
            .store
            .list_events(
                &env,
                &cigate_store::EventFilter {
                    integrated_account_id: Some(id.clone()),
                    ..Default::default()
                },
                None,
                10,
            )
            .await
            .unwrap();
        assert!(events
            .iter()
            .any(|e| e.event_type == "integrated_account:authentication_error"));
        assert!(!serde_json::to_string(&events)
            .unwrap()
            .contains("revoked-refresh-token"));

        // Reconnect in place with a new link: same id, active again.
        let (_, link_url) = new_link(&h, json!({ "integrated_account_id": id })).await;
        let (_, _, page) = get_page(&h, &link_url).await;
        assert!(page.contains("Reconnect Buddy"));
        let base = h.sim.base_url();
        let (status, done) = submit(
            &h,
            &page,
            "/connect/token",
            &[
                ("region", "self_hosted"),
                ("base_url", &base),
                ("api_key", &h.buddy_token),
            ],
        )
        .await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(result_account(&done), id);
        let again = account(&h, &id).await;
        assert_eq!(again["status"], "active");
        assert_eq!(again["last_error"], Value::Null);
    }
);

both_backends!(oauth_connections_can_be_imported, |h: Harness| async move {
    h.configure_oauth().await;
    let base = h.sim.base_url();
    let import = |token: Value| {
        h.post("/integrated-account").json(&json!({
            "tenant_id": "acme", "integration": "buddy", "authentication_method": "oauth2",
            "context": { "base_url": base, "oauth": { "token": token } },
        }))
    };
    let response = import(
        json!({ "access_token": h.buddy_token, "refresh_token": "r-1", "expires_in": 3600 }),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["authentication_method"], "oauth2");
    assert!(body["context"].get("oauth").is_none());
    assert!(!body.to_string().contains("r-1"));

    // Expired with a refresh token Buddy does not know: refused, nothing stored.
    let response = import(json!({ "access_token": "old", "refresh_token": "unknown", "expires_at": "2020-01-01T00:00:00Z" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let response = import(json!({ "refresh_token": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let (_, list) = h.get_json("/integrated-account").await;
    assert_eq!(list["result_count"], 1);

    // PATs have nothing to refresh.
    let pat = h.link().await;
    let response = h
        .post("/integrated-account/refresh-credentials")
        .json(&json!({ "id": pat }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
});

/// 200 concurrent calls over two gateway instances sharing one PostgreSQL schema, on an
/// account whose token just expired (by our clock, then by Buddy's): one refresh each
/// time, no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_refresh_exactly_once() {
    // A budget that 800 calls do not exhaust: this test is about refresh, not pacing.
    let sim_config = SimConfig {
        rate_limit: cigate_buddy_sim::RateLimitSpec {
            budget: 100_000,
            window_seconds: 3600,
        },
        ..SimConfig::default()
    };
    let Some(h) = Harness::start_with(Backend::Postgres, sim_config).await else {
        return;
    };
    h.configure_oauth().await;
    let id = oauth_link(&h).await;
    let env = account(&h, &id).await["environment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let store = cigate_server::store::open(&h.config).await.unwrap();
    let state = cigate_server::build_state(h.config.clone(), store)
        .await
        .unwrap();
    let second = cigate_server::start(state).await.unwrap();
    let bases = [h.server.base_url(), second.base_url()];
    let sim = h.sim.sim();

    for round in ["our clock", "Buddy's clock"] {
        if round == "our clock" {
            set_credential(&h, &env, &id, |_, at| {
                *at = Some(Utc::now() - chrono::Duration::seconds(1))
            })
            .await;
        } else {
            let Some(Credential::OAuth2 { access_token, .. }) =
                h.server.state.store.credential(&env, &id).await.unwrap()
            else {
                panic!()
            };
            assert!(sim.expire_token(access_token.expose()));
        }
        let before = sim.oauth_token_calls();
        let calls = (0..200).map(|i| workspaces(&bases[i % 2], &h, &id));
        let results = futures::future::join_all(calls).await;
        let failed: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
        assert!(
            failed.is_empty(),
            "{round}: {} failed, first {:?}",
            failed.len(),
            failed.first()
        );
        assert_eq!(sim.oauth_token_calls() - before, 1, "{round}");
    }
    assert_eq!(
        account(&h, &id).await["status"],
        AccountStatus::Active.as_str()
    );
    second.abort();
}

// `POST /link-token` with a context that names a Buddy the policy refuses, or names it
// inconsistently: 422 problem+json.
both_backends!(
    a_link_token_naming_a_bad_buddy_is_refused,
    |h: Harness| async move {
        let base = h.sim.base_url();
        for context in [
            json!({ "base_url": "not a url" }),
            json!({ "base_url": "ftp://buddy.example.com" }),
            json!({ "base_url": "https://user:pw@buddy.example.com/api" }),
            json!({ "base_url": "https://buddy.example.com/api?x=1" }),
            json!({ "base_url": 5 }),
            json!({ "region": "mars" }),
            json!({ "region": "self_hosted" }),
            json!({ "region": "eu", "base_url": base }),
        ] {
            let response = h
                .post("/link-token")
                .json(&json!({ "context": context }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 422, "{context}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json",
                "{context}"
            );
            let problem: Value = response.json().await.unwrap();
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("context."),
                "{context}: {problem}"
            );
        }

        // Under the default policy a private address (the simulator's) is refused too.
        let mut config = h.config.clone();
        config.allow_private_upstreams = false;
        let store = cigate_server::store::open(&config).await.unwrap();
        let state = cigate_server::build_state(config, store).await.unwrap();
        let strict = cigate_server::start(state).await.unwrap();
        let response = h
            .http
            .post(format!("{}/link-token", strict.base_url()))
            .bearer_auth(&h.api_token)
            .json(&json!({ "context": { "base_url": base } }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 422, "{body}");
        assert!(body.contains("not allowed"), "{body}");
        strict.abort();
    }
);

// A link token that names a self-hosted Buddy (or a region) opens the page with that
// choice made: no picker, and both the token form and OAuth go to that Buddy whatever
// the form says.
both_backends!(
    a_link_token_naming_a_buddy_skips_the_region_choice,
    |h: Harness| async move {
        h.configure_oauth().await;
        let base = h.sim.base_url();
        let base = base.trim_end_matches('/');

        // Token: the page does not ask where; a stray `region` field is ignored (the US
        // cloud is unreachable from the tests, so using it would fail).
        let (_, link_url) = new_link(
            &h,
            json!({ "tenant_id": "acme", "context": { "base_url": format!("{base}/"), "plan": "pro" } }),
        )
        .await;
        let (status, _, page) = get_page(&h, &link_url).await;
        assert_eq!(status, 200, "{page}");
        assert!(!page.contains("name=\"region\""), "{page}");
        assert!(!page.contains("name=\"base_url\""), "{page}");
        assert!(
            page.contains(&format!("Self-hosted Buddy at {base}")),
            "{page}"
        );
        let (status, done) = submit(
            &h,
            &page,
            "/connect/token",
            &[("region", "us"), ("api_key", &h.buddy_token)],
        )
        .await;
        assert_eq!(status, 200, "{done}");
        let linked = account(&h, &result_account(&done)).await;
        assert_eq!(linked["context"]["base_url"], base);
        assert_eq!(linked["context"]["region"], "self_hosted");
        assert_eq!(linked["context"]["plan"], "pro");
        assert_eq!(linked["authentication_method"], "api_key");

        // OAuth: authorize and token endpoints come from the named base URL.
        let (_, link_url) = new_link(
            &h,
            json!({ "tenant_id": "acme", "context": { "base_url": base } }),
        )
        .await;
        let (status, _, page) = get_page(&h, &link_url).await;
        assert_eq!(status, 200);
        assert!(!page.contains("name=\"region\""), "{page}");
        let calls = h.sim.sim().oauth_token_calls();
        let (status, interstitial) = submit(&h, &page, "/connect/oauth", &[]).await;
        assert_eq!(status, 200, "{interstitial}");
        let authorize =
            attr_after(&interstitial, "id=\"cigate-continue\"", "href").expect("authorize link");
        assert!(
            authorize.starts_with(&format!("{base}/oauth2/authorize?")),
            "{authorize}"
        );
        let (status, _, done) = get_page(&h, &authorize).await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(h.sim.sim().oauth_token_calls() - calls, 1);
        let linked = account(&h, &result_account(&done)).await;
        assert_eq!(linked["authentication_method"], "oauth2");
        assert_eq!(linked["context"]["base_url"], base);

        // A region is named in words, and the picker is gone too.
        for (region, words) in [
            ("eu", "Buddy cloud, EU region"),
            ("us", "Buddy cloud, US region"),
        ] {
            let (_, link_url) = new_link(&h, json!({ "context": { "region": region } })).await;
            let (status, _, page) = get_page(&h, &link_url).await;
            assert_eq!(status, 200);
            assert!(page.contains(words), "{page}");
            assert!(!page.contains("name=\"region\""), "{page}");
        }
        // Without one, the end user still chooses.
        let (_, link_url) = new_link(&h, json!({})).await;
        let (_, _, page) = get_page(&h, &link_url).await;
        assert!(page.contains("name=\"region\""), "{page}");
    }
);

// Rotating the master key re-encrypts every sealed secret, so with the old key retired
// the environment's OAuth app still works: a round trip begun before the rotation
// finishes, a new OAuth link succeeds, and both accounts refresh.
both_backends!(
    oauth_link_and_refresh_work_after_a_rotation_retires_the_old_key,
    |h: Harness| async move {
        h.configure_oauth().await;
        let before = oauth_link(&h).await;
        let pending = start_oauth(&h, None).await;
        let env = account(&h, &before).await["environment_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let store = &h.server.state.store;
        let old = store.key_ids();
        assert_eq!(old.len(), 1);

        let report = store.rotate_keys(None).await.unwrap();
        let current = report.current_key_id.clone();
        assert_eq!(report.retired_key_ids, old);
        assert_eq!(store.key_ids(), vec![current.clone()]);
        for table in [
            "account_credentials",
            "environment_integrations",
            "oauth_states",
        ] {
            assert_eq!(report.reencrypted_by_table[table], 1, "{table}");
        }
        for (table, by_key) in store.sealed_key_usage().await.unwrap() {
            assert!(
                by_key.keys().all(|k| *k == current),
                "{table} still holds values under {by_key:?}"
            );
        }

        // The round trip begun under the old key completes.
        let (status, _, done) = get_page(&h, &pending).await;
        assert_eq!(status, 200, "{done}");
        assert!(!result_account(&done).is_empty(), "{done}");
        // A new OAuth link.
        let after = oauth_link(&h).await;

        let sim = h.sim.sim();
        let base = h.server.base_url();
        // Refresh on a 401 for the account linked before the rotation...
        expire_access_token(&h, &env, &before).await;
        let calls = sim.oauth_token_calls();
        let (status, body) = workspaces(&base, &h, &before).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(sim.oauth_token_calls() - calls, 1);
        // ...and ahead of expiry for the one linked after it.
        set_credential(&h, &env, &after, |_, at| {
            *at = Some(Utc::now() - chrono::Duration::seconds(5))
        })
        .await;
        let calls = sim.oauth_token_calls();
        let (status, body) = workspaces(&base, &h, &after).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(sim.oauth_token_calls() - calls, 1);
        for id in [&before, &after] {
            assert_eq!(account(&h, id).await["status"], "active");
        }

        // A restart with the rotated key file (the old key gone) reads the client secret.
        let restarted = cigate_server::store::open(&h.config).await.unwrap();
        assert_eq!(restarted.key_ids(), vec![current]);
        let settings = restarted
            .environment_integration(&env, "buddy")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(settings.secret.unwrap().expose(), CLIENT_SECRET);
        restarted.close().await;
    }
);
