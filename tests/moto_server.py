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
- moto answers through its generic, model-driven serializer, which costs milliseconds per
  returned item in Python (most of a 500-item Query's second): an export of tens of
  thousands of events then measured the serializer. The plain answer of a Query, GetItem,
  PutItem, UpdateItem, DeleteItem or TransactWriteItems (items, counts, the last key, the
  attributes ReturnValues asked for, and the consumed capacity in the one form moto writes
  unasked) is written as JSON directly instead: the same bytes, in the API's order of
  members, with the same headers. Any other answer (capacity by index, an error) goes the
  usual way. tests/moto_server_check.py (run by the e2e test
  `aws_model::the_test_servers_shortcuts_answer_what_moto_itself_answers`) sends each kind
  of call both ways and compares the bytes. And every Query compares the partition key of
  each item of the table to the one asked for, through a Decimal-casting equality: two
  strings are compared as strings here.
- moto's server spends more per call finding the service and running Flask than DynamoDB's
  handler spends on a GetItem (with the serializer, 0.9 of its 1.4 ms: BENCHMARKS.md, "The
  test server's cost per call"): it lists its own package directory on every request,
  reflects on the handler's methods on every call, and routes each request through a Flask
  app. Here the list and the methods are found once, and a DynamoDB call (`X-Amz-Target:
  DynamoDB_20120810.*`, a POST without an `Origin`) goes straight to DynamoDB's handler, as
  moto's Flask view calls it, with the one header Flask's CORS layer adds. moto parses each
  UpdateExpression, and each condition or filter expression, twice per call (the handler's
  checks, the model's work) and only reads the tree it makes (its update validator works on
  a deep copy): here an update expression is parsed once, and a condition once per
  expression, names and values (the last 4,096 kept).
- moto refuses transactions of more than 25 actions, DynamoDB's limit until 2022; DynamoDB
  takes 100 now (the test proxy enforces that limit), so moto is told the same.
- werkzeug listens with a backlog of 128, which a burst of new connections overflows: the
  kernel drops their handshakes and each waits 1-3 s for a retransmission, a stall DynamoDB
  never shows. Here the backlog is 4,096, as the test proxy's (`AwsProxy::listener`).

Everything else is moto's own `moto_server` entry point, unchanged.

usage: moto_server.py -H 127.0.0.1 -p PORT
With MOTO_SERVER_PROFILE=FILE it writes, when stopped (SIGTERM), each operation's calls and
their thread CPU and wall time (mean, median) to FILE; with MOTO_SERVER_CPROFILE=1 as well, a
cProfile of every request to FILE.pstats (`python -m pstats`). With MOTO_SERVER_RECORD=FILE
it appends every DynamoDB call it runs, in the order it runs them, to FILE (JSON lines), for
tests/moto_replay.py to send again.
"""
import base64
import collections
import copy
import functools
import hashlib
import json
import threading
import time
import types

import flask
import werkzeug.serving
from botocore.exceptions import ClientError
import moto.backends
import moto.core.responses
import moto.core.utils
import moto.dynamodb.models
import moto.dynamodb.responses
from moto.dynamodb.comparisons import ConditionExpressionParser
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.dynamodb.parsing.expressions import UpdateExpressionParser
from moto.core.responses import ActionResult, get_service_model
from moto.dynamodb.responses import DynamoHandler
from moto.moto_server.werkzeug_app import BackendRequest, DomainDispatcherApplication
from moto.server import main

_lock = threading.RLock()
_transact = DynamoDBBackend.transact_write_items
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
        return _handle_transaction(self)
    digest = hashlib.sha256(json.dumps(self.body.get("TransactItems"), sort_keys=True).encode()).hexdigest()
    with _lock:
        now = time.monotonic()
        for old in [t for t, (_, at, _) in _done.items() if now - at > _TOKEN_SECONDS]:
            del _done[old]
        seen = _done.get(token)
        if seen and seen[0] == digest:
            return seen[2]
        answer = _handle_transaction(self)
        _done[token] = (digest, now, answer)
        return answer


class _WireJson(json.JSONEncoder):
    """moto's attribute values in DynamoDB's JSON wire format ({"S": ...}, nested ones too)."""

    def default(self, o):
        if isinstance(o, DynamoType):
            return o.to_json()
        if isinstance(o, bytes):
            return base64.b64encode(o).decode()
        return super().default(o)


# The answers written as JSON directly, by operation: the members of the API's answer a plain
# one may have. moto's serializer leaves out what is not in the API's answer (DeleteItem's
# `ConsumedCapacityUnits`), and so does the plain answer; it adds `ConsumedCapacity` and
# `ItemCollectionMetrics` unasked, in the forms `_unasked` takes. Any other member or form
# (ConsumedCapacity asked for) sends the answer through moto's serializer.
_PLAIN = {
    "query": {"Items", "Count", "ScannedCount", "LastEvaluatedKey"},
    "get_item": {"Item"},
    "put_item": {"Attributes"},
    "update_item": {"Attributes"},
    "delete_item": {"Attributes"},
    "transact_write_items": set(),
}
_JSON = {"Content-Type": "application/x-amz-json-1.0"}


def _unasked(member, value):
    if member == "ItemCollectionMetrics":
        return value == {}
    if member == "ConsumedCapacity":
        return value == [] or (
            isinstance(value, dict)
            and list(value) == ["TableName", "CapacityUnits"]
            and isinstance(value["TableName"], str)
            and type(value["CapacityUnits"]) is float
        )
    return False


# False only in tests/moto_server_check.py: moto's own path (Flask, its serializer, a parse of
# every expression every time), to compare with.
shortcuts = True


def _plain(name, members):
    handle = getattr(DynamoHandler, name)
    operation = "".join(word.title() for word in name.split("_"))
    # moto's serializer writes the members in the API model's order, whatever the result's
    order = list(get_service_model("dynamodb").operation_model(operation).output_shape.members)

    def plain(self):
        answer = handle(self)
        result = answer.result if isinstance(answer, ActionResult) else None
        if not shortcuts or not isinstance(result, dict):
            return answer
        if any(k in order and k not in members and not _unasked(k, v) for k, v in result.items()):
            return answer
        try:
            return json.dumps({k: result[k] for k in order if k in result}, cls=_WireJson), dict(_JSON)
        except TypeError:
            return answer  # a value this encoder does not know: moto's serializer knows it

    return plain


_equal = DynamoType.__eq__


def _string_equal(self, other):
    if isinstance(other, DynamoType) and self.type == "S" and other.type == "S":
        return self.value == other.value
    return _equal(self, other)


_parse_condition = ConditionExpressionParser.parse
# (expression, its names, its values) -> (the tree, the names and values it used), latest last
_conditions = collections.OrderedDict()
_CONDITIONS_KEPT = 4096


def _parse_condition_once(self):
    """moto's parse of a condition or filter expression, from a cache of the trees it made:
    moto parses each twice per call (the handler's checks, the model's evaluation), and the
    same few expressions with the same values come again and again. The tree is only read
    (each node's `expr(item)`), so one serves every call; the names and values it used are
    what the handler checks against the request's."""
    if not shortcuts:
        return _parse_condition(self)
    try:
        key = (
            self.condition_expression,
            json.dumps(self.expression_attribute_names, sort_keys=True),
            json.dumps(self.expression_attribute_values, sort_keys=True),
        )
    except TypeError:
        return _parse_condition(self)  # a value JSON cannot hold (bytes): parse it each time
    with _lock:
        seen = _conditions.get(key)
        if seen is not None:
            _conditions.move_to_end(key)
    if seen is None:
        tree = _parse_condition(self)
        seen = (tree, list(self.expr_attr_names_found), list(self.expr_attr_values_found))
        with _lock:
            _conditions[key] = seen
            if len(_conditions) > _CONDITIONS_KEPT:
                _conditions.popitem(last=False)
        return tree
    tree, names, values = seen
    self.expr_attr_names_found.extend(names)
    self.expr_attr_values_found.extend(values)
    return tree


_parse_update = UpdateExpressionParser.make.__func__
_parse_update_once = functools.lru_cache(maxsize=4096)(_parse_update)


def _parse_update_cached(cls, expression):
    return (_parse_update_once if shortcuts else _parse_update)(cls, expression)


_route = DomainDispatcherApplication.__call__


def _straight_to_dynamodb(self, environ, start_response):
    """A DynamoDB call to DynamoDB's handler, as moto's Flask app for DynamoDB would (its view,
    then the header flask-cors adds), without finding the app or running Flask per request."""
    if not (
        shortcuts
        and environ.get("REQUEST_METHOD") == "POST"
        and "HTTP_ORIGIN" not in environ
        and environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_20120810.")
    ):
        return _route(self, environ, start_response)
    request = BackendRequest(environ)
    try:
        status, headers, body = DynamoHandler.dispatch(request, request.raw_url, dict(request.headers))
    except ClientError as exc:
        status, headers, body = 400, {}, exc.response["Error"]["Message"]
    response = flask.Response(response=body, status=status, headers=headers)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response(environ, start_response)


def _recorded(path):
    """Every DynamoDB call, as the order the lock gave them, appended to `path`."""
    out = open(path, "a")
    inner = _call_action

    def recording(self, *args, **kwargs):
        body = self.body if isinstance(self.body, dict) else json.loads(self.body or "{}")
        out.write(json.dumps({"target": self.headers.get("X-Amz-Target"), "body": body}) + "\n")
        out.flush()
        return inner(self, *args, **kwargs)

    globals()["_call_action"] = recording


def _profiled(path, with_cprofile):
    """Time every request (wall and thread CPU, by operation) and, with cProfile, profile it;
    written to `path` (and `path`.pstats) when the server exits."""
    import atexit
    import cProfile
    import pstats
    from werkzeug.serving import WSGIRequestHandler

    run_wsgi = WSGIRequestHandler.run_wsgi
    times = {}
    merged = []
    merge_lock = threading.Lock()

    def timed(handler):
        target = handler.headers.get("X-Amz-Target", "")
        op = target.rsplit(".", 1)[-1] or handler.command
        profile = cProfile.Profile() if with_cprofile else None
        wall, cpu = time.perf_counter(), time.thread_time()
        if profile:
            profile.enable()
        try:
            return run_wsgi(handler)
        finally:
            if profile:
                profile.disable()
            spent = (time.perf_counter() - wall, time.thread_time() - cpu)
            with merge_lock:
                times.setdefault(op, []).append(spent)
                if profile:
                    if merged:
                        merged[0].add(profile)
                    else:
                        merged.append(pstats.Stats(profile))

    def write():
        with merge_lock, open(path, "w") as out:
            for op, spent in sorted(times.items(), key=lambda kv: -sum(c for _, c in kv[1])):
                walls = sorted(w for w, _ in spent)
                cpus = sorted(c for _, c in spent)
                n = len(spent)
                out.write(
                    f"{op:28} {n:6} calls  CPU ms mean {1000 * sum(cpus) / n:7.3f} p50 {1000 * cpus[n // 2]:7.3f}"
                    f"  wall ms mean {1000 * sum(walls) / n:7.3f} p50 {1000 * walls[n // 2]:7.3f}\n"
                )
            if merged:
                merged[0].dump_stats(path + ".pstats")

    WSGIRequestHandler.run_wsgi = timed
    atexit.register(write)


moto.dynamodb.responses.TRANSACTION_MAX_ITEMS = 100
DynamoType.__eq__ = _string_equal
for _name, _members in _PLAIN.items():
    setattr(DynamoHandler, _name, _plain(_name, _members))
_handle_transaction = DynamoHandler.transact_write_items
DynamoDBBackend.transact_write_items = _serialised
DynamoHandler.transact_write_items = _idempotent
_modules = tuple(moto.backends.list_of_moto_modules())
moto.backends.list_of_moto_modules = lambda: _modules
_method_names = moto.core.utils.method_names_from_class
moto.core.responses.method_names_from_class = functools.lru_cache(maxsize=None)(_method_names)
ConditionExpressionParser.parse = _parse_condition_once
UpdateExpressionParser.make = classmethod(_parse_update_cached)
DomainDispatcherApplication.__call__ = _straight_to_dynamodb
DynamoHandler.call_action = _one_call_at_a_time
# The listen backlog (see the module's docstring; the kernel caps it at net.core.somaxconn).
werkzeug.serving.LISTEN_QUEUE = 4096
werkzeug.serving.BaseWSGIServer.request_queue_size = 4096

if __name__ == "__main__":
    import os

    if os.environ.get("MOTO_SERVER_RECORD"):
        _recorded(os.environ["MOTO_SERVER_RECORD"])
    if os.environ.get("MOTO_SERVER_PROFILE"):
        _profiled(os.environ["MOTO_SERVER_PROFILE"], bool(os.environ.get("MOTO_SERVER_CPROFILE")))
    main()
