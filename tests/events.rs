//! The sample events in `events/` fed through the functions' handlers the
//! way Lambda does (lambda_http's adapter, API Gateway v2 response shape).

use std::collections::BTreeMap;
use std::time::Duration;

use gateway_shared::domain::{
    GrantStatus, OAuthSettings, PendingAuthorization, Target, TargetAuth, TokenEndpointAuthMethod,
};
use gateway_shared::edge::{callback, proxy};
use gateway_tests::{free_port, workspace_root, Gateway};
use lambda_http::request::LambdaRequest;
use lambda_http::{Context, LambdaEvent, Service};
use serde_json::Value;

const ISSUER: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example";

fn event_text(name: &str) -> String {
    std::fs::read_to_string(workspace_root().join("events").join(name))
        .unwrap_or_else(|e| panic!("events/{name}: {e}"))
}

async fn invoke(router: axum::Router, event_json: &str) -> Value {
    let request: LambdaRequest = serde_json::from_str(event_json).expect("an API Gateway v2 event");
    let mut adapter = lambda_http::Adapter::from(router);
    let response = adapter
        .call(LambdaEvent::new(request, Context::default()))
        .await
        .expect("the handler answers");
    serde_json::to_value(response).expect("a serializable Lambda response")
}

fn header<'a>(res: &'a Value, name: &str) -> Option<&'a str> {
    res["headers"].get(name).and_then(Value::as_str)
}

async fn gateway() -> Gateway {
    // Deployed shape: identity from API Gateway's JWT authorizer, base URL from
    // the request context. Consent binding by link, so that /connect answers
    // without an identity provider (the oidc binding has its own tests).
    Gateway::start(&[
        ("INBOUND_AUTH_MODE", "apigw"),
        ("INBOUND_ISSUER", ISSUER),
        ("INBOUND_SCOPES", "mcp/invoke"),
        ("PUBLIC_BASE_URL", ""),
        ("CONSENT_BINDING", "link"),
    ])
    .await
}

#[tokio::test]
async fn proxy_events() {
    let gw = gateway().await;
    let router = || proxy::router(gw.state.clone());

    let res = invoke(router(), &event_text("apigw-v2-mcp-initialize.json")).await;
    assert_eq!(res["statusCode"], 200, "{res}");
    assert!(header(&res, "content-type")
        .unwrap()
        .starts_with("application/json"));
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], 1);
    assert_eq!(body["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(body["result"]["serverInfo"]["name"], "mcp-oauth-gateway");

    let res = invoke(router(), &event_text("apigw-v2-mcp-tools-list.json")).await;
    assert_eq!(res["statusCode"], 200, "{res}");
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    let tools: Vec<&str> = body["result"]["tools"]
        .as_array()
        .expect("a tool list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(tools.contains(&"gateway___connections"), "{tools:?}");

    let res = invoke(router(), &event_text("apigw-v2-mcp-unauthenticated.json")).await;
    assert_eq!(res["statusCode"], 401, "{res}");
    let challenge = header(&res, "www-authenticate").unwrap();
    assert_eq!(
        challenge,
        "Bearer resource_metadata=\"https://abc123def4.execute-api.us-east-1.amazonaws.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp/invoke\""
    );

    for name in [
        "apigw-v2-protected-resource-metadata.json",
        "apigw-v2-protected-resource-metadata-root.json",
    ] {
        let res = invoke(router(), &event_text(name)).await;
        assert_eq!(res["statusCode"], 200, "{name}: {res}");
        let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
        assert_eq!(
            body["resource"],
            "https://abc123def4.execute-api.us-east-1.amazonaws.com/mcp"
        );
        assert_eq!(body["authorization_servers"][0], ISSUER);
        assert_eq!(body["scopes_supported"][0], "mcp/invoke");
        assert_eq!(body["bearer_methods_supported"][0], "header");
    }
}

fn oauth_target(token_endpoint: &str) -> Target {
    Target {
        name: "example".into(),
        display_name: Some("Example Service".into()),
        mcp_url: "https://mcp.example.com/mcp".into(),
        auth: TargetAuth::OAuth(Box::new(OAuthSettings {
            issuer: Some("https://auth.example.com".into()),
            authorization_endpoint: "https://auth.example.com/authorize".into(),
            token_endpoint: token_endpoint.into(),
            revocation_endpoint: None,
            client_id: "gateway-client".into(),
            client_secret_arn: None,
            token_endpoint_auth_method: TokenEndpointAuthMethod::None,
            scopes: vec!["read".into()],
            extra_authorize_params: BTreeMap::from([(
                "audience".to_string(),
                "https://mcp.example.com".to_string(),
            )]),
            send_resource: true,
            resource: None,
            registered: false,
            flow: Default::default(),
            authorization_response_iss_parameter_supported: true,
            code_challenge_methods_supported: vec!["S256".into()],
            dpop_signing_alg_values_supported: vec![],
            exchange: None,
        })),
        tool_prefix: None,
        return_to: Default::default(),
        tool_catalog: Default::default(),
    }
}

#[tokio::test]
async fn consent_events() {
    let gw = gateway().await;
    let router = || callback::router(gw.state.clone());

    // The sample ids are not in the table: clear pages, nothing stored.
    let res = invoke(router(), &event_text("apigw-v2-connect.json")).await;
    assert_eq!(res["statusCode"], 410, "{res}");
    assert!(header(&res, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(header(&res, "cache-control"), Some("no-store"));
    assert!(res["body"].as_str().unwrap().contains("already been used"));

    for name in [
        "apigw-v2-oauth-callback.json",
        "apigw-v2-oauth-callback-denied.json",
    ] {
        let res = invoke(router(), &event_text(name)).await;
        assert_eq!(res["statusCode"], 410, "{name}: {res}");
        let html = res["body"].as_str().unwrap();
        assert!(
            html.contains("<h1 id=\"title\">This link was already used</h1>"),
            "{html}"
        );
        assert!(
            !html.contains("SplxlOBeZQQYbYS6WxSbIA"),
            "the code must not be echoed"
        );
    }

    // A live pending authorization under the sample's path: a redirect to the
    // authorization server with PKCE, state, resource and the target's extras.
    gw.state
        .targets
        .put(&oauth_target("https://auth.example.com/token"))
        .await
        .unwrap();
    let now = gw.state.clock.now();
    let pending = PendingAuthorization::new(
        "3f1c2b7a-6d2e-4e8f-9a1b-2c3d4e5f6a7b",
        "example",
        vec!["read".into()],
        Some("https://mcp.example.com/mcp".into()),
        Some("https://auth.example.com".into()),
        now,
        600,
    );
    gw.state.authorizations.create(&pending).await.unwrap();
    let event = event_text("apigw-v2-connect.json").replace("q8Yk1pBvM0sT3n9ZcR2wXA", &pending.id);
    let res = invoke(router(), &event).await;
    assert_eq!(res["statusCode"], 302, "{res}");
    let location = url::Url::parse(header(&res, "location").unwrap()).unwrap();
    assert_eq!(
        location.origin().ascii_serialization(),
        "https://auth.example.com"
    );
    assert_eq!(location.path(), "/authorize");
    let q: BTreeMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "gateway-client");
    assert_eq!(
        q["redirect_uri"],
        "https://abc123def4.execute-api.us-east-1.amazonaws.com/oauth/callback"
    );
    assert_eq!(q["state"], pending.state.to_param());
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(q["scope"], "read");
    assert_eq!(q["resource"], "https://mcp.example.com/mcp");
    assert_eq!(q["audience"], "https://mcp.example.com");
    assert!(!location
        .as_str()
        .contains(secrecy::ExposeSecret::expose_secret(&pending.pkce_verifier)));
}

#[tokio::test]
async fn scheduled_event() {
    let gw = gateway().await;
    let event: Value = serde_json::from_str(&event_text("eventbridge-scheduled.json")).unwrap();

    // Nothing due: an empty summary.
    let summary = gw
        .state
        .tokens
        .handle_scheduled_event(&event, Duration::from_secs(60), 4)
        .await
        .unwrap();
    assert_eq!(summary, Default::default());

    // One grant due, its token endpoint down: a transient failure, the grant unchanged.
    let dead_port = free_port();
    gw.state
        .targets
        .put(&oauth_target(&format!(
            "http://127.0.0.1:{dead_port}/token"
        )))
        .await
        .unwrap();
    let now = gw.state.clock.now();
    // An hour-long token with 30 s left.
    let grant =
        gateway_tests::refreshable_grant("alice", "example", "at", "rt", now + 30, now - 3_570);
    gw.state.grants.create(&grant).await.unwrap();
    let summary = gw
        .state
        .tokens
        .handle_scheduled_event(&event, Duration::from_secs(60), 4)
        .await
        .unwrap();
    assert_eq!(summary.due, 1);
    assert_eq!(summary.transient_failure, 1);
    let after = gw
        .state
        .grants
        .get("alice", "example", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.version, 1);
    assert_eq!(after.status, GrantStatus::Active);
    assert!(
        after.lease.is_none(),
        "the lease is released after a failure"
    );
}

/// API Gateway flattens a token's group list to one string, "[a b]". A
/// group whose own name holds a comma ("viewers,admins", which Cognito
/// allows) must not make its members `admins` to the policies: the list is
/// split at spaces only.
#[tokio::test]
async fn a_comma_in_a_group_name_does_not_make_a_member_of_another_group() {
    let gw = gateway().await;
    let mut target = gateway_tests::open_target("ops", "http://127.0.0.1:9/mcp");
    target.tool_catalog =
        vec![serde_json::json!({"name": "restart", "inputSchema": {"type": "object"}})].into();
    gw.state.targets.put(&target).await.unwrap();
    gw.state
        .policies
        .store(Some(
            r#"permit(principal in Gateway::Group::"admins", action, resource in Gateway::Target::"ops");"#,
        ))
        .await
        .unwrap();
    let listed = |groups: &str| {
        let mut event: Value =
            serde_json::from_str(&event_text("apigw-v2-mcp-tools-list.json")).unwrap();
        event["requestContext"]["authorizer"]["jwt"]["claims"]["cognito:groups"] =
            Value::String(groups.to_owned());
        let router = proxy::router(gw.state.clone());
        async move {
            let res = invoke(router, &event.to_string()).await;
            let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
            body["result"]["tools"]
                .as_array()
                .unwrap_or_else(|| panic!("{body}"))
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };
    assert!(listed("[viewers admins]")
        .await
        .contains(&"restart".to_owned()));
    assert!(!listed("[viewers,admins]")
        .await
        .contains(&"restart".to_owned()));
}
