//! Small HTML pages shown to people in a browser (consent results).
//!
//! Every value is escaped; pages carry no tokens, codes or verifiers; the
//! headers forbid caching, framing, scripts and referrers.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// How long the success page shows before it returns the person to the app.
pub const RETURN_DELAY_SECONDS: u32 = 3;

/// What a page says.
#[derive(Debug, Clone)]
pub struct Page {
    /// HTTP status.
    pub status: StatusCode,
    /// Headline.
    pub title: String,
    /// What happened.
    pub message: String,
    /// What to do now.
    pub next: String,
    /// Success pages are styled differently.
    pub ok: bool,
    /// Where the page sends the person after a short notice (an allowed
    /// http(s) URL), with a link to go there at once.
    pub back: Option<url::Url>,
}

impl Page {
    /// A failure page.
    pub fn error(
        status: StatusCode,
        title: impl Into<String>,
        message: impl Into<String>,
        next: impl Into<String>,
    ) -> Self {
        Page {
            status,
            title: title.into(),
            message: message.into(),
            next: next.into(),
            ok: false,
            back: None,
        }
    }

    /// The success page after a consent; with `back`, it returns the
    /// person there after a few seconds.
    pub fn connected(service: &str, back: Option<&str>) -> Self {
        let back = back
            .and_then(|b| url::Url::parse(b).ok())
            .filter(|b| matches!(b.scheme(), "https" | "http"));
        let next = match &back {
            Some(b) => format!(
                "Taking you back to {} in a moment; then retry what you asked your agent to do.",
                b.host_str().unwrap_or("your app")
            ),
            None => "You can close this window and go back to your agent; retry what you asked it to do.".into(),
        };
        Page {
            status: StatusCode::OK,
            title: format!("Connected to {service}"),
            message: format!("The gateway can now use {service} on your behalf."),
            next,
            ok: true,
            back,
        }
    }

    /// The HTML document.
    pub fn render(&self) -> String {
        let (accent, mark) = if self.ok {
            ("#1a7f37", "&#10003;")
        } else {
            ("#b42318", "!")
        };
        format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title>{refresh}
<style>{STYLE}.mark{{width:3rem;height:3rem;border-radius:50%;background:{accent};color:#fff;font-size:1.6rem;display:flex;align-items:center;justify-content:center}}</style></head>
<body><main><div class="mark" aria-hidden="true">{mark}</div><h1 id="title">{title}</h1><p id="message">{message}</p><p class="next" id="next">{next}</p>{link}</main></body></html>
"#,
            refresh = self
                .back
                .as_ref()
                .map(|b| format!(
                    r#"<meta http-equiv="refresh" content="{RETURN_DELAY_SECONDS};url={}">"#,
                    escape(b.as_str())
                ))
                .unwrap_or_default(),
            link = self
                .back
                .as_ref()
                .map(|b| format!(
                    r#"<p><a id="back" href="{}">Return to {}</a></p>"#,
                    escape(b.as_str()),
                    escape(b.host_str().unwrap_or("your app"))
                ))
                .unwrap_or_default(),
            title = escape(&self.title),
            message = escape(&self.message),
            next = escape(&self.next),
        )
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        html_response(self.status, self.render())
    }
}

/// The styles every page shares.
pub const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f6f8fa;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}main{background:#fff;max-width:44rem;padding:2rem 2.5rem;border-radius:12px;box-shadow:0 1px 3px rgba(0,0,0,.12)}h1{font-size:1.4rem;margin:1rem 0 .5rem}p{color:#333;line-height:1.5}.next{color:#555}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #e5e7eb;vertical-align:top}form{margin:0}button{font:inherit;padding:.3rem .8rem;border-radius:6px;border:1px solid #d0d7de;background:#f6f8fa;cursor:pointer}";

/// An HTML document with the headers every page carries: no caching,
/// framing, scripts or referrers.
pub fn html_response(status: StatusCode, html: String) -> Response {
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_everything() {
        let p = Page::error(StatusCode::BAD_REQUEST, "<b>x</b>", "a & \"b\"", "'c'");
        let html = p.render();
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(html.contains("a &amp; &quot;b&quot;"));
        assert!(!html.contains("<b>"));
    }

    #[test]
    fn the_success_page_returns_only_to_http_urls() {
        let html = Page::connected("S", Some("https://app.example/done?a=1&b=\"x")).render();
        assert!(
            html.contains(r#"content="3;url=https://app.example/done?a=1&amp;b=%22x""#),
            "{html}"
        );
        assert!(html.contains(r#"<a id="back" href="https://app.example/done?a=1&amp;b=%22x">Return to app.example</a>"#));
        for bad in [Some("javascript:alert(1)"), Some("not a url"), None] {
            let html = Page::connected("S", bad).render();
            assert!(
                !html.contains("refresh") && !html.contains("id=\"back\""),
                "{bad:?}"
            );
        }
    }
}
