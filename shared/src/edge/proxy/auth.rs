//! Inbound checks: the caller's bearer token against the inbound issuer,
//! the `WWW-Authenticate` challenge and protected-resource metadata, and
//! the Origin and Host guards.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lambda_http::request::RequestContext;
use serde_json::json;
use url::Url;

use super::super::{base_url, json_error, public_url};
use super::*;
use crate::adapters::oidc::{AccessError, AccessPolicy};
use crate::config::InboundAuth;
use crate::gateway::Identity;
use crate::AppState;

/// RFC 9728 Protected Resource Metadata for `/mcp`.
pub(super) async fn resource_metadata(
    State(state): State<AppState>,
    context: Option<Extension<RequestContext>>,
) -> Response {
    let Some(base) = base_url(&state, context.as_deref()) else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the gateway has no public URL configured",
        );
    };
    let mut doc = json!({
        "resource": public_url(&base, MCP_PATH),
        "bearer_methods_supported": ["header"],
        "resource_name": "MCP OAuth Gateway",
    });
    if let Some(issuer) = &state.config.inbound_issuer {
        doc["authorization_servers"] = json!([issuer.as_str().trim_end_matches('/')]);
    }
    if !state.config.inbound_scopes.is_empty() {
        doc["scopes_supported"] = json!(state.config.inbound_scopes);
    }
    let mut res = Json(doc).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    res
}

/// Who is calling, or the HTTP answer that says why not. Subjects that
/// start with `gateway:` are the gateway's own (a target's machine token is
/// stored under one) and are refused.
pub(super) async fn authenticate(
    state: &AppState,
    context: Option<&RequestContext>,
    headers: &HeaderMap,
) -> Result<Identity, Response> {
    let identity = subject(state, context, headers).await?;
    if identity.sub.starts_with("gateway:") {
        tracing::warn!("an inbound subject in the gateway's reserved namespace was refused");
        return Err(json_error(
            StatusCode::FORBIDDEN,
            "access_denied",
            "this subject is reserved for the gateway itself",
        ));
    }
    Ok(identity)
}

async fn subject(
    state: &AppState,
    context: Option<&RequestContext>,
    headers: &HeaderMap,
) -> Result<Identity, Response> {
    match &state.config.inbound_auth {
        InboundAuth::Dev => {
            // Development: who the caller says it is, and (for trying
            // policies) its groups, scopes and client.
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let list = |name: &str| -> Vec<String> {
                header(name)
                    .map(crate::config::split_list)
                    .unwrap_or_default()
            };
            Ok(Identity {
                sub: header("x-gateway-dev-user")
                    .filter(|v| !v.is_empty())
                    .unwrap_or("dev-user")
                    .to_owned(),
                groups: list("x-gateway-dev-groups"),
                scopes: list("x-gateway-dev-scopes"),
                client_id: header("x-gateway-dev-client")
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned),
            })
        }
        InboundAuth::ApiGateway => {
            let claims = match context {
                Some(RequestContext::ApiGatewayV2(ctx)) => ctx
                    .authorizer
                    .as_ref()
                    .and_then(|a| a.jwt.as_ref())
                    .map(|jwt| &jwt.claims),
                #[allow(unreachable_patterns)]
                _ => None,
            };
            let sub = claims
                .and_then(|c| c.get("sub"))
                .filter(|s| !s.is_empty())
                .cloned();
            let Some(sub) = sub else {
                return Err(unauthorized(
                    state,
                    context,
                    None,
                    "a valid bearer token is required",
                ));
            };
            // API Gateway flattens claims to strings: an array reads "[a b]"
            // (its members split at spaces), a scope "a b".
            let list = |key: &str| -> Vec<String> {
                claims
                    .and_then(|c| c.get(key))
                    .map(|v| {
                        let v = v
                            .strip_prefix('[')
                            .and_then(|v| v.strip_suffix(']'))
                            .unwrap_or(v);
                        v.split(' ')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let mut groups = list("groups");
            groups.extend(list("cognito:groups"));
            Ok(Identity {
                sub,
                groups,
                scopes: list("scope"),
                client_id: claims
                    .and_then(|c| {
                        c.get("client_id")
                            .or_else(|| c.get("azp"))
                            .or_else(|| c.get("cid"))
                    })
                    .cloned(),
            })
        }
        InboundAuth::Jwt {
            audiences,
            client_ids,
            required_scopes,
            require_at_jwt,
        } => {
            let token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token)
                .filter(|t| !t.is_empty());
            let Some(token) = token else {
                return Err(unauthorized(
                    state,
                    context,
                    None,
                    "a bearer token is required",
                ));
            };
            let Some(provider) = &state.inbound else {
                return Err(json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "no identity provider configured",
                ));
            };
            let policy = AccessPolicy {
                audiences,
                client_ids,
                required_scopes,
                require_at_jwt: *require_at_jwt,
            };
            match provider.validate_access_token(token, &policy).await {
                Ok(claims) => Ok(Identity {
                    sub: claims.sub,
                    groups: claims.groups,
                    scopes: claims.scopes,
                    client_id: claims.client_id,
                }),
                Err(AccessError::Invalid(why)) => {
                    tracing::info!(reason = %why, "inbound token refused");
                    Err(unauthorized(
                        state,
                        context,
                        Some("invalid_token"),
                        "the bearer token is not valid for this gateway",
                    ))
                }
                Err(AccessError::InsufficientScope) => Err(insufficient_scope(state, context)),
                Err(AccessError::Unavailable(why)) => {
                    tracing::error!(reason = %why, "identity provider unavailable");
                    Err(json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "the identity provider could not be reached; retry later",
                    ))
                }
            }
        }
    }
}

/// The bearer token of the request, whichever way the caller was
/// authenticated (for token-exchange targets).
pub(super) fn presented_token(headers: &HeaderMap) -> Option<secrecy::SecretString> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(|t| secrecy::SecretString::from(t.to_owned()))
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// case-insensitive (RFC 7235 section 2.1).
pub(super) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub(super) fn challenge(
    state: &AppState,
    context: Option<&RequestContext>,
    error: Option<&str>,
) -> String {
    let mut parts = vec![];
    if let Some(e) = error {
        parts.push(format!("error=\"{e}\""));
    }
    if let Some(base) = base_url(state, context) {
        parts.push(format!(
            "resource_metadata=\"{}\"",
            public_url(&base, "/.well-known/oauth-protected-resource/mcp")
        ));
    }
    let scopes: Vec<String> = match &state.config.inbound_auth {
        InboundAuth::Jwt {
            required_scopes, ..
        } if !required_scopes.is_empty() => required_scopes.clone(),
        _ => state.config.inbound_scopes.clone(),
    };
    if !scopes.is_empty() {
        parts.push(format!("scope=\"{}\"", scopes.join(" ")));
    }
    if parts.is_empty() {
        "Bearer".into()
    } else {
        format!("Bearer {}", parts.join(", "))
    }
}

/// 401 with the challenge that tells MCP clients how to log in. `error` is
/// set when a token was presented and refused (RFC 6750 3.1).
pub(super) fn unauthorized(
    state: &AppState,
    context: Option<&RequestContext>,
    error: Option<&str>,
    message: &str,
) -> Response {
    let mut res = json_error(
        StatusCode::UNAUTHORIZED,
        error.unwrap_or("unauthorized"),
        message,
    );
    if let Ok(v) = HeaderValue::from_str(&challenge(state, context, error)) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

pub(super) fn insufficient_scope(state: &AppState, context: Option<&RequestContext>) -> Response {
    let mut res = json_error(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        "the bearer token lacks a required scope",
    );
    if let Ok(v) = HeaderValue::from_str(&challenge(state, context, Some("insufficient_scope"))) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// Whether a browser `Origin` may call `/mcp`: one listed in
/// `ALLOWED_ORIGINS`; else any (every call needs a bearer token) — except in
/// `dev` mode, where there is no token and only loopback pages may call, so
/// that a web page the developer visits cannot call tools as `dev-user`.
pub(super) fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let allowed = &state.config.allowed_origins;
    match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => true,
        Some(Ok(origin)) if allowed.iter().any(|a| a == origin) => true,
        Some(origin) if state.config.inbound_auth == InboundAuth::Dev => origin
            .ok()
            .and_then(|o| Url::parse(o).ok())
            .is_some_and(|u| is_loopback(&u)),
        Some(_) => allowed.is_empty(),
    }
}

/// In `dev` mode the `Host` must be a loopback name or address: a DNS
/// rebinding page reaches the developer's gateway under its own host name.
pub(super) fn host_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    if state.config.inbound_auth != InboundAuth::Dev {
        return true;
    }
    match headers.get(header::HOST).map(|v| v.to_str()) {
        None => true,
        Some(Ok(host)) if is_plain_loopback(host) => true,
        Some(Ok(host)) => Url::parse(&format!("http://{host}/")).is_ok_and(|u| is_loopback(&u)),
        Some(Err(_)) => false,
    }
}

/// The usual loopback `Host` values (`localhost`, `127.0.0.1`, `[::1]`,
/// with or without a port), recognized without parsing a URL; anything
/// else goes to the URL parser.
fn is_plain_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port))
            if !name.ends_with(':')
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok() =>
        {
            name
        }
        _ => host,
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "[::1]"
}

pub(super) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_loopback_hosts_agree_with_the_url_parser() {
        let by_url =
            |host: &str| Url::parse(&format!("http://{host}/")).is_ok_and(|u| is_loopback(&u));
        for host in [
            "localhost",
            "LOCALHOST:3000",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_plain_loopback(host), "{host}");
            assert!(by_url(host), "{host}");
        }
        // Left to the parser (which decides as before).
        for host in [
            "localhost:99999",
            "localhost:+80",
            "127.0.0.1:+1",
            "localhost.evil.example",
            "evil.example:3000",
            "127.0.0.1.evil.example",
            "::1",
            "localhost:",
            "",
        ] {
            assert!(!is_plain_loopback(host), "{host}");
        }
    }
}
