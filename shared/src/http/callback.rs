//! The consent function's Router: `/connect/{id}` and `/oauth/callback`.
//!
//! `/connect/{id}` turns a pending authorization into a redirect to the
//! upstream authorization endpoint (PKCE S256, `state`, `resource`);
//! `/oauth/callback` consumes the pending authorization atomically, checks
//! `iss`, exchanges the code and stores the grant. Every outcome is a page a
//! person can read; no page, URL or log line carries a token, code, verifier
//! or state secret.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use lambda_http::request::RequestContext;

use super::pages::Page;
use super::{base_url, public_url};
use crate::adapters::oauth::{self, OAuthError};
use crate::domain::{
    Grant, GrantStatus, OAuthSettings, PendingAuthorization, StateParam, Target, TargetAuth,
};
use crate::error::Error;
use crate::AppState;

/// The gateway's one OAuth redirect path.
pub const CALLBACK_PATH: &str = "/oauth/callback";

/// The Router of the `oauth-callback` function.
pub fn router(state: AppState) -> Router {
    routes().fallback(not_found).with_state(state)
}

/// The consent routes, without fallback or state (see [`super::gateway_router`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/connect/{id}", get(connect))
        .route(CALLBACK_PATH, get(callback))
}

async fn not_found() -> Page {
    Page::error(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no page at this address.",
        "Open the link your agent gave you exactly as it was given.",
    )
}

fn retry_from_agent() -> &'static str {
    "Go back to your agent and retry the request; it will give you a new link."
}

fn storage_page(err: &Error) -> Page {
    match err {
        Error::AuthorizationUsed => Page::error(
            StatusCode::GONE,
            "This link was already used",
            "This connection link has already been used, or it is not known to the gateway.",
            retry_from_agent(),
        ),
        Error::AuthorizationExpired => Page::error(
            StatusCode::GONE,
            "This link has expired",
            "Connection links are valid for a few minutes only, and this one has expired.",
            retry_from_agent(),
        ),
        Error::StateMismatch => Page::error(
            StatusCode::BAD_REQUEST,
            "This response cannot be trusted",
            "The response from the sign-in page does not match any connection the gateway started. It may have been altered.",
            retry_from_agent(),
        ),
        other => {
            tracing::error!(error = %other, "consent storage failure");
            Page::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The gateway could not finish",
                "The gateway had a temporary problem.",
                "Wait a moment and reload this page, or go back to your agent and retry.",
            )
        }
    }
}

fn unusable_target(name: &str) -> Page {
    Page::error(
        StatusCode::NOT_FOUND,
        "This service is not available",
        format!("The service \"{name}\" is no longer registered with the gateway, or it does not use OAuth."),
        "Ask the gateway's operator, or go back to your agent.",
    )
}

async fn oauth_target(state: &AppState, name: &str) -> Result<(Target, OAuthSettings), Page> {
    let target = state
        .targets
        .get(name)
        .await
        .map_err(|e| storage_page(&e))?;
    match target {
        Some(t) => match t.auth.clone() {
            TargetAuth::OAuth(o) => Ok((t, *o)),
            TargetAuth::None => Err(unusable_target(name)),
        },
        None => Err(unusable_target(name)),
    }
}

fn server_page(title: &str, what: &str) -> Page {
    Page::error(
        StatusCode::BAD_GATEWAY,
        format!("{title} could not be connected"),
        what.to_owned(),
        retry_from_agent(),
    )
}

async fn connect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    context: Option<Extension<RequestContext>>,
) -> Response {
    let now = state.clock.now();
    let pending = match state.authorizations.peek(&id, now).await {
        Ok(p) => p,
        Err(Error::Decrypt(_)) | Err(Error::Malformed(_)) => {
            return storage_page(&Error::AuthorizationUsed).into_response()
        }
        Err(e) => return storage_page(&e).into_response(),
    };
    let (target, settings) = match oauth_target(&state, &pending.target).await {
        Ok(t) => t,
        Err(page) => return page.into_response(),
    };
    if !settings
        .code_challenge_methods_supported
        .iter()
        .any(|m| m == "S256")
    {
        tracing::warn!(target = %target.name, "authorization server does not advertise PKCE S256; refusing");
        return server_page(
            target.title(),
            "Its sign-in server does not support PKCE (S256), which the gateway requires to keep your account safe.",
        )
        .into_response();
    }
    let Some(base) = base_url(&state, context.as_deref()) else {
        tracing::error!("no public base URL: set PUBLIC_BASE_URL");
        return storage_page(&Error::Malformed("no base URL".into())).into_response();
    };
    let redirect_uri = public_url(&base, CALLBACK_PATH);
    let url = oauth::authorization_url(
        &settings,
        &redirect_uri,
        &pending.state.to_param(),
        &pending.pkce_verifier,
        &pending.scopes,
        pending.resource.as_deref(),
    );
    match url {
        Ok(url) => {
            tracing::info!(authorization = %pending.id, target = %target.name, "redirecting to authorization server");
            let mut res = StatusCode::FOUND.into_response();
            let h = res.headers_mut();
            if let Ok(v) = HeaderValue::from_str(url.as_str()) {
                h.insert(header::LOCATION, v);
            }
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            res
        }
        Err(e) => {
            tracing::error!(target = %target.name, error = %e, "cannot build authorization URL");
            server_page(
                target.title(),
                "The gateway's settings for this service are invalid.",
            )
            .into_response()
        }
    }
}

async fn callback(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    context: Option<Extension<RequestContext>>,
) -> Response {
    match complete(&state, &params, context.as_deref()).await {
        Ok(page) | Err(page) => page.into_response(),
    }
}

async fn complete(
    state: &AppState,
    params: &HashMap<String, String>,
    context: Option<&RequestContext>,
) -> Result<Page, Page> {
    let now = state.clock.now();
    let Some(state_param) = params.get("state").and_then(|s| StateParam::parse(s)) else {
        return Err(Page::error(
            StatusCode::BAD_REQUEST,
            "This response cannot be trusted",
            "The response from the sign-in page has no valid state, so the gateway cannot tell which connection it belongs to.",
            retry_from_agent(),
        ));
    };
    // Consume first: whatever happens next, this state never works again.
    let pending = state
        .authorizations
        .consume(&state_param.id, &state_param.digest(), now)
        .await
        .map_err(|e| storage_page(&e))?;
    let (target, settings) = oauth_target(state, &pending.target).await?;
    let title = target.title().to_owned();

    if let Some(error) = params.get("error") {
        tracing::info!(authorization = %pending.id, target = %target.name, error = %error, "authorization server returned an error");
        return Err(if error == "access_denied" {
            Page::error(
                StatusCode::FORBIDDEN,
                format!("{title} was not connected"),
                format!("Access to {title} was denied, so the gateway cannot use it for you."),
                "If that was a mistake, go back to your agent and retry; it will give you a new link.",
            )
        } else {
            Page::error(
                StatusCode::BAD_GATEWAY,
                format!("{title} could not be connected"),
                format!(
                    "The sign-in server of {title} reported an error ({}).",
                    truncate(error, 64)
                ),
                retry_from_agent(),
            )
        });
    }

    check_issuer(&pending, &settings, params.get("iss").map(String::as_str)).map_err(|why| {
        tracing::warn!(authorization = %pending.id, target = %target.name, "{why}");
        Page::error(
            StatusCode::BAD_REQUEST,
            "This response cannot be trusted",
            format!("The response did not come from the sign-in server of {title} ({why})."),
            retry_from_agent(),
        )
    })?;

    let Some(code) = params.get("code").filter(|c| !c.is_empty()) else {
        return Err(Page::error(
            StatusCode::BAD_REQUEST,
            format!("{title} could not be connected"),
            "The response from the sign-in page has no authorization code.",
            retry_from_agent(),
        ));
    };

    let secret = match &settings.client_secret_arn {
        Some(arn) => Some(state.secrets.secret(arn).await.map_err(|e| {
            tracing::error!(target = %target.name, error = %e, "client secret unavailable");
            server_page(
                &title,
                "The gateway could not read its credentials for this service.",
            )
        })?),
        None => None,
    };
    let base = base_url(state, context).ok_or_else(|| {
        tracing::error!("no public base URL: set PUBLIC_BASE_URL");
        storage_page(&Error::Malformed("no base URL".into()))
    })?;
    let endpoint = oauth::TokenEndpoint {
        http: &state.http,
        settings: &settings,
        secret: secret.as_ref(),
    };
    let issued = endpoint
        .exchange_code(
            &public_url(&base, CALLBACK_PATH),
            code,
            &pending.pkce_verifier,
            pending.resource.as_deref(),
            now,
        )
    .await
    .map_err(|e| {
        tracing::warn!(authorization = %pending.id, target = %target.name, error = %e, "code exchange failed");
        match e {
            OAuthError::Rejected { error, .. } => server_page(
                &title,
                &format!("Its sign-in server refused to issue tokens ({}).", truncate(&error, 64)),
            ),
            OAuthError::Transient(_) => server_page(&title, "Its sign-in server did not answer properly."),
            OAuthError::Misconfigured(_) => server_page(&title, "The gateway's settings for this service are invalid."),
        }
    })?;

    let grant = Grant {
        sub: pending.sub.clone(),
        target: pending.target.clone(),
        tokens: issued.tokens,
        expires_at: issued.expires_at,
        scopes: issued.scopes.unwrap_or_else(|| pending.scopes.clone()),
        issuer: pending.issuer.clone(),
        token_endpoint: Some(settings.token_endpoint.clone()),
        resource: pending.resource.clone(),
        status: GrantStatus::Active,
        version: 0,
        lease: None,
        created_at: now,
        updated_at: now,
    };
    state
        .grants
        .put_after_consent(&grant)
        .await
        .map_err(|e| storage_page(&e))?;
    tracing::info!(authorization = %pending.id, target = %target.name, "grant stored");
    Ok(Page::connected(&title))
}

/// RFC 9207: when the server sends `iss` (or advertises that it does), it must
/// equal the issuer recorded for the authorization.
fn check_issuer(
    pending: &PendingAuthorization,
    settings: &OAuthSettings,
    iss: Option<&str>,
) -> Result<(), &'static str> {
    let expected = pending.issuer.as_deref().or(settings.issuer.as_deref());
    match (iss, expected) {
        (Some(got), Some(want)) if got == want => Ok(()),
        (Some(_), Some(_)) => Err("issuer mismatch"),
        (Some(_), None) => Ok(()),
        (None, _) if settings.authorization_response_iss_parameter_supported => {
            Err("issuer missing")
        }
        (None, _) => Ok(()),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).filter(|c| !c.is_control()).collect()
}
