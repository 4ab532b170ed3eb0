"""The Python client that openapi-python-client generates from openapi.yaml, against local-api.

Run by scripts/client-test with the generated package (`support_access_client`) on
PYTHONPATH and, in the environment, local-api's URL (API) and dev identity tokens: USER_TOKEN
(USER), OTHER_TOKEN (OTHER, who never grants), AGENT_TOKEN (support group) and RS_TOKEN
(introspect group). The flow: grant, mint, introspect, the issuer's metadata; then refusals, each of which must
parse into the one `Problem` model with its typed `type` and `status`.
"""

import os
import sys

from support_access_client import AuthenticatedClient
from support_access_client.api.consent import get_current_consent, grant_consent
from support_access_client.api.requests import deny_access_request, file_access_request
from support_access_client.api.tokens import mint_token
from support_access_client.api.verification import introspect, openid_configuration
from support_access_client.models import (
    AccessRequest,
    AccessRequestBody,
    AccessRequestStatus,
    ActiveIntrospection,
    Consent,
    GrantRequest,
    InactiveIntrospection,
    IntrospectRequest,
    IssuerMetadata,
    MintedToken,
    MintRequest,
    Problem,
    ProblemStatus,
    ProblemType,
    Scope,
)

API = os.environ["API"]
USER, OTHER = os.environ["USER_ID"], os.environ["OTHER_ID"]
REASON = "client test: the generated Python client"


def client(token_var):
    # Any status the document does not list for an operation raises instead of parsing to None.
    return AuthenticatedClient(base_url=API, token=os.environ[token_var], raise_on_unexpected_status=True)


user, other, agent, rs = (client(v) for v in ("USER_TOKEN", "OTHER_TOKEN", "AGENT_TOKEN", "RS_TOKEN"))
passed = 0


def expect(what, response, status, model):
    """The response has `status` and its body parsed into `model`; returns the parsed body."""
    global passed
    if response.status_code != status or not isinstance(response.parsed, model):
        sys.exit(
            f"FAIL {what}: wanted {status} {model.__name__}, got {int(response.status_code)} "
            f"{type(response.parsed).__name__}: {response.content[:300]!r}"
        )
    passed += 1
    print(f"ok {what}: {status} {model.__name__}")
    return response.parsed


def expect_problem(what, response, problem_type, status):
    problem = expect(what, response, int(status), Problem)
    assert problem.type_ is problem_type, problem.type_
    assert problem.status is status, problem.status
    assert problem.detail and problem.request_id and problem.title, problem
    return problem


# Grant, mint, introspect.
consent = expect(
    "grant",
    grant_consent.sync_detailed(client=user, body=GrantRequest(duration_seconds=3600, scope=Scope.READ, note="ok")),
    201,
    Consent,
)
assert consent.user_id == USER and consent.scope is Scope.READ, consent
minted = expect(
    "mint", mint_token.sync_detailed(client=agent, body=MintRequest(user_id=USER, reason=REASON)), 201, MintedToken
)
assert minted.consent_id == consent.consent_id and minted.token_type == "Bearer", minted
active = expect(
    "introspect",
    introspect.sync_detailed(client=rs, body=IntrospectRequest(token=minted.access_token)),
    200,
    ActiveIntrospection,
)
assert (active.sub, active.act.sub, active.jti, active.cid) == (USER, "agent-7", minted.jti, consent.consent_id), active
inactive = expect(
    "introspect a forged token",
    introspect.sync_detailed(client=rs, body=IntrospectRequest(token="a.b.c")),
    200,
    InactiveIntrospection,
)
assert inactive.active is False
# The issuer's metadata: local-api's issuer is its URL, and the document names its keys.
metadata = expect("the issuer's metadata", openid_configuration.sync_detailed(client=rs), 200, IssuerMetadata)
assert (metadata.issuer, metadata.jwks_uri) == (API, f"{API}/.well-known/jwks.json"), metadata
assert metadata.id_token_signing_alg_values_supported == ["ES256"], metadata
# The token endpoint and its one grant, RFC 8693 token exchange, for public clients.
assert metadata.token_endpoint == f"{API}/token", metadata
assert [str(g) for g in metadata.grant_types_supported] == ["urn:ietf:params:oauth:grant-type:token-exchange"], metadata
assert [str(m) for m in metadata.token_endpoint_auth_methods_supported] == ["none"], metadata

# Refusals, each a typed Problem.
expect_problem(
    "mint without consent",
    mint_token.sync_detailed(client=agent, body=MintRequest(user_id=OTHER, reason=REASON)),
    ProblemType.NO_CONSENT,
    ProblemStatus.FORBIDDEN,
)
expect_problem(
    "mint as a user outside the support group",
    mint_token.sync_detailed(client=other, body=MintRequest(user_id=USER, reason=REASON)),
    ProblemType.FORBIDDEN,
    ProblemStatus.FORBIDDEN,
)
stranger = AuthenticatedClient(base_url=API, token="not-a-token", raise_on_unexpected_status=True)
expect_problem(
    "no valid identity token",
    get_current_consent.sync_detailed(client=stranger),
    ProblemType.UNAUTHENTICATED,
    ProblemStatus.UNAUTHORIZED,
)
expect_problem(
    "no active consent",
    get_current_consent.sync_detailed(client=other),
    ProblemType.NOT_FOUND,
    ProblemStatus.NOT_FOUND,
)
expect_problem(
    "a reason too short",
    mint_token.sync_detailed(client=agent, body=MintRequest(user_id=USER, reason="short")),
    ProblemType.INVALID_REQUEST,
    ProblemStatus.BAD_REQUEST,
)
request = expect(
    "file an access request",
    file_access_request.sync_detailed(
        client=agent, body=AccessRequestBody(user_id=USER, reason=REASON, duration_seconds=900)
    ),
    201,
    AccessRequest,
)
denied = expect("deny it", deny_access_request.sync_detailed(request.request_id, client=user), 200, AccessRequest)
assert denied.status is AccessRequestStatus.DENIED, denied
expect_problem(
    "deny it again",
    deny_access_request.sync_detailed(request.request_id, client=user),
    ProblemType.REQUEST_NOT_PENDING,
    ProblemStatus.CONFLICT,
)
print(f"python client: {passed} passed, 0 failed")
