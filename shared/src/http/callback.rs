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
use crate::crypto::{random_token, sha256_hex, Aad};
use crate::domain::{
    Grant, GrantStatus, OAuthSettings, PendingAuthorization, StateParam, Target, TargetAuth,
};
use crate::error::Error;
use crate::AppState;
use url::Url;

/// The gateway's one OAuth redirect path.
pub const CALLBACK_PATH: &str = "/oauth/callback";
/// Where the inbound identity provider sends the browser back (session binding).
pub const VERIFY_PATH: &str = "/connect/verify";
/// Where the gateway serves its Client ID Metadata Document.
pub const CLIENT_METADATA_PATH: &str = "/oauth/client-metadata.json";
/// The cookie that ties a browser login to the browser that started it.
const BINDING_COOKIE: &str = "gw_consent";
/// The browser-binding cookie: set once the gateway knows who is in the
/// browser, its digest sealed into the pending authorization, and required
/// by `/oauth/callback`. On https it carries the `__Host-` prefix (Secure,
/// no Domain, Path=/), so no other host can plant or overwrite it.
const BROWSER_COOKIE: &str = "gw_browser";
/// [`BROWSER_COOKIE`] on https.
const BROWSER_COOKIE_HTTPS: &str = "__Host-gw_browser";

/// The Router of the `oauth-callback` function.
pub fn router(state: AppState) -> Router {
    routes().fallback(not_found).with_state(state)
}

/// The consent routes, without fallback or state (see [`super::gateway_router`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(VERIFY_PATH, get(verify))
        .route("/connect/{id}", get(connect))
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

/// The Client ID Metadata Document: the gateway's `client_id` at
/// authorization servers that support them is this document's URL.
async fn client_metadata(
    State(state): State<AppState>,
    context: Option<Extension<RequestContext>>,
) -> Response {
    let Some(base) = base_url(&state, context.as_deref()) else {
        return no_base_url().into_response();
    };
    let doc = crate::adapters::discovery::client_metadata_document(
        &public_url(&base, CLIENT_METADATA_PATH),
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

pub(super) async fn oauth_target(
    state: &AppState,
    name: &str,
) -> Result<(Target, OAuthSettings), Page> {
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

/// The browser-binding cookie this response sets.
pub(super) struct BrowserCookie(String);

impl BrowserCookie {
    pub(super) fn set_on(&self, res: &mut Response) {
        if let Ok(v) = HeaderValue::from_str(&self.0) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

pub(super) fn browser_cookie_name(base: &Url) -> &'static str {
    if base.scheme() == "https" {
        BROWSER_COOKIE_HTTPS
    } else {
        BROWSER_COOKIE
    }
}

/// The browser's binding value, if it sent a well-formed one.
fn browser_value(base: &Url, headers: &HeaderMap) -> Option<String> {
    cookie(headers, browser_cookie_name(base)).filter(|v| {
        (16..=128).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Binds `pending` to this browser (its existing binding cookie, or a new
/// one), atomically: a link already bound to another browser is refused.
pub(super) async fn bind_browser(
    state: &AppState,
    base: &Url,
    headers: &HeaderMap,
    pending: &PendingAuthorization,
    now: i64,
) -> Result<BrowserCookie, Page> {
    let value = browser_value(base, headers).unwrap_or_else(|| random_token(24));
    match state
        .authorizations
        .bind_browser(pending, &sha256_hex(value.as_bytes()), now)
        .await
    {
        Ok(()) => {}
        Err(Error::OtherBrowser) => {
            tracing::warn!(
                audit = "consent_refused",
                reason = "other_browser",
                authorization = %authorization_ref(state, &pending.id),
                target = %pending.target,
                "consent link opened in a second browser; refused"
            );
            return Err(other_browser_page());
        }
        Err(e) => return Err(storage_page(&e)),
    }
    let secure = if base.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    // Lax: the top-level redirect back from the authorization server
    // carries it; cross-site subrequests and POSTs do not.
    let ttl = state.config.authorization_ttl.as_secs();
    Ok(BrowserCookie(format!(
        "{}={value}; Path=/; Max-Age={ttl}; HttpOnly; SameSite=Lax{secure}",
        browser_cookie_name(base)
    )))
}

fn other_browser_page() -> Page {
    Page::error(
        StatusCode::FORBIDDEN,
        "This connection was started in another browser",
        "This connection was started in another browser, or by another person, so the gateway cancelled it. Nothing was connected.",
        "If you want to connect this service, ask your own agent for a new link and open it in this browser.",
    )
}

/// How a consent id appears in logs: in `link` mode the id is a bearer
/// capability until it is used, so only a digest is logged.
fn authorization_ref(state: &AppState, id: &str) -> String {
    state.config.authorization_log_ref(id)
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

/// What the browser login carries through the identity provider, sealed
/// (so nothing is stored): the consent, the browser it started in, and the
/// login's own PKCE verifier and nonce.
#[derive(serde::Serialize, serde::Deserialize)]
struct LoginState {
    /// Pending authorization id.
    a: String,
    /// SHA-256 of the binding cookie.
    b: String,
    /// PKCE verifier of the login.
    v: String,
    /// OpenID nonce.
    n: String,
    /// Expiry (Unix seconds).
    e: i64,
    /// Where the sign-in leads: the consent `a` (absent), or the person's
    /// connections page (`connections`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    w: Option<String>,
}

/// What a sign-in at the identity provider is for.
pub(super) enum LoginFor<'a> {
    /// Proving who opens this consent link.
    Consent(&'a PendingAuthorization),
    /// Opening the person's connections page.
    Connections,
}

/// [`LoginState::w`] of a sign-in for the connections page.
const FOR_CONNECTIONS: &str = "connections";

fn login_aad() -> Aad {
    Aad::new("consent-login", &[])
}

pub(super) fn login_unavailable(e: impl std::fmt::Display) -> Page {
    tracing::error!(error = %e, "identity provider unavailable for the consent sign-in");
    Page::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in is unavailable",
        "The gateway could not reach your organization's sign-in service.",
        "Wait a moment and reload this page.",
    )
}

/// Session binding, step 1: send the browser to the inbound identity
/// provider, with a cookie that ties the answer to this browser.
pub(super) async fn start_login(
    state: &AppState,
    base: &Url,
    purpose: LoginFor<'_>,
    client_id: &str,
    now: i64,
) -> Response {
    let Some(provider) = &state.login else {
        return login_unavailable("no identity provider configured").into_response();
    };
    let metadata = match provider.metadata().await {
        Ok(m) => m,
        Err(e) => return login_unavailable(e).into_response(),
    };
    let keys = match state.keys.key_set().await {
        Ok(k) => k,
        Err(e) => return storage_page(&e).into_response(),
    };
    let browser = random_token(16);
    let until = now + state.config.authorization_ttl.as_secs() as i64;
    let (a, e, w) = match purpose {
        LoginFor::Consent(pending) => (pending.id.clone(), pending.expires_at.min(until), None),
        LoginFor::Connections => (String::new(), until, Some(FOR_CONNECTIONS.to_owned())),
    };
    let login = LoginState {
        a,
        b: sha256_hex(browser.as_bytes()),
        v: random_token(32),
        n: random_token(16),
        e,
        w,
    };
    let sealed = keys.seal(
        &serde_json::to_vec(&login).unwrap_or_default(),
        &login_aad(),
    );
    let verifier = secrecy::SecretString::from(login.v.clone());
    let challenge = oauth::pkce_challenge(&verifier);
    let Ok(mut url) = Url::parse(&metadata.authorization_endpoint) else {
        return login_unavailable("invalid authorization endpoint").into_response();
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", &public_url(base, VERIFY_PATH))
        .append_pair("scope", "openid")
        .append_pair("state", &sealed)
        .append_pair("nonce", &login.n)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    tracing::info!(
        authorization = %login.a,
        purpose = login.w.as_deref().unwrap_or("consent"),
        "sign-in required"
    );
    let mut res = redirect(url.as_str());
    let secure = if base.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let ttl = (login.e - now).max(0);
    let cookie = format!(
        "{BINDING_COOKIE}={browser}; Path=/connect; Max-Age={ttl}; HttpOnly; SameSite=Lax{secure}"
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
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

/// Session binding, step 2: the identity provider sent the browser back.
async fn verify(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    context: Option<Extension<RequestContext>>,
) -> Response {
    let mut res = match verify_login(&state, &params, &headers, context.as_deref()).await {
        Ok(res) => res,
        Err(page) => page.into_response(),
    };
    let clear = format!("{BINDING_COOKIE}=; Path=/connect; Max-Age=0; HttpOnly; SameSite=Lax");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

async fn verify_login(
    state: &AppState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    context: Option<&RequestContext>,
) -> Result<Response, Page> {
    let now = state.clock.now();
    let ConsentBinding::Oidc {
        client_id,
        client_secret_arn,
        ..
    } = &state.config.consent_binding
    else {
        return Err(untrusted("This gateway does not use a sign-in step."));
    };
    let provider = state
        .login
        .as_ref()
        .ok_or_else(|| login_unavailable("no identity provider configured"))?;
    let sealed = params.get("state").map(String::as_str).unwrap_or_default();
    let kid = crate::crypto::KeySet::key_id_of(sealed).unwrap_or_default();
    let keys = state
        .keys
        .key_set_with(kid)
        .await
        .map_err(|e| storage_page(&e))?;
    let login: LoginState = keys
        .open(sealed, &login_aad())
        .ok()
        .and_then(|plain| serde_json::from_slice(&plain).ok())
        .ok_or_else(|| untrusted("The response from the sign-in page does not match any sign-in the gateway started."))?;
    if login.e <= now {
        return Err(storage_page(&Error::AuthorizationExpired));
    }
    let from_this_browser =
        cookie(headers, BINDING_COOKIE).is_some_and(|b| sha256_hex(b.as_bytes()) == login.b);
    if !from_this_browser {
        tracing::warn!(authorization = %login.a, "consent sign-in finished in another browser; refusing");
        return Err(Page::error(
            StatusCode::BAD_REQUEST,
            "This sign-in did not start in this browser",
            "For your safety, a connection must be completed in the browser where its link was opened.",
            "Open the link from your agent again, in this browser.",
        ));
    }
    if let Some(error) = params.get("error") {
        tracing::info!(authorization = %login.a, error = %crate::telemetry::clean(error, 64), "consent sign-in not completed");
        return Err(Page::error(
            StatusCode::FORBIDDEN,
            "Sign-in was not completed",
            format!(
                "Your organization's sign-in service reported: {}.",
                truncate(error, 64)
            ),
            retry_from_agent(),
        ));
    }
    let code = params
        .get("code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            untrusted("The response from the sign-in page has no authorization code.")
        })?;
    let base = base_url(state, context).ok_or_else(no_base_url)?;
    let metadata = provider.metadata().await.map_err(login_unavailable)?;
    let secret = state
        .client_secret(client_secret_arn.as_deref())
        .await
        .map_err(|e| storage_page(&e))?;
    let id_token = oauth::exchange_for_id_token(
        &state.http,
        &metadata.token_endpoint,
        client_id,
        secret.as_ref(),
        code,
        &public_url(&base, VERIFY_PATH),
        &login.v,
    )
    .await
    .map_err(|e| {
        tracing::warn!(authorization = %login.a, error = %e, "consent sign-in code exchange failed");
        login_unavailable(e)
    })?;
    let claims = provider
        .validate_id_token(&id_token, client_id, &login.n)
        .await
        .map_err(|e| {
            tracing::warn!(authorization = %login.a, error = %e, "consent sign-in ID token refused");
            untrusted("The sign-in service's answer could not be verified.")
        })?;
    if login.w.as_deref() == Some(FOR_CONNECTIONS) {
        // The connections page: anyone may sign in, as themselves, from the
        // caller's issuer.
        if !same_person(
            &claims.iss,
            &claims.sub,
            state.config.inbound_issuer.as_ref(),
            &claims.sub,
        ) {
            tracing::warn!(issuer = %crate::telemetry::clean(&claims.iss, 200), "connections sign-in from another issuer; refused");
            return Err(untrusted(
                "The sign-in came from another identity provider than the gateway's.",
            ));
        }
        return Ok(super::connections::signed_in(state, &base, &claims.sub, now).await);
    }
    let pending = state
        .authorizations
        .peek(&login.a, now)
        .await
        .map_err(|e| storage_page(&e))?;
    if !same_person(
        &claims.iss,
        &claims.sub,
        state.config.inbound_issuer.as_ref(),
        &pending.sub,
    ) {
        // Someone else's link: spend it, so it cannot be tried again.
        let _ = state
            .authorizations
            .consume(&pending.id, &pending.state.digest(), now)
            .await;
        tracing::warn!(audit = "consent_refused", reason = "other_user", authorization = %pending.id, target = %pending.target, "consent link opened by a different user; refused");
        return Err(Page::error(
            StatusCode::FORBIDDEN,
            "This link belongs to someone else",
            "You are signed in as a different user than the one who asked for this connection, so it was cancelled.",
            "If you want to connect this service, ask your own agent, and open the link it gives you.",
        ));
    }
    let (target, settings) = consentable_target(state, &pending.target).await?;
    // The person is known now: this browser, and only this one, may finish.
    let browser = bind_browser(state, &base, headers, &pending, now).await?;
    let mut res = upstream_redirect(state, &base, &pending, &target, &settings);
    browser.set_on(&mut res);
    Ok(res)
}

async fn callback(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    context: Option<Extension<RequestContext>>,
) -> Response {
    match complete(&state, &params, &headers, context.as_deref()).await {
        Ok(page) | Err(page) => page.into_response(),
    }
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
        return Err(other_browser_page());
    }
    let (target, settings) = oauth_target(state, &pending.target).await?;
    let title = target.title().to_owned();

    if let Some(error) = params.get("error") {
        tracing::info!(authorization = %authorization_ref(state, &pending.id), target = %target.name, error = %crate::telemetry::clean(error, 64), "authorization server returned an error");
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
        tracing::warn!(authorization = %authorization_ref(state, &pending.id), target = %target.name, error = %e, "code exchange failed");
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

/// True when the person who signed in (`iss`, `sub` of the ID token) is the
/// caller the consent belongs to: the `sub` the gateway's callers are known
/// by, from the inbound issuer. A `sub` is unique only within its issuer, so
/// when the sign-in issuer is another one, equal `sub`s prove nothing.
fn same_person(login_iss: &str, login_sub: &str, inbound_issuer: Option<&Url>, sub: &str) -> bool {
    let issuer_ok = match inbound_issuer {
        Some(inbound) => login_iss.trim_end_matches('/') == inbound.as_str().trim_end_matches('/'),
        // `dev`/`apigw` without an issuer: callers are known by `sub` alone.
        None => true,
    };
    issuer_ok && login_sub == sub
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_identity_compares_issuer_and_sub() {
        let inbound = Url::parse("https://idp.example/tenant/").unwrap();
        assert!(same_person(
            "https://idp.example/tenant",
            "alice",
            Some(&inbound),
            "alice"
        ));
        assert!(!same_person(
            "https://idp.example/tenant",
            "bob",
            Some(&inbound),
            "alice"
        ));
        // The same sub at another issuer is another person.
        assert!(!same_person(
            "https://other.example",
            "alice",
            Some(&inbound),
            "alice"
        ));
        assert!(same_person("https://any.example", "alice", None, "alice"));
    }

    #[test]
    fn browser_values_must_look_like_ours() {
        let base = Url::parse("http://127.0.0.1:1/").unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("gw_browser=short"));
        assert_eq!(browser_value(&base, &h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; gw_browser=abcdefghijklmnopqrstuvwxyz012345"),
        );
        assert_eq!(
            browser_value(&base, &h).as_deref(),
            Some("abcdefghijklmnopqrstuvwxyz012345")
        );
        // On https only the __Host- cookie counts.
        let https = Url::parse("https://gw.example/").unwrap();
        assert_eq!(browser_value(&https, &h), None);
    }
}
