//! The gateway's public URLs, spelled once: the MCP flows build links the
//! HTTP routers serve, so both take them from here and neither imports the
//! other.

use url::Url;

/// The route of a consent link (axum path syntax).
pub const CONNECT_ROUTE: &str = "/connect/{id}";

/// `base` joined with an absolute path, keeping any path prefix of `base`
/// (a custom domain mapped under `/gateway/` stays under it).
pub fn public_url(base: &Url, path: &str) -> String {
    format!("{}{}", base.as_str().trim_end_matches('/'), path)
}

/// The consent link of the pending authorization `id`.
pub fn connect_url(base: &Url, id: &str) -> String {
    public_url(base, &CONNECT_ROUTE.replace("{id}", id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_base_path() {
        let base = Url::parse("https://gw.example/gateway/").unwrap();
        assert_eq!(
            connect_url(&base, "abc"),
            "https://gw.example/gateway/connect/abc"
        );
        let bare = Url::parse("https://gw.example").unwrap();
        assert_eq!(public_url(&bare, "/mcp"), "https://gw.example/mcp");
    }
}
