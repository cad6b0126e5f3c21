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
//   "cimd": false,                     // advertise client_id_metadata_document_supported
//   "dpop": false,                     // DPoP (RFC 9449) with nonces required
//   "tokenExchange": {                 // RFC 8693 grant for clients that list it
//     "subjectIssuer": "http://...",   // subject tokens: JWTs of this issuer,
//     "subjectJwks": "http://.../jwks",//   verified with this JWKS
//     "refusedSubjects": ["dave"],     // answered invalid_grant
//     "interactionSubjects": ["carol"],// answered interaction_required ...
//     "interactionUri": "https://..."  //   ... with this page
//   }
// }
//
// Any login name is accepted (the password is ignored); the login name is the
// `sub`. Access tokens for a resource are RS256 JWTs whose `aud` is that
// resource. Prints "ready <issuer>" on stdout once listening.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';
// oidc-provider's own JOSE library (a dependency of it, pinned by the lockfile).
import { createRemoteJWKSet, jwtVerify } from 'jose';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const port = config.port;
const issuer = `http://127.0.0.1:${port}`;

// Every resource indicator is a resource server taking RS256 JWT access tokens.
async function resourceServerInfo(_ctx, resource) {
  return {
    scope: config.resourceScopes || 'read write',
    audience: resource,
    accessTokenFormat: 'jwt',
    accessTokenTTL: config.accessTokenTtl || 3600,
    jwt: { sign: { alg: 'RS256' } },
  };
}

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
    dPoP: { enabled: Boolean(config.dpop), nonceSecret: config.dpop ? Buffer.alloc(32, 7) : undefined, requireNonce: () => Boolean(config.dpop) },
    registration: { enabled: Boolean(config.registration) },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => resourceServerInfo(ctx, resource),
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

// RFC 8693 token exchange: a subject token (a JWT of the configured issuer)
// for an access token of the same subject, for the requested resource.
// Exchanges are counted under their grant type in /test/counts and the last
// request's parameters are at /test/last-exchange.
let lastExchange = null;
if (config.tokenExchange) {
  const te = config.tokenExchange;
  const jwks = createRemoteJWKSet(new URL(te.subjectJwks));
  const fail = (ctx, error, description, extra = {}) => {
    ctx.status = 400;
    ctx.body = { error, error_description: description, ...extra };
  };
  provider.registerGrantType('urn:ietf:params:oauth:grant-type:token-exchange', async (ctx) => {
    const p = ctx.oidc.params;
    const resource = Array.isArray(p.resource) ? p.resource[0] : p.resource;
    lastExchange = {
      subject_token_type: p.subject_token_type, requested_token_type: p.requested_token_type,
      audience: p.audience, resource, scope: p.scope, client_id: ctx.oidc.client.clientId,
    };
    if (p.subject_token_type !== 'urn:ietf:params:oauth:token-type:access_token') {
      return fail(ctx, 'invalid_request', 'subject_token_type must be an access token');
    }
    let claims;
    try {
      ({ payload: claims } = await jwtVerify(p.subject_token || '', jwks, { issuer: te.subjectIssuer }));
    } catch {
      return fail(ctx, 'invalid_grant', 'the subject token is not valid');
    }
    if ((te.refusedSubjects || []).includes(claims.sub)) {
      return fail(ctx, 'invalid_grant', 'this subject may not use this client');
    }
    if ((te.interactionSubjects || []).includes(claims.sub)) {
      return fail(ctx, 'interaction_required', 'the user must approve this client', { interaction_uri: te.interactionUri });
    }
    if (!resource) return fail(ctx, 'invalid_target', 'a resource is required');
    const info = await resourceServerInfo(ctx, resource);
    const scope = (p.scope || '').split(' ').filter((s) => info.scope.split(' ').includes(s)).join(' ');
    const grant = new provider.Grant({ accountId: claims.sub, clientId: ctx.oidc.client.clientId });
    grant.addResourceScope(resource, scope);
    const grantId = await grant.save();
    const at = new provider.AccessToken({
      accountId: claims.sub, client: ctx.oidc.client, grantId, gty: 'token_exchange',
    });
    at.resourceServer = new provider.ResourceServer(resource, info);
    at.scope = scope || undefined;
    const value = await at.save();
    ctx.body = {
      access_token: value,
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      token_type: at.tokenType,
      expires_in: at.expiration,
      ...(at.scope ? { scope: at.scope } : {}),
    };
  }, ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope', 'actor_token', 'actor_token_type'], ['resource', 'audience']);
  provider.use(async (ctx, next) => {
    if (ctx.path === '/test/last-exchange') {
      ctx.body = lastExchange || {};
      return;
    }
    await next();
  });
}

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
