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

- moto refuses transactions of more than 25 actions, DynamoDB's limit until 2022; DynamoDB
  takes 100 now (the test proxy enforces that limit), so moto is told the same.

Everything else is moto's own `moto_server` entry point, unchanged.

usage: moto_server.py -H 127.0.0.1 -p PORT
"""
import hashlib
import json
import threading
import time

import moto.dynamodb.responses
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_lock = threading.RLock()
_transact = DynamoDBBackend.transact_write_items
_handle = DynamoHandler.transact_write_items
# token -> (digest of the request's items, when it succeeded, the answer it gave)
_done = {}
_TOKEN_SECONDS = 600


_call_action = DynamoHandler.call_action


def _serialised(self, *args, **kwargs):
    with _lock:
        return _transact(self, *args, **kwargs)


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


moto.dynamodb.responses.TRANSACTION_MAX_ITEMS = 100
DynamoDBBackend.transact_write_items = _serialised
DynamoHandler.transact_write_items = _idempotent
DynamoHandler.call_action = _one_call_at_a_time

if __name__ == "__main__":
    main()
