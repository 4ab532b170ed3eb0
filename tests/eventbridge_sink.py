"""What the notification and stream-function tests need from moto, through boto3 (installed with moto):

  setup ENDPOINT BUS          create the bus, an SQS queue and a rule sending every
                              support-access event on the bus to it; prints the queue URL
  records ENDPOINT TABLE      every record of TABLE's DynamoDB stream, as the Lambda event a
                              stream-triggered function receives ({"Records": [...]})
  receive ENDPOINT QUEUE N    up to N messages from the queue (waiting at most 20 s in all);
                              prints their bodies as a JSON array
"""
import base64
import json
import sys
import time

import boto3

_, command, endpoint, *args = sys.argv
session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")


def client(name):
    return session.client(name, endpoint_url=endpoint)


def as_json(value):
    """What `json` cannot write itself: a binary attribute (boto3's bytes) as the base64 text
    a Lambda event carries it in; anything else as its text."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    return str(value)


if command == "setup":
    (bus,) = args
    events, sqs = client("events"), client("sqs")
    events.create_event_bus(Name=bus)
    queue = sqs.create_queue(QueueName=f"{bus}-sink")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all-support-access", EventBusName=bus, EventPattern=json.dumps({"source": ["support-access"]}))
    events.put_targets(Rule="all-support-access", EventBusName=bus, Targets=[{"Id": "sink", "Arn": arn}])
    print(queue)
elif command == "records":
    (table,) = args
    stream_arn = client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    streams = client("dynamodbstreams")
    records = []
    for shard in streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for _ in range(1000):
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            for r in page["Records"]:
                r["eventSourceARN"] = stream_arn
                created = r["dynamodb"].get("ApproximateCreationDateTime")
                if created is not None and not isinstance(created, (int, float)):
                    r["dynamodb"]["ApproximateCreationDateTime"] = created.timestamp()
                records.append(r)
            iterator = page.get("NextShardIterator")
            if not page["Records"] or not iterator:
                break
    print(json.dumps({"Records": records}, default=as_json))
elif command == "receive":
    queue, wanted = args[0], int(args[1])
    sqs = client("sqs")
    bodies, deadline = [], time.time() + 20
    while len(bodies) < wanted and time.time() < deadline:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        for m in got:
            bodies.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    print(json.dumps(bodies))
else:
    sys.exit(f"unknown command {command}")
