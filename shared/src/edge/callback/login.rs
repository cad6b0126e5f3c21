//! Session binding by sign-in: before a consent (`CONSENT_BINDING=oidc`)
//! or the connections page, the person signs in at the inbound identity
//! provider (code flow with PKCE and a nonce, the state sealed and tied to
//! this browser by a cookie), and the ID token says who they are.

use super::*;
use crate::crypto::{OpenError, Sealable, Sealed};

/// The cookie that ties a browser login to the browser that started it.
const BINDING_COOKIE: &str = "gw_consent";

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
pub(in crate::edge) enum LoginFor<'a> {
    /// Proving who opens this consent link.
    Consent(&'a PendingAuthorization),
    /// Opening the person's connections page.
    Connections,
}

/// [`LoginState::w`] of a sign-in for the connections page.
const FOR_CONNECTIONS: &str = "connections";

impl Sealable for LoginState {
    fn expires_at(&self) -> i64 {
        self.e
    }
}

/// The sign-in's OAuth `state`: the login itself, sealed (nothing stored).
const LOGIN: Sealed<LoginState> = Sealed::new("consent-login");

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
pub(in crate::edge) async fn start_login(
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
    let sealed = LOGIN.seal_with(&keys, &login);
    let verifier = secrecy::SecretString::from(login.v.clone());
    let url = match oauth::authorization_request(
        &metadata.authorization_endpoint,
        client_id,
        &public_url(base, VERIFY_PATH),
        &sealed,
        &verifier,
        &["openid".to_owned()],
        &[("nonce", &login.n)],
    ) {
        Ok(url) => url,
        Err(_) => return login_unavailable("invalid authorization endpoint").into_response(),
    };
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

/// Session binding, step 2: the identity provider sent the browser back.
pub(super) async fn verify(
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
    let login = match LOGIN.open(&*state.keys, sealed, now).await {
        Ok(login) => login,
        Err(OpenError::Keys(e)) => return Err(storage_page(&e)),
        Err(OpenError::Expired) => return Err(storage_page(&Error::AuthorizationExpired)),
        Err(OpenError::Invalid) => return Err(untrusted(
            "The response from the sign-in page does not match any sign-in the gateway started.",
        )),
    };
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
        return Ok(crate::edge::connections::signed_in(state, &base, &claims.sub, now).await);
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
}
