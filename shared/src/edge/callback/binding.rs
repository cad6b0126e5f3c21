//! Browser binding: once the gateway knows who is in the browser, the
//! consent is tied to that browser by a cookie whose digest is sealed into
//! the pending authorization; `/oauth/callback` refuses any other browser.

use super::*;

/// The browser-binding cookie: set once the gateway knows who is in the
/// browser, its digest sealed into the pending authorization, and required
/// by `/oauth/callback`. On https it carries the `__Host-` prefix (Secure,
/// no Domain, Path=/), so no other host can plant or overwrite it.
const BROWSER_COOKIE: &str = "gw_browser";
/// [`BROWSER_COOKIE`] on https.
const BROWSER_COOKIE_HTTPS: &str = "__Host-gw_browser";

/// The browser-binding cookie this response sets.
pub(in crate::edge) struct BrowserCookie(String);

impl BrowserCookie {
    pub(in crate::edge) fn set_on(&self, res: &mut Response) {
        if let Ok(v) = HeaderValue::from_str(&self.0) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

fn browser_cookie_name(base: &Url) -> &'static str {
    if base.scheme() == "https" {
        BROWSER_COOKIE_HTTPS
    } else {
        BROWSER_COOKIE
    }
}

/// The browser's binding value, if it sent a well-formed one.
pub(super) fn browser_value(base: &Url, headers: &HeaderMap) -> Option<String> {
    cookie(headers, browser_cookie_name(base)).filter(|v| {
        (16..=128).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Binds `pending` to this browser (its existing binding cookie, or a new
/// one), atomically: a link already bound to another browser is refused.
pub(in crate::edge) async fn bind_browser(
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

pub(super) fn other_browser_page() -> Page {
    Page::error(
        StatusCode::FORBIDDEN,
        "This connection was started in another browser",
        "This connection was started in another browser, or by another person, so the gateway cancelled it. Nothing was connected.",
        "If you want to connect this service, ask your own agent for a new link and open it in this browser.",
    )
}

/// How a consent id appears in logs: in `link` mode the id is a bearer
/// capability until it is used, so only a digest is logged.
pub(super) fn authorization_ref(state: &AppState, id: &str) -> String {
    state.config.authorization_log_ref(id)
}

#[cfg(test)]
mod tests {
    use super::*;

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
