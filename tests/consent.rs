//! The consent flow end to end with real parts: oidc-provider as the
//! upstream authorization server, headless Chromium as the person, the
//! official Python MCP SDK as the upstream resource server, moto as AWS.

use gateway_shared::domain::{
    GrantStatus, OAuthSettings, PendingAuthorization, Target, TargetAuth, TokenEndpointAuthMethod,
};
use gateway_tests::{
    browser_consent, mcp_call_tool, DemoMcpServer, Gateway, GatewayServer, OidcProvider,
};
use secrecy::ExposeSecret;
use serde_json::json;

const CLIENT_SECRET: &str = "gateway-client-secret-for-tests";

/// Everything a consent needs, wired together.
struct Stack {
    gw: Gateway,
    server: GatewayServer,
    op: OidcProvider,
    mcp: DemoMcpServer,
}

/// Starts the stack. `op_config` extends the provider configuration; the
/// gateway's redirect URI is registered for every client.
async fn stack(op_config: serde_json::Value) -> Stack {
    let (listener, base) = GatewayServer::bind().await;
    let gw = Gateway::start(&[("PUBLIC_BASE_URL", &base)]).await;
    let redirect = format!("{base}/oauth/callback");
    let mut config = json!({
        "clients": [
            {"client_id": "gw-basic", "client_secret": CLIENT_SECRET, "redirect_uris": [redirect], "token_endpoint_auth_method": "client_secret_basic"},
            {"client_id": "gw-post", "client_secret": CLIENT_SECRET, "redirect_uris": [redirect], "token_endpoint_auth_method": "client_secret_post"},
            {"client_id": "gw-public", "redirect_uris": [redirect], "token_endpoint_auth_method": "none"}
        ],
        "resourceScopes": "read write"
    });
    if let (Some(c), Some(extra)) = (config.as_object_mut(), op_config.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    let op = OidcProvider::start(config);
    let mcp = DemoMcpServer::start(&op.issuer, false);
    let server = GatewayServer::serve(listener, base, gw.state.clone());
    Stack {
        gw,
        server,
        op,
        mcp,
    }
}

impl Stack {
    async fn client_secret_arn(&self) -> String {
        self.gw
            .secrets
            .create_secret()
            .name(format!(
                "mcp-oauth-gateway/targets/demo-{}",
                gateway_shared::crypto::random_token(4)
            ))
            .secret_string(CLIENT_SECRET)
            .send()
            .await
            .unwrap()
            .arn
            .unwrap()
    }

    /// Registers the demo MCP server as target `name` with the given client.
    async fn target(&self, name: &str, client_id: &str, method: TokenEndpointAuthMethod) -> Target {
        let secret = match method {
            TokenEndpointAuthMethod::None => None,
            _ => Some(self.client_secret_arn().await),
        };
        let issuer = &self.op.issuer;
        let target = Target {
            name: name.into(),
            display_name: Some("Demo Service".into()),
            mcp_url: self.mcp.url.clone(),
            auth: TargetAuth::OAuth(Box::new(OAuthSettings {
                issuer: Some(issuer.clone()),
                authorization_endpoint: format!("{issuer}/auth"),
                token_endpoint: format!("{issuer}/token"),
                revocation_endpoint: Some(format!("{issuer}/token/revocation")),
                client_id: client_id.into(),
                client_secret_arn: secret,
                token_endpoint_auth_method: method,
                scopes: vec!["read".into()],
                extra_authorize_params: Default::default(),
                send_resource: true,
                authorization_response_iss_parameter_supported: true,
                code_challenge_methods_supported: vec!["S256".into()],
            })),
            tool_prefix: None,
            tool_catalog: vec![],
        };
        self.gw.state.targets.put(&target).await.unwrap();
        target
    }

    /// A consent link for `sub` and `target`, as the proxy would hand out.
    async fn link(&self, sub: &str, target: &str) -> (PendingAuthorization, String) {
        let now = self.gw.state.clock.now();
        let pending = PendingAuthorization::new(
            sub,
            target,
            vec!["read".into()],
            Some(self.mcp.url.clone()),
            Some(self.op.issuer.clone()),
            now,
            600,
        );
        self.gw.state.authorizations.create(&pending).await.unwrap();
        let link = format!("{}/connect/{}", self.server.base, pending.id);
        (pending, link)
    }
}

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
    let answer = mcp_call_tool(&s.mcp.url, &access, "whoami", json!({}))
        .await
        .expect("the MCP server accepts the token");
    assert_eq!(answer["result"]["content"][0]["text"], "alice", "{answer}");
    assert_eq!(
        mcp_call_tool(&s.mcp.url, "not-a-token", "whoami", json!({}))
            .await
            .unwrap_err(),
        401
    );

    // Replaying the callback (same code and state) shows a clear page and changes nothing.
    let replay = reqwest::get(&seen.url).await.unwrap();
    assert_eq!(replay.status(), 410);
    assert!(replay
        .text()
        .await
        .unwrap()
        .contains("This link was already used"));
    let after =
        s.gw.state
            .grants
            .get("alice", "demo", true)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(after.version, 1);
    // Opening the used link again says so too.
    let reopened = reqwest::get(&link).await.unwrap();
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
        let answer = mcp_call_tool(
            &s.mcp.url,
            grant.tokens.access_token.expose_secret(),
            "whoami",
            json!({}),
        )
        .await
        .unwrap();
        assert_eq!(answer["result"]["content"][0]["text"], "carol");
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
