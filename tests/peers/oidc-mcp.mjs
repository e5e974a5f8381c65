// A stricter authorization server than the TypeScript SDK's demo, with a
// small MCP resource server that trusts it: what mcpgram meets in the wild.
//
//   node -r ./bind-loopback.cjs oidc-mcp.mjs
//   env: AS_PORT, MCP_PORT, ACCESS_TTL (seconds, default 3600),
//        STORE_ENTRIES (default: oidc-provider's own in-memory store)
//
// The authorization server is `oidc-provider` (a certified OpenID
// provider) with its own login and consent forms (any login, any
// password: the login becomes the user's `sub`), open dynamic client
// registration, PKCE required, resource indicators issuing JWT access
// tokens for the MCP server only, refresh tokens rotated on every use with
// reuse detection (a reused refresh token revokes the whole grant), token
// revocation, and `iss` in every authorization response (RFC 9207).
//
// The MCP server (streamable HTTP, the TypeScript SDK) accepts only those
// JWTs (signature, issuer, audience, expiry) and publishes RFC 9728
// protected resource metadata. Tools: `whoami` (the token's subject and
// scopes), `greet`, and `admin_report`, which needs the `mcp:admin` scope
// and answers 403 `insufficient_scope` without it.
//
// Personal access tokens, as services hand out for scripts: POST
// /control/personal-token?sub=<name> issues one ("pat_…") that the MCP
// server accepts as a bearer token for that subject, with scope mcp:tools.
//
// GET /stats on the MCP port counts what tests assert about the
// authorization server: refresh grants, grants revoked (by reuse
// detection or revocation), revocation requests, token requests failed on
// purpose, client registrations, and requests by path (for benches).
// POST /control/revoke-grants and /control/fail-token-requests play an
// admin revoking every grant and a token endpoint failing.
//
// oidc-provider's in-memory store, meant for development, keeps about the
// 1,000 most recent entries; a load of many sign-ins under way at once
// needs several per sign-in, so STORE_ENTRIES gives it a larger one.
//
// Each server prints "... listening on port N" once it listens.

import express from 'express';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import Provider, { errors } from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import LRU from 'oidc-provider/lib/helpers/lru.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';

const AS_PORT = Number(process.env.AS_PORT);
const MCP_PORT = Number(process.env.MCP_PORT);
const ACCESS_TTL = Number(process.env.ACCESS_TTL || 3600);
const STORE_ENTRIES = Number(process.env.STORE_ENTRIES || 0);

const issuer = `http://localhost:${AS_PORT}`;
const mcpUrl = `http://localhost:${MCP_PORT}/mcp`;
const metadataUrl = `http://localhost:${MCP_PORT}/.well-known/oauth-protected-resource/mcp`;

const stats = {
  refreshes: 0, grantsRevoked: 0, revocations: 0, codes: 0, tokenFailures: 0, registrations: 0,
  // Requests by method and path (ids shown as :id), on both ports.
  requests: {},
};
function countRequest(method, path) {
  const opaque = /\/(?=[\w-]*[0-9A-Z])[\w-]{16,}/g;
  const key = `${method} ${path.replace(opaque, '/:id')}`;
  stats.requests[key] = (stats.requests[key] || 0) + 1;
}

// One store for every model, as oidc-provider's default adapter has.
const store = STORE_ENTRIES > 0 ? new LRU({ maxSize: STORE_ENTRIES }) : undefined;

const provider = new Provider(issuer, {
  ...(store && { adapter: (model) => new MemoryAdapter(model, store) }),
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => mcpUrl,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        if (resource !== mcpUrl) {
          throw new errors.InvalidTarget(`unknown resource ${resource}`);
        }
        return {
          scope: 'mcp:tools mcp:admin',
          audience: mcpUrl,
          accessTokenTTL: ACCESS_TTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  scopes: ['openid', 'offline_access', 'mcp:tools', 'mcp:admin'],
  pkce: { required: () => true },
  // Refresh tokens for every client allowed the grant, offline_access or
  // not, and a new one on every use.
  issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  ttl: { AccessToken: ACCESS_TTL, RefreshToken: 24 * 3600 },
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
});

provider.on('grant.success', (ctx) => {
  const grantType = ctx.oidc.params.grant_type;
  if (grantType === 'refresh_token') stats.refreshes += 1;
  if (grantType === 'authorization_code') stats.codes += 1;
});
provider.on('registration_create.success', () => {
  stats.registrations += 1;
});
provider.on('grant.revoked', () => {
  stats.grantsRevoked += 1;
});
// Test controls (on the MCP port): the grants issued, to revoke them all
// as an admin would; and token requests to fail with 503, as an
// authorization server having a bad moment does.
const grantIds = new Set();
let failTokenRequests = 0;
provider.on('refresh_token.saved', (token) => grantIds.add(token.grantId));
provider.use(async (ctx, next) => {
  countRequest(ctx.method, ctx.path);
  if (ctx.path === '/token' && ctx.method === 'POST' && failTokenRequests > 0) {
    failTokenRequests -= 1;
    stats.tokenFailures += 1;
    ctx.status = 503;
    ctx.body = { error: 'temporarily_unavailable' };
    return;
  }
  await next();
  if (ctx.path === '/token/revocation' && ctx.method === 'POST') stats.revocations += 1;
});

provider.listen(AS_PORT, () => {
  console.log(`OIDC Authorization Server listening on port ${AS_PORT}`);
});

// --- the MCP resource server ---------------------------------------------

const jwks = createRemoteJWKSet(new URL(`${issuer}/jwks`));

function challenge(res, status, params) {
  const parts = [`resource_metadata="${metadataUrl}"`, ...params];
  res.set('WWW-Authenticate', `Bearer ${parts.join(', ')}`);
  res.status(status).json({ error: params.length ? 'invalid_token' : 'unauthorized' });
}

const personalTokens = new Map();

async function authenticate(req, res, next) {
  const header = req.get('authorization') || '';
  const [scheme, token] = header.split(' ');
  if (scheme !== 'Bearer' || !token) {
    challenge(res, 401, []);
    return;
  }
  if (token.startsWith('pat_')) {
    const sub = personalTokens.get(token);
    if (!sub) {
      challenge(res, 401, ['error="invalid_token"', 'error_description="unknown personal token"']);
      return;
    }
    req.auth = { sub, scopes: ['mcp:tools'] };
    next();
    return;
  }
  try {
    const { payload } = await jwtVerify(token, jwks, { issuer, audience: mcpUrl });
    req.auth = { sub: payload.sub, scopes: String(payload.scope || '').split(' ') };
    next();
  } catch (error) {
    challenge(res, 401, ['error="invalid_token"', `error_description="${error.code || 'invalid'}"`]);
  }
}

// admin_report needs mcp:admin: the HTTP layer answers 403 with the
// scope to ask for, as MCP's step-up authorization expects.
function requireScopes(req, res, next) {
  const body = req.body;
  const calls = Array.isArray(body) ? body : [body];
  const wantsAdmin = calls.some(
    (m) => m && m.method === 'tools/call' && m.params && m.params.name === 'admin_report',
  );
  if (wantsAdmin && !req.auth.scopes.includes('mcp:admin')) {
    challenge(res, 403, ['error="insufficient_scope"', 'scope="mcp:tools mcp:admin"']);
    return;
  }
  // `stubborn` refuses whatever the token holds: a client must give up.
  const stubborn = calls.some(
    (m) => m && m.method === 'tools/call' && m.params && m.params.name === 'stubborn',
  );
  if (stubborn) {
    challenge(res, 403, ['error="insufficient_scope"', 'scope="mcp:tools mcp:admin"']);
    return;
  }
  next();
}

function mcpServer(auth) {
  const server = new McpServer({ name: 'oidc-mcp', version: '1.0.0' });
  server.registerTool(
    'whoami',
    { description: 'Who the access token belongs to' },
    async () => ({ content: [{ type: 'text', text: `sub=${auth.sub} scopes=${auth.scopes.join(' ')}` }] }),
  );
  server.registerTool(
    'greet',
    { description: 'A greeting', inputSchema: { name: z.string() } },
    async ({ name }) => ({ content: [{ type: 'text', text: `Hello, ${name}!` }] }),
  );
  server.registerTool(
    'stubborn',
    { description: 'Refused whatever scopes the token holds' },
    async () => ({ content: [{ type: 'text', text: 'unreachable' }] }),
  );
  server.registerTool(
    'admin_report',
    { description: 'Needs the mcp:admin scope' },
    async () => ({ content: [{ type: 'text', text: `admin report for ${auth.sub}` }] }),
  );
  return server;
}

const app = express();
app.use((req, _res, next) => {
  if (req.path !== '/stats') countRequest(req.method, req.path);
  next();
});
app.use(express.json());

const resourceMetadata = (_req, res) =>
  res.json({
    resource: mcpUrl,
    authorization_servers: [issuer],
    scopes_supported: ['mcp:tools'],
    bearer_methods_supported: ['header'],
  });
app.get('/.well-known/oauth-protected-resource/mcp', resourceMetadata);
app.get('/.well-known/oauth-protected-resource', resourceMetadata);
app.get('/stats', (_req, res) => res.json(stats));
app.post('/control/revoke-grants', async (_req, res) => {
  for (const id of grantIds) {
    await provider.RefreshToken.revokeByGrantId(id);
    await provider.Grant.adapter.destroy(id);
  }
  const revoked = grantIds.size;
  grantIds.clear();
  res.json({ revoked });
});
app.post('/control/personal-token', (req, res) => {
  const token = `pat_${crypto.randomUUID().replaceAll('-', '')}`;
  personalTokens.set(token, String(req.query.sub || 'someone'));
  res.json({ token });
});
app.post('/control/fail-token-requests', (req, res) => {
  failTokenRequests = Number(req.query.count || 1);
  res.json({ failing: failTokenRequests });
});

// Stateless: a server and transport per request, so no session outlives
// the token that opened it.
app.post('/mcp', authenticate, requireScopes, async (req, res) => {
  const server = mcpServer(req.auth);
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => {
    transport.close();
    server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, req.body);
});
app.get('/mcp', (_req, res) => res.status(405).set('Allow', 'POST').end());
app.delete('/mcp', (_req, res) => res.status(405).set('Allow', 'POST').end());

app.listen(MCP_PORT, () => {
  console.log(`OIDC MCP Server listening on port ${MCP_PORT}`);
});
