//! Consent: a pending authorization and the link, told to the client as
//! its protocol era and declared capabilities allow; `requestState` sealing.

use serde_json::{json, Value};

use super::options::consent_options;
use crate::crypto::{sha256_hex, OpenError, Sealable, Sealed};
use crate::domain::{PendingAuthorization, Target, TargetAuth};
use crate::urls::connect_url;
use crate::wire::{codes, meta};

use super::*;

impl Gateway<'_> {
    // ----- consent -----

    /// Starts a consent for `target` and tells the client, as its protocol
    /// version allows.
    pub(super) async fn consent(
        &self,
        target: &Target,
        extra_scopes: &[String],
        method: &str,
        params: &Params,
    ) -> Reply {
        // The stored target, not the one this request started with: a
        // refusal may have just moved it to another authorization server.
        let fresh = match self.state.targets.get_fresh(&target.name).await {
            Ok(Some(t)) => Some(t),
            _ => None,
        };
        let target = fresh.as_ref().unwrap_or(target);
        let TargetAuth::OAuth(settings) = &target.auth else {
            return self.failure(
                method,
                &format!("{} refused the call.", target.title()),
                false,
            );
        };
        if !target.auth.is_per_user() {
            return self.failure(
                method,
                &format!(
                    "{} refused the gateway's credentials; ask the gateway's operator to check this target.",
                    target.title()
                ),
                false,
            );
        }
        // Where the success page sends the person: the call's own URL if it
        // is allowed (a clear error if not), else the target's default.
        let requested = match consent_options(params.meta()) {
            Ok(o) => o.return_url,
            Err(why) => return Reply::error(codes::INVALID_PARAMS, why),
        };
        let return_url = match requested {
            Some(url) => match target
                .return_to
                .check(url, &self.state.config.return_url_allowlist)
            {
                Ok(u) => Some(u.to_string()),
                Err(why) => return Reply::error(codes::INVALID_PARAMS, why),
            },
            None => target.return_to.default_url.clone(),
        };
        let now = self.state.clock.now();
        let mut pending = PendingAuthorization::for_target(
            self.caller.sub(),
            target,
            settings,
            extra_scopes,
            now,
            self.state.config.authorization_ttl.as_secs() as i64,
        );
        pending.return_url = return_url;
        if let Err(e) = self.state.authorizations.create(&pending).await {
            tracing::error!(error = %e, "could not store a pending authorization");
            return self.failure(
                method,
                "The gateway could not start the connection; retry in a moment.",
                true,
            );
        }
        let url = connect_url(&self.base, &pending.id);
        tracing::info!(
            target = %target.name,
            authorization = %self.state.config.authorization_log_ref(&pending.id),
            "consent needed"
        );
        self.tell_link(target, &url, &pending.id, method, params, now)
            .await
    }

    /// The authorization server of a token-exchange target asked for the
    /// person's interaction at `url` (`interaction_required`): the link is
    /// told to the client exactly as the gateway's own consent links are.
    pub(super) async fn interaction(
        &self,
        target: &Target,
        url: &str,
        method: &str,
        params: &Params,
    ) -> Reply {
        let now = self.state.clock.now();
        tracing::info!(target = %target.name, "the authorization server asked for the user's interaction");
        let id = crate::crypto::random_token(16);
        self.tell_link(target, url, &id, method, params, now).await
    }

    /// Tells the client to open `url`, as its protocol version and declared
    /// capabilities allow.
    async fn tell_link(
        &self,
        target: &Target,
        url: &str,
        elicitation_id: &str,
        method: &str,
        params: &Params,
        now: i64,
    ) -> Reply {
        let message = format!(
            "{} needs your permission. Open {url} to connect your account, then retry.",
            target.title()
        );
        let prompt = format!("Connect your {} account to continue.", target.title());
        crate::observe::note(|r| r.consent_required = true);
        // The client's declared capability, not its protocol era, decides:
        // a client that did not declare URL elicitation gets the link as
        // text it can show (a 2026-07-28 client without an elicitation
        // handler would otherwise fail on `input_required` and the user
        // would never see the link).
        if self.caller.modern() && self.caller.url_elicitation {
            // 2026-07-28 URL elicitations carry no elicitationId.
            let elicitation = json!({"mode": "url", "url": url, "message": prompt});
            let state = match self.seal_request_state(method, params, now).await {
                Some(s) => s,
                None => {
                    return self.failure(
                        method,
                        "The gateway could not start the connection; retry in a moment.",
                        true,
                    )
                }
            };
            return Reply::Result(json!({
                "resultType": "input_required",
                "inputRequests": {
                    format!("connect-{}", target.name): {"method": "elicitation/create", "params": elicitation}
                },
                "requestState": state,
            }));
        }
        let elicitation =
            json!({"mode": "url", "elicitationId": elicitation_id, "url": url, "message": prompt});
        if self.caller.url_elicitation {
            return Reply::Error {
                code: codes::URL_ELICITATION_REQUIRED,
                message: "URL elicitation required".into(),
                data: Some(json!({"elicitations": [elicitation]})),
            };
        }
        if method == "tools/call" {
            return Reply::Result(
                json!({"content": [{"type": "text", "text": message}], "isError": true}),
            );
        }
        Reply::Error {
            code: codes::URL_ELICITATION_REQUIRED,
            message,
            data: Some(json!({"elicitations": [elicitation]})),
        }
    }

    pub(super) async fn seal_request_state(
        &self,
        method: &str,
        params: &Params,
        now: i64,
    ) -> Option<String> {
        self.seal_round(method, params, now, None).await
    }

    /// A `requestState` for this user, call and round: the gateway's own
    /// consent round (`upstream` none) or an upstream's round.
    async fn seal_round(
        &self,
        method: &str,
        params: &Params,
        now: i64,
        upstream: Option<UpstreamRound>,
    ) -> Option<String> {
        let state = RequestState {
            sub: self.caller.sub().to_owned(),
            method: method.to_owned(),
            digest: params_digest(params),
            exp: now + REQUEST_STATE_TTL,
            upstream,
        };
        REQUEST_STATE.seal(&*self.state.keys, &state).await.ok()
    }

    /// An upstream's answer to the client's call: an `input_required`
    /// result goes to a 2026-07-28 client as the gateway's own round (its
    /// input requests as sent, and a `requestState` of the gateway's that
    /// binds the round to this user, call and target and carries the
    /// upstream's state); anything else as [`pass_through`] makes it (a
    /// result that needs no change as the upstream wrote it).
    pub(super) async fn relay_answer(
        &self,
        target: &Target,
        method: &str,
        params: &Params,
        answer: Answer,
    ) -> Reply {
        // Without a `resultType`, it does not ask for input.
        if let Some(result) = answer.as_is() {
            return Reply::AsIs(result);
        }
        let mut message = match super::forward::read_tree(answer) {
            Ok(m) => m,
            Err(why) => {
                tracing::warn!(target = %target.name, reason = %why, "upstream failure");
                return self.failure(method, &format!("{} failed: {why}", target.title()), false);
            }
        };
        let asks = message
            .get("result")
            .and_then(|r| r.get("resultType"))
            .and_then(Value::as_str)
            == Some("input_required");
        if !asks {
            return super::pass_through(message);
        }
        let mut result = message
            .get_mut("result")
            .map(Value::take)
            .unwrap_or_default();
        let requests = match result.get_mut("inputRequests").map(Value::take) {
            Some(Value::Object(r)) if !r.is_empty() => r,
            _ => {
                tracing::warn!(target = %target.name, "an upstream's input_required result has no input requests");
                return Reply::error(
                    codes::INTERNAL_ERROR,
                    format!("{} asked for input without saying what", target.title()),
                );
            }
        };
        if !self.caller.modern() {
            // A 2025 client answers server requests on another HTTP
            // request, which a function answering once cannot wait for.
            return Reply::error(
                codes::INVALID_REQUEST,
                format!(
                    "{} asked for more input, which the gateway relays only to clients of protocol 2026-07-28",
                    target.title()
                ),
            );
        }
        let upstream_state = match result.get("requestState") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() <= MAX_UPSTREAM_STATE_BYTES => Some(s.clone()),
            Some(_) => {
                tracing::warn!(target = %target.name, "an upstream's requestState is not a string or too long");
                return Reply::error(
                    codes::INTERNAL_ERROR,
                    format!("{} asked for input with an unusable state", target.title()),
                );
            }
        };
        let round = UpstreamRound {
            target: target.name.clone(),
            state: upstream_state,
        };
        let now = self.state.clock.now();
        let Some(state) = self.seal_round(method, params, now, Some(round)).await else {
            return self.failure(
                method,
                "The gateway could not relay the service's question; retry in a moment.",
                true,
            );
        };
        Reply::Result(json!({
            "resultType": "input_required",
            "inputRequests": requests,
            "requestState": state,
        }))
    }

    /// What a retry's `requestState` says (see [`Retry`]); a state that is
    /// not ours, for this user, method and parameters, unexpired, is an
    /// error.
    pub(super) async fn retry_of(&self, method: &str, params: &Params) -> Result<Retry, Reply> {
        let Some(state) = params.raw("requestState") else {
            return Ok(Retry::Fresh);
        };
        let bad = || Reply::error(codes::INVALID_PARAMS, "invalid or expired requestState");
        let Ok(sealed) = serde_json::from_str::<String>(state.get()) else {
            return Err(bad());
        };
        let now = self.state.clock.now();
        match REQUEST_STATE.open(&*self.state.keys, &sealed, now).await {
            Ok(s)
                if s.sub == self.caller.sub()
                    && s.method == method
                    && s.digest == params_digest(params) =>
            {
                Ok(match s.upstream {
                    Some(round) => Retry::Upstream(round),
                    None => Retry::Consent,
                })
            }
            Err(OpenError::Keys(e)) => {
                tracing::error!(error = %e, "key set unavailable");
                Err(Reply::error(
                    codes::RETRY_LATER,
                    "the gateway is temporarily unavailable; retry",
                ))
            }
            Ok(_) | Err(OpenError::Invalid) | Err(OpenError::Expired) => Err(bad()),
        }
    }

    /// A retry that carries a `requestState` must carry ours, for this
    /// user, method and parameters, unexpired.
    pub(super) async fn check_request_state(&self, method: &str, params: &Params) -> Option<Reply> {
        self.retry_of(method, params).await.err()
    }

    /// The `<target>___connect` tool: consent if needed, else say so.
    pub(super) async fn connect_target(&self, target: &Target, params: &Params) -> Reply {
        if let Some(r) = self.check_request_state("tools/call", params).await {
            return r;
        }
        let connected = || {
            Reply::Result(json!({
                "content": [{"type": "text", "text": format!("{} is connected. List the tools again to see its tools.", target.title())}],
                "isError": false,
            }))
        };
        match self.token(target).await {
            // A grant is no proof the upstream takes it for listing (it may
            // want more scopes): ask it, so a refusal becomes a consent for
            // what it wants instead of a dead end.
            Ok(_) => match self
                .forward(target, "tools/list", Some(Params::new()))
                .await
            {
                Ok(m) if m.get("result").is_some() => connected(),
                Ok(_) => self.failure(
                    "tools/call",
                    &format!(
                        "{} is connected but refused to list its tools.",
                        target.title()
                    ),
                    false,
                ),
                Err(Blocked::Consent(extra)) => {
                    self.consent(target, &extra, "tools/call", params).await
                }
                Err(Blocked::Interaction(url)) => {
                    self.interaction(target, &url, "tools/call", params).await
                }
                Err(Blocked::Retry(why)) | Err(Blocked::Upstream(why)) => {
                    tracing::warn!(target = %target.name, reason = %why, "connect tool: the upstream did not list its tools");
                    self.failure(
                        "tools/call",
                        &format!(
                            "{} is connected but did not list its tools; retry in a moment.",
                            target.title()
                        ),
                        true,
                    )
                }
            },
            Err(Blocked::Consent(extra)) => {
                self.consent(target, &extra, "tools/call", params).await
            }
            Err(Blocked::Interaction(url)) => {
                self.interaction(target, &url, "tools/call", params).await
            }
            Err(Blocked::Retry(why)) | Err(Blocked::Upstream(why)) => {
                tracing::warn!(target = %target.name, reason = %why, "connect tool: grant unavailable");
                self.failure(
                    "tools/call",
                    "The gateway could not check the connection; retry in a moment.",
                    true,
                )
            }
        }
    }
}

/// What a `requestState` holds: who may retry, which call, until when,
/// and whose round it is.
#[derive(serde::Serialize, serde::Deserialize)]
struct RequestState {
    sub: String,
    method: String,
    /// [`params_digest`] of the call's parameters.
    digest: String,
    exp: i64,
    /// An upstream's round (none: the gateway's own consent round).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upstream: Option<UpstreamRound>,
}

/// An upstream's `input_required` round, relayed: the target that asked
/// and the upstream's own `requestState`, returned to it with the
/// client's `inputResponses`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct UpstreamRound {
    pub(super) target: String,
    pub(super) state: Option<String>,
}

/// What a call's `requestState` says about it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// None: a first call (its `inputResponses`, if any, go upstream as
    /// they are; an upstream that sent no state asked for them).
    Fresh,
    /// The gateway's consent round: the answers were the gateway's.
    Consent,
    /// An upstream's round: its answers and state go back to it.
    Upstream(UpstreamRound),
}

/// The longest upstream `requestState` carried inside the gateway's.
const MAX_UPSTREAM_STATE_BYTES: usize = 16 * 1024;

impl Sealable for RequestState {
    fn expires_at(&self) -> i64 {
        self.exp
    }
}

const REQUEST_STATE: Sealed<RequestState> = Sealed::new("request-state");

/// Digest of the parameters that identify a request (not the retry fields),
/// over their canonical form (members and object keys in order), so a
/// retry that spells the same values differently still matches.
pub(super) fn params_digest(params: &Params) -> String {
    let mut p = params.to_value();
    p.remove("requestState");
    p.remove("inputResponses");
    p.remove("_meta");
    sha256_hex(crate::wire::canonical_json(&Value::Object(p)).as_bytes())
}

/// Params as the upstream should see them: without the gateway's retry
/// fields and `_meta` options (every other member as sent).
pub(super) fn strip_gateway_fields(params: &Params) -> Params {
    stripped_for_upstream(params, None)
}

/// [`strip_gateway_fields`], leaving out `replaced` too (a member the
/// caller sets again: not copied only to be overwritten).
pub(super) fn stripped_for_upstream(params: &Params, replaced: Option<&str>) -> Params {
    // An object `_meta` is added back below, as the upstream may see it.
    let meta = if params.meta().is_some() {
        "_meta"
    } else {
        "requestState"
    };
    let dropped = [
        "requestState",
        "inputResponses",
        meta,
        replaced.unwrap_or("requestState"),
    ];
    let mut p = params.without(&dropped);
    if let Some(mut m) = params.meta().cloned() {
        super::options::strip(&mut m);
        m.remove(meta::PROTOCOL_VERSION);
        m.remove(meta::CLIENT_CAPABILITIES);
        m.remove(meta::CLIENT_INFO);
        if m.is_empty() {
            p.remove("_meta");
        } else {
            p.set("_meta", &m);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(text: &str) -> Params {
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{text}}}"#);
        match crate::wire::envelope::parse(body.as_bytes()) {
            crate::wire::envelope::Parsed::Request(r) => r.params.unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn digests_ignore_retry_fields() {
        let a = params(r#"{"name": "t", "arguments": {"x": 1, "y": [1, 2]}}"#);
        let b = params(
            r#"{"arguments":{"y":[1,2],"x":1},"name":"t","requestState":"s","inputResponses":{},"_meta":{"k":1}}"#,
        );
        assert_eq!(params_digest(&a), params_digest(&b));
        let c = params(r#"{"name": "t", "arguments": {"x": 2, "y": [1, 2]}}"#);
        assert_ne!(params_digest(&a), params_digest(&c));
    }

    #[test]
    fn forwarded_params_lose_gateway_fields() {
        let p = params(
            r#"{"name": "t", "arguments": {"b": 1, "a": 2}, "requestState": "s", "_meta": {"mcp-oauth-gateway/forceConsent": true, "progressToken": 1}}"#,
        );
        assert_eq!(
            serde_json::to_string(&strip_gateway_fields(&p)).unwrap(),
            r#"{"_meta":{"progressToken":1},"arguments":{"b": 1, "a": 2},"name":"t"}"#
        );
        let only_options =
            params(r#"{"name": "t", "_meta": {"mcp-oauth-gateway/returnUrl": "x"}}"#);
        assert_eq!(
            serde_json::to_string(&strip_gateway_fields(&only_options)).unwrap(),
            r#"{"name":"t"}"#
        );
    }
}
