"""Verify a support-access impersonation token with PyJWT, as an app backend in Python would.

usage: pyjwt_verify.py JWKS.json TOKEN_FILE AUDIENCE ISSUER
Prints the verified claims as JSON and exits 0, or prints the error and exits 1.
"""
import json
import sys

import jwt


def main() -> int:
    jwks_path, token_path, audience, issuer = sys.argv[1:5]
    with open(jwks_path) as f:
        jwks = json.load(f)
    with open(token_path) as f:
        token = f.read().strip()
    try:
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "support-access+jwt":
            raise ValueError(f"wrong typ {header.get('typ')!r}")
        keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}
        key = keys[header["kid"]]
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["ES256"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]},
        )
    except Exception as e:  # noqa: BLE001 - any failure is a refusal
        print(f"refused: {type(e).__name__}: {e}")
        return 1
    print(json.dumps(claims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
