// The upstream "Google" of the tests: the certified `oidc-provider` on loopback.
//
// Usage: node oidc_provider.mjs CONFIG.json
// The config (written by tests/upstream/fixtures.py) names the port (0: any free one), the signing
// keys, the clients, the accounts and a state file. The server binds first, since the issuer URL
// holds the port, then prints one line `READY http://127.0.0.1:PORT` on stdout.
//
// Beside the OpenID Provider itself it serves:
//   /interaction/:uid          a real login form (fields `login`, `password`) checked against the
//                              accounts; consent is granted without asking (every client is trusted)
//   /interaction/:uid/abort    the user cancels: the client gets `access_denied`
//   /__control/*               test control, loopback only: revoke a user's grants, make the token
//                              endpoint fail, inspect state
//
// Grants and tokens live in a JSON state file, so a stop and start on the same port (an outage)
// keeps them, as a real provider's outage would.

import fs from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

// ---------------------------------------------------------------------------------------------
// Storage: one Map for every model, written to the state file on each change.

const records = new Map(loadState());

function loadState() {
  if (!config.state_file || !fs.existsSync(config.state_file)) return [];
  return Object.entries(JSON.parse(fs.readFileSync(config.state_file, 'utf8')));
}

function saveState() {
  if (config.state_file) {
    fs.writeFileSync(config.state_file, JSON.stringify(Object.fromEntries(records)));
  }
}

function live(key) {
  const record = records.get(key);
  if (record && record.expiresAt && record.expiresAt < Date.now()) {
    records.delete(key);
    return undefined;
  }
  return record;
}

function deleteWhere(predicate) {
  let removed = 0;
  for (const [key, record] of records) {
    if (predicate(key, record.payload)) {
      records.delete(key);
      removed += 1;
    }
  }
  saveState();
  return removed;
}

class FileAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : null;
    records.set(this.key(id), { payload, expiresAt });
    saveState();
  }

  async find(id) {
    return live(this.key(id))?.payload;
  }

  async findByUid(uid) {
    return this.findBy((payload) => payload.uid === uid);
  }

  async findByUserCode(userCode) {
    return this.findBy((payload) => payload.userCode === userCode);
  }

  findBy(predicate) {
    for (const key of records.keys()) {
      const record = key.startsWith(`${this.model}:`) && live(key);
      if (record && predicate(record.payload)) return record.payload;
    }
    return undefined;
  }

  async consume(id) {
    const record = live(this.key(id));
    if (record) {
      record.payload.consumed = Math.floor(Date.now() / 1000);
      saveState();
    }
  }

  async destroy(id) {
    records.delete(this.key(id));
    saveState();
  }

  async revokeByGrantId(grantId) {
    deleteWhere((key, payload) => payload.grantId === grantId);
  }
}

// ---------------------------------------------------------------------------------------------
// Accounts: the login form checks `login` + `password`; claims are Google's names.

const accounts = config.accounts;

function accountBySub(sub) {
  return accounts.find((account) => account.sub === sub);
}

async function findAccount(ctx, sub) {
  const account = accountBySub(sub);
  if (!account) return undefined;
  return {
    accountId: sub,
    async claims() {
      return {
        sub, email: account.email, email_verified: account.email_verified, name: account.name,
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Test control state.

const tokenFailures = [];   // [{status, error}] answered by the next token endpoint calls
const tokenRequests = [];   // [{grant_type, client_auth, status, error}]

function clientMetadata(client) {
  return {
    client_id: client.client_id,
    client_secret: client.client_secret,
    redirect_uris: client.redirect_uris,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: client.token_endpoint_auth_method ?? 'client_secret_basic',
  };
}

function resourceServerMetadata(client) {
  return {
    client_id: client.client_id,
    client_secret: client.client_secret,
    redirect_uris: [],
    grant_types: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
  };
}

// OIDC asks for a refresh token with the `offline_access` scope, Google with `access_type=offline`
// (recorded as `offline_access` in the grant, see grantConsent): both work here. See also
// lenientOfflineAccess.
async function issueRefreshToken(ctx, client, code) {
  if (!client.grantTypeAllowed('refresh_token')) return false;
  return code.scopes.has('offline_access')
    || (ctx.oidc.entities.Grant?.getOIDCScope() ?? '').split(' ').includes('offline_access');
}

function providerConfiguration() {
  return {
    adapter: FileAdapter,
    clients: [...config.clients.map(clientMetadata), ...config.resource_servers.map(resourceServerMetadata)],
    jwks: config.jwks,
    cookies: { keys: config.cookie_keys },
    findAccount,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    scopes: ['openid', 'offline_access', ...config.api_scopes],
    conformIdTokenClaims: false,
    extraParams: ['access_type'],
    pkce: { required: () => true },
    issueRefreshToken,
    expiresWithSession: async () => false,
    ttl: {
      AccessToken: config.access_token_ttl,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: config.refresh_token_ttl,
      Grant: config.refresh_token_ttl,
      Interaction: 600,
      Session: 86400,
    },
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
    },
    interactions: {
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers.

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  if ((req.headers['content-type'] ?? '').startsWith('application/json')) {
    return text ? JSON.parse(text) : {};
  }
  return Object.fromEntries(new URLSearchParams(text));
}

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, clientId, message) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - Upstream test provider</title></head>
<body>
  <h1>Sign in</h1>
  <p>to continue to <strong>${escapeHtml(clientId)}</strong></p>
  ${message ? `<p role="alert" class="error">${escapeHtml(message)}</p>` : ''}
  <form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
    <label>Email or username <input name="login" required autofocus></label>
    <label>Password <input type="password" name="password" required></label>
    <button type="submit">Sign in</button>
  </form>
  <p><a href="/interaction/${escapeHtml(uid)}/abort">Cancel</a></p>
</body></html>`;
}

function sendJson(ctx, status, body) {
  ctx.status = status;
  ctx.type = 'application/json';
  ctx.body = JSON.stringify(body);
}

// ---------------------------------------------------------------------------------------------
// Interactions (OpenID Connect Core 1.0 section 3.1.2.3: authenticate the End-User, then obtain
// consent; consent is auto-granted for the configured, trusted clients).

async function grantConsent(provider, details, accountId) {
  const { params } = details;
  const grant = details.grantId && details.session?.accountId === accountId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(params.scope);
  if (params.access_type === 'offline') grant.addOIDCScope('offline_access');
  for (const [resource, scopes] of Object.entries(details.prompt.details.missingResourceScopes ?? {})) {
    grant.addResourceScope(resource, scopes.join(' '));
  }
  return grant.save();
}

function attachInteractions(provider) {
  provider.use(async (ctx, next) => {
    const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login|\/abort)?$/);
    if (!match) return next();
    let details;
    try {
      details = await provider.interactionDetails(ctx.req, ctx.res);
    } catch {
      ctx.status = 400;
      ctx.type = 'text/plain';
      ctx.body = 'This sign-in request has expired or is unknown: start again from the application.';
      return undefined;
    }
    const [, uid, action] = match;
    if (uid !== details.uid) {
      ctx.status = 400;
      ctx.body = 'interaction mismatch';
      return undefined;
    }
    let result;
    if (action === '/abort') {
      result = { error: 'access_denied', error_description: 'End-User aborted interaction' };
    } else if (action === '/login' && ctx.method === 'POST') {
      const form = await readForm(ctx.req);
      const account = accounts.find((a) => (a.username === form.login || a.email === form.login)
        && a.password === form.password);
      if (!account) {
        ctx.type = 'html';
        ctx.body = loginPage(uid, details.params.client_id, 'Wrong username or password.');
        return undefined;
      }
      const grantId = await grantConsent(provider, details, account.sub);
      result = { login: { accountId: account.sub }, consent: { grantId } };
    } else if (details.prompt.name === 'login') {
      ctx.type = 'html';
      ctx.body = loginPage(uid, details.params.client_id, '');
      return undefined;
    } else if (details.prompt.name === 'consent') {
      const grantId = await grantConsent(provider, details, details.session.accountId);
      result = { consent: { grantId } };
    } else {
      ctx.status = 400;
      ctx.body = `unsupported prompt ${details.prompt.name}`;
      return undefined;
    }
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(returnTo);
    return undefined;
  });
}

// ---------------------------------------------------------------------------------------------
// oidc-provider follows OIDC Core 1.0 section 11 to the letter: without `prompt=consent` it drops
// `offline_access`. Entra ID, Okta, Auth0 and Keycloak honour it anyway; so does this provider:
// an authorization request with `offline_access` and no `prompt` gets `prompt=consent` added
// (consent is granted without asking, so nobody sees a difference).

function attachLenientOfflineAccess(provider) {
  provider.use(async (ctx, next) => {
    if (ctx.path === '/auth' && ctx.method === 'GET' && !ctx.query.prompt
        && String(ctx.query.scope ?? '').split(' ').includes('offline_access')) {
      ctx.query = { ...ctx.query, prompt: 'consent' };
    }
    return next();
  });
}

// ---------------------------------------------------------------------------------------------
// Token endpoint: injected failures first, then record what was asked and answered.

function attachTokenHooks(provider) {
  provider.use(async (ctx, next) => {
    if (ctx.path !== '/token' || ctx.method !== 'POST') return next();
    const clientAuth = ctx.get('authorization') ? 'client_secret_basic' : 'client_secret_post';
    const failure = tokenFailures.shift();
    if (failure) {
      const form = await readForm(ctx.req);
      tokenRequests.push({
        grant_type: form.grant_type, client_auth: clientAuth, status: failure.status, error: failure.error ?? null, injected: true,
      });
      if (failure.error) {
        sendJson(ctx, failure.status, { error: failure.error, error_description: 'injected by the test' });
      } else {
        ctx.status = failure.status;
        ctx.type = 'text/html';
        ctx.body = '<html><body>Server Error (injected by the test)</body></html>';
      }
      return undefined;
    }
    await next();
    const body = typeof ctx.body === 'object' && ctx.body !== null ? ctx.body : {};
    tokenRequests.push({
      grant_type: ctx.oidc?.params?.grant_type, client_auth: clientAuth, status: ctx.status, error: body.error ?? null, injected: false,
    });
    return undefined;
  });
}

// ---------------------------------------------------------------------------------------------
// Test control API (tests only, loopback only).

function summary() {
  const grants = [];
  const counts = {};
  for (const key of [...records.keys()]) {
    const record = live(key);
    if (!record) continue;
    const model = key.slice(0, key.indexOf(':'));
    counts[model] = (counts[model] ?? 0) + 1;
    if (model === 'Grant') {
      grants.push({
        grant_id: record.payload.jti,
        account: record.payload.accountId,
        client_id: record.payload.clientId,
        scope: record.payload.openid?.scope ?? '',
      });
    }
  }
  return {
    grants, counts, token_requests: tokenRequests, pending_token_failures: tokenFailures.length,
  };
}

function attachControl(provider) {
  provider.use(async (ctx, next) => {
    if (!ctx.path.startsWith('/__control/')) return next();
    const action = ctx.path.slice('/__control/'.length);
    if (action === 'state' && ctx.method === 'GET') {
      sendJson(ctx, 200, summary());
    } else if (action === 'revoke_user' && ctx.method === 'POST') {
      const { sub } = await readForm(ctx.req);
      if (!accountBySub(sub)) {
        sendJson(ctx, 404, { error: `no account with sub ${sub}` });
        return undefined;
      }
      const grantIds = new Set(summary().grants.filter((g) => g.account === sub).map((g) => g.grant_id));
      const removed = deleteWhere((key, payload) => grantIds.has(payload.grantId)
        || (key.startsWith('Grant:') && grantIds.has(payload.jti)));
      sendJson(ctx, 200, { grants: grantIds.size, removed });
    } else if (action === 'fail_token' && ctx.method === 'POST') {
      const { status, error, times } = await readForm(ctx.req);
      for (let i = 0; i < Number(times ?? 1); i += 1) {
        tokenFailures.push({ status: Number(status), error: error || null });
      }
      sendJson(ctx, 200, { pending_token_failures: tokenFailures.length });
    } else {
      sendJson(ctx, 404, { error: `unknown control action ${ctx.method} ${action}` });
    }
    return undefined;
  });
}

// ---------------------------------------------------------------------------------------------

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(config.port ?? 0, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;
const provider = new Provider(issuer, providerConfiguration());
attachControl(provider);
attachLenientOfflineAccess(provider);
attachTokenHooks(provider);
attachInteractions(provider);
server.on('request', provider.callback());

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}

process.stdout.write(`READY ${issuer}\n`);
