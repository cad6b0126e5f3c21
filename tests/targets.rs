//! Registering targets: discovery against served metadata, Dynamic Client
//! Registration at oidc-provider, Client ID Metadata Documents, and the
//! refusals of discovery.

use axum::routing::{get, post};
use axum::Json;
use gateway_shared::adapters::discovery::{self, DiscoveryError, FetchPolicy, Fetcher};
use gateway_shared::domain::{TargetAuth, TokenEndpointAuthMethod};
use gateway_shared::targets::{self, ClientChoice, NewTarget};
use gateway_tests::{browser_consent, whoami, DemoMcpServer, Gateway, GatewayServer, OidcProvider};
use secrecy::ExposeSecret;
use serde_json::json;

fn new_target(name: &str, mcp_url: &str) -> NewTarget {
    NewTarget {
        name: name.into(),
        mcp_url: mcp_url.into(),
        send_resource: true,
        secret_name_prefix: "mcp-oauth-gateway/targets/".into(),
        ..NewTarget::default()
    }
}

#[tokio::test]
async fn discovery_follows_the_challenge_to_the_authorization_server() {
    let op = OidcProvider::start(json!({"clients": []}));
    let mcp = DemoMcpServer::start(&op.issuer, false);
    let http = gateway_shared::state::http_client();
    let found = discovery::discover(&Fetcher::new(&http, FetchPolicy::local()), &mcp.url)
        .await
        .unwrap();
    assert_eq!(
        found.resource_metadata_url.as_deref(),
        Some(
            mcp.url
                .replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
                .as_str()
        ),
        "taken from the 401 challenge"
    );
    assert_eq!(found.resource.as_ref().unwrap().resource, mcp.url);
    // RFC 8414 first.
    assert_eq!(
        found.authorization_server_metadata_url,
        Some(format!(
            "{}/.well-known/oauth-authorization-server",
            op.issuer
        ))
    );
    assert_eq!(found.authorization_server.issuer, op.issuer);
    assert_eq!(
        found.authorization_server.token_endpoint,
        format!("{}/token", op.issuer)
    );
    assert!(
        found
            .authorization_server
            .authorization_response_iss_parameter_supported
    );
    assert_eq!(
        found.scopes,
        vec!["read", "offline_access"],
        "the resource's scopes_supported, and offline_access, which the server advertises"
    );

    // Deployed policy: no plain http, no loopback.
    let strict = discovery::discover(&Fetcher::new(&http, FetchPolicy::default()), &mcp.url).await;
    assert!(
        matches!(strict, Err(DiscoveryError::Refused { .. })),
        "{strict:?}"
    );
    let https_loopback = discovery::discover(
        &Fetcher::new(
            &http,
            FetchPolicy {
                allow_http: true,
                allow_private: false,
            },
        ),
        &mcp.url,
    )
    .await;
    match https_loopback {
        Err(DiscoveryError::Refused { reason, .. }) => {
            assert!(reason.contains("loopback"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn dynamic_client_registration_then_a_real_consent() {
    let (listener, base) = GatewayServer::bind().await;
    let op = OidcProvider::start(json!({"clients": [], "registration": true}));
    let mcp = DemoMcpServer::start(&op.issuer, false);
    let gw = Gateway::start(&[("PUBLIC_BASE_URL", &base)]).await;
    let server = GatewayServer::serve(listener, base.clone(), gw.state.clone());
    let base_url = url::Url::parse(&base).unwrap();

    let mut new = new_target("demo", &mcp.url);
    new.display_name = Some("Demo".into());
    let added = targets::add_target(&gw.state, &base_url, FetchPolicy::local(), new)
        .await
        .unwrap();
    assert_eq!(added.client_source, "dynamic client registration");
    let TargetAuth::OAuth(settings) = &added.target.auth else {
        panic!("an OAuth target")
    };
    assert!(!settings.client_id.is_empty());
    assert_eq!(
        settings.token_endpoint_auth_method,
        TokenEndpointAuthMethod::ClientSecretBasic
    );
    // The registered secret went to Secrets Manager, not into the table.
    let arn = settings.client_secret_arn.clone().expect("a secret ARN");
    let secret = gw
        .secrets
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .unwrap();
    let secret = secret.secret_string().unwrap().to_owned();
    let raw = format!("{:?}", gw.raw_item("TARGETS", "TARGET#demo").await.unwrap());
    assert!(!raw.contains(&secret));
    assert_eq!(
        gw.state.targets.get("demo").await.unwrap().unwrap(),
        added.target
    );

    // The registered client completes a consent in a browser.
    let link = targets::consent_link(&gw.state, &base_url, "dora", "demo")
        .await
        .unwrap();
    assert!(link.starts_with(&format!("{}/connect/", server.base)));
    let seen = browser_consent(&link, &["dora"], "consent", None).await;
    assert_eq!(seen.title.as_deref(), Some("Connected to Demo"), "{seen:?}");
    let grant = gw
        .state
        .grants
        .get("dora", "demo", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        whoami(&mcp.url, grant.tokens.access_token.expose_secret()).await,
        "dora"
    );
}

#[tokio::test]
async fn given_credentials_win_over_registration() {
    let op = OidcProvider::start(json!({"clients": [], "registration": true}));
    let mcp = DemoMcpServer::start(&op.issuer, false);
    let gw = Gateway::start(&[]).await;
    let mut new = new_target("given", &mcp.url);
    new.client = ClientChoice {
        client_id: Some("operator-client".into()),
        client_secret_arn: Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:x".into()),
        auth_method: Some(TokenEndpointAuthMethod::ClientSecretPost),
        ..Default::default()
    };
    new.scopes = Some(vec!["read".into(), "write".into()]);
    new.extra_authorize_params
        .insert("access_type".into(), "offline".into());
    let base = url::Url::parse("https://gateway.example.test").unwrap();
    let added = targets::add_target(&gw.state, &base, FetchPolicy::local(), new)
        .await
        .unwrap();
    assert_eq!(added.client_source, "given");
    let TargetAuth::OAuth(s) = &added.target.auth else {
        panic!()
    };
    assert_eq!(s.client_id, "operator-client");
    assert_eq!(
        s.client_secret_arn.as_deref(),
        Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:x")
    );
    assert_eq!(
        s.token_endpoint_auth_method,
        TokenEndpointAuthMethod::ClientSecretPost
    );
    assert_eq!(s.scopes, vec!["read", "write"]);
    assert_eq!(s.extra_authorize_params["access_type"], "offline");
    assert_eq!(s.issuer.as_deref(), Some(op.issuer.as_str()));
}

#[tokio::test]
async fn client_id_metadata_documents_are_preferred_when_supported() {
    let op = OidcProvider::start(json!({"clients": [], "registration": true, "cimd": true}));
    let mcp = DemoMcpServer::start(&op.issuer, false);
    let gw = Gateway::start(&[("PUBLIC_BASE_URL", "https://gateway.example.test")]).await;
    let base = url::Url::parse("https://gateway.example.test").unwrap();
    let added = targets::add_target(
        &gw.state,
        &base,
        FetchPolicy::local(),
        new_target("cimd", &mcp.url),
    )
    .await
    .unwrap();
    assert_eq!(added.client_source, "client ID metadata document");
    let TargetAuth::OAuth(s) = &added.target.auth else {
        panic!()
    };
    assert_eq!(
        s.client_id,
        "https://gateway.example.test/oauth/client-metadata.json"
    );
    assert_eq!(s.token_endpoint_auth_method, TokenEndpointAuthMethod::None);
    assert!(s.client_secret_arn.is_none());

    // The gateway serves that document at that URL.
    let (listener, local) = GatewayServer::bind().await;
    let _server = GatewayServer::serve(listener, local.clone(), gw.state.clone());
    let doc: serde_json::Value = gateway_tests::get(format!("{local}/oauth/client-metadata.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["client_id"], s.client_id);
    assert_eq!(
        doc["redirect_uris"][0],
        "https://gateway.example.test/oauth/callback"
    );
    assert_eq!(doc["token_endpoint_auth_method"], "none");

    // At an operator-chosen path: that URL is the client_id, and the
    // document is served there as well as at the default path, each naming
    // its own URL.
    let gw = Gateway::start(&[
        ("PUBLIC_BASE_URL", "https://gateway.example.test"),
        ("CLIENT_METADATA_PATH", "/oauth/client.json"),
    ])
    .await;
    let added = targets::add_target(
        &gw.state,
        &base,
        FetchPolicy::local(),
        new_target("cimd2", &mcp.url),
    )
    .await
    .unwrap();
    let TargetAuth::OAuth(s) = &added.target.auth else {
        panic!()
    };
    assert_eq!(
        s.client_id,
        "https://gateway.example.test/oauth/client.json"
    );
    let (listener, local) = GatewayServer::bind().await;
    let _server = GatewayServer::serve(listener, local.clone(), gw.state.clone());
    for (path, client_id) in [
        (
            "/oauth/client.json",
            "https://gateway.example.test/oauth/client.json",
        ),
        (
            "/oauth/client-metadata.json",
            "https://gateway.example.test/oauth/client-metadata.json",
        ),
    ] {
        let doc: serde_json::Value = gateway_tests::get(format!("{local}{path}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["client_id"], client_id, "{path}");
    }
}

/// Serves hand-written metadata on 127.0.0.1.
async fn metadata_server(
    s256: bool,
    with_registration: bool,
) -> (tokio::task::JoinHandle<()>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let b = base.clone();
    let mut asm = json!({
        "issuer": format!("{b}/tenant"),
        "authorization_endpoint": format!("{b}/tenant/authorize"),
        "token_endpoint": format!("{b}/tenant/token"),
    });
    if s256 {
        asm["code_challenge_methods_supported"] = json!(["S256"]);
    }
    if with_registration {
        asm["registration_endpoint"] = json!(format!("{b}/tenant/register"));
    }
    let prm = json!({"resource": format!("{b}/mcp"), "authorization_servers": [format!("{b}/tenant")], "scopes_supported": ["x"]});
    let app = axum::Router::new()
        // No challenge on the MCP URL: the well-known path form is found instead.
        .route("/mcp", post(|| async { axum::http::StatusCode::METHOD_NOT_ALLOWED }))
        .route("/.well-known/oauth-protected-resource/mcp", get(move || async move { Json(prm) }))
        // Without S256: the RFC 8414 path-aware form; with: only the last
        // form in the spec's order (`<issuer>/.well-known/openid-configuration`).
        .route(
            if s256 { "/tenant/.well-known/openid-configuration" } else { "/.well-known/oauth-authorization-server/tenant" },
            get(move || async move { Json(asm) }),
        )
        .route(
            "/tenant/register",
            post(|| async { (axum::http::StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_client_metadata", "error_description": "redirect_uri not allowed"}))) }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (task, base)
}

#[tokio::test]
async fn discovery_refusals_are_clear() {
    let http = gateway_shared::state::http_client();
    let fetcher = Fetcher::new(&http, FetchPolicy::local());

    // Path-aware RFC 8414 found; no S256: refused.
    let (task, base) = metadata_server(false, false).await;
    match discovery::discover(&fetcher, &format!("{base}/mcp")).await {
        Err(DiscoveryError::Invalid { reason, url, .. }) => {
            assert!(reason.contains("S256"), "{reason}");
            assert!(
                url.ends_with("/.well-known/oauth-authorization-server/tenant"),
                "{url}"
            );
        }
        other => panic!("{other:?}"),
    }
    task.abort();

    // With S256 it is found, by the path forms, in the spec's order.
    let (task, base) = metadata_server(true, true).await;
    let found = discovery::discover(&fetcher, &format!("{base}/mcp"))
        .await
        .unwrap();
    assert!(found
        .resource_metadata_url
        .as_deref()
        .unwrap()
        .ends_with("/.well-known/oauth-protected-resource/mcp"));
    assert_eq!(
        found.authorization_server_metadata_url,
        Some(format!("{base}/tenant/.well-known/openid-configuration"))
    );
    assert_eq!(found.scopes, vec!["x"]);
    // A refused registration says why, and stores no target.
    let gw = Gateway::start(&[]).await;
    let err = targets::add_target(
        &gw.state,
        &url::Url::parse("https://gateway.example.test").unwrap(),
        FetchPolicy::local(),
        new_target("reg", &format!("{base}/mcp")),
    )
    .await
    .unwrap_err();
    assert!(err.contains("invalid_client_metadata"), "{err}");
    assert!(gw.state.targets.get("reg").await.unwrap().is_none());
    task.abort();

    // Without registration or CIMD: the error says what to do.
    let (task, base) = metadata_server(true, false).await;
    let err = targets::add_target(
        &gw.state,
        &url::Url::parse("https://gateway.example.test").unwrap(),
        FetchPolicy::local(),
        new_target("noreg", &format!("{base}/mcp")),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("--client-id") && err.contains("https://gateway.example.test/oauth/callback"),
        "{err}"
    );
    task.abort();

    // Nothing served: every place tried is named.
    let empty = gateway_tests::FakeHttp::start(404, json!({}), Default::default()).await;
    match discovery::discover(&fetcher, &format!("{}/v1/mcp", empty.base)).await {
        Err(DiscoveryError::NotFound { tried, .. }) => {
            assert!(
                tried.contains("/.well-known/oauth-protected-resource/v1/mcp"),
                "{tried}"
            );
            assert!(
                tried.contains("/.well-known/oauth-protected-resource,")
                    || tried.ends_with("/.well-known/oauth-protected-resource"),
                "{tried}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Token responses of the providers teams meet first, each imitated by a
/// token endpoint that answers the way the provider does, read through the
/// gateway's own code exchange and refresh.
#[tokio::test]
async fn token_responses_of_real_providers_are_understood() {
    use gateway_shared::adapters::oauth::{OAuthError, TokenEndpoint};
    use gateway_shared::domain::TargetAuth;
    let http = gateway_shared::state::http_client();
    let verifier = secrecy::SecretString::from("v".repeat(43));
    let now = 1_000_000;
    let exchange = |endpoint: String| {
        let http = http.clone();
        let verifier = verifier.clone();
        async move {
            let target = gateway_tests::stack_target_for_fake(&endpoint);
            let TargetAuth::OAuth(settings) = &target.auth else {
                unreachable!()
            };
            TokenEndpoint {
                http: &http,
                settings,
                secret: None,
                dpop: None,
            }
            .exchange_code(
                "https://gw.example/oauth/callback",
                "c",
                &verifier,
                None,
                now,
            )
            .await
        }
    };
    let scopes =
        |t: &gateway_shared::adapters::oauth::IssuedTokens| t.scopes.clone().unwrap_or_default();

    // GitHub: form-encoded unless asked for JSON; comma-separated scopes.
    let github = github_like_token_endpoint().await;
    let t = exchange(github.clone())
        .await
        .expect("GitHub's answer, asked for JSON");
    assert_eq!(
        t.tokens.access_token.expose_secret(),
        "gho_16C7e42F292c6912E7710c838347Ae178B4a"
    );
    assert_eq!(scopes(&t), ["repo", "read:user"]);
    assert_eq!(t.expires_at, None, "classic GitHub tokens do not expire");
    // GitHub: a refused code is a 200 with an `error`: a refusal, not an outage.
    let refused = gateway_tests::FakeHttp::start(
        200,
        json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}),
        Default::default(),
    )
    .await;
    match exchange(format!("{}/token", refused.base)).await {
        Err(OAuthError::Rejected { error, .. }) => assert_eq!(error, "bad_verification_code"),
        other => panic!("{other:?}"),
    }
    // GitHub apps: expiring user tokens with a refresh token.
    let expiring = gateway_tests::FakeHttp::start(
        200,
        json!({"access_token": "ghu_x", "expires_in": 28800, "refresh_token": "ghr_x", "refresh_token_expires_in": 15811200, "scope": "", "token_type": "bearer"}),
        Default::default(),
    )
    .await;
    let t = exchange(format!("{}/token", expiring.base)).await.unwrap();
    assert_eq!(t.expires_at, Some(now + 28_800));
    assert_eq!(
        t.tokens.refresh_token.as_ref().unwrap().expose_secret(),
        "ghr_x"
    );

    // Salesforce: no expires_in (nor token_type here), an instance_url.
    let salesforce = gateway_tests::FakeHttp::start(
        200,
        json!({"access_token": "00D!x", "refresh_token": "5Aep", "instance_url": "https://x.my.salesforce.com", "id": "https://login.salesforce.com/id/00D/005", "issued_at": "1700000000000", "signature": "s"}),
        Default::default(),
    )
    .await;
    let t = exchange(format!("{}/token", salesforce.base))
        .await
        .unwrap();
    assert_eq!(
        (t.expires_at, t.tokens.token_type.as_str()),
        (None, "Bearer")
    );

    // Slack v2: the user's token under authed_user, a bot token or none on top.
    let slack = gateway_tests::FakeHttp::start(
        200,
        json!({"ok": true, "app_id": "A1", "authed_user": {"id": "U1", "scope": "chat:write,channels:read", "access_token": "xoxp-1", "token_type": "user", "refresh_token": "xoxe-1-r", "expires_in": 43200}, "team": {"id": "T1"}}),
        Default::default(),
    )
    .await;
    let t = exchange(format!("{}/token", slack.base)).await.unwrap();
    assert_eq!(t.tokens.access_token.expose_secret(), "xoxp-1");
    assert_eq!(
        t.tokens.refresh_token.as_ref().unwrap().expose_secret(),
        "xoxe-1-r"
    );
    assert_eq!(t.expires_at, Some(now + 43_200));
    assert_eq!(scopes(&t), ["chat:write", "channels:read"]);

    // expires_in as a string; no token_type.
    let stringly = gateway_tests::FakeHttp::start(
        200,
        json!({"access_token": "a", "expires_in": "3599"}),
        Default::default(),
    )
    .await;
    let t = exchange(format!("{}/token", stringly.base)).await.unwrap();
    assert_eq!(t.expires_at, Some(now + 3_599));

    // Google (no rotation): a refresh answer without refresh_token keeps
    // the one the gateway has.
    let google = gateway_tests::FakeHttp::start(
        200,
        json!({"access_token": "ya29.new", "expires_in": 3599, "scope": "openid https://www.googleapis.com/auth/drive.readonly", "token_type": "Bearer"}),
        Default::default(),
    )
    .await;
    let endpoint = format!("{}/token", google.base);
    let target = gateway_tests::stack_target_for_fake(&endpoint);
    let TargetAuth::OAuth(settings) = &target.auth else {
        unreachable!()
    };
    let old = secrecy::SecretString::from("1//old-refresh".to_owned());
    let t = TokenEndpoint {
        http: &http,
        settings,
        secret: None,
        dpop: None,
    }
    .refresh(&endpoint, &old, &[], None, now)
    .await
    .unwrap();
    assert_eq!(t.tokens.access_token.expose_secret(), "ya29.new");
    assert_eq!(
        t.tokens.refresh_token.as_ref().unwrap().expose_secret(),
        "1//old-refresh"
    );
}

/// A token endpoint that answers like GitHub's: form-encoded unless the
/// request accepts JSON.
async fn github_like_token_endpoint() -> String {
    let app = axum::Router::new().route(
        "/login/oauth/access_token",
        post(|headers: axum::http::HeaderMap| async move {
            use axum::response::IntoResponse;
            let wants_json = headers
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/json"));
            if wants_json {
                Json(json!({"access_token": "gho_16C7e42F292c6912E7710c838347Ae178B4a", "scope": "repo,read:user", "token_type": "bearer"})).into_response()
            } else {
                (
                    [("content-type", "application/x-www-form-urlencoded")],
                    "access_token=gho_16C7e42F292c6912E7710c838347Ae178B4a&scope=repo%2Cread%3Auser&token_type=bearer",
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("{base}/login/oauth/access_token")
}

/// An upstream whose metadata now names another authorization server: a
/// target whose client the gateway registered follows it (a new client
/// there, its secret under a new name), once a minute at most; a client
/// the operator gave stays where it is.
#[tokio::test]
async fn an_upstream_that_moves_is_followed_only_for_clients_the_gateway_registered() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let registrations = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let as2 = format!("{base}/as2");
    let mcp_url = format!("{base}/mcp");
    let (b, a, m, count) = (
        base.clone(),
        as2.clone(),
        mcp_url.clone(),
        registrations.clone(),
    );
    let app = axum::Router::new()
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(move || async move { Json(json!({"resource": m, "authorization_servers": [a]})) }),
        )
        .route(
            "/.well-known/oauth-authorization-server/as2",
            get(move || async move {
                Json(json!({"issuer": format!("{b}/as2"), "authorization_endpoint": format!("{b}/as2/authorize"),
                    "token_endpoint": format!("{b}/as2/token"), "registration_endpoint": format!("{b}/as2/register"),
                    "code_challenge_methods_supported": ["S256"]}))
            }),
        )
        .route(
            "/as2/register",
            post(move || async move {
                count.fetch_add(1, Ordering::SeqCst);
                (axum::http::StatusCode::CREATED, Json(json!({"client_id": "as2-client", "client_secret": "as2-secret",
                    "token_endpoint_auth_method": "client_secret_basic"})))
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let gw = Gateway::start(&[]).await;
    let gateway = url::Url::parse("https://gateway.example.test").unwrap();
    let target = |name: &str, registered: bool| {
        let mut t = gateway_tests::stack_target_for_fake("https://as1.example.test/token");
        t.name = name.into();
        t.mcp_url = mcp_url.clone();
        if let TargetAuth::OAuth(o) = &mut t.auth {
            o.issuer = Some("https://as1.example.test".into());
            o.registered = registered;
            o.scopes = vec!["files".into()];
        }
        t
    };
    let given = target("given", false);
    let registered = target("registered", true);
    for t in [&given, &registered] {
        gw.state.targets.put(t).await.unwrap();
    }

    let stay = targets::follow_authorization_server(&gw.state, &gateway, &given, None)
        .await
        .unwrap();
    assert!(matches!(stay, targets::Migration::Unchanged), "{stay:?}");
    assert_eq!(registrations.load(Ordering::SeqCst), 0);

    let moved = targets::follow_authorization_server(&gw.state, &gateway, &registered, None)
        .await
        .unwrap();
    match &moved {
        targets::Migration::Moved { from, to } => {
            assert_eq!(
                (from.as_str(), to.as_str()),
                ("https://as1.example.test", as2.as_str())
            )
        }
        other => panic!("{other:?}"),
    }
    let stored = gw
        .state
        .targets
        .get_fresh("registered")
        .await
        .unwrap()
        .unwrap();
    let TargetAuth::OAuth(s) = &stored.auth else {
        panic!()
    };
    assert_eq!(
        (s.issuer.as_deref(), s.client_id.as_str(), s.registered),
        (Some(as2.as_str()), "as2-client", true)
    );
    assert_eq!(s.scopes, ["files"], "the operator's scopes are kept");
    assert_eq!(s.token_endpoint, format!("{base}/as2/token"));
    let arn = s
        .client_secret_arn
        .clone()
        .expect("the new client's secret");
    assert!(
        arn.contains("mcp-oauth-gateway/targets/registered/"),
        "a secret name of its own: {arn}"
    );
    let secret = gw.state.secrets.secret(&arn).await.unwrap();
    assert_eq!(secret.expose_secret(), "as2-secret");

    // Refused again right away (from a stale copy): no second registration.
    let again = targets::follow_authorization_server(&gw.state, &gateway, &registered, None)
        .await
        .unwrap();
    assert!(matches!(again, targets::Migration::Unchanged), "{again:?}");
    assert_eq!(registrations.load(Ordering::SeqCst), 1);
    // The given target is as it was.
    let kept = gw.state.targets.get_fresh("given").await.unwrap().unwrap();
    assert_eq!(kept, given);
}

/// A token-exchange target against oidc-provider with an RFC 8693 grant:
/// each caller's own bearer token (verified by the gateway, then by the
/// authorization server) becomes an access token of the same user for the
/// upstream, with no consent; it is cached until it expires; a server that
/// asks for the person's interaction has its page handed to the agent like
/// a consent link; a caller's token the server refuses gets a clear error.
#[tokio::test]
async fn token_exchange_turns_each_callers_token_into_their_own_upstream_token() {
    use gateway_tests::{idp, provider_counts, sign, unix_now, RawClient};
    const AUD: &str = "https://gateway.example.test/mcp";
    const INTERACTION: &str = "https://consent.example.test/approve?client=gw-exchange";
    let inbound = idp(&["test-key-1"]).await;
    let op = OidcProvider::start(json!({
        "clients": [{
            "client_id": "gw-exchange", "client_secret": gateway_tests::CLIENT_SECRET,
            "grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange"],
            "response_types": [], "redirect_uris": [],
        }],
        "tokenExchange": {
            "subjectIssuer": inbound.issuer,
            "subjectJwks": format!("{}/jwks", inbound.issuer),
            "interactionSubjects": ["carol"],
            "refusedSubjects": ["dave"],
            "interactionUri": INTERACTION,
        },
    }));
    let mcp = DemoMcpServer::start(&op.issuer, false);
    let (listener, base) = GatewayServer::bind().await;
    let gw = Gateway::start(&[
        ("PUBLIC_BASE_URL", &base),
        ("INBOUND_AUTH_MODE", "jwt"),
        ("INBOUND_ISSUER", &inbound.issuer),
        ("INBOUND_AUDIENCES", AUD),
        ("CONSENT_BINDING", "link"),
    ])
    .await;
    let server = GatewayServer::serve(listener, base.clone(), gw.state.clone());

    let mut new = new_target("demo", &mcp.url);
    new.client = ClientChoice {
        client_id: Some("gw-exchange".into()),
        client_secret: Some(gateway_tests::CLIENT_SECRET.to_owned().into()),
        ..Default::default()
    };
    new.scopes = Some(vec!["read".into()]);
    new.exchange = Some(targets::NewExchange {
        subject_token_type: gateway_shared::domain::ACCESS_TOKEN_TYPE.into(),
        audience: Some("demo-api".into()),
        identity_provider: None,
    });
    let base_url = url::Url::parse(&base).unwrap();
    let added = targets::add_target(&gw.state, &base_url, FetchPolicy::local(), new)
        .await
        .unwrap();
    let TargetAuth::OAuth(settings) = &added.target.auth else {
        panic!("an OAuth target")
    };
    assert_eq!(
        settings.flow,
        gateway_shared::domain::OAuthFlow::TokenExchange
    );

    let token_of = |sub: &str| {
        sign(
            "test-key-1",
            json!({"iss": inbound.issuer, "sub": sub, "aud": AUD, "exp": unix_now() + 300}),
        )
    };
    let client_of = |token: &str| {
        RawClient::new(
            &format!("{}/mcp", server.base),
            &[("authorization", &format!("Bearer {token}"))],
        )
    };
    let exchanges = |counts: serde_json::Value| {
        counts["urn:ietf:params:oauth:grant-type:token-exchange"]
            .as_u64()
            .unwrap_or(0)
    };

    // Alice and Bob: their own upstream identities, no consent.
    for (n, sub) in ["alice", "bob"].into_iter().enumerate() {
        let mut c = client_of(&token_of(sub));
        c.initialize("2025-11-25", json!({"elicitation": {"url": {}}}))
            .await;
        let listed = c.request("tools/list", json!({})).await;
        let names: Vec<&str> = listed.body["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert!(names.contains(&"whoami"), "{names:?}");
        assert!(!names.contains(&"demo___connect"), "{names:?}");
        let called = c
            .request("tools/call", json!({"name": "whoami", "arguments": {}}))
            .await;
        assert_eq!(
            gateway_tests::tool_text(&called.body["result"]),
            sub,
            "{:?}",
            called.body
        );
        // One exchange per user: the listing's token served the call.
        assert_eq!(exchanges(provider_counts(&op).await), n as u64 + 1);
    }
    let last = gateway_tests::http()
        .get(format!("{}/test/last-exchange", op.issuer))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(last["audience"], "demo-api");
    assert_eq!(last["resource"], mcp.url.as_str());
    assert_eq!(last["scope"], "read");
    assert_eq!(
        last["requested_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    // Cached per user, sealed like any grant, without a refresh token.
    let grant = gw
        .state
        .grants
        .get("alice", "demo", true)
        .await
        .unwrap()
        .unwrap();
    assert!(grant.tokens.refresh_token.is_none());
    assert!(grant.expires_at.unwrap() > unix_now());

    // Carol's server wants her approval first: its page, as a URL elicitation.
    let mut carol = client_of(&token_of("carol"));
    carol
        .initialize("2025-11-25", json!({"elicitation": {"url": {}}}))
        .await;
    let asked = carol
        .request("tools/call", json!({"name": "whoami", "arguments": {}}))
        .await;
    assert_eq!(asked.body["error"]["code"], -32042, "{:?}", asked.body);
    assert_eq!(
        asked.body["error"]["data"]["elicitations"][0]["url"],
        INTERACTION
    );
    assert!(gw
        .state
        .grants
        .get("carol", "demo", true)
        .await
        .unwrap()
        .is_none());

    // A token the gateway accepts but the authorization server refuses to
    // exchange: a clear error, nothing cached.
    let mut dave = client_of(&token_of("dave"));
    dave.initialize("2025-11-25", json!({})).await;
    let refused = dave
        .request("tools/call", json!({"name": "whoami", "arguments": {}}))
        .await;
    let text = gateway_tests::tool_text(&refused.body["result"]);
    assert_eq!(
        refused.body["result"]["isError"], true,
        "{:?}",
        refused.body
    );
    assert!(text.contains("refused to exchange your token"), "{text}");
    assert!(gw
        .state
        .grants
        .get("dave", "demo", true)
        .await
        .unwrap()
        .is_none());
}
