"""Check tests/moto_server.py's shortcuts against moto's own answers.

Each request below goes to moto_server's application twice, in process: in one region with
the shortcuts (answers written as JSON directly, DynamoDB calls straight to DynamoDB's
handler, expressions parsed once), in another with `shortcuts` off, which is moto's own
path (Flask, the model-driven serializer, every expression parsed every time). Status,
headers (but the request id) and body bytes must be equal, and each request must have taken
the path it is listed for: a plain answer without moto's serializer, any other (an error,
capacity by index) through it.

usage: moto_server_check.py   (prints one line per request; exits 1 on the first difference)
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flask  # noqa: E402
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app  # noqa: E402
from werkzeug.test import Client  # noqa: E402

import moto_server  # noqa: E402

FAST, GENERIC = "us-east-1", "eu-west-1"
seen = {"plain": 0, "flask": 0}


def counting(name, inner):
    def counted(*args, **kwargs):
        seen[name] += 1
        return inner(*args, **kwargs)

    return counted


moto_server._WireJson.encode = counting("plain", moto_server._WireJson.encode)
flask.Flask.wsgi_app = counting("flask", flask.Flask.wsgi_app)
client = Client(DomainDispatcherApplication(create_backend_app))


def call(region, op, body):
    moto_server.shortcuts = region == FAST
    if "ClientRequestToken" in body:  # the token cache is the server's, not a region's
        body = dict(body, ClientRequestToken=f"{body['ClientRequestToken']}-{region}")
    before = dict(seen)
    answer = client.post(
        "/",
        data=json.dumps(body),
        headers={
            "X-Amz-Target": f"DynamoDB_20120810.{op}",
            "Content-Type": "application/x-amz-json-1.0",
            "Authorization": f"AWS4-HMAC-SHA256 Credential=test/20261203/{region}/dynamodb/aws4_request, "
            "SignedHeaders=host;x-amz-target, Signature=00",
        },
    )
    headers = sorted((k.lower(), v) for k, v in answer.headers.items() if k.lower() not in ("x-amzn-requestid", "date"))
    took = {k: seen[k] - before[k] for k in seen}
    return answer.status_code, headers, answer.get_data(), took


def s(v):
    return {"S": v}


def n(v):
    return {"N": v}


EVENTS, CONSENTS = "Events", "Consents"
SETUP = [
    (
        "CreateTable",
        {
            "TableName": EVENTS,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": "stream", "AttributeType": "S"},
                {"AttributeName": "seq", "AttributeType": "N"},
                {"AttributeName": "actor", "AttributeType": "S"},
            ],
            "KeySchema": [{"AttributeName": "stream", "KeyType": "HASH"}, {"AttributeName": "seq", "KeyType": "RANGE"}],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": "by-actor",
                    "KeySchema": [{"AttributeName": "actor", "KeyType": "HASH"}, {"AttributeName": "seq", "KeyType": "RANGE"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        },
    ),
    (
        "CreateTable",
        {
            "TableName": CONSENTS,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "user_id", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "user_id", "KeyType": "HASH"}],
        },
    ),
]
# Every kind of attribute value, nested, with text outside ASCII and numbers as written.
RICH = {
    "user_id": s("alice"),
    "text": s("é ✓ \"quoted\" \\ / \u0001"),
    "empty": s(""),
    "number": n("1.50"),
    "big": n("123456789012345678901234567890"),
    "yes": {"BOOL": True},
    "nothing": {"NULL": True},
    "blob": {"B": "AAEC/w=="},
    "strings": {"SS": ["b", "a"]},
    "numbers": {"NS": ["2", "1.0"]},
    "blobs": {"BS": ["AA==", "AQ=="]},
    "list": {"L": [s("x"), n("1"), {"M": {"deep": {"L": []}}}]},
    "map": {"M": {"a": s("b"), "m": {"M": {}}}},
}


def event(stream, seq, actor="agent-7", **extra):
    return {"stream": s(stream), "seq": n(str(seq)), "actor": s(actor), "body": s(f"event {seq} of {stream}"), **extra}


PLAIN, SERIALIZED = True, False
# A transaction with a put, an update and a condition check, sent twice under one token.
TRANSACTION_T1 = {
    "ClientRequestToken": "t1",
    "TransactItems": [
        {"Put": {"TableName": EVENTS, "Item": event("alice", 1), "ConditionExpression": "attribute_not_exists(#s)",
                 "ExpressionAttributeNames": {"#s": "stream"}}},
        {"Update": {"TableName": CONSENTS, "Key": {"user_id": s("alice")}, "UpdateExpression": "SET #h = :h",
                    "ExpressionAttributeNames": {"#h": "head"}, "ExpressionAttributeValues": {":h": n("1")}}},
        {"ConditionCheck": {"TableName": CONSENTS, "Key": {"user_id": s("carol")}, "ConditionExpression": "attribute_exists(#u)",
                            "ExpressionAttributeNames": {"#u": "user_id"}}},
    ],
}
CASES = [
    ("PutItem", {"TableName": CONSENTS, "Item": RICH}, PLAIN),
    ("PutItem", {"TableName": CONSENTS, "Item": {"user_id": s("bob"), "scope": s("read")}}, PLAIN),
    ("PutItem", {"TableName": CONSENTS, "Item": {"user_id": s("bob"), "scope": s("write")}, "ReturnValues": "ALL_OLD"}, PLAIN),
    (
        "PutItem",
        {
            "TableName": CONSENTS,
            "Item": {"user_id": s("bob")},
            "ConditionExpression": "attribute_not_exists(#u)",
            "ExpressionAttributeNames": {"#u": "user_id"},
        },
        SERIALIZED,
    ),
    # Capacity asked for: moto's TOTAL is its unasked form, the same bytes; INDEXES is not.
    ("PutItem", {"TableName": CONSENTS, "Item": {"user_id": s("carol")}, "ReturnConsumedCapacity": "TOTAL"}, PLAIN),
    ("PutItem", {"TableName": EVENTS, "Item": event("dave", 1), "ReturnConsumedCapacity": "INDEXES"}, SERIALIZED),
    ("PutItem", {"TableName": "NoSuchTable", "Item": {"user_id": s("x")}}, SERIALIZED),
    ("GetItem", {"TableName": CONSENTS, "Key": {"user_id": s("alice")}, "ConsistentRead": True}, PLAIN),
    ("GetItem", {"TableName": CONSENTS, "Key": {"user_id": s("nobody")}, "ConsistentRead": True}, PLAIN),
    (
        "GetItem",
        {"TableName": CONSENTS, "Key": {"user_id": s("alice")}, "ProjectionExpression": "#m, #l, #t",
         "ExpressionAttributeNames": {"#m": "map", "#l": "list", "#t": "text"}},
        PLAIN,
    ),
    ("GetItem", {"TableName": CONSENTS, "Key": {"user_id": s("alice")}, "ReturnConsumedCapacity": "TOTAL"}, PLAIN),
    ("GetItem", {"TableName": CONSENTS, "Key": {"user_id": s("alice")}, "ReturnConsumedCapacity": "INDEXES"}, SERIALIZED),
    ("GetItem", {"TableName": CONSENTS, "Key": {"nope": s("alice")}}, SERIALIZED),
    (
        "UpdateItem",
        {"TableName": CONSENTS, "Key": {"user_id": s("bob")}, "UpdateExpression": "SET #s = :s ADD #n :one",
         "ExpressionAttributeNames": {"#s": "scope", "#n": "uses"}, "ExpressionAttributeValues": {":s": s("read"), ":one": n("1")}},
        PLAIN,
    ),
    (
        "UpdateItem",
        {"TableName": CONSENTS, "Key": {"user_id": s("bob")}, "UpdateExpression": "ADD #n :one",
         "ExpressionAttributeNames": {"#n": "uses"}, "ExpressionAttributeValues": {":one": n("1")}, "ReturnValues": "UPDATED_NEW"},
        PLAIN,
    ),
    (
        "UpdateItem",
        {"TableName": CONSENTS, "Key": {"user_id": s("bob")}, "UpdateExpression": "REMOVE #s",
         "ExpressionAttributeNames": {"#s": "scope"}, "ReturnValues": "ALL_OLD"},
        PLAIN,
    ),
    (
        "UpdateItem",
        {"TableName": CONSENTS, "Key": {"user_id": s("bob")}, "UpdateExpression": "SET #s = :s",
         "ConditionExpression": "#n > :many", "ExpressionAttributeNames": {"#s": "scope", "#n": "uses"},
         "ExpressionAttributeValues": {":s": s("write"), ":many": n("5")}, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"},
        SERIALIZED,
    ),
    # The same expressions with another value: another condition, which holds.
    (
        "UpdateItem",
        {"TableName": CONSENTS, "Key": {"user_id": s("bob")}, "UpdateExpression": "SET #s = :s",
         "ConditionExpression": "#n > :many", "ExpressionAttributeNames": {"#s": "scope", "#n": "uses"},
         "ExpressionAttributeValues": {":s": s("write"), ":many": n("1")}, "ReturnValues": "ALL_NEW"},
        PLAIN,
    ),
    # The same again, with a name it does not use: refused, as moto refuses it.
    (
        "UpdateItem",
        {"TableName": CONSENTS, "Key": {"user_id": s("bob")}, "UpdateExpression": "SET #s = :s",
         "ConditionExpression": "#n > :many", "ExpressionAttributeNames": {"#s": "scope", "#n": "uses", "#x": "x"},
         "ExpressionAttributeValues": {":s": s("write"), ":many": n("1")}},
        SERIALIZED,
    ),
    ("DeleteItem", {"TableName": CONSENTS, "Key": {"user_id": s("bob")}, "ReturnValues": "ALL_OLD"}, PLAIN),
    ("DeleteItem", {"TableName": CONSENTS, "Key": {"user_id": s("bob")}}, PLAIN),
    (
        "TransactWriteItems",
        TRANSACTION_T1,
        PLAIN,
    ),
    # The same token again: the answer it gave, from the token cache (no second run).
    (
        "TransactWriteItems",
        TRANSACTION_T1,
        None,  # neither path runs: the cached answer
    ),
    # The sequencer's largest: 99 appends in one transaction.
    (
        "TransactWriteItems",
        {"ClientRequestToken": "t2", "TransactItems": [
            {"Put": {"TableName": EVENTS, "Item": event("bulk", i), "ConditionExpression": "attribute_not_exists(#s)",
                     "ExpressionAttributeNames": {"#s": "stream"}}} for i in range(99)]},
        PLAIN,
    ),
    (
        "TransactWriteItems",
        {"TransactItems": [
            {"Put": {"TableName": EVENTS, "Item": event("alice", 2)}},
            {"Put": {"TableName": EVENTS, "Item": event("alice", 1), "ConditionExpression": "attribute_not_exists(#s)",
                     "ExpressionAttributeNames": {"#s": "stream"}, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
        ]},
        SERIALIZED,
    ),
    (
        "TransactWriteItems",
        {"TransactItems": [{"Put": {"TableName": EVENTS, "Item": event("alice", 3)}}], "ReturnConsumedCapacity": "TOTAL"},
        PLAIN,  # moto answers capacity asked of a transaction with its empty list
    ),
    (
        "Query",
        {"TableName": EVENTS, "KeyConditionExpression": "#s = :s", "ExpressionAttributeNames": {"#s": "stream"},
         "ExpressionAttributeValues": {":s": s("bulk")}, "ConsistentRead": True, "Limit": 10, "ScanIndexForward": False},
        PLAIN,
    ),
    (
        "Query",
        {"TableName": EVENTS, "KeyConditionExpression": "#s = :s AND #q > :q", "FilterExpression": "#b <> :b",
         "ExpressionAttributeNames": {"#s": "stream", "#q": "seq", "#b": "body"},
         "ExpressionAttributeValues": {":s": s("bulk"), ":q": n("90"), ":b": s("event 95 of bulk")}},
        PLAIN,
    ),
    (
        "Query",
        {"TableName": EVENTS, "IndexName": "by-actor", "KeyConditionExpression": "#a = :a",
         "ExpressionAttributeNames": {"#a": "actor"}, "ExpressionAttributeValues": {":a": s("agent-7")}, "Limit": 3},
        PLAIN,
    ),
    (
        "Query",
        {"TableName": EVENTS, "KeyConditionExpression": "#s = :s", "ExpressionAttributeNames": {"#s": "stream"},
         "ExpressionAttributeValues": {":s": s("alice")}, "ReturnConsumedCapacity": "TOTAL"},
        PLAIN,
    ),
    (
        "Query",
        {"TableName": EVENTS, "KeyConditionExpression": "#s = :s", "ExpressionAttributeNames": {"#s": "stream"},
         "ExpressionAttributeValues": {":s": s("alice")}, "ReturnConsumedCapacity": "INDEXES"},
        SERIALIZED,
    ),
    ("Query", {"TableName": EVENTS, "KeyConditionExpression": "#s = :s"}, SERIALIZED),
]


def main():
    for op, body in SETUP:
        for region in (FAST, GENERIC):
            status, _, answer, _ = call(region, op, body)
            assert status == 200, (op, region, answer)
    failures = 0
    for i, (op, body, plain) in enumerate(CASES):
        fast = call(FAST, op, body)
        generic = call(GENERIC, op, body)
        problems = []
        if fast[:3] != generic[:3]:
            problems.append(f"answers differ:\n  shortcut: {fast[:3]}\n  moto's:   {generic[:3]}")
        if fast[3]["flask"]:
            problems.append("went through Flask")
        if plain is not None and fast[3]["plain"] != plain:
            problems.append("answered plain" if not plain else "went through moto's serializer")
        if generic[3]["plain"] or not generic[3]["flask"]:
            problems.append("moto's own path took a shortcut")
        print(f"{i:2} {op:18} {fast[0]} {len(fast[2]):6} bytes  {'; '.join(problems) or 'same'}")
        failures += bool(problems)
    if failures:
        sys.exit(f"{failures} of {len(CASES)} answers differ from moto's own")


if __name__ == "__main__":
    main()
