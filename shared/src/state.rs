//! Everything a function builds once per cold start.

use std::sync::Arc;

use crate::adapters::cache::{CachedGrants, CachedTargets};
use crate::adapters::dynamodb::DynamoStore;
use crate::adapters::oauth::HttpTokenIssuer;
use crate::adapters::oidc::OidcProvider;
use crate::adapters::secrets::{SecretKeyProvider, SecretsManagerSource};
use crate::config::{Config, ConsentBinding, InboundAuth};
use crate::error::Result;
use crate::ports::{
    AuthorizationStore, Clock, GrantStore, KeyProvider, SecretSource, SessionStore, SystemClock,
    TargetCatalog,
};
use crate::tokens::Refresher;
use crate::upstream::UpstreamClient;

/// Shared state of a warm instance: configuration, stores and clients.
///
/// One reference count to clone: every request clones it (the router's
/// state, the request's record), and a copy of [`Services`] would count
/// each of its shared parts, from both cores at once, twice per request.
/// Fields read through it as through `Services`; a field set on a state
/// that is shared changes a copy of its own (as when it was cloned whole).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

impl std::ops::DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut Services {
        Arc::make_mut(&mut self.0)
    }
}

impl From<Services> for AppState {
    fn from(services: Services) -> Self {
        AppState(Arc::new(services))
    }
}

/// What an [`AppState`] holds.
#[derive(Clone)]
pub struct Services {
    /// The configuration read at cold start.
    pub config: Arc<Config>,
    /// Grants.
    pub grants: Arc<dyn GrantStore>,
    /// Pending authorizations.
    pub authorizations: Arc<dyn AuthorizationStore>,
    /// Targets.
    pub targets: Arc<dyn TargetCatalog>,
    /// Upstream sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Client secrets.
    pub secrets: Arc<dyn SecretSource>,
    /// The gateway key set.
    pub keys: Arc<dyn KeyProvider>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The identity provider of the browser login at `/connect`, when the
    /// consent binding is `oidc`.
    pub login: Option<Arc<OidcProvider>>,
    /// The inbound identity provider, when the function validates JWTs itself.
    pub inbound: Option<Arc<OidcProvider>>,
    /// The client toward upstream MCP servers (sessions kept per instance).
    pub upstream: Arc<UpstreamClient>,
    /// Outbound HTTP (authorization servers, upstream MCP servers): pooled,
    /// keep-alive, redirects off.
    pub http: reqwest::Client,
    /// Token refresh under the lease protocol (with this instance's
    /// refreshes in flight).
    pub tokens: Arc<Refresher>,
    /// The tool search index of this instance.
    pub search: Arc<crate::search::SearchCache>,
    /// How the targets are exposed (their name prefixes), kept for the
    /// list they were worked out from.
    pub exposed: Arc<crate::gateway::ExposedCache>,
    /// The policy set (Cedar), kept by this instance for
    /// `TARGETS_CACHE_SECONDS`.
    pub policies: Arc<crate::policy::PolicyCache>,
    /// Metrics and the audit trail.
    pub observe: crate::observe::Observer,
}

impl AppState {
    /// The client secret stored under `arn`, if the client has one.
    pub async fn client_secret(&self, arn: Option<&str>) -> Result<Option<secrecy::SecretString>> {
        match arn {
            Some(arn) => Ok(Some(self.secrets.secret(arn).await?)),
            None => Ok(None),
        }
    }

    /// The same state with another clock, for the flows and the refresher
    /// alike (tests that move time).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        let t = &self.tokens;
        self.tokens = Arc::new(Refresher::new(
            t.grants.clone(),
            t.targets.clone(),
            t.secrets.clone(),
            t.issuer.clone(),
            clock.clone(),
            t.window,
        ));
        self.clock = clock;
        self
    }

    /// Builds the AWS clients and stores from `config`, and loads the key set
    /// once so that a bad key-set secret fails the cold start, not a request.
    pub async fn from_config(config: Config) -> Result<Self> {
        let sdk = crate::adapters::aws_config().await;
        Self::with_sdk_config(config, &sdk).await
    }

    /// Like [`AppState::from_config`], with a given SDK configuration (local
    /// endpoints in tests and tools).
    pub async fn with_sdk_config(config: Config, sdk: &aws_config::SdkConfig) -> Result<Self> {
        let (source, keys, store) = stores(&config, sdk).await?;
        let store = Arc::new(store);
        let http = http_client();
        let login = match &config.consent_binding {
            ConsentBinding::Oidc { issuer, .. } => Some(Arc::new(
                OidcProvider::new(issuer.as_str(), http.clone())
                    .with_cache_ttl(config.jwks_cache_ttl),
            )),
            ConsentBinding::Link => None,
        };
        let inbound = match (&config.inbound_auth, &config.inbound_issuer) {
            (InboundAuth::Jwt { .. }, Some(issuer)) => Some(Arc::new(
                OidcProvider::new(issuer.as_str(), http.clone())
                    .with_cache_ttl(config.jwks_cache_ttl),
            )),
            _ => None,
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        // The SDK's endpoint and region where the configuration names none
        // (AWS_ENDPOINT_URL is read by the SDK too).
        let mut observe_config = config.observe.clone();
        if observe_config.logs_endpoint.is_none() {
            observe_config.logs_endpoint = sdk.endpoint_url().map(str::to_owned);
        }
        if let Some(region) = sdk.region() {
            observe_config.region = region.to_string();
        }
        let observe = observer(&observe_config);
        let grant_cache_ttl = config.grant_cache_ttl;
        let policy_store: Arc<dyn crate::ports::PolicyStore> = store.clone();
        let policy_ttl = config.targets_cache_ttl;
        let policy_required = config.policy_required;
        let targets: Arc<dyn TargetCatalog> =
            Arc::new(CachedTargets::new(store.clone(), config.targets_cache_ttl));
        let mut upstream = UpstreamClient::new(http.clone(), store.clone(), clock.clone())
            .with_aws_credentials(sdk.credentials_provider())
            .with_stream_timeout(config.stream_for);
        if config.relays_to_clients() {
            upstream = upstream.answering_requests();
        }
        let upstream = Arc::new(upstream);
        let grants: Arc<dyn GrantStore> =
            Arc::new(CachedGrants::new(store.clone(), grant_cache_ttl));
        let tokens = Arc::new(Refresher::new(
            grants.clone(),
            targets.clone(),
            source.clone(),
            Arc::new(HttpTokenIssuer(http.clone())),
            clock.clone(),
            config.refresh_window,
        ));
        Ok(AppState::from(Services {
            inbound,
            upstream,
            login,
            config: Arc::new(config),
            grants,
            authorizations: store.clone(),
            targets,
            sessions: store,
            secrets: source,
            keys,
            clock,
            http,
            tokens,
            search: Default::default(),
            exposed: Default::default(),
            policies: Arc::new(crate::policy::PolicyCache::new(
                policy_store,
                policy_ttl,
                policy_required,
            )),
            observe,
        }))
    }
}

impl AppState {
    /// A state whose stores are one in-memory store and whose keys are
    /// `keys`, with `clock`: the edge and the flows without AWS, for router
    /// tests that need no peer. Outbound HTTP is real.
    pub fn in_memory(
        config: Config,
        store: crate::adapters::memory::MemoryStore,
        keys: Arc<dyn KeyProvider>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let store = Arc::new(store);
        let policy_store: Arc<dyn crate::ports::PolicyStore> = store.clone();
        let policy_ttl = config.targets_cache_ttl;
        let policy_required = config.policy_required;
        let http = http_client();
        let observe = observer(&config.observe);
        let tokens = Arc::new(Refresher::new(
            store.clone(),
            store.clone(),
            store.clone(),
            Arc::new(HttpTokenIssuer(http.clone())),
            clock.clone(),
            config.refresh_window,
        ));
        AppState::from(Services {
            config: Arc::new(config),
            grants: store.clone(),
            authorizations: store.clone(),
            targets: store.clone(),
            sessions: store.clone(),
            secrets: store.clone(),
            keys,
            clock: clock.clone(),
            login: None,
            inbound: None,
            upstream: Arc::new(UpstreamClient::new(http.clone(), store, clock)),
            http,
            tokens,
            search: Default::default(),
            exposed: Default::default(),
            policies: Arc::new(crate::policy::PolicyCache::new(
                policy_store,
                policy_ttl,
                policy_required,
            )),
            observe,
        })
    }
}

/// The observer `config` describes.
pub fn observer(config: &crate::config::ObserveConfig) -> crate::observe::Observer {
    use crate::observe::{audit::CloudWatchLogs, AuditSink, LineSink, Observer};
    let audit = match (&config.audit_log_group, config.audit) {
        (_, false) => AuditSink::Off,
        (None, true) => AuditSink::Lines(LineSink::Stdout),
        (Some(group), true) => AuditSink::CloudWatch(Arc::new(CloudWatchLogs::new(
            group.clone(),
            config.region.clone(),
            config.logs_endpoint.clone(),
            &config.function,
        ))),
    };
    Observer {
        gateway: config.gateway_name.as_str().into(),
        metrics: LineSink::Stdout,
        audit,
        metrics_on: config.metrics,
    }
}

/// The secrets source, key provider and table store of `config`, with the
/// key set loaded once (a bad key-set secret fails here).
async fn stores(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> Result<(
    Arc<SecretsManagerSource>,
    Arc<SecretKeyProvider>,
    DynamoStore,
)> {
    let source = Arc::new(SecretsManagerSource::new(
        aws_sdk_secretsmanager::Client::new(sdk),
        config.secrets_cache_ttl,
    ));
    let keys = Arc::new(SecretKeyProvider::new(
        source.clone(),
        config.keyset_secret_arn.clone(),
        config.secrets_cache_ttl,
    ));
    keys.key_set().await?;
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        config.table_name.clone(),
        keys.clone(),
        config.refresh_shards,
    );
    Ok((source, keys, store))
}

/// The table store of `config` on its own (operator tools: key rotation).
pub async fn table_store(config: &Config, sdk: &aws_config::SdkConfig) -> Result<DynamoStore> {
    Ok(stores(config, sdk).await?.2)
}

/// Makes aws-lc-rs the process's default TLS crypto provider, once.
///
/// The AWS SDK and jsonwebtoken already link aws-lc-rs; reqwest is built
/// without a provider of its own so that ring is not linked beside it
/// (about 0.32 MB less of each zipped function). reqwest panics when it builds a client
/// and no provider is installed, so every client is built after this call;
/// [`http_client`] makes it.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An Err means another provider was installed first: keep that one.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// How long an outbound connection may take to open.
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long an outbound request may take, its answer's body included.
pub(crate) const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// How long an idle pooled connection is kept.
pub(crate) const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The User-Agent of outbound requests.
pub(crate) const USER_AGENT: &str = concat!("mcp-oauth-gateway/", env!("CARGO_PKG_VERSION"));

/// The outbound HTTP client: rustls, redirects off, bounded timeouts.
pub fn http_client() -> reqwest::Client {
    http_client_builder()
        .build()
        .expect("a client with static settings builds")
}

/// The system's trusted root certificates, loaded once per process and
/// shared by every outbound client. Loading them is most of what building
/// a client costs (a few milliseconds), which reqwest would otherwise pay
/// for each client it builds. A store that fails to load leaves no root
/// trusted: every HTTPS request then fails, and the log says why.
pub(crate) fn trusted_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<rustls::RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            if !loaded.errors.is_empty() {
                tracing::warn!(errors = ?loaded.errors, "some trusted root certificates could not be loaded");
            }
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                tracing::error!("no trusted root certificates were found: HTTPS requests will fail");
            }
            Arc::new(roots)
        })
        .clone()
}

/// The TLS settings of outbound requests: the system's trusted roots,
/// TLS 1.2 and 1.3, with aws-lc-rs; no ALPN (each client adds its own:
/// hyper-rustls refuses a configuration that already has some).
pub(crate) fn tls_config(roots: Arc<rustls::RootCertStore>) -> rustls::ClientConfig {
    install_crypto_provider();
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The settings of [`http_client`], for clients that add to them.
///
/// Its TLS configuration is given whole ([`tls_config`]): reqwest then
/// ignores its own TLS settings (root certificates, TLS versions, SNI,
/// client identities, `http1_only`'s ALPN), so a client that needs one of
/// them changes the configuration instead.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    http_client_builder_trusting(trusted_roots())
}

/// [`http_client_builder`], trusting `roots`.
pub(crate) fn http_client_builder_trusting(
    roots: Arc<rustls::RootCertStore>,
) -> reqwest::ClientBuilder {
    let mut tls = tls_config(roots);
    // What reqwest offers with its own configuration.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .user_agent(USER_AGENT)
}
