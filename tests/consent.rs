//! The consent flow end to end with real parts: oidc-provider as the
//! upstream authorization server, headless Chromium as the person, the
//! official Python MCP SDK as the upstream resource server, moto as AWS.

use gateway_shared::domain::{
    GrantStatus, OAuthSettings, PendingAuthorization, Target, TargetAuth, TokenEndpointAuthMethod,
};
use gateway_tests::{
    browser_consent, forwarded_consent, mcp_call_tool, stack, stack_with, whoami, Gateway,
    GatewayServer, Stack,
};
use secrecy::ExposeSecret;
use serde_json::json;

#[tokio::test]
async fn consent_in_a_browser_stores_a_working_encrypted_grant() {
    let s = stack(json!({})).await;
    s.target(
        "demo",
        "gw-basic",
        TokenEndpointAuthMethod::ClientSecretBasic,
    )
    .await;
    let (pending, link) = s.link("alice", "demo").await;

    let shot = std::env::temp_dir().join(format!("gw-consent-success-{}.png", pending.id));
    let seen = browser_consent(&link, &["alice"], "consent", shot.to_str()).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(
        seen.title.as_deref(),
        Some("Connected to Demo Service"),
        "{seen:?}"
    );
    assert!(seen
        .next
        .as_deref()
        .unwrap()
        .contains("go back to your agent"));
    assert!(seen
        .url
        .starts_with(&format!("{}/oauth/callback?", s.server.base)));
    let _ = std::fs::remove_file(shot);

    // The grant: stored for alice, encrypted at rest, with expiry, scopes, issuer, resource, refresh token.
    let grant =
        s.gw.state
            .grants
            .get("alice", "demo", true)
            .await
            .unwrap()
            .expect("a grant for alice");
    assert_eq!(grant.status, GrantStatus::Active);
    assert_eq!(grant.version, 1);
    assert_eq!(grant.scopes, vec!["read"]);
    assert_eq!(grant.issuer.as_deref(), Some(s.op.issuer.as_str()));
    assert_eq!(grant.resource.as_deref(), Some(s.mcp.url.as_str()));
    assert!(grant.expires_at.unwrap() > s.gw.state.clock.now());
    let access = grant.tokens.access_token.expose_secret().to_owned();
    let refresh = grant
        .tokens
        .refresh_token
        .as_ref()
        .expect("a refresh token")
        .expose_secret()
        .to_owned();
    let raw = format!(
        "{:?}",
        s.gw.raw_item("USER#alice", "GRANT#demo").await.unwrap()
    );
    assert!(
        !raw.contains(&access) && !raw.contains(&refresh),
        "a token is stored in the clear"
    );
    // Pending authorization consumed.
    assert!(s
        .gw
        .raw_item(&format!("AUTHZ#{}", pending.id), "AUTHZ")
        .await
        .is_none());
    assert!(s
        .gw
        .state
        .grants
        .get("bob", "demo", true)
        .await
        .unwrap()
        .is_none());

    // The stored token works at the upstream MCP server, which checks its audience, as alice.
    assert_eq!(whoami(&s.mcp.url, &access).await, "alice");
    assert_eq!(
        mcp_call_tool(&s.mcp.url, "not-a-token", "whoami", json!({}))
            .await
            .unwrap_err(),
        401
    );

    // Replaying the callback (same code and state) shows a clear page and changes nothing.
    let replay = gateway_tests::get(&seen.url).await.unwrap();
    assert_eq!(replay.status(), 410);
    assert!(replay
        .text()
        .await
        .unwrap()
        .contains("This link was already used"));
    let after = s.grant("alice", "demo").await;
    assert_eq!(after.version, 1);
    // Opening the used link again says so too.
    let reopened = gateway_tests::get(&link).await.unwrap();
    assert_eq!(reopened.status(), 410);
}

#[tokio::test]
async fn client_secret_post_and_public_clients_work() {
    let s = stack(json!({})).await;
    s.target("post", "gw-post", TokenEndpointAuthMethod::ClientSecretPost)
        .await;
    s.target("public", "gw-public", TokenEndpointAuthMethod::None)
        .await;
    for target in ["post", "public"] {
        let (_, link) = s.link("carol", target).await;
        let seen = browser_consent(&link, &["carol"], "consent", None).await;
        assert_eq!(
            seen.title.as_deref(),
            Some("Connected to Demo Service"),
            "{target}: {seen:?}"
        );
        let grant =
            s.gw.state
                .grants
                .get("carol", target, true)
                .await
                .unwrap()
                .unwrap();
        assert_eq!(
            whoami(&s.mcp.url, grant.tokens.access_token.expose_secret()).await,
            "carol"
        );
    }
}

#[tokio::test]
async fn denied_consent_shows_a_page_and_stores_nothing() {
    let s = stack(json!({})).await;
    s.target(
        "demo",
        "gw-basic",
        TokenEndpointAuthMethod::ClientSecretBasic,
    )
    .await;
    let (pending, link) = s.link("alice", "demo").await;
    let seen = browser_consent(&link, &["alice"], "cancel", None).await;
    assert_eq!(seen.status, 403, "{seen:?}");
    assert_eq!(
        seen.title.as_deref(),
        Some("Demo Service was not connected")
    );
    assert!(seen.message.unwrap().contains("denied"));
    assert!(s
        .gw
        .state
        .grants
        .get("alice", "demo", true)
        .await
        .unwrap()
        .is_none());
    // The link is used up.
    assert!(s
        .gw
        .raw_item(&format!("AUTHZ#{}", pending.id), "AUTHZ")
        .await
        .is_none());
}

/// A gateway without an authorization server: for the refusals that happen
/// before or instead of talking to one.
async fn bare() -> (Gateway, GatewayServer) {
    let (listener, base) = GatewayServer::bind().await;
    let gw = Gateway::start(&[("PUBLIC_BASE_URL", &base)]).await;
    let server = GatewayServer::serve(listener, base, gw.state.clone());
    (gw, server)
}

const AS: &str = "https://as.example.test";

async fn put_target(gw: &Gateway, name: &str, token_endpoint: &str, pkce: &[&str]) {
    gw.state
        .targets
        .put(&Target {
            name: name.into(),
            display_name: None,
            mcp_url: "https://mcp.example.test/mcp".into(),
            auth: TargetAuth::OAuth(Box::new(OAuthSettings {
                issuer: Some(AS.into()),
                authorization_endpoint: format!("{AS}/authorize"),
                token_endpoint: token_endpoint.into(),
                revocation_endpoint: None,
                client_id: "gw".into(),
                client_secret_arn: None,
                token_endpoint_auth_method: TokenEndpointAuthMethod::None,
                scopes: vec!["read".into()],
                extra_authorize_params: Default::default(),
                send_resource: true,
                resource: None,
                registered: false,
                flow: Default::default(),
                authorization_response_iss_parameter_supported: true,
                code_challenge_methods_supported: pkce.iter().map(|s| s.to_string()).collect(),
                dpop_signing_alg_values_supported: vec![],
                exchange: None,
            })),
            tool_prefix: None,
            return_to: Default::default(),
            tool_catalog: Default::default(),
        })
        .await
        .unwrap();
}

async fn pending(gw: &Gateway, target: &str) -> PendingAuthorization {
    let p = PendingAuthorization::new(
        "alice",
        target,
        vec!["read".into()],
        None,
        Some(AS.into()),
        gw.state.clock.now(),
        600,
    );
    gw.state.authorizations.create(&p).await.unwrap();
    p
}

async fn get_page(url: &str) -> (u16, String) {
    get_page_with(url, None).await
}

/// [`get_page`] from a browser that holds `cookie`.
async fn get_page_with(url: &str, cookie: Option<&str>) -> (u16, String) {
    let mut req = gateway_tests::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    (status, res.text().await.unwrap())
}

/// Opens the consent link as a browser would (`link` binding): the gateway
/// binds the consent to this browser. Returns the binding cookie
/// (`name=value`) and the Set-Cookie header as sent.
async fn open_link(server: &GatewayServer, p: &PendingAuthorization) -> (String, String) {
    let res = gateway_tests::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/connect/{}", server.base, p.id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302, "the link redirects upstream");
    let set = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.contains("gw_browser="))
        .expect("a browser-binding cookie");
    (set.split(';').next().unwrap().to_owned(), set)
}

fn title(html: &str) -> &str {
    let start = html.find("<h1 id=\"title\">").map(|i| i + 15).unwrap_or(0);
    let end = html[start..]
        .find("</h1>")
        .map(|i| start + i)
        .unwrap_or(start);
    &html[start..end]
}

#[tokio::test]
async fn expired_links_are_refused_at_connect_and_callback() {
    let (gw, server) = bare().await;
    put_target(&gw, "t", &format!("{AS}/token"), &["S256"]).await;
    let p = pending(&gw, "t").await;
    gw.clock.advance(600);
    let (status, html) = get_page(&format!("{}/connect/{}", server.base, p.id)).await;
    assert_eq!((status, title(&html)), (410, "This link has expired"));
    let cb = format!(
        "{}/oauth/callback?code=c&state={}&iss={AS}",
        server.base,
        p.state.to_param()
    );
    let (status, html) = get_page(&cb).await;
    assert_eq!((status, title(&html)), (410, "This link has expired"));
    assert!(gw
        .state
        .grants
        .get("alice", "t", true)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn tampered_or_missing_state_is_refused_and_consumes_nothing() {
    let (gw, server) = bare().await;
    put_target(&gw, "t", &format!("{AS}/token"), &["S256"]).await;
    let p = pending(&gw, "t").await;
    let other = PendingAuthorization::new("x", "t", vec![], None, None, 0, 1).state;
    let forged = format!("{}.{}", p.id, other.to_param().split_once('.').unwrap().1);
    for state in [forged.as_str(), "", "garbage", &p.id] {
        let (status, html) = get_page(&format!(
            "{}/oauth/callback?code=c&state={state}",
            server.base
        ))
        .await;
        assert_eq!(
            (status, title(&html)),
            (400, "This response cannot be trusted"),
            "state {state:?}"
        );
    }
    let (status, html) = get_page(&format!("{}/oauth/callback?code=c", server.base)).await;
    assert_eq!(
        (status, title(&html)),
        (400, "This response cannot be trusted")
    );
    // The real link still works.
    assert!(gw
        .state
        .authorizations
        .peek(&p.id, gw.state.clock.now())
        .await
        .is_ok());
    assert!(gw
        .state
        .grants
        .get("alice", "t", true)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn wrong_or_missing_issuer_is_refused_before_any_token_request() {
    let (gw, server) = bare().await;
    let token = gateway_tests::FakeHttp::start(
        200,
        json!({"access_token": "x", "token_type": "Bearer"}),
        Default::default(),
    )
    .await;
    put_target(&gw, "t", &format!("{}/token", token.base), &["S256"]).await;
    for iss in ["&iss=https%3A%2F%2Fevil.example", ""] {
        let p = pending(&gw, "t").await;
        let (cookie, _) = open_link(&server, &p).await;
        let (status, html) = get_page_with(
            &format!(
                "{}/oauth/callback?code=c&state={}{iss}",
                server.base,
                p.state.to_param()
            ),
            Some(&cookie),
        )
        .await;
        assert_eq!(
            (status, title(&html)),
            (400, "This response cannot be trusted"),
            "iss {iss:?}"
        );
        assert!(html.contains("issuer"));
        // The state is spent either way.
        assert!(gw
            .state
            .authorizations
            .peek(&p.id, gw.state.clock.now())
            .await
            .is_err());
    }
    assert_eq!(token.hits(), 0, "no code was sent to the token endpoint");
    assert!(gw
        .state
        .grants
        .get("alice", "t", true)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn authorization_server_without_s256_is_refused() {
    let (gw, server) = bare().await;
    put_target(&gw, "plain", &format!("{AS}/token"), &["plain"]).await;
    put_target(&gw, "none", &format!("{AS}/token"), &[]).await;
    for target in ["plain", "none"] {
        let p = pending(&gw, target).await;
        let (status, html) = get_page(&format!("{}/connect/{}", server.base, p.id)).await;
        assert_eq!(status, 502, "{target}");
        assert!(html.contains("PKCE"), "{html}");
    }
}

#[tokio::test]
async fn failing_token_endpoints_show_a_page_and_store_nothing() {
    let (gw, server) = bare().await;
    let down = format!("http://127.0.0.1:{}/token", gateway_tests::free_port());
    let error500 =
        gateway_tests::FakeHttp::start(500, json!({"message": "boom"}), Default::default()).await;
    let refused = gateway_tests::FakeHttp::start(
        400,
        json!({"error": "invalid_grant", "error_description": "code expired"}),
        Default::default(),
    )
    .await;
    let not_json =
        gateway_tests::FakeHttp::start(200, json!("not a token response"), Default::default())
            .await;
    for (name, endpoint, expect) in [
        ("down", down, "did not answer properly"),
        (
            "error500",
            format!("{}/token", error500.base),
            "did not answer properly",
        ),
        (
            "refused",
            format!("{}/token", refused.base),
            "refused to issue tokens (invalid_grant)",
        ),
        (
            "notjson",
            format!("{}/token", not_json.base),
            "did not answer properly",
        ),
    ] {
        put_target(&gw, name, &endpoint, &["S256"]).await;
        let p = pending(&gw, name).await;
        let (cookie, _) = open_link(&server, &p).await;
        let (status, html) = get_page_with(
            &format!(
                "{}/oauth/callback?code=the-code&state={}&iss={AS}",
                server.base,
                p.state.to_param()
            ),
            Some(&cookie),
        )
        .await;
        assert_eq!(status, 502, "{name}: {html}");
        assert!(html.contains(expect), "{name}: {html}");
        assert!(!html.contains("the-code"));
        assert!(
            gw.state
                .grants
                .get("alice", name, true)
                .await
                .unwrap()
                .is_none(),
            "{name}"
        );
    }
    assert_eq!(error500.hits(), 1);
    assert_eq!(refused.hits(), 1);
}

#[tokio::test]
async fn unknown_pages_and_removed_targets_have_clear_pages() {
    let (gw, server) = bare().await;
    let (status, html) = get_page(&format!("{}/connect/unknown-id", server.base)).await;
    assert_eq!((status, title(&html)), (410, "This link was already used"));
    put_target(&gw, "gone", &format!("{AS}/token"), &["S256"]).await;
    let p = pending(&gw, "gone").await;
    gw.state.targets.delete("gone").await.unwrap();
    let (status, html) = get_page(&format!("{}/connect/{}", server.base, p.id)).await;
    assert_eq!(
        (status, title(&html)),
        (404, "This service is not available")
    );
}

#[tokio::test]
async fn session_binding_lets_the_right_user_connect() {
    let s = stack_with(json!({}), true).await;
    s.target(
        "demo",
        "gw-basic",
        TokenEndpointAuthMethod::ClientSecretBasic,
    )
    .await;
    let (_, link) = s.link("alice", "demo").await;
    // Sign in at the identity provider as alice, then consent upstream.
    let seen = browser_consent(&link, &["alice"], "consent", None).await;
    assert_eq!(
        seen.title.as_deref(),
        Some("Connected to Demo Service"),
        "{seen:?}"
    );
    let grant = s.grant("alice", "demo").await;
    assert_eq!(
        whoami(&s.mcp.url, grant.tokens.access_token.expose_secret()).await,
        "alice"
    );
}

#[tokio::test]
async fn session_binding_refuses_a_different_user() {
    let s = stack_with(json!({}), true).await;
    s.target(
        "demo",
        "gw-basic",
        TokenEndpointAuthMethod::ClientSecretBasic,
    )
    .await;
    // Mallory's agent asked for the consent; alice is tricked into opening the link.
    let (pending, link) = s.link("mallory", "demo").await;
    let seen = browser_consent(&link, &["alice"], "consent", None).await;
    assert_eq!(seen.status, 403, "{seen:?}");
    assert_eq!(
        seen.title.as_deref(),
        Some("This link belongs to someone else")
    );
    assert!(
        !seen.url.contains(&format!("{}/auth", s.op.issuer)),
        "never sent to the upstream"
    );
    for sub in ["alice", "mallory"] {
        assert!(
            s.gw.state
                .grants
                .get(sub, "demo", true)
                .await
                .unwrap()
                .is_none(),
            "{sub}"
        );
    }
    // The link is spent.
    assert!(s
        .gw
        .raw_item(&format!("AUTHZ#{}", pending.id), "AUTHZ")
        .await
        .is_none());
}

#[tokio::test]
async fn session_binding_refuses_another_browser_and_forged_state() {
    let s = stack_with(json!({}), true).await;
    s.target(
        "demo",
        "gw-basic",
        TokenEndpointAuthMethod::ClientSecretBasic,
    )
    .await;
    let (pending, link) = s.link("alice", "demo").await;
    let http = gateway_tests::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let start = http.get(&link).send().await.unwrap();
    assert_eq!(start.status(), 302);
    let cookie = start.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("gw_consent=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
    );
    let to_idp = url::Url::parse(start.headers()["location"].to_str().unwrap()).unwrap();
    assert!(to_idp
        .as_str()
        .starts_with(&format!("{}/auth?", s.op.issuer)));
    let q: std::collections::HashMap<_, _> = to_idp.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], "gw-login");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(
        q["redirect_uri"],
        format!("{}/connect/verify", s.server.base)
    );
    let login_state = q["state"].clone();

    // Coming back without the cookie: another browser.
    let verify = format!("{}/connect/verify", s.server.base);
    let res = http
        .get(&verify)
        .query(&[("state", login_state.as_str()), ("code", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("did not start in this browser"));
    // A forged state, with the cookie.
    let browser_cookie = cookie.split(';').next().unwrap().to_owned();
    let res = http
        .get(&verify)
        .header("cookie", &browser_cookie)
        .query(&[
            (
                "state",
                "k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
            ("code", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("cannot be trusted"));
    // The identity provider's error, in the right browser.
    let res = http
        .get(&verify)
        .header("cookie", &browser_cookie)
        .query(&[("state", login_state.as_str()), ("error", "access_denied")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("Sign-in was not completed"));
    assert!(s
        .gw
        .state
        .grants
        .get("alice", "demo", true)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .gw
        .state
        .authorizations
        .peek(&pending.id, s.gw.state.clock.now())
        .await
        .is_ok());
}

/// What the forwarded-URL attack must end with: the victim sees the refusal,
/// nothing is stored for anyone, and the consent is cancelled.
async fn assert_forwarded_url_refused(
    s: &Stack,
    pending: &PendingAuthorization,
    report: &serde_json::Value,
) {
    assert_eq!(report["captured"], true, "{report}");
    let victim = &report["victim"];
    assert_eq!(victim["status"], 403, "{report}");
    assert_eq!(
        victim["title"], "This connection was started in another browser",
        "{report}"
    );
    assert!(
        victim["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/oauth/callback?", s.server.base)),
        "the victim approved upstream and came back to the gateway: {report}"
    );
    for sub in ["alice", "bob"] {
        assert!(
            s.gw.state
                .grants
                .get(sub, "demo", true)
                .await
                .unwrap()
                .is_none(),
            "nothing is stored for {sub}"
        );
    }
    assert!(
        s.gw.raw_item(&format!("AUTHZ#{}", pending.id), "AUTHZ")
            .await
            .is_none(),
        "the consent is cancelled"
    );
}

#[tokio::test]
async fn a_forwarded_upstream_url_is_refused_at_the_callback_oidc_mode() {
    let s = stack_with(json!({}), true).await;
    s.target(
        "demo",
        "gw-basic",
        TokenEndpointAuthMethod::ClientSecretBasic,
    )
    .await;
    // Bob signs in to the gateway as himself, then forwards the upstream
    // authorization URL to alice, who approves at the upstream.
    let (pending, link) = s.link("bob", "demo").await;
    let report = forwarded_consent(&link, &["bob"], &["alice"], false).await;
    assert_forwarded_url_refused(&s, &pending, &report).await;
    // Alice's own consent still works, in her own browser.
    let (_, link) = s.link("alice", "demo").await;
    let seen = browser_consent(&link, &["alice"], "consent", None).await;
    assert_eq!(
        seen.title.as_deref(),
        Some("Connected to Demo Service"),
        "{seen:?}"
    );
    let grant = s.grant("alice", "demo").await;
    assert_eq!(
        whoami(&s.mcp.url, grant.tokens.access_token.expose_secret()).await,
        "alice"
    );
}

#[tokio::test]
async fn a_forwarded_upstream_url_is_refused_at_the_callback_link_mode() {
    let s = stack(json!({})).await;
    s.target(
        "demo",
        "gw-basic",
        TokenEndpointAuthMethod::ClientSecretBasic,
    )
    .await;
    let (pending, link) = s.link("bob", "demo").await;
    let report = forwarded_consent(&link, &[], &["alice"], true).await;
    assert_forwarded_url_refused(&s, &pending, &report).await;
    // The binding cookie, as Chromium stored it for the gateway.
    let cookie = report["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "gw_browser")
        .unwrap_or_else(|| panic!("a binding cookie: {report}"));
    assert_eq!(cookie["httpOnly"], true, "{report}");
    assert_eq!(cookie["sameSite"], "Lax", "{report}");
    assert_eq!(cookie["path"], "/", "{report}");
    // From a page on another site, subrequests do not carry it; a top-level
    // link (like the authorization server's redirect back) does.
    assert_eq!(report["probes"]["img"], false, "{report}");
    assert_eq!(report["probes"]["fetch"], false, "{report}");
    assert_eq!(report["probes"]["top"], true, "{report}");
}

#[tokio::test]
async fn the_binding_cookie_is_httponly_lax_and_host_only() {
    // On https the cookie carries the __Host- prefix (Secure, Path=/, no
    // Domain), so no other host can plant or overwrite it.
    let (listener, base) = GatewayServer::bind().await;
    let gw = Gateway::start(&[("PUBLIC_BASE_URL", "https://gw.example.test")]).await;
    let server = GatewayServer::serve(listener, base, gw.state.clone());
    put_target(&gw, "t", &format!("{AS}/token"), &["S256"]).await;
    let p = pending(&gw, "t").await;
    let (cookie, set) = open_link(&server, &p).await;
    assert!(cookie.starts_with("__Host-gw_browser="), "{set}");
    for part in ["Path=/;", "HttpOnly", "SameSite=Lax", "Secure"] {
        assert!(set.contains(part), "{part} in {set}");
    }
    assert!(!set.to_ascii_lowercase().contains("domain="), "{set}");
    // Opening the link again in the same browser keeps the binding; a second
    // browser is refused and learns nothing.
    let again = gateway_tests::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/connect/{}", server.base, p.id))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 302);
    let (status, html) = get_page(&format!("{}/connect/{}", server.base, p.id)).await;
    assert_eq!(
        (status, title(&html)),
        (403, "This connection was started in another browser")
    );
    assert!(!html.contains(&p.state.to_param()));
    // A callback without the cookie is refused and cancels the consent.
    let cb = format!(
        "{}/oauth/callback?code=c&state={}&iss={AS}",
        server.base,
        p.state.to_param()
    );
    let (status, html) = get_page(&cb).await;
    assert_eq!(
        (status, title(&html)),
        (403, "This connection was started in another browser")
    );
    let (status, html) = get_page_with(&cb, Some(&cookie)).await;
    assert_eq!((status, title(&html)), (410, "This link was already used"));
    // An http deployment (local) uses the plain name.
    let (gw2, server2) = bare().await;
    put_target(&gw2, "t", &format!("{AS}/token"), &["S256"]).await;
    let p2 = pending(&gw2, "t").await;
    let (cookie2, set2) = open_link(&server2, &p2).await;
    assert!(cookie2.starts_with("gw_browser="), "{set2}");
    assert!(!set2.contains("Secure"), "{set2}");
}

#[tokio::test]
async fn log_injection_through_the_authorization_server_is_escaped() {
    let (logs, _guard) = gateway_tests::capture_logs();
    let (gw, server) = bare().await;
    let forged = "2026-01-01T00:00:00.000000Z  INFO grant stored";
    let token = gateway_tests::FakeHttp::start(
        400,
        json!({"error": format!("invalid_grant\n{forged}"), "error_description": format!("bad\r\n{forged}")}),
        Default::default(),
    )
    .await;
    put_target(&gw, "t", &format!("{}/token", token.base), &["S256"]).await;
    // The authorization server's `error` on the callback.
    let p = pending(&gw, "t").await;
    let (cookie, _) = open_link(&server, &p).await;
    let (status, html) = get_page_with(
        &format!(
            "{}/oauth/callback?state={}&iss={AS}&error=server_error%0A{}",
            server.base,
            p.state.to_param(),
            forged.replace(' ', "%20")
        ),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 502, "{html}");
    // Its `error` and `error_description` on the token endpoint.
    let p = pending(&gw, "t").await;
    let (cookie, _) = open_link(&server, &p).await;
    let (status, _) = get_page_with(
        &format!(
            "{}/oauth/callback?code=c&state={}&iss={AS}",
            server.base,
            p.state.to_param()
        ),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(token.hits(), 1);
    let text = logs.text();
    assert!(text.contains("code exchange failed"), "{text}");
    assert!(
        text.contains("authorization server returned an error"),
        "{text}"
    );
    for line in text.lines() {
        assert!(
            !line.starts_with("2026-01-01"),
            "a forged log line: {line:?}\n{text}"
        );
    }
    assert!(
        text.contains("\\n2026-01-01"),
        "escaped, not dropped: {text}"
    );
    // In link mode the consent id is a bearer capability: logged as a digest.
    assert!(!text.contains(&p.id), "{text}");
}

fn statuses(rows: &serde_json::Value) -> Vec<(String, String)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["target"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pair(target: &str, status: &str) -> (String, String) {
    (target.to_owned(), status.to_owned())
}

#[tokio::test]
async fn the_connections_page_shows_and_changes_only_the_signed_in_users_grants() {
    let s = stack_with(json!({}), true).await;
    for name in ["demo", "other"] {
        s.target(name, "gw-basic", TokenEndpointAuthMethod::ClientSecretBasic)
            .await;
    }
    for user in ["alice", "bob"] {
        let (_, link) = s.link(user, "demo").await;
        let seen = browser_consent(&link, &[user], "consent", None).await;
        assert_eq!(
            seen.title.as_deref(),
            Some("Connected to Demo Service"),
            "{seen:?}"
        );
    }
    let page = format!("{}/connections", s.server.base);
    // Alice signs in, disconnects demo, connects other.
    let alice = gateway_tests::connections_browser(
        &page,
        &["alice"],
        json!([{"do": "disconnect", "target": "demo"}, {"do": "connect", "target": "other"}]),
    )
    .await;
    assert_eq!(alice["title"], "Your connections", "{alice}");
    assert_eq!(
        statuses(&alice["rows"]),
        vec![pair("demo", "connected"), pair("other", "not_connected")],
        "{alice}"
    );
    let disconnected = &alice["steps"][0];
    assert_eq!(
        disconnected["notice"], "Disconnected from Demo Service.",
        "{alice}"
    );
    assert_eq!(
        statuses(&disconnected["rows"]),
        vec![
            pair("demo", "not_connected"),
            pair("other", "not_connected")
        ]
    );
    let connected = &alice["steps"][1];
    assert_eq!(connected["reached"], "Connected to Demo Service", "{alice}");
    assert_eq!(
        statuses(&connected["rows"]),
        vec![pair("demo", "not_connected"), pair("other", "connected")]
    );
    // Revoked upstream, deleted here; alice's new grant works as alice.
    assert!(s
        .gw
        .state
        .grants
        .get("alice", "demo", true)
        .await
        .unwrap()
        .is_none());
    assert!(gateway_tests::provider_counts(&s.op).await["revocation"].as_u64() >= Some(1));
    let grant = s.grant("alice", "other").await;
    assert_eq!(
        whoami(&s.mcp.url, grant.tokens.access_token.expose_secret()).await,
        "alice"
    );
    // Bob's grant is untouched, and bob sees only his own.
    let bob_grant = s.grant("bob", "demo").await;
    assert_eq!(bob_grant.version, 1);
    let bob = gateway_tests::connections_browser(&page, &["bob"], json!([])).await;
    assert_eq!(
        statuses(&bob["rows"]),
        vec![pair("demo", "connected"), pair("other", "not_connected")],
        "{bob}"
    );

    // Actions must come from the page: alice's session cookie alone (a
    // cross-site form can make the browser send it) does not do.
    let session = alice["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "gw_session")
        .unwrap_or_else(|| panic!("a session cookie: {alice}"));
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Lax");
    let cookie = format!("gw_session={}", session["value"].as_str().unwrap());
    let http = gateway_tests::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let html = http
        .get(&page)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = html
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a CSRF token in the page")
        .to_owned();
    let post = |form: Vec<(&'static str, String)>,
                cookie: Option<String>,
                origin: Option<&'static str>| {
        let mut req = http
            .post(format!("{}/connections/disconnect", s.server.base))
            .form(&form);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    let target = ("target", "other".to_owned());
    for (what, form, with_cookie, origin) in [
        ("no csrf", vec![target.clone()], true, None),
        (
            "wrong csrf",
            vec![target.clone(), ("csrf", "A".repeat(22))],
            true,
            None,
        ),
        (
            "cross-origin",
            vec![target.clone(), ("csrf", csrf.clone())],
            true,
            Some("https://evil.example"),
        ),
        (
            "no session",
            vec![target.clone(), ("csrf", csrf.clone())],
            false,
            None,
        ),
    ] {
        let res = post(form, with_cookie.then(|| cookie.clone()), origin)
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{what}");
    }
    assert_eq!(s.grant("alice", "other").await.status, GrantStatus::Active);
    // With everything right it works (the browser path above did the same).
    let res = post(vec![target, ("csrf", csrf)], Some(cookie), None)
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(s
        .gw
        .state
        .grants
        .get("alice", "other", true)
        .await
        .unwrap()
        .is_none());
    assert_eq!(s.grant("bob", "demo").await.version, 1);
    // A forged session is no session: the page asks to sign in.
    let res = http
        .get(&page)
        .header(
            "cookie",
            "gw_session=k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert!(res.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with(&format!("{}/auth?", s.op.issuer)));
}

#[tokio::test]
async fn the_connections_page_needs_the_sign_in() {
    let (_gw, server) = bare().await;
    let (status, html) = get_page(&format!("{}/connections", server.base)).await;
    assert_eq!(
        (status, title(&html)),
        (404, "Connections page unavailable")
    );
}

/// Consent pages are observed: opening a link is a `consent.start`, the
/// callback a `consent.completed` or `consent.refused` (with the
/// authorization server's error), each a metric by target and an audit
/// event naming the person and the target; codes and tokens appear in
/// neither.
#[tokio::test]
async fn consent_starts_completions_and_refusals_are_metrics_and_audit_events() {
    use gateway_shared::observe::{AuditSink, LineSink};
    let (listener, base) = GatewayServer::bind().await;
    let gw = Gateway::start(&[
        ("PUBLIC_BASE_URL", &base),
        ("GATEWAY_NAME", "gw-consent"),
        ("METRICS", "on"),
        ("AUDIT", "on"),
    ])
    .await;
    let metrics = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let audit = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let mut state = gw.state.clone();
    state.observe.metrics = LineSink::Memory(metrics.clone());
    state.observe.audit = AuditSink::Lines(LineSink::Memory(audit.clone()));
    let server = GatewayServer::serve(listener, base, state);
    let tokens = gateway_tests::FakeHttp::start(
        200,
        json!({"access_token": "at-secret-value", "token_type": "Bearer", "expires_in": 3600,
               "refresh_token": "rt-secret-value", "scope": "read"}),
        Default::default(),
    )
    .await;
    put_target(&gw, "demo", &format!("{}/token", tokens.base), &["S256"]).await;

    // Alice connects; then she refuses a second consent at the server.
    let p = pending(&gw, "demo").await;
    let (cookie, _) = open_link(&server, &p).await;
    let (status, html) = get_page_with(
        &format!(
            "{}/oauth/callback?code=the-secret-code&state={}&iss={AS}",
            server.base,
            p.state.to_param()
        ),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let p = pending(&gw, "demo").await;
    let (cookie, _) = open_link(&server, &p).await;
    let (status, _) = get_page_with(
        &format!(
            "{}/oauth/callback?error=access_denied&state={}&iss={AS}",
            server.base,
            p.state.to_param()
        ),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 403);
    // A link nobody issued is attributed to no one.
    let (status, _) = get_page(&format!("{}/connect/not-a-link", server.base)).await;
    assert_eq!(status, 410);

    let metrics = metrics.lock().unwrap().clone();
    let names: Vec<(String, String)> = metrics
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let metric = v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"]
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(v[&metric], 1, "{l}");
            assert_eq!(v["Gateway"], "gw-consent");
            assert_eq!(
                v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
                json!([["Gateway"], ["Gateway", "Target"]])
            );
            (metric, v["Target"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let expected: Vec<(String, String)> = [
        "ConsentStarted",
        "ConsentCompleted",
        "ConsentStarted",
        "ConsentRefused",
    ]
    .iter()
    .map(|m| (m.to_string(), "demo".to_string()))
    .collect();
    assert_eq!(names, expected);

    let audit = audit.lock().unwrap().clone();
    let events: Vec<(String, String, String, String)> = audit
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (s("event"), s("outcome"), s("user"), s("target"))
        })
        .collect();
    let e = |event: &str, outcome: &str| {
        (
            event.to_owned(),
            outcome.to_owned(),
            "alice".to_owned(),
            "demo".to_owned(),
        )
    };
    assert_eq!(
        events,
        vec![
            e("consent.start", "ok"),
            e("consent.completed", "ok"),
            e("consent.start", "ok"),
            e("consent.refused", "as_error:access_denied"),
        ]
    );
    for line in metrics.iter().chain(&audit) {
        for secret in ["the-secret-code", "at-secret-value", "rt-secret-value"] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
    }
}
