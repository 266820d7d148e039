#!/usr/bin/env node
// The local AI Factory's OpenID Connect provider (oidc-provider 9.13.3).
//
//   node local/idp/server.mjs                  run the provider
//   node local/idp/server.mjs hash PASSWORD    print {"salt", "password_scrypt"} for a user record
//
// Configuration (environment):
//   IDP_PORT (9000)          listen on IDP_HOST:IDP_PORT only
//   IDP_HOST (127.0.0.1)     the one local address to listen on (an IP address)
//   IDP_ISSUER               default http://127.0.0.1:${IDP_PORT} (no path)
//   IDP_USERS_FILE           default local/idp/demo-users.json; re-read on every sign-in
//   IDP_CLIENTS_FILE         required: [{"client_id", "client_secret", "redirect_uris": [...]}]
//   IDP_KEYS_FILE            signing JWKS (RS256), created (0600) when missing;
//                            default /var/lib/factoryhub/idp/jwks.json
//   IDP_COOKIE_SECRET_FILE   cookie signing secret, created (0600) when missing;
//                            default cookie-secret next to IDP_KEYS_FILE
//
// A user record: {"username", "salt", "password_scrypt", "name", "email", "groups": [...],
// optional "preferred_username"}. The password hash is Node's crypto.scrypt (N=16384, r=8,
// p=1, 32 bytes) of the password with the hex salt's bytes, hex encoded. The users file is a
// list of records or {"users": [...]}.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { promisify } from 'node:util';

const scrypt = promisify(crypto.scrypt);
const SCRYPT = { N: 16384, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const KEYLEN = 32;

async function hashPassword(password, saltHex = crypto.randomBytes(16).toString('hex')) {
  const derived = await scrypt(password, Buffer.from(saltHex, 'hex'), KEYLEN, SCRYPT);
  return { salt: saltHex, password_scrypt: derived.toString('hex') };
}

if (process.argv[2] === 'hash') {
  if (!process.argv[3]) {
    console.error('usage: node local/idp/server.mjs hash PASSWORD');
    process.exit(2);
  }
  console.log(JSON.stringify(await hashPassword(process.argv[3])));
  process.exit(0);
}

// ---------------------------------------------------------------- configuration
const PORT = Number(process.env.IDP_PORT || 9000);
const HOST = process.env.IDP_HOST || '127.0.0.1';
const ISSUER = (process.env.IDP_ISSUER || `http://127.0.0.1:${PORT}`).replace(/\/$/, '');
const USERS_FILE = process.env.IDP_USERS_FILE || 'local/idp/demo-users.json';
const CLIENTS_FILE = process.env.IDP_CLIENTS_FILE;
const KEYS_FILE = process.env.IDP_KEYS_FILE || '/var/lib/factoryhub/idp/jwks.json';
const COOKIE_SECRET_FILE = process.env.IDP_COOKIE_SECRET_FILE
  || path.join(path.dirname(KEYS_FILE), 'cookie-secret');

function fail(message) {
  console.error(`idp: ${message}`);
  process.exit(1);
}

if (new URL(ISSUER).pathname !== '/') fail(`IDP_ISSUER must have no path: ${ISSUER}`);
if (!CLIENTS_FILE) fail('IDP_CLIENTS_FILE is not set');

function writePrivate(file, text) {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

function loadOrCreateJwks(file) {
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8'));
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const jwks = { keys: [{ ...jwk, kid: crypto.randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' }] };
  writePrivate(file, `${JSON.stringify(jwks, null, 2)}\n`);
  console.log(`idp: created signing key ${file}`);
  return jwks;
}

function loadOrCreateSecret(file) {
  if (fs.existsSync(file)) return fs.readFileSync(file, 'utf8').trim();
  const secret = crypto.randomBytes(32).toString('hex');
  writePrivate(file, `${secret}\n`);
  return secret;
}

function loadClients(file) {
  const list = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (!Array.isArray(list) || !list.length) fail(`${file}: expected a non-empty JSON list of clients`);
  return list.map((c) => {
    if (!c.client_id || !c.client_secret || !Array.isArray(c.redirect_uris)) {
      fail(`${file}: each client needs client_id, client_secret and redirect_uris`);
    }
    return {
      client_id: c.client_id,
      client_secret: c.client_secret,
      redirect_uris: c.redirect_uris,
      post_logout_redirect_uris: c.post_logout_redirect_uris || [],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      // client_secret_post is accepted as well: oidc-provider treats basic and post alike.
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    };
  });
}

function loadUsers() {
  const data = JSON.parse(fs.readFileSync(USERS_FILE, 'utf8'));
  const list = Array.isArray(data) ? data : data.users;
  if (!Array.isArray(list)) throw new Error(`${USERS_FILE}: no list of users`);
  return new Map(list.map((u) => [u.username, u]));
}

function findUser(username) {
  try {
    return loadUsers().get(username);
  } catch (err) {
    console.error(`idp: cannot read users: ${err.message}`);
    return undefined;
  }
}

const DUMMY = await hashPassword('not-a-password');

async function checkPassword(username, password) {
  const user = typeof username === 'string' ? findUser(username) : undefined;
  const record = user && user.salt && user.password_scrypt ? user : DUMMY;
  const { password_scrypt: computed } = await hashPassword(String(password ?? ''), record.salt);
  const a = Buffer.from(computed, 'hex');
  const b = Buffer.from(record.password_scrypt, 'hex');
  const same = a.length === b.length && crypto.timingSafeEqual(a, b);
  return same && record === user ? user : undefined;
}

// ---------------------------------------------------------------- the provider
const { default: Provider, errors } = await import('oidc-provider');

const clients = loadClients(CLIENTS_FILE);
const knownClients = new Set(clients.map((c) => c.client_id));

const configuration = {
  clients,
  jwks: loadOrCreateJwks(KEYS_FILE),
  cookies: {
    names: { session: 'fh_idp_session', interaction: 'fh_idp_interaction', resume: 'fh_idp_resume' },
    keys: [loadOrCreateSecret(COOKIE_SECRET_FILE)],
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false, // scope-requested claims go into the ID token too
  responseTypes: ['code'],
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  pkce: { required: () => true }, // S256 only (the only method oidc-provider 9 knows)
  clientDefaults: {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    id_token_signed_response_alg: 'RS256',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: true },
    revocation: { enabled: true },
    pushedAuthorizationRequests: { enabled: false },
    rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
  },
  ttl: {
    AccessToken: 3600,
    IdToken: 3600,
    AuthorizationCode: 60,
    Interaction: 600,
    Session: 8 * 3600,
    Grant: 8 * 3600,
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // Known (configured) clients need no consent screen: their grant covers what they ask for.
  async loadExistingGrant(ctx) {
    const { provider } = ctx.oidc;
    const clientId = ctx.oidc.client.clientId;
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(clientId);
    let grant = grantId ? await provider.Grant.find(grantId) : undefined;
    if (!knownClients.has(clientId)) return grant;
    grant ||= new provider.Grant({ clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope([...ctx.oidc.requestParamOIDCScopes].join(' '));
    if (ctx.oidc.requestParamClaims.size) grant.addOIDCClaims([...ctx.oidc.requestParamClaims]);
    await grant.save();
    return grant;
  },
  async findAccount(ctx, sub) {
    const user = findUser(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        const claims = {
          sub,
          name: user.name,
          preferred_username: user.preferred_username ?? user.username,
          email: user.email,
          groups: Array.isArray(user.groups) ? user.groups.map(String) : [],
        };
        for (const key of Object.keys(claims)) if (claims[key] === undefined) delete claims[key];
        return claims;
      },
    };
  },
  renderError,
};

const provider = new Provider(ISSUER, configuration);
provider.proxy = false;
provider.on('server_error', (ctx, err) => console.error('idp: server_error', err));

// ---------------------------------------------------------------- pages
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const CSS = `
*{box-sizing:border-box}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;
 font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#0f172a;color:#0f172a}
.card{background:#fff;width:22rem;max-width:92vw;padding:2rem 2rem 1.5rem;border-radius:12px;
 box-shadow:0 10px 30px rgba(0,0,0,.35)}
h1{font-size:1.35rem;margin:0 0 .25rem}
.sub{color:#64748b;margin:0 0 1.25rem;font-size:.9rem}
label{display:block;font-size:.85rem;font-weight:600;margin:.75rem 0 .3rem}
input{width:100%;padding:.6rem .7rem;border:1px solid #cbd5e1;border-radius:8px;font-size:1rem}
input:focus{outline:2px solid #6366f1;border-color:#6366f1}
button{margin-top:1.25rem;width:100%;padding:.7rem;border:0;border-radius:8px;background:#4f46e5;
 color:#fff;font-size:1rem;font-weight:600;cursor:pointer}
button:hover{background:#4338ca}
.error{background:#fef2f2;color:#b91c1c;border:1px solid #fecaca;border-radius:8px;
 padding:.55rem .7rem;font-size:.9rem;margin:0 0 .5rem}
.hint{color:#64748b;font-size:.8rem;margin-top:1.25rem;line-height:1.4}
pre{white-space:pre-wrap;word-break:break-word;font-size:.85rem}`;

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title><style>${CSS}</style></head>
<body><main class="card">${body}</main></body></html>`;
}

function loginPage(uid, { username = '', error = '', client = '' } = {}) {
  return page('AI Factory sign-in', `
<h1>AI Factory sign-in</h1>
<p class="sub">Sign in to continue${client ? ` to <strong>${esc(client)}</strong>` : ''}.</p>
${error ? `<p class="error" role="alert" id="login-error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" id="login-form" autocomplete="on">
  <label for="username">Username</label>
  <input id="username" name="username" type="text" autocomplete="username" autocapitalize="none"
    spellcheck="false" required value="${esc(username)}" ${username ? '' : 'autofocus'}>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required
    ${username ? 'autofocus' : ''}>
  <button type="submit" id="sign-in">Sign in</button>
</form>
<p class="hint">Use your factory account. Forgotten password? Ask the factory's support team.</p>`);
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('Sign-in problem', `<h1>Sign-in problem</h1>
<p class="sub">The sign-in request could not be completed. Go back to the application and try again.</p>
${Object.entries(out).map(([k, v]) => `<pre><strong>${esc(k)}</strong>: ${esc(v)}</pre>`).join('')}`);
}

async function logoutSource(ctx, form) {
  ctx.body = page('Sign out', `<h1>Sign out of the AI Factory?</h1>${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm" style="background:#64748b">No, stay signed in</button>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.body = page('Signed out', '<h1>Signed out</h1><p class="sub">You are signed out of the AI Factory.</p>');
}

// ---------------------------------------------------------------- HTTP
function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.writeHead(status, {
    'Content-Type': type,
    'Cache-Control': 'no-store',
    'X-Frame-Options': 'DENY',
    'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
  });
  res.end(body);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function autoConsent(req, res, details) {
  const { prompt: { details: missing }, grantId, session, params } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  const result = { consent: { grantId: await grant.save() } };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

async function interaction(req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    if (err instanceof errors.SessionNotFound) {
      return send(res, 400, page('Sign-in expired', `<h1>Sign-in expired</h1>
<p class="sub">This sign-in page has expired or was opened in another browser. Go back to the
application and start again.</p>`));
    }
    throw err;
  }
  if (details.uid !== uid) return send(res, 400, page('Sign-in problem', '<h1>Sign-in problem</h1>'));
  const { prompt, params } = details;
  const client = params.client_id;

  if (prompt.name === 'consent') {
    if (!knownClients.has(client)) return send(res, 403, page('Unknown application', '<h1>Unknown application</h1>'));
    return autoConsent(req, res, details);
  }
  if (prompt.name !== 'login') return send(res, 501, page('Not supported', '<h1>Not supported</h1>'));

  if (req.method === 'GET' && !action) {
    return send(res, 200, loginPage(uid, { username: params.login_hint || '', client }));
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const username = (form.get('username') || '').trim();
    const user = await checkPassword(username, form.get('password'));
    if (!user) {
      console.log(`idp: failed sign-in for ${JSON.stringify(username.slice(0, 64))}`);
      return send(res, 401, loginPage(uid, { username, error: 'Invalid username or password', client }));
    }
    console.log(`idp: signed in ${user.username}`);
    return provider.interactionFinished(req, res, { login: { accountId: user.username } },
      { mergeWithLastSubmission: false });
  }
  return send(res, 405, page('Not allowed', '<h1>Not allowed</h1>'));
}

const oidc = provider.callback();
const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?\/?$/;

const server = http.createServer(async (req, res) => {
  const { pathname } = new URL(req.url, ISSUER);
  try {
    if (pathname === '/healthz') return send(res, 200, 'ok\n', 'text/plain; charset=utf-8');
    const m = INTERACTION.exec(pathname);
    if (m) return await interaction(req, res, m[1], m[2]);
    return oidc(req, res);
  } catch (err) {
    console.error('idp: error', err);
    if (!res.headersSent) send(res, 500, page('Error', '<h1>Something went wrong</h1>'));
    else res.end();
  }
});

server.listen(PORT, HOST, () => {
  console.log(`idp: issuer ${ISSUER} listening on ${HOST}:${PORT} (${clients.length} client(s), users from ${USERS_FILE})`);
});

function shutdown(signal) {
  console.log(`idp: ${signal}, stopping`);
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
  server.closeAllConnections?.();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
