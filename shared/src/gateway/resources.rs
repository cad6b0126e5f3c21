//! Resources: a read or a subscription routed to the target that lists the
//! URI (or a template of it), with the policies' read check.

use futures::future::join_all;
use serde_json::Value;

use super::routing::answers_for;
use crate::policy::Resource;
use crate::wire::codes;

use super::*;

impl Gateway<'_> {
    pub(super) async fn read_resource(&self, params: Option<&Params>) -> Reply {
        let Some(params) = params else {
            return Reply::error(codes::INVALID_PARAMS, "params must be an object");
        };
        let Some(uri) = params.uri() else {
            return Reply::error(codes::INVALID_PARAMS, "params.uri is required");
        };
        let uri = uri.as_str();
        let retry = match self.retry_of("resources/read", params).await {
            Ok(r) => r,
            Err(r) => return r,
        };
        let exposed = match self.exposed_targets().await {
            Ok(t) => t,
            Err(r) => return r,
        };
        let Some(e) = self.owner_of_uri(&exposed, uri).await else {
            return Reply::error(codes::INVALID_PARAMS, format!("Unknown resource: {uri}"));
        };
        crate::observe::note(|r| {
            r.target = Some(e.target.name.clone());
            // Without its query or user info (a presigned URI's signature).
            r.item = Some(crate::telemetry::clean(&audit_uri(uri), 256));
        });
        let item = Resource::Resource {
            target: &e.target.name,
            uri,
        };
        if let Err(refused) = self.permit("resources/read", &item, None).await {
            return refused;
        }
        let mut forwarded = strip_gateway_fields(params);
        if let Err(r) = answers_for(&e.target, &retry, params, &mut forwarded) {
            return r;
        }
        match self
            .forward_answer(&e.target, "resources/read", Some(forwarded))
            .await
        {
            Ok(answer) => {
                self.relay_answer(&e.target, "resources/read", params, answer)
                    .await
            }
            Err(blocked) => {
                self.blocked_reply(&e.target, "resources/read", params, blocked)
                    .await
            }
        }
    }

    /// The answer to a resource request `blocked` from reaching `target`:
    /// a consent or an interaction to go through, or an error.
    async fn blocked_reply(
        &self,
        target: &Target,
        method: &str,
        params: &Params,
        blocked: Blocked,
    ) -> Reply {
        match blocked {
            Blocked::Consent(extra) => self.consent(target, &extra, method, params).await,
            Blocked::Interaction(url) => self.interaction(target, &url, method, params).await,
            Blocked::Retry(why) => {
                // The reason may name the upstream's URL: logged, not returned.
                tracing::warn!(target = %target.name, method, reason = %why, "failed; retryable");
                Reply::error(
                    codes::RETRY_LATER,
                    format!("{} is temporarily unavailable; retry later", target.title()),
                )
            }
            Blocked::Upstream(why) => Reply::error(
                codes::INTERNAL_ERROR,
                format!("{} failed: {why}", target.title()),
            ),
        }
    }

    /// `resources/subscribe` or `resources/unsubscribe` (2025): sent to
    /// the resource's target in the user's 2025 session with it, whose
    /// updates the client's standalone stream relays. Subscribing needs the
    /// permission to read the resource (and each update is checked again).
    pub(super) async fn subscription(&self, method: &str, params: Option<&Params>) -> Reply {
        let Some(params) = params else {
            return Reply::error(codes::INVALID_PARAMS, "params must be an object");
        };
        let Some(uri) = params.uri() else {
            return Reply::error(codes::INVALID_PARAMS, "params.uri is required");
        };
        let exposed = match self.exposed_targets().await {
            Ok(t) => t,
            Err(r) => return r,
        };
        let Some(e) = self.owner_of_uri(&exposed, &uri).await else {
            return Reply::error(codes::INVALID_PARAMS, format!("Unknown resource: {uri}"));
        };
        crate::observe::note(|r| {
            r.target = Some(e.target.name.clone());
            r.item = Some(crate::telemetry::clean(&audit_uri(&uri), 256));
        });
        let item = Resource::Resource {
            target: &e.target.name,
            uri: &uri,
        };
        // Unsubscribing stays possible whatever the policies say now.
        if method == "resources/subscribe" {
            if let Err(refused) = self.permit("resources/read", &item, None).await {
                return refused;
            }
        }
        match self
            .forward(&e.target, method, Some(strip_gateway_fields(params)))
            .await
        {
            Ok(message) => super::pass_through(message),
            Err(blocked) => self.blocked_reply(&e.target, method, params, blocked).await,
        }
    }

    /// The target that lists `uri` (or a template matching it).
    pub(super) async fn owner_of_uri<'e>(
        &self,
        exposed: &'e [Exposed],
        uri: &str,
    ) -> Option<&'e Exposed> {
        self.owners_of_uris(exposed, &[uri.to_owned()])
            .await
            .pop()
            .flatten()
    }

    /// The target of each of `uris` (see [`Self::owner_of_uri`]), each
    /// target's listings asked for once.
    pub(super) async fn owners_of_uris<'e>(
        &self,
        exposed: &'e [Exposed],
        uris: &[String],
    ) -> Vec<Option<&'e Exposed>> {
        if exposed.len() == 1 {
            return uris.iter().map(|_| exposed.first()).collect();
        }
        let listed = |m: Result<Value, Blocked>, key: &str, field: &str| -> Vec<String> {
            m.ok()
                .and_then(|m| {
                    m.get("result")
                        .and_then(|r| r.get(key))
                        .and_then(Value::as_array)
                        .cloned()
                })
                .unwrap_or_default()
                .iter()
                .filter_map(|i| i.get(field).and_then(Value::as_str).map(str::to_owned))
                .collect()
        };
        let listings = join_all(exposed.iter().map(|e| async move {
            let resources = listed(
                self.forward(&e.target, "resources/list", Some(Params::new()))
                    .await,
                "resources",
                "uri",
            );
            // Templates only when some URI is not a listed resource.
            let templates = if uris.iter().all(|u| resources.contains(u)) {
                vec![]
            } else {
                listed(
                    self.forward(&e.target, "resources/templates/list", Some(Params::new()))
                        .await,
                    "resourceTemplates",
                    "uriTemplate",
                )
            };
            (resources, templates)
        }))
        .await;
        uris.iter()
            .map(|uri| {
                // The first target (in order) listing it or a template of it.
                exposed
                    .iter()
                    .zip(&listings)
                    .find(|(_, (resources, templates))| {
                        resources.contains(uri)
                            || templates.iter().any(|t| template_matches(t, uri))
                    })
                    .map(|(e, _)| e)
            })
            .collect()
    }
}

/// A resource URI as the audit trail names it: without query, fragment or
/// user info.
fn audit_uri(uri: &str) -> String {
    let uri = &uri[..uri.find(['?', '#']).unwrap_or(uri.len())];
    if let Some(scheme_end) = uri.find("://").map(|i| i + 3) {
        let rest = &uri[scheme_end..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{}{}", &uri[..scheme_end], &rest[at + 1..]);
        }
    }
    uri.to_owned()
}

/// True when `uri` could be produced by the RFC 6570 level-1 `template`.
pub fn template_matches(template: &str, uri: &str) -> bool {
    let mut rest = uri;
    let mut parts = template.split('{');
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(r) = rest.strip_prefix(first) else {
        return false;
    };
    rest = r;
    for part in parts {
        let Some((_, literal)) = part.split_once('}') else {
            return false;
        };
        if literal.is_empty() {
            return !rest.is_empty();
        }
        match rest.find(literal) {
            Some(i) if i > 0 => rest = &rest[i + literal.len()..],
            _ => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audited_uris_lose_query_fragment_and_user_info() {
        assert_eq!(
            audit_uri("https://u:p@files.example/a/b.txt?X-Amz-Signature=s#f"),
            "https://files.example/a/b.txt"
        );
        assert_eq!(audit_uri("file:///x/y"), "file:///x/y");
        assert_eq!(audit_uri("mem://a/b@c"), "mem://a/b@c");
    }

    #[test]
    fn templates() {
        assert!(template_matches("file:///{path}", "file:///a/b"));
        assert!(template_matches(
            "users://{id}/profile",
            "users://42/profile"
        ));
        assert!(!template_matches(
            "users://{id}/profile",
            "users://42/other"
        ));
        assert!(!template_matches(
            "users://{id}/profile",
            "other://42/profile"
        ));
        assert!(template_matches("plain://x", "plain://x"));
        assert!(!template_matches("plain://x", "plain://y"));
    }
}
