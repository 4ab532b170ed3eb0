"""Verify a support-access impersonation token with PyJWT, as an app backend in Python would.

usage: pyjwt_verify.py JWKS.json TOKEN_FILE AUDIENCE ISSUER
Prints the verified claims as JSON and exits 0, or prints the error and exits 1.
`decode` is the check itself (steps 3-6 of docs/app-developers.md, "In any other language"),
which tests/client/resource_server_pyjwt.py imports with keys found by discovery.
"""
import base64
import json
import sys

import jwt

# floor(n / 2) for P-256's group order n: a signature with a larger `s` is the twin of a
# token the service signed, (r, n - s), which anyone can compute. PyJWT accepts both forms.
HALF_N = 0x7FFFFFFF800000007FFFFFFFFFFFFFFFDE737D56D38BCF4279DCE5617E3192A8
# Refused before parsing (step 2).
MAX_TOKEN_BYTES = 8 * 1024


def decode(token, key_for_kid, audience, issuer):
    """The verified claims of `token`, or an exception. `key_for_kid(kid)` returns the public
    key of that `kid` from the token keys' JWK Set (never a key the token carries)."""
    if len(token.encode()) > MAX_TOKEN_BYTES:
        raise ValueError("token over 8 KiB")
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "support-access+jwt":
        raise ValueError(f"wrong typ {header.get('typ')!r}")
    if any(name in header for name in ("crit", "jwk", "jku", "x5u", "x5c")):
        raise ValueError("a header this service never sets")
    signature = token.rsplit(".", 1)[-1]
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    if len(raw) != 64 or int.from_bytes(raw[32:], "big") > HALF_N:
        raise ValueError("signature is not 64 bytes in low-S form")
    return jwt.decode(
        token,
        key_for_kid(header["kid"]),
        algorithms=["ES256"],
        audience=audience,
        issuer=issuer,
        leeway=30,
        options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]},
    )


def main() -> int:
    jwks_path, token_path, audience, issuer = sys.argv[1:5]
    with open(jwks_path) as f:
        jwks = json.load(f)
    with open(token_path) as f:
        token = f.read().strip()
    try:
        keys = {k.key_id: k.key for k in jwt.PyJWKSet.from_dict(jwks).keys}
        claims = decode(token, keys.__getitem__, audience, issuer)
    except Exception as e:  # noqa: BLE001 - any failure is a refusal
        print(f"refused: {type(e).__name__}: {e}")
        return 1
    print(json.dumps(claims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
