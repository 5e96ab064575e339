// SPDX-License-Identifier: Apache-2.0
//
// A real OpenID provider (panva/oidc-provider) on loopback, for agentgate's
// identity tests. Nothing here is for production: fixed test clients, keys
// in memory, an admin endpoint.
//
//   node server.js PORT [CLIENT_ID [CLIENT_SECRET]]
//     (or OIDC_CLIENT_ID / OIDC_CLIENT_SECRET in the environment;
//      defaults agent-a / agent-a-secret; OIDC_TTL access-token seconds)
//
// Issuer http://127.0.0.1:PORT. Prints "READY" once listening.
//
// Tokens: POST /token grant_type=client_credentials with client_secret_basic
// or _post; "resource=<URI>" picks the audience (RFC 8707; any absolute URI,
// default urn:agentgate), "token_alg=RS256|ES256|EdDSA" picks the signing
// key (default RS256). Access tokens are RFC 9068 JWTs (typ at+jwt).
//
// Key rotation (to test the verifier's refetch on an unknown kid): SIGHUP,
// or POST /admin/rotate from a loopback peer. Each generation has new
// kids (rs<N>, ec<N>, ed<N>); the JWKS publishes the new generation first
// and the previous one after it, and tokens are signed with the new one.
// GET /admin/state returns {generation, kids}.
//
// The clients' own tokens carry groups [agents, support]; POST
// /admin/groups?set=a,b (loopback) makes tokens issued from then on carry
// [a, b] (to test a session whose identity's claims change).
//
// private_key_jwt: with OIDC_PK_CLIENT_PEM=<public key PEM file>, a second
// client "<CLIENT_ID>-pk" authenticates with an RFC 7523 client assertion
// signed by the matching private key (RS256, ES256 or EdDSA).
//
// Delegation (RFC 8693 token exchange), grant_type
// urn:ietf:params:oauth:grant-type:token-exchange, for an authenticated
// client (the agent). Test double for "a user signed in": the subject is a
// user NAME from the fixed directory below, passed as subject_token with
// subject_token_type urn:agentgate:test:user (a real deployment exchanges the
// user's own token; no interactive login exists here). The issued access
// token (RFC 9068 JWT) has sub = the user, the user's groups, and
// act = {sub: <the client>} — or, with actor=<other>, act.sub = <other>
// (to test a token exchanged for another agent), with actor_iss=<iss> also
// act.iss, or no act at all with no_act=1 (a plain user token).
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

const PORT = Number(process.argv[2]);
if (!Number.isInteger(PORT) || PORT < 1 || PORT > 65535) {
  console.error('usage: node server.js PORT [CLIENT_ID [CLIENT_SECRET]]');
  process.exit(2);
}
const CLIENT_ID = process.argv[3] || process.env.OIDC_CLIENT_ID || 'agent-a';
const CLIENT_SECRET = process.argv[4] || process.env.OIDC_CLIENT_SECRET || 'agent-a-secret';
const TTL = Number(process.env.OIDC_TTL || 300);
const ISSUER = `http://127.0.0.1:${PORT}`;
const DEFAULT_RESOURCE = 'urn:agentgate';
const ALGS = { RS256: 'rs', ES256: 'ec', EdDSA: 'ed' };
let clientGroups = ['agents', 'support'];   // the clients' own tokens (POST /admin/groups)

const USERS = {
  alice: { groups: ['support'] },
  bob: { groups: ['finance'] },
  mallory: { groups: [] },
};
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const PK_PEM = process.env.OIDC_PK_CLIENT_PEM;

function generation(n) {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const ed = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, kid: `rs${n}`, use: 'sig', alg: 'RS256' },
    { ...ec, kid: `ec${n}`, use: 'sig', alg: 'ES256' },
    { ...ed, kid: `ed${n}`, use: 'sig', alg: 'EdDSA' },
  ];
}

let gen = 1;
let current = generation(gen);
let previous = [];

function makeProvider() {
  const clients = [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    grant_types: ['client_credentials', TOKEN_EXCHANGE],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'tools:read tools:write',
  }];
  if (PK_PEM) {
    const jwk = createPublicKey(readFileSync(PK_PEM)).export({ format: 'jwk' });
    clients.push({
      client_id: `${CLIENT_ID}-pk`,
      grant_types: ['client_credentials', TOKEN_EXCHANGE],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'private_key_jwt',
      jwks: { keys: [{ ...jwk, use: 'sig' }] },
      scope: 'tools:read tools:write',
    });
  }
  const configuration = {
    clients,
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    // oidc-provider signs with the first key of the alg: the new generation.
    jwks: { keys: [...current, ...previous] },
    scopes: ['tools:read', 'tools:write'],
    ttl: { ClientCredentials: TTL },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => DEFAULT_RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resourceIndicator) => {
          const alg = ctx.oidc.body?.token_alg || 'RS256';
          if (!ALGS[alg]) throw new errors.InvalidRequest('token_alg must be RS256, ES256 or EdDSA');
          return {
            scope: 'tools:read tools:write',
            audience: resourceIndicator,
            accessTokenTTL: TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          };
        },
      },
    },
    extraTokenClaims: async (ctx, token) => {
      const user = token.accountId && USERS[token.accountId];
      if (!user) return { groups: clientGroups };
      const extra = { groups: user.groups };
      if (token.testActor) {
        extra.act = token.testActorIss ? { sub: token.testActor, iss: token.testActorIss }
          : { sub: token.testActor };
      }
      return extra;
    },
  };
  const p = new Provider(ISSUER, configuration);
  p.registerGrantType(TOKEN_EXCHANGE, exchange(p),
    ['subject_token', 'subject_token_type', 'resource', 'token_alg', 'actor', 'actor_iss', 'no_act']);
  p.on('server_error', (ctx, err) => console.error('server_error', err));
  return p;
}

function exchange(p) {
  return async (ctx) => {
    const { body, client } = ctx.oidc;
    const user = body.subject_token;
    if (body.subject_token_type !== 'urn:agentgate:test:user' || !USERS[user]) {
      throw new errors.InvalidGrant('subject_token must name a test user (urn:agentgate:test:user)');
    }
    const alg = body.token_alg || 'RS256';
    if (!ALGS[alg]) throw new errors.InvalidRequest('token_alg must be RS256, ES256 or EdDSA');
    const resource = body.resource || DEFAULT_RESOURCE;
    const at = new p.AccessToken({
      accountId: user, client, grantId: `exchange-${user}`, scope: 'tools:read',
    });
    at.resourceServer = new p.ResourceServer(resource, {
      scope: 'tools:read tools:write', audience: resource, accessTokenTTL: TTL,
      accessTokenFormat: 'jwt', jwt: { sign: { alg } },
    });
    if (!body.no_act) at.testActor = body.actor || client.clientId;
    if (!body.no_act && body.actor_iss) at.testActorIss = body.actor_iss;
    const value = await at.save();
    ctx.body = {
      access_token: value,
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      token_type: 'Bearer',
      expires_in: at.expiration,
    };
  };
}

let provider = makeProvider();
let handler = provider.callback();

function rotate() {
  gen += 1;
  previous = current;
  current = generation(gen);
  provider = makeProvider();
  handler = provider.callback();
  console.log(`ROTATED ${gen}`);
}

function isLoopback(addr) {
  return addr === '::1' || addr?.startsWith('127.') || addr?.startsWith('::ffff:127.');
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/admin/')) {
    if (!isLoopback(req.socket.remoteAddress)) {
      res.writeHead(403).end();
      return;
    }
    if (req.method === 'POST' && req.url === '/admin/rotate') {
      rotate();
    } else if (req.method === 'POST' && req.url.startsWith('/admin/groups?')) {
      const set = new URL(req.url, 'http://x').searchParams.get('set') || '';
      clientGroups = set ? set.split(',') : [];
    } else if (!(req.method === 'GET' && req.url === '/admin/state')) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ generation: gen, kids: [...current, ...previous].map((k) => k.kid) }));
    return;
  }
  handler(req, res);
});

process.on('SIGHUP', rotate);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
server.listen(PORT, '127.0.0.1', () => console.log('READY'));
