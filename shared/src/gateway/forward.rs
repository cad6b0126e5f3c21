//! Calling a target for the caller: its credentials (the user's grant, a
//! machine or exchanged token, an API key, a DPoP key), the call itself,
//! and what a refusal means (a refresh, a consent, or an error).

use super::*;

impl Gateway<'_> {
    /// A usable token for the target, or why not.
    pub(super) async fn token(
        &self,
        target: &Target,
    ) -> Result<Option<Arc<crate::domain::Grant>>, Blocked> {
        self.token_for(target, false).await
    }

    /// [`Gateway::token`]; `renew` asks for a new exchanged token (the
    /// upstream refused the cached one).
    pub(super) async fn token_for(
        &self,
        target: &Target,
        renew: bool,
    ) -> Result<Option<Arc<crate::domain::Grant>>, Blocked> {
        let TargetAuth::OAuth(settings) = &target.auth else {
            return Ok(None);
        };
        // Token exchange: the caller's own token, exchanged per user.
        if settings.flow.is_exchange() {
            // Boxed here and below: the other kinds of credential, and
            // everything after a refusal, stay out of the future of a call
            // with a user's grant (see `docs/performance-notes.md`).
            return match Box::pin(self.state.tokens.exchanged_grant(
                self.caller.sub(),
                target,
                self.caller.inbound_token.as_ref(),
                self.state.config.refresh_margin.as_secs() as i64,
                renew,
            ))
            .await
            {
                Ok(g) => Ok(Some(Arc::new(g))),
                Err(ExchangeFailure::Interaction(url)) => Err(Blocked::Interaction(url)),
                Err(ExchangeFailure::Retry(why)) => Err(Blocked::Retry(why)),
                Err(ExchangeFailure::NoSubjectToken) => Err(Blocked::Upstream(
                    "this service needs the bearer token you signed in with, and the request carried none".into(),
                )),
                Err(ExchangeFailure::Refused(code)) => {
                    tracing::warn!(target = %target.name, error = %crate::telemetry::clean(&code, 64), "token exchange refused");
                    Err(Blocked::Upstream(
                        "its authorization server refused to exchange your token".into(),
                    ))
                }
            };
        }
        // Client credentials or a JWT bearer grant: the target's machine
        // token, for every user.
        if settings.flow.is_machine() {
            return match Box::pin(self.state.tokens.machine_grant(
                target,
                &self.owner,
                self.state.config.refresh_margin.as_secs() as i64,
                LeasePolicy::default(),
            ))
            .await
            {
                Ok(g) => Ok(Some(g)),
                Err(NoGrant::Retry(why)) => Err(Blocked::Retry(why)),
                Err(_) => Err(refused_credentials()),
            };
        }
        // Only these hold per-user grants (and ever need a consent).
        match self
            .state
            .tokens
            .usable_grant(
                self.caller.sub(),
                &target.name,
                &self.owner,
                self.state.config.refresh_margin.as_secs() as i64,
                LeasePolicy::default(),
            )
            .await
        {
            Ok(g) => Ok(Some(g)),
            Err(NoGrant::Missing) | Err(NoGrant::NeedsConsent) => Err(Blocked::Consent(vec![])),
            Err(NoGrant::Retry(why)) => Err(Blocked::Retry(why)),
        }
    }

    /// [`Gateway::forward_answer`], with the answer read as a tree (for
    /// the gateway's own use of it: listings, lookups).
    pub(super) async fn forward(
        &self,
        target: &Target,
        method: &str,
        params: Option<Params>,
    ) -> Result<Value, Blocked> {
        read_tree(self.forward_answer(target, method, params).await?).map_err(Blocked::Upstream)
    }

    /// Sends `method` to `target` for the caller: refresh once on 401, ask for
    /// consent when the grant is missing, dead, or lacks scopes. The answer
    /// is as it came (see [`crate::upstream::Answer`]).
    pub(super) async fn forward_answer(
        &self,
        target: &Target,
        method: &str,
        params: Option<Params>,
    ) -> Result<Answer, Blocked> {
        let mut grant = self.token(target).await?;
        let api_key = self.api_key(target).await?;
        let param_headers = self.param_headers_for(target, method, params.as_ref());
        for attempt in 0..=1 {
            let token = grant.as_ref().map(|g| &g.tokens.access_token);
            let dpop = dpop_key(target, grant.as_deref())?;
            let call = Call {
                sub: self.caller.sub(),
                target: &target.name,
                url: &target.mcp_url,
                token,
                dpop: dpop.as_ref(),
                api_key: api_key.as_ref().map(|(k, key)| (*k, key)),
                aws_iam: match &target.auth {
                    TargetAuth::AwsIam(a) => Some(a),
                    _ => None,
                },
                method,
                params: params.as_ref(),
                // Only the call the client made relays (not listings or
                // the lookups made to route it).
                relay: answers_client(method).then_some(&self.relayed),
                // A 2025 client's log messages, as a 2025 server would
                // send them without a logging/setLevel.
                log_level: (!self.caller.modern()).then_some(DEFAULT_LOG_LEVEL),
                param_headers: &param_headers,
                client_capabilities: self
                    .caller
                    .relayed_capabilities
                    .as_ref()
                    .filter(|_| answers_client(method)),
                legacy: is_subscription(method),
                client_requests: self
                    .asks
                    .as_ref()
                    .filter(|_| answers_client(method))
                    .map(|a| a as &dyn crate::upstream::ClientRequests),
            };
            let started = std::time::Instant::now();
            let answer = self.state.upstream.request(&call).await;
            let took = started.elapsed();
            crate::observe::note(|r| {
                r.upstream_time += took;
                r.upstream_errors += u32::from(answer.is_err());
            });
            match answer {
                Ok(message) => return Ok(message),
                Err(UpstreamError::Unauthorized { .. })
                    if attempt == 0 && grant.is_some() && target.auth.is_exchange() =>
                {
                    // A cached exchanged token the upstream no longer takes:
                    // exchange the caller's token again, once.
                    grant = Box::pin(self.token_for(target, true)).await?;
                }
                Err(UpstreamError::Unauthorized {
                    resource_metadata,
                    scope,
                }) if attempt == 0 && grant.is_some() => {
                    let Some(g) = &grant else { break };
                    match self
                        .state
                        .tokens
                        .after_unauthorized(g, &self.owner, LeasePolicy::default())
                        .await
                    {
                        Ok(fresh) => grant = Some(Arc::new(fresh)),
                        Err(NoGrant::Retry(why)) => return Err(Blocked::Retry(why)),
                        Err(_) => {
                            return Err(
                                Box::pin(self.refused(target, resource_metadata, scope)).await
                            )
                        }
                    }
                }
                Err(UpstreamError::Unauthorized {
                    resource_metadata,
                    scope,
                }) => return Err(Box::pin(self.refused(target, resource_metadata, scope)).await),
                Err(UpstreamError::InsufficientScope { .. }) if !target.auth.is_per_user() => {
                    return Err(refused_credentials())
                }
                Err(UpstreamError::InsufficientScope { scope }) => {
                    let wanted: Vec<String> = scope
                        .map(|s| s.split_whitespace().map(str::to_owned).collect())
                        .unwrap_or_default();
                    let have = grant.as_ref().map(|g| g.scopes.clone()).unwrap_or_default();
                    if wanted.is_empty() || wanted.iter().all(|w| have.contains(w)) {
                        // Already granted and still refused: a new consent would loop.
                        return Err(Blocked::Upstream(
                            "the upstream refused the call for lack of permission".into(),
                        ));
                    }
                    return Err(Blocked::Consent(wanted));
                }
                Err(e) if e.is_retryable() => return Err(Blocked::Retry(e.to_string())),
                Err(e) => return Err(Blocked::Upstream(e.to_string())),
            }
        }
        Err(Blocked::Consent(vec![]))
    }

    /// The target's API key (read from Secrets Manager), for API key targets.
    pub(super) async fn api_key<'t>(
        &self,
        target: &'t Target,
    ) -> Result<Option<(&'t crate::domain::ApiKeySettings, secrecy::SecretString)>, Blocked> {
        let TargetAuth::ApiKey(k) = &target.auth else {
            return Ok(None);
        };
        match self.state.secrets.secret(&k.secret_arn).await {
            Ok(key) => Ok(Some((k, key))),
            Err(e) => {
                tracing::warn!(target = %target.name, error = %e, "the target's API key could not be read");
                Err(Blocked::Retry(
                    "the target's API key could not be read".into(),
                ))
            }
        }
    }

    /// The `Mcp-Param-*` headers of a `tools/call` for a 2026-07-28
    /// upstream: written from the arguments for the headers the tool's
    /// schema (in the target's catalog) declares; the client's own, as
    /// sent, when the catalog does not know the tool.
    pub(super) fn param_headers_for(
        &self,
        target: &Target,
        method: &str,
        params: Option<&Params>,
    ) -> Vec<(String, String)> {
        if method != "tools/call" {
            return vec![];
        }
        let Some(name) = params.and_then(|p| p.name()) else {
            return vec![];
        };
        let Some(declared) = target.tool_catalog.param_headers(&name) else {
            return self
                .caller
                .param_headers
                .iter()
                .map(|(k, v)| (format!("{}{k}", crate::wire::params::PREFIX), v.clone()))
                .collect();
        };
        let arguments = params.and_then(|p| p.get::<Value>("arguments"));
        crate::wire::params::headers(&declared, arguments.as_ref())
    }

    /// The upstream refused the user's token for good (no refresh helped):
    /// a consent, at the authorization server the upstream names now, for
    /// the challenge's `scope` besides the target's. When its metadata names
    /// a different server than the target's, the target follows it first
    /// (discovery and a client there), so the consent does not loop at a
    /// server whose tokens the upstream no longer takes.
    pub(super) async fn refused(
        &self,
        target: &Target,
        resource_metadata: Option<String>,
        scope: Option<String>,
    ) -> Blocked {
        if !target.auth.is_per_user() {
            return refused_credentials();
        }
        let wanted: Vec<String> = scope
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let outcome = crate::targets::follow_authorization_server(
            self.state,
            &self.base,
            target,
            resource_metadata.as_deref(),
        )
        .await;
        match outcome {
            Ok(crate::targets::Migration::Unchanged) => Blocked::Consent(wanted),
            Ok(crate::targets::Migration::Moved { from, to }) => {
                tracing::warn!(
                    audit = "target_moved",
                    target = %target.name,
                    from = %crate::telemetry::clean(&from, 200),
                    to = %crate::telemetry::clean(&to, 200),
                    "the upstream names another authorization server; registered there, users consent again"
                );
                Blocked::Consent(vec![])
            }
            Err(why) => {
                // Consent where the target points: the metadata may be down
                // for a moment; a later refusal looks again.
                tracing::warn!(target = %target.name, reason = %crate::telemetry::clean(&why, 300), "could not check the upstream's authorization metadata after a refusal");
                Blocked::Consent(wanted)
            }
        }
    }
}

/// A caller's credentials for one target, for the exchanges made outside
/// a call (a client's answer to an upstream's request, the standalone
/// stream).
pub(super) struct Credentials<'t> {
    grant: Option<Arc<crate::domain::Grant>>,
    api_key: Option<(&'t crate::domain::ApiKeySettings, secrecy::SecretString)>,
    dpop: Option<DpopKey>,
}

impl Gateway<'_> {
    /// The caller's credentials for `target`, or why there are none.
    pub(super) async fn credentials<'t>(
        &self,
        target: &'t Target,
    ) -> Result<Credentials<'t>, Blocked> {
        let grant = self.token(target).await?;
        let api_key = self.api_key(target).await?;
        let dpop = dpop_key(target, grant.as_deref())?;
        Ok(Credentials {
            grant,
            api_key,
            dpop,
        })
    }

    /// A [`Call`] to `target` with `credentials` that is no request of the
    /// caller's (method and params empty; nothing relayed).
    pub(super) fn bare_call<'c>(
        &'c self,
        target: &'c Target,
        credentials: &'c Credentials<'_>,
    ) -> Call<'c> {
        Call {
            sub: self.caller.sub(),
            target: &target.name,
            url: &target.mcp_url,
            token: credentials.grant.as_ref().map(|g| &g.tokens.access_token),
            dpop: credentials.dpop.as_ref(),
            api_key: credentials.api_key.as_ref().map(|(k, key)| (*k, key)),
            aws_iam: match &target.auth {
                TargetAuth::AwsIam(a) => Some(a),
                _ => None,
            },
            method: "",
            params: None,
            relay: None,
            log_level: None,
            client_capabilities: None,
            param_headers: &[],
            legacy: false,
            client_requests: None,
        }
    }
}

/// `resources/subscribe` or `resources/unsubscribe`: sent in a 2025
/// session, where updates come.
pub(super) fn is_subscription(method: &str) -> bool {
    matches!(method, "resources/subscribe" | "resources/unsubscribe")
}

/// The key a DPoP-bound grant's token goes with (none for a bearer
/// token); a grant whose key is unusable needs a new consent.
pub(super) fn dpop_key(
    target: &Target,
    grant: Option<&crate::domain::Grant>,
) -> Result<Option<DpopKey>, Blocked> {
    match grant.filter(|g| g.tokens.is_dpop()) {
        Some(g) => match g.tokens.dpop_key.as_ref().map(DpopKey::from_secret) {
            Some(Ok(key)) => Ok(Some(key)),
            _ => {
                tracing::error!(target = %target.name, "a grant's DPoP key is unusable");
                Err(Blocked::Consent(vec![]))
            }
        },
        None => Ok(None),
    }
}

/// An upstream refused credentials no person can renew (an API key): the
/// operator's to fix, never a consent.
pub(super) fn refused_credentials() -> Blocked {
    Blocked::Upstream(
        "it refused the gateway's credentials; ask the gateway's operator to check this target"
            .into(),
    )
}

/// `answer` read as a JSON tree. One that does not read as one is the
/// upstream's failure, counted as an upstream error of the request.
pub(super) fn read_tree(answer: Answer) -> Result<Value, String> {
    answer.into_value().map_err(|e| {
        crate::observe::note(|r| r.upstream_errors += 1);
        e.to_string()
    })
}
