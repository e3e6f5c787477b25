//! The dashboard over real HTTP: signing in (a wrong token, a forged form, the right
//! token), what the cookie is, every page with the simulator's data, the forms
//! (test event, redeliver, reconnect, delete) and their CSRF check, signing out, and
//! that the session cookie never authenticates an API call.

mod common;

use common::{Backend, Harness};
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::{json, Value};

/// A browser without its own cookie jar: the test carries cookies by hand, so it can
/// see and replay exactly what the server set.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The value of the hidden `csrf` input of a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// `name=value` of a cookie the response sets, with its attributes.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

struct Signed {
    cookie: String,
    csrf: String,
}

async fn sign_in_form(h: &Harness, b: &reqwest::Client) -> (String, String) {
    let response = b.get(h.url("/ui/sign-in")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let csp = response.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let cookie = pair(&set_cookie(&response, "cigate_sign_in").expect("sign-in cookie"));
    let html = response.text().await.unwrap();
    assert!(
        html.contains("<label for=\"token\">API token</label>"),
        "{html}"
    );
    (cookie, csrf_of(&html))
}

async fn sign_in(h: &Harness, b: &reqwest::Client) -> Signed {
    let (cookie, csrf) = sign_in_form(h, b).await;
    let response = b
        .post(h.url("/ui/sign-in"))
        .header(COOKIE, &cookie)
        .form(&[
            ("token", h.api_token.as_str()),
            ("csrf", &csrf),
            ("next", "/ui/accounts"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/ui/accounts");
    let session = set_cookie(&response, "cigate_session").expect("session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(!session.contains("Secure"), "plain http: {session}");
    let cookie = pair(&session);
    let html = page(h, b, &cookie, "/ui").await;
    Signed {
        csrf: csrf_of(&html),
        cookie,
    }
}

async fn page(h: &Harness, b: &reqwest::Client, cookie: &str, path: &str) -> String {
    let response = b
        .get(h.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    assert!(response.headers().contains_key(CONTENT_SECURITY_POLICY));
    let html = response.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script on {path}");
    assert!(!html.contains("style=\""), "no inline style on {path}");
    html
}

async fn post_form(
    h: &Harness,
    b: &reqwest::Client,
    signed: &Signed,
    path: &str,
    csrf: &str,
) -> reqwest::Response {
    b.post(h.url(path))
        .header(COOKIE, &signed.cookie)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn signing_in_refuses_wrong_tokens_and_forged_forms_in_plain_words() {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    let b = browser();
    let response = b.get(h.url("/ui/timeline")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()[LOCATION],
        "/ui/sign-in?next=%2Fui%2Ftimeline"
    );

    let (cookie, csrf) = sign_in_form(&h, &b).await;
    let wrong = b
        .post(h.url("/ui/sign-in"))
        .header(COOKIE, &cookie)
        .form(&[("token", "cgt_not-a-token"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(set_cookie(&wrong, "cigate_session").is_none());
    let html = wrong.text().await.unwrap();
    assert!(html.contains("That API token was not accepted"), "{html}");
    assert!(html.contains("role=\"alert\""), "{html}");

    // The right token, but the form's own CSRF value is missing or not the cookie's.
    for (cookie, csrf) in [("", csrf.as_str()), (cookie.as_str(), "forged")] {
        let forged = b
            .post(h.url("/ui/sign-in"))
            .header(COOKIE, cookie)
            .form(&[("token", h.api_token.as_str()), ("csrf", csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 403);
        assert!(set_cookie(&forged, "cigate_session").is_none());
    }
    // From another site.
    let cross = b
        .post(h.url("/ui/sign-in"))
        .header(COOKIE, &cookie)
        .header(ORIGIN, "https://evil.example")
        .form(&[("token", h.api_token.as_str()), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert!(set_cookie(&cross, "cigate_session").is_none());
}

#[tokio::test]
async fn every_page_works_and_forms_need_the_session_csrf_sqlite() {
    every_page_works_and_forms_need_the_session_csrf(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_page_works_and_forms_need_the_session_csrf_postgres() {
    every_page_works_and_forms_need_the_session_csrf(Backend::Postgres).await;
}

async fn every_page_works_and_forms_need_the_session_csrf(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    let account = h.link().await;
    let (status, hook) = {
        let response = h
            .post("/webhook")
            .json(&json!({ "target_url": "https://hooks.example.com/cigate", "event_types": ["job:*"] }))
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 201, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let b = browser();
    let signed = sign_in(&h, &b).await;

    // The session cookie is not an API credential.
    let api = b
        .get(h.url("/integrated-account"))
        .header(COOKIE, &signed.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);

    let overview = page(&h, &b, &signed.cookie, "/ui").await;
    assert!(overview.contains("1 linked"), "{overview}");
    assert!(overview.contains("Jobs in the last 24 hours"), "{overview}");
    for link in [
        "/ui/accounts",
        "/ui/timeline",
        "/ui/metrics",
        "/ui/webhooks",
    ] {
        assert!(
            overview.contains(&format!("href=\"{link}\"")),
            "nav to {link}"
        );
    }
    let accounts = page(&h, &b, &signed.cookie, "/ui/accounts?tenant_id=acme").await;
    assert!(accounts.contains(&account), "{accounts}");
    assert!(accounts.contains("acme"), "{accounts}");
    assert!(accounts.contains("Active"), "{accounts}");
    let none = page(&h, &b, &signed.cookie, "/ui/accounts?tenant_id=nobody").await;
    assert!(none.contains("No accounts match."), "{none}");

    let timeline = page(&h, &b, &signed.cookie, "/ui/timeline").await;
    assert!(!timeline.contains("could not be read"), "{timeline}");
    assert!(
        timeline.contains("class=\"status "),
        "jobs with a status: {timeline}"
    );
    // The live updates start where the page was read: a job event recorded after that
    // and before the browser connects still reaches it.
    let live = timeline
        .split("data-live=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no live updates: {timeline}"))
        .to_owned();
    assert!(live.starts_with("/ui/timeline/events?after="), "{live}");
    let env = h
        .server
        .state
        .store
        .ensure_environment("default")
        .await
        .unwrap();
    h.server
        .state
        .store
        .record_event(cigate_store::NewEvent {
            environment_id: env.id,
            event_type: "job:started".into(),
            integrated_account_id: None,
            tenant_id: None,
            workflow: None,
            payload: json!({ "id": "started-before-the-browser-connected" }),
            only_webhook: None,
            except_webhook: None,
            order_key: None,
        })
        .await
        .unwrap();
    let mut stream = b
        .get(h.url(&live))
        .header(COOKIE, &signed.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !seen.contains("started-before-the-browser-connected") {
            let chunk = stream
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the event recorded before connecting never came: {seen}"));
    assert!(seen.contains("event: job:started"), "{seen}");
    let metrics = page(&h, &b, &signed.cookie, "/ui/metrics?days=30").await;
    assert!(!metrics.contains("could not be computed"), "{metrics}");
    assert!(metrics.contains("data-chart=\"bar\""), "{metrics}");
    assert!(metrics.contains("Deployments per day"), "{metrics}");
    let bad = b
        .get(h.url("/ui/metrics?days=3"))
        .header(COOKIE, &signed.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad
        .text()
        .await
        .unwrap()
        .contains("`days` is one of 7, 30 or 90"));

    let webhooks = page(&h, &b, &signed.cookie, "/ui/webhooks").await;
    assert!(
        webhooks.contains("https://hooks.example.com/cigate"),
        "{webhooks}"
    );

    // A form without the session's CSRF token, or from another site, does nothing.
    let test_path = format!("/ui/webhooks/{hook_id}/test");
    assert_eq!(
        post_form(&h, &b, &signed, &test_path, "").await.status(),
        403
    );
    assert_eq!(
        post_form(&h, &b, &signed, &test_path, "nope")
            .await
            .status(),
        403
    );
    let cross = b
        .post(h.url(&test_path))
        .header(COOKIE, &signed.cookie)
        .header(ORIGIN, "https://evil.example")
        .form(&[("csrf", signed.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let (_, events) = h.get_json("/events?event_type=test").await;
    assert_eq!(events["result"].as_array().unwrap().len(), 0, "{events}");

    let sent = post_form(&h, &b, &signed, &test_path, &signed.csrf).await;
    assert_eq!(sent.status(), 303);
    assert_eq!(sent.headers()[LOCATION], "/ui/webhooks?done=test");
    let (_, events) = h.get_json("/events?event_type=test").await;
    assert_eq!(events["result"].as_array().unwrap().len(), 1, "{events}");
    let (_, deliveries) = h.get_json(&format!("/webhook/{hook_id}/deliveries")).await;
    let delivery = deliveries["result"][0]["id"].as_str().unwrap().to_owned();
    let webhooks = page(&h, &b, &signed.cookie, "/ui/webhooks?done=test").await;
    assert!(webhooks.contains(&delivery), "{webhooks}");
    assert!(webhooks.contains("A test event was queued"), "{webhooks}");

    // Reconnect: a link token for this account, shown as the link to send.
    let reconnect = post_form(
        &h,
        &b,
        &signed,
        &format!("/ui/accounts/{account}/reconnect"),
        &signed.csrf,
    )
    .await;
    assert_eq!(reconnect.status(), 200);
    let html = reconnect.text().await.unwrap();
    assert!(html.contains("/connect?link_token=clt_"), "{html}");

    // Delete: a confirmation page first, then the post.
    let confirm = page(
        &h,
        &b,
        &signed.cookie,
        &format!("/ui/accounts/{account}/delete"),
    )
    .await;
    assert!(confirm.contains("cannot be undone"), "{confirm}");
    let deleted = post_form(
        &h,
        &b,
        &signed,
        &format!("/ui/accounts/{account}/delete"),
        &signed.csrf,
    )
    .await;
    assert_eq!(deleted.status(), 303);
    let (status, _) = h.get_json(&format!("/integrated-account/{account}")).await;
    assert_eq!(status, 404);

    // Signing out ends the session on the server: the old cookie no longer works.
    let out = post_form(&h, &b, &signed, "/ui/sign-out", &signed.csrf).await;
    assert_eq!(out.status(), 303);
    assert!(set_cookie(&out, "cigate_session")
        .unwrap()
        .contains("Max-Age=0"));
    let after = b
        .get(h.url("/ui"))
        .header(COOKIE, &signed.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 303);
    assert_eq!(after.headers()[LOCATION], "/ui/sign-in?ended=1");
}

#[tokio::test]
async fn a_session_ends_with_its_token_and_after_inactivity_sqlite() {
    a_session_ends_with_its_token_and_after_inactivity(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_session_ends_with_its_token_and_after_inactivity_postgres() {
    a_session_ends_with_its_token_and_after_inactivity(Backend::Postgres).await;
}

async fn a_session_ends_with_its_token_and_after_inactivity(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    let store = &h.server.state.store;
    let env = store.ensure_environment("default").await.unwrap();
    let (token, _) = store.create_api_token(&env.id, Some("ui")).await.unwrap();
    let (secret, session) = store.create_ui_session(&env.id, &token.id).await.unwrap();
    assert_eq!(session.environment_id, env.id);
    let idle = std::time::Duration::from_secs(60);
    assert!(store
        .ui_session(secret.expose(), idle)
        .await
        .unwrap()
        .is_some());
    // Used longer ago than the idle limit (zero): gone, and stays gone.
    assert!(store
        .ui_session(secret.expose(), std::time::Duration::ZERO)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .ui_session(secret.expose(), idle)
        .await
        .unwrap()
        .is_none());

    let (secret, _) = store.create_ui_session(&env.id, &token.id).await.unwrap();
    assert!(store.delete_api_token(&env.id, &token.id).await.unwrap());
    assert!(store
        .ui_session(secret.expose(), idle)
        .await
        .unwrap()
        .is_none());
    // A token of another environment cannot open a session here.
    let other = store.ensure_environment("other").await.unwrap();
    let (foreign, _) = store.create_api_token(&other.id, None).await.unwrap();
    assert!(store.create_ui_session(&env.id, &foreign.id).await.is_err());
}
