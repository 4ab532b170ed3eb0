"""A resource server in Python with PyJWT, configured with the issuer URL alone: it discovers
the key set (`/.well-known/openid-configuration` -> `jwks_uri`), verifies an impersonation
token (tests/pyjwt_verify.py's `decode`: steps 2-6 of docs/app-developers.md, "In any other
language"), reports the use (`POST /introspect/uses`, as a member of the introspect group) and
serves the request only when the use was recorded; then the user finds the use on their own
access log.

Run by scripts/client-test (with the client venv's python) against local-api, with in the
environment its URL (API, the issuer), the user's id and identity token (USER_ID, USER_TOKEN),
an agent's (AGENT_TOKEN, support group) and the resource server's (RS_ID, RS_TOKEN, introspect
group). Only the standard library and PyJWT.
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.request

import jwt

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pyjwt_verify import decode  # noqa: E402 - beside this file's directory

API = os.environ["API"]
AUDIENCE = "support-access-app"
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256's order


def call(method, url, token, body=None):
    """(status, JSON body) of one request with `token` as its bearer."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


class ResourceServer:
    """What an app backend keeps: the issuer (its one setting), the discovered key set (cached
    by PyJWKClient, refetched for an unknown `kid`), and its own identity token."""

    def __init__(self, issuer, identity_token):
        with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=10) as r:
            metadata = json.load(r)
        if metadata["issuer"] != issuer:
            raise ValueError(f"the metadata names another issuer: {metadata['issuer']!r}")
        self.issuer, self.identity_token = issuer, identity_token
        self.keys = jwt.PyJWKClient(metadata["jwks_uri"], cache_keys=True, lifespan=300)
        self.report_url = metadata["introspection_endpoint"] + "/uses"

    def verify(self, token):
        return decode(token, lambda kid: self.keys.get_signing_key(kid).key, AUDIENCE, self.issuer)

    def report_use(self, token, method, path):
        return call("POST", self.report_url, self.identity_token, {"token": token, "method": method, "path": path})

    def serve(self, token, method, path):
        """(status, body) of the app's answer: verify, enforce the scope, then record the use."""
        try:
            claims = self.verify(token)
        except Exception as e:  # noqa: BLE001 - any failure is a refusal
            return 401, {"refused": f"{type(e).__name__}: {e}"}
        if claims["scope"] == "read" and method not in ("GET", "HEAD", "OPTIONS"):
            return 403, {"refused": "read-only token"}
        status, used = self.report_use(token, method, path)
        if status != 200:
            return status, used  # 403 use-refused, or 503: serve nothing unrecorded
        return 200, {"acting_as": used["user_id"], "agent": used["acting_agent"], "jti": used["jti"]}


def check(condition, what):
    if not condition:
        sys.exit(f"FAIL {what}")
    print(f"ok {what}")


def main():
    user, user_token = os.environ["USER_ID"], os.environ["USER_TOKEN"]
    rs_id = os.environ["RS_ID"]
    status, _ = call("POST", f"{API}/consents", user_token, {"duration_seconds": 3600, "scope": "read"})
    check(status == 201, "grant read access")
    status, minted = call("POST", f"{API}/tokens", os.environ["AGENT_TOKEN"], {"user_id": user, "reason": "pyjwt app"})
    check(status == 201, "mint")
    token = minted["access_token"]

    app = ResourceServer(API, os.environ["RS_TOKEN"])
    claims = app.verify(token)
    check((claims["sub"], claims["act"]["sub"]) == (user, "agent-7"), "verified from the issuer URL alone")
    # The high-S twin of the signature verifies with PyJWT alone; the low-S rule refuses it.
    head, body, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "==")
    s = N - int.from_bytes(raw[32:], "big")
    twin = f"{head}.{body}." + base64.urlsafe_b64encode(raw[:32] + s.to_bytes(32, "big")).rstrip(b"=").decode()
    check(app.serve(twin, "GET", "/orders/42")[0] == 401, "the high-S twin refused")

    status, served = app.serve(token, "GET", "/orders/42")
    check(status == 200 and served["jti"] == claims["jti"] and served["acting_as"] == user, "a GET served and recorded")
    status, refused = app.report_use(token, "DELETE", "/orders/42")
    check(status == 403 and refused["type"].endswith("/use-refused"), "a DELETE reported with a read token is refused")

    status, log = call("GET", f"{API}/me/access-log", user_token)
    check(status == 200, "the user reads their access log")
    mine = [(e["type"], e.get("detail"), e.get("jti")) for e in log["events"]]
    check(("token.used", f"GET /orders/42 reported by {rs_id}", claims["jti"]) in mine, "the reported use is on it")
    refusal = ("token.rejected", f"scope DELETE /orders/42 reported by {rs_id}", claims["jti"])
    check(refusal in mine, "and so is the refused report")
    print("pyjwt resource server: passed")


if __name__ == "__main__":
    main()
