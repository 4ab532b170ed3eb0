"""Start moto's server for the AWS adapter tests, with DynamoDB transactions as DynamoDB runs them.

Two gaps of moto's, closed here so the tests test our code rather than the gaps:
- moto's threaded server runs DynamoDB calls without isolation from each other. A
  TransactWriteItems evaluates its conditions and applies its writes with other request
  threads running, so two racing transactions can both pass a condition that real DynamoDB
  (which serialises transactions) lets only one pass; and it deep-copies every table before
  it starts and restores that copy when it fails, so a failing transaction silently undoes
  whatever another thread committed meanwhile (a PutItem, another transaction). Every
  DynamoDB call therefore runs under one lock: moto's tables only ever see one call at a time,
  each atomic, as DynamoDB's own items do. (Latency, conflicts and throttling under
  concurrency are not moto's to model: it answers in microseconds, one call at a time.)
- moto ignores `ClientRequestToken`, which DynamoDB honours for 10 minutes: a repeated
  transaction with the same token succeeds without running again. The AWS SDK fills the token
  in and re-sends it when it retries after a lost answer (the fault-injection tests drop
  answers on purpose), so without this a committed write would be retried as a new one.

- moto's TransactWriteItems deep-copies every table it names before it runs, to restore on
  failure: each transaction costs time in proportion to the tables' size, so a run that
  writes thousands of events slows down as it goes, and a load bench measures moto's copying.
  Here the copy is of the items the transaction names (and the length of each table's stream,
  whose records a failed transaction must not leave behind), restored the same way; with one
  call at a time, nothing else can see the difference.
- moto answers a Query through its generic, model-driven serializer, which costs milliseconds
  per returned item in Python (most of a 500-item Query's second): an export of tens of
  thousands of events then measured the serializer. A Query's plain answer (items, counts,
  the last key) is written as JSON directly instead, the same bytes in the DynamoDB JSON
  wire format; any other answer (consumed capacity asked for, an error) goes the usual way.
  And every Query compares the partition key of each item of the table to the one asked for,
  through a Decimal-casting equality: two strings are compared as strings here.
- moto refuses transactions of more than 25 actions, DynamoDB's limit until 2022; DynamoDB
  takes 100 now (the test proxy enforces that limit), so moto is told the same.

Everything else is moto's own `moto_server` entry point, unchanged.

usage: moto_server.py -H 127.0.0.1 -p PORT
"""
import base64
import copy
import hashlib
import json
import threading
import time
import types

import moto.dynamodb.models
import moto.dynamodb.responses
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.core.responses import ActionResult
from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_lock = threading.RLock()
_transact = DynamoDBBackend.transact_write_items
_handle = DynamoHandler.transact_write_items
# token -> (digest of the request's items, when it succeeded, the answer it gave)
_done = {}
_TOKEN_SECONDS = 600


_call_action = DynamoHandler.call_action


# What moto's transaction sees as `copy`: a "deep copy" of a table that is the table itself,
# so its restore on failure changes nothing; `_serialised` restores the items instead.
_no_table_copy = types.SimpleNamespace(deepcopy=lambda x: x if isinstance(x, Table) else copy.deepcopy(x))


def _touched(self, transact_items):
    """(table, hash, range, the item as it is, or None) for each item the transaction names,
    and each table's stream length."""
    items, streams = [], {}
    for action in transact_items:
        for kind, op in action.items():
            try:
                table = self.get_table(op["TableName"])
                attrs = op["Item"] if kind == "Put" else op["Key"]
                hash_value = DynamoType(attrs[table.hash_key_attr])
                range_value = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
            except Exception:
                continue  # moto refuses it itself
            if range_value is not None:
                current = table.items.get(hash_value, {}).get(range_value)
            else:
                current = table.items.get(hash_value)
            items.append((table, hash_value, range_value, copy.deepcopy(current)))
            if table.stream_shard is not None:
                streams[id(table)] = (table, len(table.stream_shard.items))
    return items, streams


def _restore(items, streams):
    for table, hash_value, range_value, before in reversed(items):
        if range_value is not None:
            bucket = table.items.get(hash_value)
            if before is None:
                if bucket is not None:
                    bucket.pop(range_value, None)
                    if not bucket:
                        del table.items[hash_value]
            else:
                table.items[hash_value][range_value] = before
        elif before is None:
            table.items.pop(hash_value, None)
        else:
            table.items[hash_value] = before
    for table, length in streams.values():
        del table.stream_shard.items[length:]


def _serialised(self, transact_items, *args, **kwargs):
    with _lock:
        items, streams = _touched(self, transact_items)
        moto.dynamodb.models.copy = _no_table_copy
        try:
            return _transact(self, transact_items, *args, **kwargs)
        except Exception:
            _restore(items, streams)
            raise
        finally:
            moto.dynamodb.models.copy = copy


def _one_call_at_a_time(self, *args, **kwargs):
    with _lock:
        return _call_action(self, *args, **kwargs)


def _idempotent(self):
    token = self.body.get("ClientRequestToken")
    if not token:
        return _handle(self)
    digest = hashlib.sha256(json.dumps(self.body.get("TransactItems"), sort_keys=True).encode()).hexdigest()
    with _lock:
        now = time.monotonic()
        for old in [t for t, (_, at, _) in _done.items() if now - at > _TOKEN_SECONDS]:
            del _done[old]
        seen = _done.get(token)
        if seen and seen[0] == digest:
            return seen[2]
        answer = _handle(self)
        _done[token] = (digest, now, answer)
        return answer


_query = DynamoHandler.query


class _WireJson(json.JSONEncoder):
    """moto's attribute values in DynamoDB's JSON wire format ({"S": ...}, nested ones too)."""

    def default(self, o):
        if isinstance(o, DynamoType):
            return o.to_json()
        if isinstance(o, bytes):
            return base64.b64encode(o).decode()
        return super().default(o)


def _plain_query(self):
    answer = _query(self)
    result = answer.result if isinstance(answer, ActionResult) else None
    if not isinstance(result, dict) or not set(result) <= {"Count", "ScannedCount", "Items", "LastEvaluatedKey"}:
        return answer
    try:
        return json.dumps(result, cls=_WireJson)
    except TypeError:
        return answer  # a value this encoder does not know: moto's serializer knows it


_equal = DynamoType.__eq__


def _string_equal(self, other):
    if isinstance(other, DynamoType) and self.type == "S" and other.type == "S":
        return self.value == other.value
    return _equal(self, other)


moto.dynamodb.responses.TRANSACTION_MAX_ITEMS = 100
DynamoType.__eq__ = _string_equal
DynamoHandler.query = _plain_query
DynamoDBBackend.transact_write_items = _serialised
DynamoHandler.transact_write_items = _idempotent
DynamoHandler.call_action = _one_call_at_a_time

if __name__ == "__main__":
    main()
