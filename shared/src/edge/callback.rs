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
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use lambda_http::request::RequestContext;

use super::pages::Page;
use super::{base_url, public_url};
use crate::adapters::oauth::{self, OAuthError};
use crate::config::ConsentBinding;
use crate::crypto::{random_token, sha256_hex};
use crate::domain::{
    Grant, GrantStatus, OAuthSettings, PendingAuthorization, StateParam, Target, TargetAuth,
};
use crate::error::Error;
use crate::AppState;
use url::Url;

mod binding;
mod login;

pub(super) use binding::bind_browser;
use binding::{authorization_ref, browser_value, other_browser_page};
use login::verify;
pub(super) use login::{start_login, LoginFor};

/// The gateway's one OAuth redirect path.
pub const CALLBACK_PATH: &str = "/oauth/callback";
/// Where the inbound identity provider sends the browser back (session binding).
pub const VERIFY_PATH: &str = "/connect/verify";
/// Where the gateway serves its Client ID Metadata Document.
pub const CLIENT_METADATA_PATH: &str = "/oauth/client-metadata.json";

/// The Router of the `oauth-callback` function.
pub fn router(state: AppState) -> Router {
    routes(&state.config.client_metadata_path)
        .fallback(not_found)
        .with_state(state)
}

/// The consent routes, without fallback or state (see
/// [`super::gateway_router`]); the Client ID Metadata Document at its
/// default path and, when different, at `chosen_metadata_path` too.
pub fn routes(chosen_metadata_path: &str) -> Router<AppState> {
    let router = if chosen_metadata_path == CLIENT_METADATA_PATH {
        Router::new()
    } else {
        Router::new().route(chosen_metadata_path, get(chosen_client_metadata))
    };
    router
        .route(VERIFY_PATH, get(verify))
        .route(crate::urls::CONNECT_ROUTE, get(connect))
        .route(CALLBACK_PATH, get(callback))
        .route(CLIENT_METADATA_PATH, get(client_metadata))
        .route(
            super::connections::CONNECTIONS_PATH,
            get(super::connections::page),
        )
        .route(
            "/connections/{action}",
            axum::routing::post(super::connections::act),
        )
}

/// The Client ID Metadata Document at its default path.
async fn client_metadata(
    State(state): State<AppState>,
    context: Option<Extension<RequestContext>>,
) -> Response {
    metadata_document(&state, context.as_deref(), CLIENT_METADATA_PATH)
}

/// The Client ID Metadata Document at the operator's chosen path.
async fn chosen_client_metadata(
    State(state): State<AppState>,
    context: Option<Extension<RequestContext>>,
) -> Response {
    metadata_document(
        &state,
        context.as_deref(),
        &state.config.client_metadata_path,
    )
}

/// The Client ID Metadata Document served at `path`: its `client_id` is
/// that URL, as the document format requires. The gateway's `client_id` at
/// authorization servers that support them is the document at
/// `CLIENT_METADATA_PATH`.
fn metadata_document(state: &AppState, context: Option<&RequestContext>, path: &str) -> Response {
    let Some(base) = base_url(state, context) else {
        return no_base_url().into_response();
    };
    let doc = crate::adapters::discovery::client_metadata_document(
        &public_url(&base, path),
        &public_url(&base, CALLBACK_PATH),
    );
    let mut res = axum::Json(doc).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    res
}

async fn not_found() -> Page {
    Page::error(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no page at this address.",
        "Open the link your agent gave you exactly as it was given.",
    )
}

pub(super) fn retry_from_agent() -> &'static str {
    "Go back to your agent and retry the request; it will give you a new link."
}

pub(super) fn storage_page(err: &Error) -> Page {
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

/// The target `name` as stored (past this instance's cache: a consent must
/// use the client and endpoints the target has now, which another instance
/// may have just changed), if it uses OAuth.
pub(super) async fn oauth_target(
    state: &AppState,
    name: &str,
) -> Result<(Target, OAuthSettings), Page> {
    let target = state
        .targets
        .get_fresh(name)
        .await
        .map_err(|e| storage_page(&e))?;
    match target {
        // Only targets each user connects take a consent (not a machine
        // token's, not an API key's).
        Some(t) => match t.auth.clone() {
            TargetAuth::OAuth(o) if t.auth.is_per_user() => Ok((t, *o)),
            _ => Err(unusable_target(name)),
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

/// `/connect/{id}`: the start of a consent, observed.
async fn connect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    context: Option<Extension<RequestContext>>,
) -> Response {
    let started = std::time::Instant::now();
    let request = super::api_request_id(context.as_deref());
    let (res, record) =
        crate::observe::scope(connect_unobserved(state.clone(), id, headers, context)).await;
    crate::observe::consent_event(
        &state,
        false,
        &record,
        res.status().as_u16(),
        started.elapsed(),
        request,
    )
    .await;
    res
}

async fn connect_unobserved(
    state: AppState,
    id: String,
    headers: HeaderMap,
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
    crate::observe::note(|r| {
        r.user = Some(pending.sub.clone());
        r.target = Some(pending.target.clone());
    });
    let (target, settings) = match consentable_target(&state, &pending.target).await {
        Ok(t) => t,
        Err(page) => return page.into_response(),
    };
    let Some(base) = base_url(&state, context.as_deref()) else {
        return no_base_url().into_response();
    };
    match &state.config.consent_binding {
        ConsentBinding::Link => {
            // The first browser to open the link is the one that may finish it.
            let browser = match bind_browser(&state, &base, &headers, &pending, now).await {
                Ok(b) => b,
                Err(page) => return page.into_response(),
            };
            let mut res = upstream_redirect(&state, &base, &pending, &target, &settings);
            browser.set_on(&mut res);
            res
        }
        ConsentBinding::Oidc { client_id, .. } => {
            start_login(&state, &base, LoginFor::Consent(&pending), client_id, now).await
        }
    }
}

pub(super) fn no_base_url() -> Page {
    tracing::error!("no public base URL: set PUBLIC_BASE_URL");
    storage_page(&Error::Malformed("no base URL".into()))
}

/// The target, if it can take a consent (OAuth, PKCE S256).
pub(super) async fn consentable_target(
    state: &AppState,
    name: &str,
) -> Result<(Target, OAuthSettings), Page> {
    let (target, settings) = oauth_target(state, name).await?;
    if !settings
        .code_challenge_methods_supported
        .iter()
        .any(|m| m == "S256")
    {
        tracing::warn!(target = %target.name, "authorization server does not advertise PKCE S256; refusing");
        return Err(server_page(
            target.title(),
            "Its sign-in server does not support PKCE (S256), which the gateway requires to keep your account safe.",
        ));
    }
    Ok((target, settings))
}

pub(super) fn redirect(location: &str) -> Response {
    let mut res = StatusCode::FOUND.into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// The redirect to the upstream authorization endpoint.
pub(super) fn upstream_redirect(
    state: &AppState,
    base: &Url,
    pending: &PendingAuthorization,
    target: &Target,
    settings: &OAuthSettings,
) -> Response {
    let url = oauth::authorization_url(
        settings,
        &public_url(base, CALLBACK_PATH),
        &pending.state.to_param(),
        &pending.pkce_verifier,
        &pending.scopes,
        pending.resource.as_deref(),
    );
    match url {
        Ok(url) => {
            tracing::info!(authorization = %authorization_ref(state, &pending.id), target = %target.name, "redirecting to authorization server");
            redirect(url.as_str())
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

pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

pub(super) fn untrusted(what: &str) -> Page {
    Page::error(
        StatusCode::BAD_REQUEST,
        "This response cannot be trusted",
        what.to_owned(),
        retry_from_agent(),
    )
}

async fn callback(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    context: Option<Extension<RequestContext>>,
) -> Response {
    let started = std::time::Instant::now();
    let (res, record) = crate::observe::scope(async {
        match complete(&state, &params, &headers, context.as_deref()).await {
            Ok(page) | Err(page) => page.into_response(),
        }
    })
    .await;
    crate::observe::consent_event(
        &state,
        true,
        &record,
        res.status().as_u16(),
        started.elapsed(),
        super::api_request_id(context.as_deref()),
    )
    .await;
    res
}

async fn complete(
    state: &AppState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
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
    crate::observe::note(|r| {
        r.user = Some(pending.sub.clone());
        r.target = Some(pending.target.clone());
    });
    let base = base_url(state, context).ok_or_else(no_base_url)?;
    // The state is spent; only the browser the consent was bound to may
    // turn it into a grant. An upstream authorization URL forwarded to
    // someone else comes back here without that browser's cookie.
    let this_browser = browser_value(&base, headers).map(|v| sha256_hex(v.as_bytes()));
    if pending.browser.is_none() || pending.browser != this_browser {
        tracing::warn!(
            audit = "consent_refused",
            reason = "other_browser",
            authorization = %authorization_ref(state, &pending.id),
            target = %pending.target,
            cookie = this_browser.is_some(),
            "consent callback from a browser the consent was not bound to; cancelled, nothing stored"
        );
        crate::observe::note(|r| r.outcome = Some("other_browser".into()));
        return Err(other_browser_page());
    }
    let (target, settings) = oauth_target(state, &pending.target).await?;
    let title = target.title().to_owned();

    if let Some(error) = params.get("error") {
        tracing::info!(authorization = %authorization_ref(state, &pending.id), target = %target.name, error = %crate::telemetry::clean(error, 64), "authorization server returned an error");
        let code = crate::telemetry::clean(error, 64);
        crate::observe::note(|r| r.outcome = Some(format!("as_error:{code}")));
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
        tracing::warn!(authorization = %authorization_ref(state, &pending.id), target = %target.name, "{why}");
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

    let secret = state
        .client_secret(settings.client_secret_arn.as_deref())
        .await
        .map_err(|e| {
            tracing::error!(target = %target.name, error = %e, "client secret unavailable");
            server_page(
                &title,
                "The gateway could not read its credentials for this service.",
            )
        })?;
    // A server that binds tokens to a key gets a new one for this grant.
    let dpop = match settings.uses_dpop() {
        true => Some(crate::crypto::dpop::DpopKey::generate().map_err(|_| {
            server_page(&title, "The gateway could not make a key for this service.")
        })?),
        false => None,
    };
    let endpoint = oauth::TokenEndpoint {
        http: &state.http,
        settings: &settings,
        secret: secret.as_ref(),
        dpop: dpop.as_ref(),
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
        tracing::warn!(authorization = %authorization_ref(state, &pending.id), target = %target.name, error = %e, "code exchange failed");
        match e {
            OAuthError::Rejected { error, .. } => server_page(
                &title,
                &format!("Its sign-in server refused to issue tokens ({}).", truncate(&error, 64)),
            ),
            OAuthError::Transient(_) => server_page(&title, "Its sign-in server did not answer properly."),
            OAuthError::Misconfigured(_) | OAuthError::InteractionRequired { .. } => server_page(&title, "The gateway's settings for this service are invalid."),
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
    tracing::info!(audit = "consent_completed", authorization = %authorization_ref(state, &pending.id), target = %target.name, "grant stored");
    Ok(Page::connected(&title, pending.return_url.as_deref()))
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
