//! A whole stack (moto, oidc-provider, demo MCP server, gateway) and the network switch between them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;

use crate::*;

/// The secret of the confidential test clients.
pub const CLIENT_SECRET: &str = "gateway-client-secret-for-tests";

/// A target that needs no authentication, with no known catalog.
pub fn open_target(name: &str, mcp_url: impl Into<String>) -> gateway_shared::domain::Target {
    gateway_shared::domain::Target {
        name: name.into(),
        display_name: None,
        mcp_url: mcp_url.into(),
        auth: gateway_shared::domain::TargetAuth::None,
        tool_prefix: None,
        return_to: Default::default(),
        tool_catalog: Default::default(),
    }
}

/// Everything a consent needs, wired together: moto, the gateway on a
/// listener, oidc-provider, the demo MCP server.
pub struct Stack {
    /// Gateway state on moto.
    pub gw: Gateway,
    /// The gateway's listener.
    pub server: GatewayServer,
    /// The authorization server (and identity provider).
    pub op: OidcProvider,
    /// The demo MCP server.
    pub mcp: DemoMcpServer,
}

/// Starts the stack. `op_config` extends the provider configuration; the
/// gateway's redirect URI is registered for every client. With `binding`,
/// `/connect` asks the person to sign in at the same provider (client
/// `gw-login`) and compares users.
pub async fn stack_with(op_config: serde_json::Value, binding: bool) -> Stack {
    let (listener, base) = GatewayServer::bind().await;
    let redirect = format!("{base}/oauth/callback");
    let mut config = serde_json::json!({
        "clients": [
            {"client_id": "gw-login", "redirect_uris": [format!("{base}/connect/verify")], "token_endpoint_auth_method": "none"},
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
    let mut vars = vec![("PUBLIC_BASE_URL", base.clone())];
    if binding {
        vars.push(("CONSENT_BINDING", "oidc".into()));
        vars.push(("CONSENT_LOGIN_ISSUER", op.issuer.clone()));
        vars.push(("CONSENT_LOGIN_CLIENT_ID", "gw-login".into()));
    }
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gw = Gateway::start(&vars).await;
    let mcp = DemoMcpServer::start(&op.issuer, false);
    let server = GatewayServer::serve(listener, base, gw.state.clone());
    Stack {
        gw,
        server,
        op,
        mcp,
    }
}

/// [`stack_with`] without session binding.
pub async fn stack(op_config: serde_json::Value) -> Stack {
    stack_with(op_config, false).await
}

impl Stack {
    /// The stored grant of `sub` for `target` (read consistently); it must exist.
    pub async fn grant(&self, sub: &str, target: &str) -> gateway_shared::domain::Grant {
        self.gw
            .state
            .grants
            .get(sub, target, true)
            .await
            .expect("read the grant")
            .unwrap_or_else(|| panic!("no grant for {sub}/{target}"))
    }

    /// Stores the test clients' secret in Secrets Manager.
    pub async fn client_secret_arn(&self) -> String {
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
    pub async fn target(
        &self,
        name: &str,
        client_id: &str,
        method: gateway_shared::domain::TokenEndpointAuthMethod,
    ) -> gateway_shared::domain::Target {
        let url = self.mcp.url.clone();
        self.target_at(name, &url, client_id, method).await
    }

    /// Registers the MCP server at `url` as target `name` with the given client.
    pub async fn target_at(
        &self,
        name: &str,
        url: &str,
        client_id: &str,
        method: gateway_shared::domain::TokenEndpointAuthMethod,
    ) -> gateway_shared::domain::Target {
        let secret = match method {
            gateway_shared::domain::TokenEndpointAuthMethod::None => None,
            _ => Some(self.client_secret_arn().await),
        };
        let issuer = &self.op.issuer;
        let target = gateway_shared::domain::Target {
            name: name.into(),
            display_name: Some("Demo Service".into()),
            mcp_url: url.to_owned(),
            auth: gateway_shared::domain::TargetAuth::OAuth(Box::new(
                gateway_shared::domain::OAuthSettings {
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
                    resource: None,
                    registered: false,
                    flow: Default::default(),
                    authorization_response_iss_parameter_supported: true,
                    code_challenge_methods_supported: vec!["S256".into()],
                    dpop_signing_alg_values_supported: vec![],
                    exchange: None,
                },
            )),
            tool_prefix: None,
            return_to: Default::default(),
            tool_catalog: Default::default(),
        };
        self.gw.state.targets.put(&target).await.unwrap();
        target
    }

    /// A consent link for `sub` and `target`, as the proxy would hand out.
    pub async fn link(
        &self,
        sub: &str,
        target: &str,
    ) -> (gateway_shared::domain::PendingAuthorization, String) {
        let now = self.gw.state.clock.now();
        let pending = gateway_shared::domain::PendingAuthorization::new(
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

/// How a [`Switch`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchMode {
    /// Forward to the upstream.
    Forward = 0,
    /// Answer 500.
    Fail = 1,
    /// Never answer.
    Hang = 2,
    /// Forward, after [`SLOW_SWITCH_DELAY`].
    Slow = 3,
}

/// How long a [`SwitchMode::Slow`] switch holds each request.
pub const SLOW_SWITCH_DELAY: Duration = Duration::from_secs(2);

/// An HTTP forwarder in front of a real server, whose behaviour a test can
/// switch: forward, forward slowly, fail with 500, hang, or stop listening (connections
/// refused) and start again on the same port.
pub struct Switch {
    port: u16,
    upstream: String,
    mode: Arc<std::sync::atomic::AtomicU8>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Switch {
    /// Forwards to `upstream` (a base URL) until told otherwise.
    pub async fn start(upstream: &str) -> Switch {
        let port = free_port();
        let mut s = Switch {
            port,
            upstream: upstream.trim_end_matches('/').to_owned(),
            mode: Arc::new(std::sync::atomic::AtomicU8::new(0)),
            task: None,
            base: format!("http://127.0.0.1:{port}"),
        };
        s.listen().await;
        s
    }

    /// Sets the mode.
    pub fn set(&self, mode: SwitchMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Stops listening: connections are refused.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again (after [`Switch::stop`]) on the same port.
    pub async fn listen(&mut self) {
        self.stop();
        let mut listener = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let listener = listener.expect("rebind the switch's port");
        let upstream = self.upstream.clone();
        let mode = self.mode.clone();
        let http = http();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let upstream = upstream.clone();
            let mode = mode.clone();
            let http = http.clone();
            async move {
                match mode.load(Ordering::SeqCst) {
                    1 => {
                        return (http::StatusCode::INTERNAL_SERVER_ERROR, "switched to fail")
                            .into_response()
                    }
                    2 => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return http::StatusCode::GATEWAY_TIMEOUT.into_response();
                    }
                    3 => tokio::time::sleep(SLOW_SWITCH_DELAY).await,
                    _ => {}
                }
                let (parts, body) = req.into_parts();
                let url = format!(
                    "{upstream}{}",
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/")
                );
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                let mut out = http.request(parts.method.clone(), url).body(body);
                for (k, v) in &parts.headers {
                    if k != "host" && k != "content-length" {
                        out = out.header(k, v);
                    }
                }
                match out.send().await {
                    Ok(res) => {
                        let status = res.status();
                        let headers = res.headers().clone();
                        let bytes = res.bytes().await.unwrap_or_default();
                        let mut r = (status, bytes).into_response();
                        for (k, v) in &headers {
                            if k != "content-length" && k != "transfer-encoding" {
                                r.headers_mut().insert(k, v.clone());
                            }
                        }
                        r
                    }
                    Err(_) => http::StatusCode::BAD_GATEWAY.into_response(),
                }
            }
        });
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An OAuth target whose token endpoint is `token_endpoint` (public client,
/// no revocation), for tests against fake token endpoints.
pub fn stack_target_for_fake(token_endpoint: &str) -> gateway_shared::domain::Target {
    gateway_shared::domain::Target {
        name: "fake".into(),
        display_name: None,
        mcp_url: "https://mcp.example.test/mcp".into(),
        auth: gateway_shared::domain::TargetAuth::OAuth(Box::new(
            gateway_shared::domain::OAuthSettings {
                issuer: None,
                authorization_endpoint: "https://as.example.test/authorize".into(),
                token_endpoint: token_endpoint.into(),
                revocation_endpoint: None,
                client_id: "gw".into(),
                client_secret_arn: None,
                token_endpoint_auth_method: gateway_shared::domain::TokenEndpointAuthMethod::None,
                scopes: vec!["read".into()],
                extra_authorize_params: Default::default(),
                send_resource: false,
                resource: None,
                registered: false,
                flow: Default::default(),
                authorization_response_iss_parameter_supported: false,
                code_challenge_methods_supported: vec!["S256".into()],
                dpop_signing_alg_values_supported: vec![],
                exchange: None,
            },
        )),
        tool_prefix: None,
        return_to: Default::default(),
        tool_catalog: Default::default(),
    }
}

/// An active grant of `sub` for `target` with the given tokens and expiry,
/// as a consent would store it (version 0: `create` makes it 1).
pub fn refreshable_grant(
    sub: &str,
    target: &str,
    access: &str,
    refresh: &str,
    expires_at: i64,
    now: i64,
) -> gateway_shared::domain::Grant {
    gateway_shared::domain::Grant {
        sub: sub.into(),
        target: target.into(),
        tokens: gateway_shared::domain::TokenSet {
            access_token: access.to_owned().into(),
            refresh_token: Some(refresh.to_owned().into()),
            token_type: "Bearer".into(),
            dpop_key: None,
        },
        expires_at: Some(expires_at),
        scopes: vec!["read".into()],
        issuer: None,
        token_endpoint: None,
        resource: None,
        status: gateway_shared::domain::GrantStatus::Active,
        version: 0,
        lease: None,
        created_at: now,
        updated_at: now,
    }
}

/// A development gateway (`x-gateway-dev-user` names the caller) on a
/// local listener, with `extra` settings.
pub async fn dev_gateway(extra: &[(&str, &str)]) -> (Gateway, GatewayServer) {
    let (listener, base) = GatewayServer::bind().await;
    let mut vars = vec![("PUBLIC_BASE_URL", base.as_str())];
    vars.extend_from_slice(extra);
    let gw = Gateway::start(&vars).await;
    let server = GatewayServer::serve(listener, base.clone(), gw.state.clone());
    (gw, server)
}

/// A development gateway with the conformance fixtures server at
/// `fixtures_url` as its one target (`fixtures`, no authentication).
pub async fn fixtures_gateway(
    fixtures_url: &str,
    extra: &[(&str, &str)],
) -> (Gateway, GatewayServer) {
    let (gw, server) = dev_gateway(extra).await;
    gw.state
        .targets
        .put(&open_target("fixtures", fixtures_url.to_owned()))
        .await
        .unwrap();
    (gw, server)
}
