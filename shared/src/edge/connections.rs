//! A person's own connections page: `GET /connections`.
//!
//! The person signs in through the same OpenID Connect sign-in as
//! `/connect` (so it needs `CONSENT_BINDING=oidc`), and sees every target:
//! connected or not, scopes, when connected and last refreshed, status. They
//! can disconnect (RFC 7009 revocation upstream, then delete) or connect.
//!
//! The sign-in ends in a short-lived session: a sealed cookie (HttpOnly,
//! SameSite=Lax; `__Host-` and Secure on https) holding the `sub`, an expiry
//! and a CSRF token. The actions are POSTs that must carry that token in the
//! form and, when the browser sends an `Origin`, come from the gateway's own
//! origin. Every read and change is keyed by the session's `sub` alone.

use std::collections::HashMap;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use lambda_http::request::RequestContext;
use url::Url;

use super::callback::{
    bind_browser, consentable_target, no_base_url, start_login, storage_page, upstream_redirect,
    LoginFor,
};
use super::pages::{escape, html_response, Page, STYLE};
use super::{base_url, public_url};
use crate::config::ConsentBinding;
use crate::connections::{self, Disconnected};
use crate::crypto::{random_token, sha256_hex, Sealable, Sealed};
use crate::domain::PendingAuthorization;
use crate::AppState;

/// The page's path.
pub const CONNECTIONS_PATH: &str = "/connections";
/// How long a sign-in to the page lasts.
pub const SESSION_SECONDS: i64 = 900;
const SESSION_COOKIE: &str = "gw_session";
const SESSION_COOKIE_HTTPS: &str = "__Host-gw_session";

/// What the session cookie holds, sealed.
#[derive(serde::Serialize, serde::Deserialize)]
struct Session {
    /// The signed-in person's `sub`.
    s: String,
    /// CSRF token the page's forms carry.
    c: String,
    /// Expiry (Unix seconds).
    x: i64,
}

impl Sealable for Session {
    fn expires_at(&self) -> i64 {
        self.x
    }
}

const SESSION: Sealed<Session> = Sealed::new("connections-session");

fn session_cookie_name(base: &Url) -> &'static str {
    if base.scheme() == "https" {
        SESSION_COOKIE_HTTPS
    } else {
        SESSION_COOKIE
    }
}

async fn session(state: &AppState, base: &Url, headers: &HeaderMap, now: i64) -> Option<Session> {
    let sealed = super::callback::cookie(headers, session_cookie_name(base))?;
    // A key set that cannot be read now reads as no session: the sign-in
    // that follows says what failed.
    SESSION.open(&*state.keys, &sealed, now).await.ok()
}

/// The end of a sign-in for this page: a session for `sub`, and back to the page.
pub(super) async fn signed_in(state: &AppState, base: &Url, sub: &str, now: i64) -> Response {
    let keys = match state.keys.key_set().await {
        Ok(k) => k,
        Err(e) => return storage_page(&e).into_response(),
    };
    let session = Session {
        s: sub.to_owned(),
        c: random_token(16),
        x: now + SESSION_SECONDS,
    };
    let sealed = SESSION.seal_with(&keys, &session);
    let secure = if base.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let mut res = see_other(&public_url(base, CONNECTIONS_PATH));
    let cookie = format!(
        "{}={sealed}; Path=/; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Lax{secure}",
        session_cookie_name(base)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    tracing::info!(
        audit = "connections_signed_in",
        "signed in to the connections page"
    );
    res
}

fn see_other(location: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn needs_sign_in_configured() -> Page {
    Page::error(
        StatusCode::NOT_FOUND,
        "Connections page unavailable",
        "This gateway has no sign-in configured (CONSENT_BINDING=oidc), so it cannot tell who you are here.",
        "Ask your agent to list your connections (the gateway___connections tool) instead.",
    )
}

/// `GET /connections`: the page, or the sign-in that leads to it.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: axum::extract::Query<HashMap<String, String>>,
    context: Option<Extension<RequestContext>>,
) -> Response {
    let ConsentBinding::Oidc { client_id, .. } = &state.config.consent_binding else {
        return needs_sign_in_configured().into_response();
    };
    let Some(base) = base_url(&state, context.as_deref()) else {
        return no_base_url().into_response();
    };
    let now = state.clock.now();
    let Some(session) = session(&state, &base, &headers, now).await else {
        return start_login(&state, &base, LoginFor::Connections, client_id, now).await;
    };
    match render(&state, &base, &session, &query).await {
        Ok(html) => {
            let mut res = html_response(StatusCode::OK, html);
            // The forms' POSTs must carry this page's Origin, which browsers
            // replace with `null` under `no-referrer`; nothing secret is in
            // this page's URL, and other sites still get no referrer.
            res.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
            res
        }
        Err(page) => page.into_response(),
    }
}

/// One row of the page.
struct Row {
    target: String,
    title: String,
    status: &'static str,
    scopes: Vec<String>,
    connected_at: Option<i64>,
    refreshed_at: Option<i64>,
}

async fn render(
    state: &AppState,
    base: &Url,
    session: &Session,
    query: &HashMap<String, String>,
) -> Result<String, Page> {
    let targets = state.targets.list().await.map_err(|e| storage_page(&e))?;
    let grants = connections::list(state, &session.s)
        .await
        .map_err(|e| storage_page(&e))?;
    let rows: Vec<Row> = targets
        .iter()
        .filter(|t| t.auth.is_per_user())
        .map(|t| {
            let grant = grants.iter().find(|g| g.target == t.name);
            Row {
                target: t.name.clone(),
                title: t.title().to_owned(),
                status: match grant.map(|g| g.status) {
                    Some("active") => "connected",
                    Some(_) => "needs_consent",
                    None => "not_connected",
                },
                scopes: grant.map(|g| g.scopes.clone()).unwrap_or_default(),
                connected_at: grant.map(|g| g.connected_at),
                refreshed_at: grant.map(|g| g.updated_at),
            }
        })
        .collect();
    let notice = query
        .get("disconnected")
        .and_then(|t| rows.iter().find(|r| &r.target == t))
        .map(|r| {
            format!(
                r#"<p id="notice">Disconnected from {}.</p>"#,
                escape(&r.title)
            )
        })
        .unwrap_or_default();
    let action = |what: &str, row: &Row, label: &str| {
        format!(
            r#"<form method="post" action="{}"><input type="hidden" name="target" value="{}"><input type="hidden" name="csrf" value="{}"><button type="submit" id="{what}-{}">{label}</button></form>"#,
            escape(&public_url(base, &format!("{CONNECTIONS_PATH}/{what}"))),
            escape(&row.target),
            escape(&session.c),
            escape(&row.target),
        )
    };
    let mut body = String::new();
    for r in &rows {
        let (status, button) = match r.status {
            "connected" => ("Connected", action("disconnect", r, "Disconnect")),
            "needs_consent" => (
                "Needs reconnecting",
                format!(
                    "{}{}",
                    action("connect", r, "Reconnect"),
                    action("disconnect", r, "Disconnect")
                ),
            ),
            _ => ("Not connected", action("connect", r, "Connect")),
        };
        body.push_str(&format!(
            r#"<tr data-target="{}" data-status="{}"><td>{}</td><td>{status}</td><td>{}</td><td>{}</td><td>{}</td><td>{button}</td></tr>"#,
            escape(&r.target),
            r.status,
            escape(&r.title),
            escape(&r.scopes.join(" ")),
            r.connected_at.map(utc).unwrap_or_default(),
            r.refreshed_at.map(utc).unwrap_or_default(),
        ));
    }
    if rows.is_empty() {
        body.push_str(
            r#"<tr><td colspan="6">No services are registered with this gateway.</td></tr>"#,
        );
    }
    Ok(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Your connections</title><style>{STYLE}</style></head>
<body><main><h1 id="title">Your connections</h1>{notice}<p id="message">The services the gateway can use on your behalf. Disconnecting revokes the gateway's access at the service.</p>
<table><thead><tr><th>Service</th><th>Status</th><th>Scopes</th><th>Connected</th><th>Last refreshed</th><th></th></tr></thead><tbody>{body}</tbody></table></main></body></html>
"#
    ))
}

/// `POST /connections/{action}` (`connect`, `disconnect`).
pub async fn act(
    State(state): State<AppState>,
    Path(what): Path<String>,
    headers: HeaderMap,
    context: Option<Extension<RequestContext>>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Some(base) = base_url(&state, context.as_deref()) else {
        return no_base_url().into_response();
    };
    let now = state.clock.now();
    let refused = |why: &str| {
        tracing::warn!(
            audit = "connections_refused",
            reason = why,
            "connections action refused"
        );
        Page::error(
            StatusCode::FORBIDDEN,
            "This request was refused",
            "It did not come from your connections page, or your sign-in there has ended.",
            "Open the connections page again and retry.",
        )
        .into_response()
    };
    let Some(session) = session(&state, &base, &headers, now).await else {
        return refused("no session");
    };
    let same_origin = match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => true,
        Some(Ok(o)) => o == base.origin().ascii_serialization(),
        Some(Err(_)) => false,
    };
    if !same_origin {
        return refused("cross-origin");
    }
    let Ok(Form(form)) = form else {
        return refused("unreadable form");
    };
    let csrf_ok = form
        .get("csrf")
        .is_some_and(|c| sha256_hex(c.as_bytes()) == sha256_hex(session.c.as_bytes()));
    if !csrf_ok {
        return refused("csrf");
    }
    let Some(target) = form.get("target").filter(|t| !t.is_empty()) else {
        return refused("no target");
    };
    let sub = &session.s;
    match what.as_str() {
        "disconnect" => match connections::disconnect(&state, sub, target).await {
            Ok(outcome) => {
                tracing::info!(audit = "disconnected", target = %target, revoked = matches!(outcome, Disconnected::Revoked), "disconnected from the connections page");
                let mut event = crate::observe::AuditEvent::new(
                    "disconnect",
                    match outcome {
                        Disconnected::NotConnected => "not_connected",
                        _ => "ok",
                    },
                    crate::observe::now_ms(),
                );
                event.user = Some(sub.clone());
                event.target = Some(crate::telemetry::clean(target, 64));
                state.observe.audit.write(&state.upstream, &[event]).await;
                let mut url = Url::parse(&public_url(&base, CONNECTIONS_PATH))
                    .unwrap_or_else(|_| base.clone());
                url.query_pairs_mut().append_pair("disconnected", target);
                see_other(url.as_str())
            }
            Err(e) => storage_page(&e).into_response(),
        },
        "connect" => {
            let (t, settings) = match consentable_target(&state, target).await {
                Ok(t) => t,
                Err(page) => return page.into_response(),
            };
            let ttl = state.config.authorization_ttl.as_secs() as i64;
            let mut pending = PendingAuthorization::for_target(sub, &t, &settings, &[], now, ttl);
            pending.return_url = Some(public_url(&base, CONNECTIONS_PATH));
            if let Err(e) = state.authorizations.create(&pending).await {
                return storage_page(&e).into_response();
            }
            // The person is known (signed in here): this browser may finish.
            let browser = match bind_browser(&state, &base, &headers, &pending, now).await {
                Ok(b) => b,
                Err(page) => return page.into_response(),
            };
            let mut res = upstream_redirect(&state, &base, &pending, &t, &settings);
            // A redirect after a POST is followed with GET.
            *res.status_mut() = StatusCode::SEE_OTHER;
            browser.set_on(&mut res);
            res
        }
        _ => Page::error(
            StatusCode::NOT_FOUND,
            "Page not found",
            "There is no such action.",
            "Open the connections page again.",
        )
        .into_response(),
    }
}

/// `YYYY-MM-DD HH:MM UTC` for Unix seconds.
fn utc(t: i64) -> String {
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = crate::telemetry::civil_date(t.div_euclid(86_400));
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3_600,
        secs % 3_600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_796_083_260), "2026-12-01 00:01 UTC");
    }
}
