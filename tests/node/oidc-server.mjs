// An OpenID provider for tests and the local demo: oidc-provider (a certified
// implementation) configured from a JSON file given as the first argument.
//
// {
//   "port": 4000,                      // binds 127.0.0.1
//   "clients": [ { client_id, client_secret?, redirect_uris, token_endpoint_auth_method? } ],
//   "rotateRefreshToken": false,       // rotate (and detect reuse of) refresh tokens
//   "accessTokenTtl": 3600,            // seconds
//   "registration": false,             // Dynamic Client Registration (RFC 7591)
//   "resourceScopes": "read write",    // scopes any resource indicator may be granted
//   "cimd": false                      // advertise client_id_metadata_document_supported
// }
//
// Any login name is accepted (the password is ignored); the login name is the
// `sub`. Access tokens for a resource are RS256 JWTs whose `aud` is that
// resource. Prints "ready <issuer>" on stdout once listening.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const port = config.port;
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: (config.clients || []).map((c) => ({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...c,
  })),
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  claims: { openid: ['sub'], email: ['email'], profile: ['name'] },
  async findAccount(_ctx, sub) {
    return { accountId: sub, claims: async () => ({ sub, email: `${sub}@example.test`, name: sub }) };
  },
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    registration: { enabled: Boolean(config.registration) },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => ({
        scope: config.resourceScopes || 'read write',
        audience: resource,
        accessTokenFormat: 'jwt',
        accessTokenTTL: config.accessTokenTtl || 3600,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  pkce: { required: () => true },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => Boolean(config.rotateRefreshToken),
  ttl: {
    AccessToken: config.accessTokenTtl || 3600,
    AuthorizationCode: 60,
    Grant: 14 * 24 * 3600,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    RefreshToken: 14 * 24 * 3600,
    IdToken: 3600,
  },
});
provider.proxy = false;

// Counts of token endpoint requests by grant type, of refused refreshes
// (`refresh_token_refused`) and of revocations, for tests that assert how
// much traffic reached the server: GET /test/counts.
const counts = {};
provider.use(async (ctx, next) => {
  if (ctx.path === '/test/counts') {
    ctx.body = counts;
    return;
  }
  await next();
  if (ctx.method === 'POST' && (ctx.path === '/token' || ctx.path === '/token/revocation')) {
    const key = ctx.path === '/token' ? (ctx.oidc?.params?.grant_type || 'unknown') : 'revocation';
    counts[key] = (counts[key] || 0) + 1;
    // Refused refreshes: with rotation on, a refresh token presented twice
    // (reuse) is refused and revokes the whole grant.
    if (key === 'refresh_token' && ctx.status === 400 && ctx.body?.error === 'invalid_grant') {
      counts.refresh_token_refused = (counts.refresh_token_refused || 0) + 1;
    }
  }
});

if (config.cimd) {
  // Advertise Client ID Metadata Document support in the discovery document.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path.startsWith('/.well-known/') && ctx.body && typeof ctx.body === 'object') {
      ctx.body.client_id_metadata_document_supported = true;
    }
  });
}

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
