// The TypeScript client that @hey-api/openapi-ts generates from openapi.yaml (fetch client),
// against local-api: the twin of client_test.py. scripts/client-test type-checks it with the
// generated code (tsc, strict), then runs it with node, with local-api's URL (API) and dev
// identity tokens in the environment: USER_TOKEN (USER_ID), OTHER_TOKEN (OTHER_ID, who never
// grants), AGENT_TOKEN (support group) and RS_TOKEN (introspect group). Grant, mint,
// introspect, the issuer's metadata; then refusals, each of which must parse into the one `Problem` type.
import { createClient, createConfig } from '../../target/clients/typescript/generated/client';
import {
  denyAccessRequest,
  fileAccessRequest,
  getCurrentConsent,
  grantConsent,
  introspect,
  mintToken,
  openidConfiguration,
  type Problem,
  type ProblemType,
} from '../../target/clients/typescript/generated';

// Node's globals that the test reads (no @types/node needed for two of them).
declare const process: { env: Record<string, string | undefined>; exitCode?: number };

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const API = env('API');
const USER = env('USER_ID');
const OTHER = env('OTHER_ID');
const REASON = 'client test: the generated TypeScript client';
const client = (token: string) => createClient(createConfig({ baseUrl: API, auth: token }));
const [user, other, agent, rs] = ['USER_TOKEN', 'OTHER_TOKEN', 'AGENT_TOKEN', 'RS_TOKEN'].map((v) => client(env(v)));
let passed = 0;

function check(condition: unknown, what: string): asserts condition {
  if (!condition) throw new Error(`FAIL ${what}`);
}

// The call answered `status` with a body (`data`, or `error` for a refusal); returns it.
function expect<T>(what: string, result: { data?: T; error?: unknown; response: Response }, status: number): T {
  const body = result.data ?? result.error;
  check(result.response.status === status && body !== undefined, `${what}: wanted ${status}, got ${result.response.status} ${JSON.stringify(body)}`);
  passed += 1;
  console.log(`ok ${what}: ${status}`);
  return body as T;
}

const PROBLEMS = 'tag:support-access,2026:problems/';
function expectProblem(
  what: string,
  result: { data?: unknown; error?: Problem; response: Response },
  slug: string,
  status: Problem['status'],
): Problem {
  check(result.data === undefined, `${what}: no data on a refusal`);
  const problem = expect<Problem>(what, { error: result.error, response: result.response }, status);
  const type: ProblemType = problem.type;
  check(type === `${PROBLEMS}${slug}` && problem.status === status, `${what}: ${JSON.stringify(problem)}`);
  check(problem.detail && problem.title && problem.request_id, `${what}: ${JSON.stringify(problem)}`);
  return problem;
}

async function main() {
  // Grant, mint, introspect.
  const consent = expect(
    'grant',
    await grantConsent({ client: user, body: { duration_seconds: 3600, scope: 'read', note: 'ok' } }),
    201,
  );
  check(consent.user_id === USER && consent.scope === 'read', 'grant: the consent');
  const minted = expect('mint', await mintToken({ client: agent, body: { user_id: USER, reason: REASON } }), 201);
  check(minted.consent_id === consent.consent_id && minted.token_type === 'Bearer', 'mint: the token');
  const active = expect('introspect', await introspect({ client: rs, body: { token: minted.access_token } }), 200);
  check(
    active.active === true &&
      active.sub === USER &&
      active.act.sub === 'agent-7' &&
      active.jti === minted.jti &&
      active.cid === consent.consent_id,
    `introspect: ${JSON.stringify(active)}`,
  );
  const inactive = expect('introspect a forged token', await introspect({ client: rs, body: { token: 'a.b.c' } }), 200);
  check(inactive.active === false && Object.keys(inactive).length === 1, 'introspect: inactive');
  // The issuer's metadata: local-api's issuer is its URL, and the document names its keys.
  const metadata = expect("the issuer's metadata", await openidConfiguration({ client: rs }), 200);
  check(
    metadata.issuer === API &&
      metadata.jwks_uri === `${API}/.well-known/jwks.json` &&
      metadata.token_endpoint === `${API}/token` &&
      JSON.stringify(metadata.grant_types_supported) === '["urn:ietf:params:oauth:grant-type:token-exchange"]' &&
      JSON.stringify(metadata.token_endpoint_auth_methods_supported) === '["none"]',
    `metadata: ${JSON.stringify(metadata)}`,
  );

  // Refusals, each a typed Problem.
  expectProblem('mint without consent', await mintToken({ client: agent, body: { user_id: OTHER, reason: REASON } }), 'no-consent', 403);
  expectProblem(
    'mint as a user outside the support group',
    await mintToken({ client: other, body: { user_id: USER, reason: REASON } }),
    'forbidden',
    403,
  );
  expectProblem('no valid identity token', await getCurrentConsent({ client: client('not-a-token') }), 'unauthenticated', 401);
  expectProblem('no active consent', await getCurrentConsent({ client: other }), 'not-found', 404);
  expectProblem('a reason too short', await mintToken({ client: agent, body: { user_id: USER, reason: 'short' } }), 'invalid-request', 400);
  const request = expect(
    'file an access request',
    await fileAccessRequest({ client: agent, body: { user_id: USER, reason: REASON, duration_seconds: 900 } }),
    201,
  );
  const path = { request_id: request.request_id };
  const denied = expect('deny it', await denyAccessRequest({ client: user, path }), 200);
  check(denied.status === 'denied', 'deny: the request');
  expectProblem('deny it again', await denyAccessRequest({ client: user, path }), 'request-not-pending', 409);
  console.log(`typescript client: ${passed} passed, 0 failed`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
