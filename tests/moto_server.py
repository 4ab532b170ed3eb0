"""Start moto's server for the AWS adapter tests, with DynamoDB transactions isolated.

moto's threaded server evaluates a TransactWriteItems' conditions and applies its writes
without isolation from other request threads, so two racing transactions can both pass a
condition that real DynamoDB (which serialises transactions) lets only one pass. The
concurrency tests must test our code, not that gap: this wraps the transaction in a lock and
otherwise runs moto's own `moto_server` entry point unchanged.

usage: moto_server.py -H 127.0.0.1 -p PORT
"""
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_lock = threading.Lock()
_transact = DynamoDBBackend.transact_write_items


def _serialised(self, *args, **kwargs):
    with _lock:
        return _transact(self, *args, **kwargs)


DynamoDBBackend.transact_write_items = _serialised

if __name__ == "__main__":
    main()
