#!/usr/bin/env python3
"""Writes the checked-in seeds of the structured fuzz targets (`http_request`,
`stream_records_structured`): a byte-level fuzzer rarely stumbles on a whole valid request or
stream record, so each seed is one, encoded as `arbitrary` 1.x decodes the target's input
type. Re-run after changing those types (their first enum variants are the well-formed ones):

    python3 fuzz/seeds.py
"""
import pathlib
import struct

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


def variant(k, n):
    """Variant k of an n-variant enum: a u32, little-endian, scaled down to 0..n."""
    return struct.pack("<I", 0 if k == 0 else -(-(k << 32) // n))


def some(b):
    return b"\x01" + b


NONE = b"\x00"


def vec(items):
    """A Vec read element by element: a `true` byte before each one, `false` after the last."""
    return b"".join(b"\x01" + i for i in items) + b"\x00"


def i64(n):
    return struct.pack("<q", n)


# ---- http_request: Input { route, method, path, query, content_type, body, caller, authorization }
PATH_EXACT = variant(0, 6)
Q_NONE = variant(1, 4)
B_NONE = variant(1, 7)
ALICE, AGENT, AUDITOR, RESOURCE_SERVER = 0, 2, 3, 4  # indexes into SUBS
SUPPORT, AUDITOR_GROUP, INTROSPECT = 0, 1, 2  # indexes into GROUPS


def query(pattern):
    """Query::Expected: the route's parameters in order, `v` a valid value, `.` left out."""
    return variant(0, 4) + vec([some(variant(0, 5)) if c == "v" else NONE for c in pattern])


def body(fields):
    """BodyInput::Expected with the route's first `fields` fields, each a valid value."""
    return variant(0, 7) + vec([some(variant(0, 7))] * fields)


def caller(sub, groups=()):
    listed = some(variant(0, 4) + vec([variant(0, 2) + bytes([g]) for g in groups])) if groups else NONE
    return some(variant(0, 4) + bytes([sub]) + listed + vec([]))


# `route` indexes http_request's ROUTES: the router's table (`Route::all`) in order, each
# method of a route its own entry, a route taking any method as GET, POST and DELETE.
def request(route, q, b, who, bearer=NONE):
    return bytes([route]) + NONE + PATH_EXACT + q + NONE + b + who + bearer


HTTP_REQUEST = {
    "grant": request(0, Q_NONE, body(3), caller(ALICE)),
    "get-consent": request(1, Q_NONE, B_NONE, caller(ALICE)),
    "revoke": request(2, Q_NONE, B_NONE, caller(ALICE)),
    "mint": request(3, Q_NONE, body(2), caller(AGENT, [SUPPORT])),
    "audit-query": request(4, query("vvvvvv"), B_NONE, caller(AUDITOR, [AUDITOR_GROUP])),
    "audit-next-page": request(4, query("v....vv"), B_NONE, caller(AUDITOR, [AUDITOR_GROUP])),
    "audit-export": request(5, query("v"), B_NONE, caller(AUDITOR, [AUDITOR_GROUP])),
    "access-log": request(6, query("vv"), B_NONE, caller(ALICE)),
    "whoami": request(9, Q_NONE, B_NONE, NONE, some(variant(0, 4))),
    "introspect": request(12, Q_NONE, body(2), caller(RESOURCE_SERVER, [INTROSPECT])),
    "file-request": request(13, Q_NONE, body(4), caller(AGENT, [SUPPORT])),
    "agent-requests": request(14, Q_NONE, B_NONE, caller(AGENT, [SUPPORT])),
    "my-requests": request(15, Q_NONE, B_NONE, caller(ALICE)),
    "approve": request(16, Q_NONE, B_NONE, caller(ALICE)),
    "deny": request(17, Q_NONE, B_NONE, caller(ALICE)),
}

# ---- stream_records_structured: Vec<Record { name, identity, observed_at, granted_at, expires_at, image }>
REMOVE, MODIFY, INSERT = (variant(k, 4) for k in range(3))
TTL, NO_IDENTITY = variant(0, 4), variant(1, 4)
GRANTED, EXPIRES = 1_795_600_800, 1_795_601_700


def record(name, identity, observed_at):
    right = variant(0, 3) + b"\x00"  # Field::Right(0)
    image = some(right * 6 + vec([]))
    return name + identity + i64(observed_at) + i64(GRANTED) + i64(EXPIRES) + image


def records(*items):
    return b"".join(b"\x01" + r for r in items)


STREAM_RECORDS_STRUCTURED = {
    "ttl-remove": records(record(REMOVE, TTL, EXPIRES + 60)),
    "modify-after-expiry": records(record(MODIFY, NO_IDENTITY, EXPIRES + 60)),
    "modify-while-live": records(record(MODIFY, NO_IDENTITY, EXPIRES - 60)),
    "user-remove-and-insert": records(record(REMOVE, NO_IDENTITY, EXPIRES + 60), record(INSERT, NO_IDENTITY, GRANTED)),
}

for target, seeds in [("http_request", HTTP_REQUEST), ("stream_records_structured", STREAM_RECORDS_STRUCTURED)]:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (directory / f"seed-{name}").write_bytes(data)
