// A resource server in Node with jose, configured with the issuer URL alone: it discovers the
// key set (`/.well-known/openid-configuration` -> `jwks_uri`, then jose's createRemoteJWKSet),
// verifies an impersonation token (steps 2-6 of docs/app-developers.md, "In any other
// language"), reports the use (`POST /introspect/uses`, as a member of the introspect group)
// and serves the request only when the use was recorded; then the user finds the use on their
// own access log. The twin of resource_server_pyjwt.py.
//
// Run by scripts/client-test with node against local-api, with in the environment its URL
// (API, the issuer), the user's id and identity token (USER_ID, USER_TOKEN), an agent's
// (AGENT_TOKEN, support group) and the resource server's (RS_ID, RS_TOKEN, introspect group).
// Only node and jose.
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const API = env('API');
const AUDIENCE = 'support-access-app';
const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n; // P-256's order
const HALF_N = N / 2n;

async function call(method, url, token, body) {
  const response = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

// The `s` half of a JOSE ES256 signature (r || s, 64 bytes), or null for another length.
function signatureS(token) {
  const raw = Buffer.from(token.split('.')[2] ?? '', 'base64url');
  return raw.length === 64 ? BigInt(`0x${raw.subarray(32).toString('hex')}`) : null;
}

// What an app backend keeps: the issuer (its one setting), the discovered key set (jose caches
// it and refetches for an unknown `kid`, at most every 60 s) and its own identity token.
async function resourceServer(issuer, identityToken) {
  const response = await fetch(`${issuer}/.well-known/openid-configuration`);
  if (!response.ok) throw new Error(`discovery: ${response.status}`);
  const metadata = await response.json();
  if (metadata.issuer !== issuer) throw new Error(`the metadata names another issuer: ${metadata.issuer}`);
  const keys = createRemoteJWKSet(new URL(metadata.jwks_uri), { cooldownDuration: 60_000 });
  const reportUrl = `${metadata.introspection_endpoint}/uses`;

  async function verify(token) {
    if (Buffer.byteLength(token) > 8192) throw new Error('token over 8 KiB');
    const header = decodeProtectedHeader(token);
    if (['crit', 'jwk', 'jku', 'x5u', 'x5c'].some((name) => name in header)) {
      throw new Error('a header this service never sets');
    }
    const s = signatureS(token);
    if (s === null || s > HALF_N) throw new Error('signature is not 64 bytes in low-S form');
    const { payload } = await jwtVerify(token, keys, {
      issuer,
      audience: AUDIENCE,
      algorithms: ['ES256'],
      typ: 'support-access+jwt',
      clockTolerance: 30,
      requiredClaims: ['exp', 'nbf', 'iat', 'sub', 'jti'],
    });
    return payload;
  }

  const reportUse = (token, method, path) => call('POST', reportUrl, identityToken, { token, method, path });

  // The app's answer: verify, enforce the scope, then record the use; serve nothing unrecorded.
  async function serve(token, method, path) {
    let claims;
    try {
      claims = await verify(token);
    } catch (e) {
      return { status: 401, body: { refused: String(e) } };
    }
    if (claims.scope === 'read' && !['GET', 'HEAD', 'OPTIONS'].includes(method)) {
      return { status: 403, body: { refused: 'read-only token' } };
    }
    const used = await reportUse(token, method, path);
    if (used.status !== 200) return used; // 403 use-refused, or 503
    return { status: 200, body: { acting_as: used.body.user_id, agent: used.body.acting_agent, jti: used.body.jti } };
  }

  return { verify, reportUse, serve };
}

function check(condition, what) {
  if (!condition) throw new Error(`FAIL ${what}`);
  console.log(`ok ${what}`);
}

async function main() {
  const [user, userToken, rsId] = [env('USER_ID'), env('USER_TOKEN'), env('RS_ID')];
  const granted = await call('POST', `${API}/consents`, userToken, { duration_seconds: 3600, scope: 'read' });
  check(granted.status === 201, 'grant read access');
  const minted = await call('POST', `${API}/tokens`, env('AGENT_TOKEN'), { user_id: user, reason: 'jose app' });
  check(minted.status === 201, 'mint');
  const token = minted.body.access_token;

  const app = await resourceServer(API, env('RS_TOKEN'));
  const claims = await app.verify(token);
  check(claims.sub === user && claims.act.sub === 'agent-7', 'verified from the issuer URL alone');
  // The high-S twin of the signature verifies with jose alone; the low-S rule refuses it.
  const [head, body, sig] = token.split('.');
  const raw = Buffer.from(sig, 'base64url');
  const twinS = Buffer.from((N - signatureS(token)).toString(16).padStart(64, '0'), 'hex');
  const twin = `${head}.${body}.${Buffer.concat([raw.subarray(0, 32), twinS]).toString('base64url')}`;
  check((await app.serve(twin, 'GET', '/orders/42')).status === 401, 'the high-S twin refused');

  const served = await app.serve(token, 'GET', '/orders/42');
  check(served.status === 200 && served.body.jti === claims.jti && served.body.acting_as === user, 'a GET served and recorded');
  const refused = await app.reportUse(token, 'DELETE', '/orders/42');
  check(refused.status === 403 && refused.body.type.endsWith('/use-refused'), 'a DELETE reported with a read token is refused');

  const log = await call('GET', `${API}/me/access-log`, userToken);
  check(log.status === 200, 'the user reads their access log');
  const mine = log.body.events.map((e) => `${e.type} ${e.detail} ${e.jti}`);
  check(mine.includes(`token.used GET /orders/42 reported by ${rsId} ${claims.jti}`), 'the reported use is on it');
  check(mine.includes(`token.rejected scope DELETE /orders/42 reported by ${rsId} ${claims.jti}`), 'and so is the refused report');
  console.log('jose resource server: passed');
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
