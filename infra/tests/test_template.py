"""The SAM template, proven least-privilege after SAM's own transform.

The template is transformed exactly as `sam deploy` would (samtranslator, from aws-sam-cli),
then every IAM role is resolved: which function it belongs to, which managed policies it
carries, and which (action, resource) pairs its statements grant, each resource resolved to
the template resource it names. A future edit that widens any role fails here.
"""
import copy
import json
import os
from pathlib import Path

import pytest
from cfnlint.decode import decode_str
from samtranslator.translator.transform import transform

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"
# The tables' shapes, the one list of them: `create_tables` (adapters/aws/src/provision.rs)
# builds the test tables from it, and the template must declare exactly these.
TABLE_SHAPES = json.loads((TEMPLATE.parent / "tables.json").read_text())
BASIC = "AWSLambdaBasicExecutionRole"

HEADS = {("dynamodb:GetItem", "ChainHeadsTable"), ("dynamodb:PutItem", "ChainHeadsTable")}
AUDIT_APPEND = {("dynamodb:PutItem", "AuditTable")}
# The emergency stop and agent revocations, read on every grant, mint, approval and use.
CONTROLS_READ = {("dynamodb:GetItem", "ControlsTable")}
# The key that seals cursors, read by the functions that page the audit log or access requests.
CURSOR_SECRET = {("secretsmanager:GetSecretValue", "CursorSecret")}
# The token keys a verifier reads: the signing key, and the keys published beside it during a
# rotation (PublishedKeyArns; that statement exists only when the parameter is set).
TOKEN_PUBLIC_KEYS = {("kms:GetPublicKey", "SigningKey"), ("kms:GetPublicKey", "PublishedKeys")}
# A scheduled run that failed three times goes, with its event, to the failures queue.
SCHEDULE_FAILURES = {("sqs:SendMessage", "FailuresQueue")}
# A stream batch that failed for good goes whole to the failed-batches bucket.
FAILED_BATCHES = {("s3:PutObject", "FailedBatchesBucket/*"), ("s3:ListBucket", "FailedBatchesBucket")}

# Every permission of every function: exactly these, nothing more.
EXPECTED = {
    "GrantConsentFunction": {("dynamodb:PutItem", "ConsentsTable")} | AUDIT_APPEND | HEADS | CONTROLS_READ,
    "GetConsentFunction": {("dynamodb:GetItem", "ConsentsTable")},
    "RevokeConsentFunction": {("dynamodb:GetItem", "ConsentsTable"), ("dynamodb:DeleteItem", "ConsentsTable")}
    | AUDIT_APPEND
    | HEADS,
    "MintTokenFunction": {("dynamodb:GetItem", "ConsentsTable"), ("dynamodb:ConditionCheckItem", "ConsentsTable")}
    | AUDIT_APPEND
    | HEADS
    | CONTROLS_READ
    | {("kms:Sign", "SigningKey")},
    # The events a sequencer run's index item lists are read by key (BatchGetItem).
    "QueryAuditFunction": {
        ("dynamodb:Query", "AuditTable"),
        ("dynamodb:Query", "AuditTable/index/*"),
        ("dynamodb:BatchGetItem", "AuditTable"),
    }
    | CURSOR_SECRET,
    "AccessLogFunction": {("dynamodb:Query", "AuditTable")} | CURSOR_SECRET,
    "ExportAuditFunction": {
        ("dynamodb:Query", "AuditTable"),
        # The streams a Scan page at a time; a checkpoint's leaves by their index.
        ("dynamodb:Scan", "ChainHeadsTable"),
        ("dynamodb:Query", "CheckpointsTable"),
        ("dynamodb:Query", "CheckpointsTable/index/leaves-by-checkpoint"),
        ("dynamodb:GetItem", "CheckpointsTable"),
        # The receipt that ends every export, with a key of its own (never the checkpoint key).
        ("kms:Sign", "ReceiptKey"),
    }
    | CURSOR_SECRET,
    "JwksFunction": TOKEN_PUBLIC_KEYS
    | {("kms:GetPublicKey", "CheckpointKey"), ("kms:GetPublicKey", "CheckpointPublishedKeys")}
    | {("kms:GetPublicKey", "ReceiptKey"), ("kms:GetPublicKey", "ReceiptPublishedKeys")},
    "CheckpointFunction": {
        # The moved heads by their sparse index, never a Scan; unmarked once sealed.
        ("dynamodb:Query", "ChainHeadsTable/index/moved"),
        ("dynamodb:BatchGetItem", "ChainHeadsTable"),
        ("dynamodb:UpdateItem", "ChainHeadsTable"),
        ("dynamodb:BatchGetItem", "CheckpointsTable"),
        ("dynamodb:Query", "CheckpointsTable"),
        ("dynamodb:GetItem", "CheckpointsTable"),
        ("dynamodb:PutItem", "CheckpointsTable"),
        ("dynamodb:ConditionCheckItem", "CheckpointsTable"),
        ("kms:Sign", "CheckpointKey"),
    }
    | SCHEDULE_FAILURES,
    "AuthorizerFunction": TOKEN_PUBLIC_KEYS
    | {
        ("dynamodb:GetItem", "ConsentsTable"),
        ("dynamodb:ConditionCheckItem", "ConsentsTable"),
    }
    | AUDIT_APPEND
    | HEADS
    | CONTROLS_READ,
    # Introspection reads; a reported use (POST /introspect/uses) is written as the
    # authorizer writes one, so the same permissions as the authorizer's, and no more.
    "IntrospectFunction": TOKEN_PUBLIC_KEYS
    | {("dynamodb:GetItem", "ConsentsTable"), ("dynamodb:ConditionCheckItem", "ConsentsTable")}
    | AUDIT_APPEND
    | HEADS
    | CONTROLS_READ,
    "AgentRequestsFunction": {
        ("dynamodb:PutItem", "AccessRequestsTable"),
        ("dynamodb:Query", "AccessRequestsTable/index/by-agent"),
    }
    | AUDIT_APPEND
    | HEADS
    | CURSOR_SECRET,
    "UserRequestsFunction": {
        ("dynamodb:GetItem", "AccessRequestsTable"),
        ("dynamodb:Query", "AccessRequestsTable"),
        ("dynamodb:PutItem", "AccessRequestsTable"),
        ("dynamodb:PutItem", "ConsentsTable"),
    }
    | AUDIT_APPEND
    | HEADS
    | CONTROLS_READ
    | CURSOR_SECRET,
    "RequestExpiryFunction": {
        ("dynamodb:Query", "AccessRequestsTable/index/pending-by-deadline"),
        ("dynamodb:PutItem", "AccessRequestsTable"),
    }
    | AUDIT_APPEND
    | HEADS
    | SCHEDULE_FAILURES,
    "OperatorFunction": {
        ("dynamodb:GetItem", "ControlsTable"),
        ("dynamodb:PutItem", "ControlsTable"),
        ("dynamodb:DeleteItem", "ControlsTable"),
        ("dynamodb:Query", "AuditTable/index/by-actor"),
        ("dynamodb:BatchGetItem", "AuditTable"),
    }
    | AUDIT_APPEND
    | HEADS,
    # Both streams (the intake's for uses announced before they are sequenced, #18, on either
    # path: its mapping is deployed either way), never either table itself.
    "NotifierFunction": {
        (a, f"{table}/stream")
        for a in ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"]
        for table in ["AuditTable", "AuditIntakeTable"]
    }
    | {("dynamodb:PutItem", "FirstUsesTable"), ("events:PutEvents", "NotificationBus")}
    | FAILED_BATCHES,
    "ExpiryRecorderFunction": {
        (a, "ConsentsTable/stream")
        for a in ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"]
    }
    | AUDIT_APPEND
    | HEADS
    | FAILED_BATCHES,
    # The sequenced path (#18): the intake's stream, its items read (never written: what is
    # appended is listed in the head; the list of stalled streams, in partitions no user's
    # stream can have, is put and deleted), conditional appends and the chain past the
    # head, the head read and moved forward.
    "SequencerFunction": {
        (a, "AuditIntakeTable/stream")
        for a in ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"]
    }
    | {("dynamodb:Query", "AuditIntakeTable")}
    | {("dynamodb:PutItem", "AuditIntakeTable"), ("dynamodb:DeleteItem", "AuditIntakeTable")}
    | AUDIT_APPEND
    | {("dynamodb:Query", "AuditTable")}
    | {("dynamodb:GetItem", "ChainHeadsTable"), ("dynamodb:UpdateItem", "ChainHeadsTable")}
    | FAILED_BATCHES,
}

# With SequencedAudit on (#18), the same functions on the other audit path: every writer puts
# its events into the intake (one PutItem, in its transaction or alone) and neither appends
# nor touches a chain head; the authorizer no longer checks the consent in a transaction (its
# consistent read decides); the expiry recorder keeps its marker in ChainHeads; a user's log
# (access-log, query-audit) reads the user's pending events and the head they start above.
INTAKE_PUT = {("dynamodb:PutItem", "AuditIntakeTable")}
PENDING_READ = {("dynamodb:Query", "AuditIntakeTable"), ("dynamodb:GetItem", "ChainHeadsTable")}


def on_the_sequenced_path(function: str, granted: set) -> set:
    if function == "SequencerFunction":
        return granted
    if AUDIT_APPEND <= granted:
        granted = (granted - AUDIT_APPEND - HEADS) | INTAKE_PUT
    if function == "AuthorizerFunction":
        granted = granted - {("dynamodb:ConditionCheckItem", "ConsentsTable")}
    if function == "ExpiryRecorderFunction":
        granted = granted | {("dynamodb:PutItem", "ChainHeadsTable")}
    if function in {"AccessLogFunction", "QueryAuditFunction"}:
        granted = granted | PENDING_READ
    return granted


EXPECTED_SEQUENCED = {f: on_the_sequenced_path(f, g) for f, g in EXPECTED.items()}
# Spelled out for the hot path: a use is a consent read and one put.
assert EXPECTED_SEQUENCED["AuthorizerFunction"] == TOKEN_PUBLIC_KEYS | CONTROLS_READ | INTAKE_PUT | {
    ("dynamodb:GetItem", "ConsentsTable")
}

WRITES = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}


def load(text: str) -> dict:
    template, matches = decode_str(text)
    assert not matches, matches
    return json.loads(json.dumps(template, default=str))


def transformed(template: dict, parameters: dict | None = None) -> dict:
    template = copy.deepcopy(template)
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://bucket/code.zip"  # sam deploy uploads it first

    class NoManagedPolicies:
        def load(self):
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return transform(template, parameters or {}, NoManagedPolicies())


def resource_name(ref) -> str:
    """The template resource a statement's Resource names; anything else is a failure."""
    if isinstance(ref, dict) and "Fn::If" in ref:
        # Both branches must name the same resource (the bus this stack made, or the one named).
        _, yes, no = ref["Fn::If"]
        names = {resource_name(yes), resource_name(no)}
        assert len(names) == 1, names
        return names.pop()
    if ref == {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${NotificationBusName}"}:
        return "NotificationBus"
    # Parameters that name keys: the key the stack signs with when set (rotation), and the keys
    # published beside it; and the cursor secret (its Ref is its ARN).
    if isinstance(ref, dict) and set(ref) == {"Ref"}:
        named = {
            "SigningKeyArn": "SigningKey",
            "CheckpointSigningKeyArn": "CheckpointKey",
            "ReceiptSigningKeyArn": "ReceiptKey",
            "PublishedKeyArns": "PublishedKeys",
            "CheckpointPublishedKeyArns": "CheckpointPublishedKeys",
            "ReceiptPublishedKeyArns": "ReceiptPublishedKeys",
            "CursorSecret": "CursorSecret",
        }
        if ref["Ref"] in named:
            return named[ref["Ref"]]
    if isinstance(ref, dict) and "Fn::GetAtt" in ref:
        name, attribute = ref["Fn::GetAtt"]
        return {"Arn": name, "StreamArn": f"{name}/stream"}[attribute]
    if isinstance(ref, dict) and "Fn::Sub" in ref and isinstance(ref["Fn::Sub"], str):
        sub = ref["Fn::Sub"]
        if sub.startswith("${") and ".Arn}" in sub:
            name, rest = sub[2:].split(".Arn}", 1)
            return name + rest
    raise AssertionError(f"resource {ref!r} is not a resource of this template")


def statements(policy: dict, sequenced: bool = False) -> list:
    """A policy's statements, a conditional one (Fn::If, e.g. the published keys) included;
    one on the audit path (SequencedAuditOn) as `sequenced` says."""
    out = []
    listed = policy["PolicyDocument"]["Statement"]
    for statement in listed if isinstance(listed, list) else [listed]:
        if set(statement) == {"Fn::If"}:
            condition, yes, no = statement["Fn::If"]
            branches = ((yes if sequenced else no),) if condition == "SequencedAuditOn" else (yes, no)
            out += [branch for branch in branches if branch != {"Ref": "AWS::NoValue"}]
        else:
            out.append(statement)
    return out


def grants(role: dict, sequenced: bool = False) -> set:
    out = set()
    for policy in role["Properties"].get("Policies", []):
        for statement in statements(policy, sequenced):
            assert statement["Effect"] == "Allow", statement
            assert "NotAction" not in statement and "NotResource" not in statement, statement
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for action in actions:
                assert "*" not in action, f"wildcard action {action}"
                for resource in resources:
                    assert resource != "*", f"{action} on every resource"
                    out.add((action, resource_name(resource)))
    return out


def roles_by_function(template: dict, parameters: dict | None = None) -> dict:
    resources = transformed(template, parameters)["Resources"]
    out = {}
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        role_ref = resource["Properties"]["Role"]
        role_name = role_ref["Fn::GetAtt"][0]
        out[name] = resources[role_name]
    return out


@pytest.fixture(scope="module")
def template() -> dict:
    return load(TEMPLATE.read_text())


def test_every_function_has_exactly_its_permissions(template):
    roles = roles_by_function(template)
    assert set(roles) == set(EXPECTED), "every function is accounted for"
    for function, role in roles.items():
        assert grants(role) == EXPECTED[function], function
        assert grants(role, sequenced=True) == EXPECTED_SEQUENCED[function], f"{function}, sequenced"


def test_the_audit_path_is_one_parameter_read_by_every_function(template):
    """SequencedAudit (true/false) sets SEQUENCED_AUDIT (1/0) for every function, which reads
    it once at its cold start; the roles follow the same condition (see the test above)."""
    param = template["Parameters"]["SequencedAudit"]
    # On by default: one put a use, no hot item (#18's targets are met on that path only).
    assert param["AllowedValues"] == ["true", "false"] and param["Default"] == "true"
    assert template["Conditions"]["SequencedAuditOn"] == {"Fn::Equals": [{"Ref": "SequencedAudit"}, "true"]}
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["SEQUENCED_AUDIT"] == {"Fn::If": ["SequencedAuditOn", "1", "0"]}
    assert env["AUDIT_INTAKE_TABLE"] == {"Ref": "AuditIntakeTable"}


def test_a_reported_use_is_written_with_exactly_the_authorizers_permissions(template):
    # POST /introspect/uses records a use as the authorizer does (app::report_use calls
    # app::authorize): the introspect function may do what the authorizer does, nothing more.
    roles = roles_by_function(template)
    assert grants(roles["IntrospectFunction"]) == grants(roles["AuthorizerFunction"])


def test_the_sequencer_writes_to_the_intake_only_in_the_stalled_list(template):
    """The sequencer may put and delete intake items only in the partitions of the list of
    stalled streams (`#stalled#<shard>`, a key no user's stream can have), never a user's
    pending event; the list's entries trigger no sequencer run (no decided_us)."""
    role = roles_by_function(template)["SequencerFunction"]
    writes = [
        s
        for p in role["Properties"]["Policies"]
        for s in statements(p)
        if {"dynamodb:PutItem", "dynamodb:DeleteItem"} & set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        and resource_name(s["Resource"]) == "AuditIntakeTable"
    ]
    assert len(writes) == 1, writes
    assert writes[0]["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["#stalled#*"]}}
    stream = template["Resources"]["SequencerFunction"]["Properties"]["Events"]["IntakeStream"]["Properties"]
    (pattern,) = [json.loads(f["Pattern"]) for f in stream["FilterCriteria"]["Filters"]]
    assert pattern["dynamodb"]["NewImage"]["decided_us"] == {"N": [{"exists": True}]}


def test_the_checkpoint_touches_only_the_marks_of_a_head(template):
    """The checkpoint may update a chain head only to remove its marks: the attributes it may
    name are the key, the seq its condition reads and the two marks; it never reads back."""
    role = roles_by_function(template)["CheckpointFunction"]
    updates = [
        s
        for p in role["Properties"]["Policies"]
        for s in statements(p)
        if "dynamodb:UpdateItem" in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]
    assert len(updates) == 1 and updates[0]["Action"] == ["dynamodb:UpdateItem"], updates
    assert updates[0]["Condition"] == {
        "ForAllValues:StringEquals": {"dynamodb:Attributes": ["stream", "seq", "moved_shard", "moved_at"]},
        "StringEqualsIfExists": {"dynamodb:ReturnValues": "NONE"},
    }


def test_the_chain_heads_index_of_moved_heads_is_sparse_and_keys_only(template):
    heads = template["Resources"]["ChainHeadsTable"]["Properties"]
    (index,) = heads["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "moved"
    assert index["KeySchema"] == [
        {"AttributeName": "moved_shard", "KeyType": "HASH"},
        {"AttributeName": "moved_at", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}


def test_the_checkpoints_index_of_leaves_is_keyed_by_attributes_every_leaf_already_has(template):
    """A full export reads a checkpoint's leaves with one query of this index; its keys are
    attributes every leaf was always written with, so an upgraded stack's leaves are
    backfilled into it by DynamoDB, and a checkpoint item (without them) is not in it."""
    checkpoints = template["Resources"]["CheckpointsTable"]["Properties"]
    (index,) = checkpoints["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "leaves-by-checkpoint"
    assert index["KeySchema"] == [
        {"AttributeName": "checkpoint", "KeyType": "HASH"},
        {"AttributeName": "leaf_index", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "ALL"}
    types = {a["AttributeName"]: a["AttributeType"] for a in checkpoints["AttributeDefinitions"]}
    assert (types["checkpoint"], types["leaf_index"]) == ("N", "N")


def managed_policies(role: dict, tracing_on: bool) -> list:
    """The role's managed policies, a conditional one resolved as the Tracing parameter says."""
    out = []
    for arn in role["Properties"].get("ManagedPolicyArns", []):
        if isinstance(arn, dict) and "Fn::If" in arn:
            condition, yes, no = arn["Fn::If"]
            assert condition == "TracingOn", arn
            arn = yes if tracing_on else no
            if arn == {"Ref": "AWS::NoValue"}:
                continue
        out.append(json.dumps(arn))
    return out


def test_no_role_carries_a_managed_policy_beyond_basic_logging(template):
    for function, role in roles_by_function(template).items():
        for text in managed_policies(role, tracing_on=False):
            assert BASIC in text and "DynamoDB" not in text, f"{function}: {text}"


def test_tracing_is_off_by_default_and_adds_only_the_x_ray_write_policy(template):
    assert template["Parameters"]["Tracing"]["Default"] == "Disabled"
    assert template["Globals"]["Function"]["Tracing"] == {"Ref": "Tracing"}
    resources = transformed(template)["Resources"]
    assert not [n for n, r in resources.items() if r["Type"] == "AWS::Lambda::Function" and "TracingConfig" in r["Properties"]]
    traced = transformed(template, {"Tracing": "Active"})["Resources"]
    for function, role in roles_by_function(template, {"Tracing": "Active"}).items():
        assert traced[function]["Properties"]["TracingConfig"] == {"Mode": {"Ref": "Tracing"}}, function
        policies = managed_policies(role, tracing_on=True)
        assert len(policies) == 2 and BASIC in policies[0] and "AWSXrayWriteOnlyAccess" in policies[1], (function, policies)


def test_the_rules_hold_whatever_the_table_says(template):
    for sequenced in [False, True]:
        rules_hold(template, sequenced)


def rules_hold(template: dict, sequenced: bool):
    roles = {f: grants(r, sequenced) for f, r in roles_by_function(template).items()}
    for function, granted in roles.items():
        for action, resource in granted:
            if resource.endswith("/stream"):
                assert action in {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"}, f"{function} may {action} a stream"
            elif resource.startswith("AuditTable"):
                # Append and read, never change or delete (BatchGetItem: the events an index
                # item lists, read by key).
                assert action in {"dynamodb:PutItem", "dynamodb:Query", "dynamodb:BatchGetItem"}, f"{function} may {action} the audit table"
            if action == "events:PutEvents":
                assert (function, resource) == ("NotifierFunction", "NotificationBus"), f"{function} publishes to {resource}"
            if resource == "ConsentsTable" and action in WRITES:
                # The user's own routes alone: grant, revoke, and approving a request (which
                # grants). No function an agent calls can write a consent.
                assert function in {
                    "GrantConsentFunction",
                    "RevokeConsentFunction",
                    "UserRequestsFunction",
                }, f"{function} writes consents"
            if resource.startswith("AccessRequestsTable") and action in WRITES:
                assert function in {
                    "AgentRequestsFunction",
                    "UserRequestsFunction",
                    "RequestExpiryFunction",
                }, f"{function} writes requests"
            if action == "kms:Sign":
                # Each kind by one function with a key of its own: tokens by mint, checkpoints
                # by the checkpoint function, export receipts by export-audit. No function
                # holds two, so none can forge another kind.
                assert (function, resource) in {
                    ("MintTokenFunction", "SigningKey"),
                    ("CheckpointFunction", "CheckpointKey"),
                    ("ExportAuditFunction", "ReceiptKey"),
                }, f"{function} signs with {resource}"
            if resource == "ControlsTable" and action in WRITES:
                # Incident response is the operator function's alone: nothing a support agent
                # calls can lift a stop or undo a revocation.
                assert function == "OperatorFunction", f"{function} writes the controls"
            if resource == "FirstUsesTable":
                # The first-use claims are the notifier's alone, written only by a conditional put.
                assert (function, action) == ("NotifierFunction", "dynamodb:PutItem"), f"{function} may {action} first uses"
            if resource.startswith("AuditIntakeTable"):
                # The intake is the sequencer's to read; the writers may only put into it (on
                # the sequenced path), a user's log only read it; no one updates or deletes an
                # intake item (TTL does).
                if function == "SequencerFunction":
                    # Its writes reach the list of stalled streams only (next test).
                    assert action in {"dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem"} or resource.endswith(
                        "/stream"
                    ), action
                elif function == "NotifierFunction":
                    # Its stream only: the uses it announces are in the records.
                    assert resource.endswith("/stream") and action not in WRITES, f"{function} may {action} {resource}"
                elif function in {"AccessLogFunction", "QueryAuditFunction"}:
                    assert sequenced and action == "dynamodb:Query", f"{function} may {action} the audit intake"
                else:
                    assert sequenced and action == "dynamodb:PutItem", f"{function} may {action} the audit intake"
            if sequenced and resource == "AuditTable" and action in WRITES:
                # On the sequenced path the sequencer alone appends.
                assert function == "SequencerFunction", f"{function} appends to the audit log"
            if sequenced and resource == "ChainHeadsTable" and action in WRITES:
                # And alone moves a head; the expiry recorder puts only its markers (`~expired#`),
                # the checkpoint only unmarks a sealed head (its `moved_*` attributes).
                assert function in {"SequencerFunction", "ExpiryRecorderFunction", "CheckpointFunction"}, (
                    f"{function} writes chain heads"
                )
            if resource == "ChainHeadsTable" and action == "dynamodb:UpdateItem":
                # Only the sequencer moves a head by update (forward only, on condition); the
                # direct path's writers update it in the transaction of their append; the
                # checkpoint only unmarks it (see test_the_checkpoint_touches_only_the_marks_of_a_head).
                assert function in {"SequencerFunction", "CheckpointFunction"}, f"{function} may update chain heads"
            if resource == "CheckpointsTable" and action in WRITES:
                assert (function, action) == ("CheckpointFunction", "dynamodb:PutItem"), f"{function} may {action} checkpoints"
            if action == "kms:GetPublicKey":
                assert function in {"JwksFunction", "AuthorizerFunction", "IntrospectFunction"}, f"{function} reads public keys"
                if resource.startswith("Checkpoint") or resource.startswith("Receipt"):
                    assert function == "JwksFunction", f"{function} reads checkpoint or receipt keys"
            if resource == "CursorSecret" or action.startswith("secretsmanager:"):
                assert (function, action, resource) in {
                    ("QueryAuditFunction", "secretsmanager:GetSecretValue", "CursorSecret"),
                    ("AccessLogFunction", "secretsmanager:GetSecretValue", "CursorSecret"),
                    ("ExportAuditFunction", "secretsmanager:GetSecretValue", "CursorSecret"),
                    ("AgentRequestsFunction", "secretsmanager:GetSecretValue", "CursorSecret"),
                    ("UserRequestsFunction", "secretsmanager:GetSecretValue", "CursorSecret"),
                }, f"{function} may {action} {resource}"
            if action.startswith("sqs:") or resource.startswith("FailuresQueue"):
                # Only the scheduled functions, and only to report their own failed runs.
                assert (action, resource) == ("sqs:SendMessage", "FailuresQueue"), f"{function} may {action} {resource}"
                assert function in {"CheckpointFunction", "RequestExpiryFunction"}, f"{function} sends failures"
            if action.startswith("s3:") or resource.startswith("FailedBatchesBucket"):
                # The stream functions put failed batches; nothing reads or deletes them but an operator.
                assert action in {"s3:PutObject", "s3:ListBucket"}, f"{function} may {action} {resource}"
                assert function in {"ExpiryRecorderFunction", "NotifierFunction", "SequencerFunction"}, f"{function} writes failed batches"
    for reader in ["GetConsentFunction", "QueryAuditFunction", "ExportAuditFunction", "AccessLogFunction", "JwksFunction"]:
        assert not {a for a, _ in roles[reader]} & (WRITES | {"dynamodb:ConditionCheckItem"}), reader


def test_a_widened_role_is_caught(template):
    widened = copy.deepcopy(template)
    statements = widened["Resources"]["QueryAuditFunction"]["Properties"]["Policies"][0]["Statement"]
    statements.append({"Effect": "Allow", "Action": ["dynamodb:UpdateItem"], "Resource": {"Fn::GetAtt": ["AuditTable", "Arn"]}})
    with pytest.raises(AssertionError):
        test_the_rules_hold_whatever_the_table_says(widened)
    with pytest.raises(AssertionError):
        test_every_function_has_exactly_its_permissions(widened)
    # A writer that could read the intake on the sequenced path (only the sequencer and a
    # user's log may).
    widened = copy.deepcopy(template)
    statements = widened["Resources"]["MintTokenFunction"]["Properties"]["Policies"][0]["Statement"]
    query = {"Effect": "Allow", "Action": ["dynamodb:Query"], "Resource": {"Fn::GetAtt": ["AuditIntakeTable", "Arn"]}}
    statements.append({"Fn::If": ["SequencedAuditOn", query, {"Ref": "AWS::NoValue"}]})
    with pytest.raises(AssertionError):
        test_the_rules_hold_whatever_the_table_says(widened)


def test_the_tables_are_the_shapes_the_tests_run_against(template):
    """Keys, attribute types, indexes, streams and TTL exactly as `infra/tables.json` says,
    and no other table: the tests' tables are created from that file."""
    resources = template["Resources"]
    declared = {name for name, r in resources.items() if r["Type"] == "AWS::DynamoDB::Table"}
    assert declared == {shape["resource"] for shape in TABLE_SHAPES}
    kinds = ("HASH", "RANGE")

    def keys(schema):
        return [(k["AttributeName"], k["KeyType"]) for k in schema]

    for shape in TABLE_SHAPES:
        props = resources[shape["resource"]]["Properties"]
        where = shape["resource"]
        assert {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]} == shape[
            "attributes"
        ], where
        assert len(props["AttributeDefinitions"]) == len(shape["attributes"]), where
        assert keys(props["KeySchema"]) == list(zip(shape["key"], kinds)), where
        indexes = {
            i["IndexName"]: (keys(i["KeySchema"]), i["Projection"]["ProjectionType"])
            for i in props.get("GlobalSecondaryIndexes", [])
        }
        assert indexes == {
            i["name"]: (list(zip(i["key"], kinds)), i["projection"]) for i in shape.get("indexes", [])
        }, where
        assert props.get("StreamSpecification", {}).get("StreamViewType") == shape.get("stream"), where
        ttl = props.get("TimeToLiveSpecification")
        assert ttl == ({"AttributeName": shape["ttl"], "Enabled": True} if "ttl" in shape else None), where


def test_a_table_that_drifts_from_its_shape_is_caught(template):
    drifted = copy.deepcopy(template)
    audit = drifted["Resources"]["AuditTable"]["Properties"]
    audit["GlobalSecondaryIndexes"][0]["Projection"]["ProjectionType"] = "KEYS_ONLY"
    with pytest.raises(AssertionError):
        test_the_tables_are_the_shapes_the_tests_run_against(drifted)
    drifted = copy.deepcopy(template)
    del drifted["Resources"]["FirstUsesTable"]["Properties"]["TimeToLiveSpecification"]
    with pytest.raises(AssertionError):
        test_the_tables_are_the_shapes_the_tests_run_against(drifted)


def test_storage_is_protected_and_the_audit_log_retained(template):
    resources = template["Resources"]
    for table in [shape["resource"] for shape in TABLE_SHAPES]:
        props = resources[table]["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["DeletionProtectionEnabled"] is True
    assert resources["AuditTable"]["DeletionPolicy"] == "Retain"
    assert resources["CheckpointsTable"]["DeletionPolicy"] == "Retain"
    consents = resources["ConsentsTable"]["Properties"]
    assert consents["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert consents["StreamSpecification"]["StreamViewType"] == "OLD_IMAGE"
    requests = resources["AccessRequestsTable"]["Properties"]
    assert requests["TimeToLiveSpecification"] == {"AttributeName": "purge_at", "Enabled": True}
    assert [i["IndexName"] for i in requests["GlobalSecondaryIndexes"]] == ["by-agent", "pending-by-deadline"]
    controls = resources["ControlsTable"]["Properties"]
    assert controls["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert controls["KeySchema"] == [{"AttributeName": "key", "KeyType": "HASH"}]
    first_uses = resources["FirstUsesTable"]["Properties"]
    assert first_uses["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert first_uses["KeySchema"] == [{"AttributeName": "jti", "KeyType": "HASH"}]
    intake = resources["AuditIntakeTable"]["Properties"]
    assert intake["KeySchema"] == [
        {"AttributeName": "stream", "KeyType": "HASH"},
        {"AttributeName": "order", "KeyType": "RANGE"},
    ]
    assert intake["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert intake["StreamSpecification"]["StreamViewType"] == "NEW_IMAGE"
    assert resources["AuditTable"]["Properties"]["StreamSpecification"]["StreamViewType"] == "NEW_IMAGE"
    notifier = resources["NotifierFunction"]["Properties"]["Events"]["AuditStream"]["Properties"]
    assert notifier["FunctionResponseTypes"] == ["ReportBatchItemFailures"] and notifier["MaximumRetryAttempts"] == -1
    # Kept retrying for 12 h, then sent whole to the failed-batches bucket before the stream
    # (24 h) trims it.
    assert notifier["MaximumRecordAgeInSeconds"] < 86400
    # The notifier's second mapping (#18): the intake's new items of uses, announced before
    # they are sequenced, kept as the Audit stream's are (retried 12 h from the failed record,
    # then whole to the bucket), halved when the function itself fails. Deployed whatever
    # SequencedAudit says, so that uses still pending when it is turned off are announced.
    notifier_function = resources["NotifierFunction"]["Properties"]
    uses = notifier_function["Events"]["IntakeStream"]
    assert "Condition" not in uses
    uses = uses["Properties"]
    assert uses["Stream"] == {"Fn::GetAtt": ["AuditIntakeTable", "StreamArn"]}
    assert uses["StartingPosition"] == "TRIM_HORIZON"
    assert uses["FunctionResponseTypes"] == ["ReportBatchItemFailures"] and uses["MaximumRetryAttempts"] == -1
    assert uses["MaximumRecordAgeInSeconds"] == notifier["MaximumRecordAgeInSeconds"] < 86400
    assert uses["BisectBatchOnFunctionError"] is True
    assert uses["DestinationConfig"] == notifier["DestinationConfig"]
    assert notifier["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["FailedBatchesBucket", "Arn"]}
    assert [json.loads(f["Pattern"]) for f in uses["FilterCriteria"]["Filters"]] == [
        {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"type": {"S": ["token.used"]}}}}
    ]
    assert notifier_function["Environment"]["Variables"]["AUDIT_INTAKE_TABLE"] == {"Ref": "AuditIntakeTable"}
    sequencer = resources["SequencerFunction"]["Properties"]
    intake_stream = sequencer["Events"]["IntakeStream"]["Properties"]
    assert intake_stream["Stream"] == {"Fn::GetAtt": ["AuditIntakeTable", "StreamArn"]}
    # Per-user order (Lambda keeps a partition key's records in order at any parallelization),
    # a failed user's records reported and the others' kept, then bisected, retried, bounded
    # in age, and kept whole in the failed-batches bucket; only new intake items trigger it.
    assert intake_stream["ParallelizationFactor"] == 10
    # Its batching window is a parameter: longer runs cost fewer reads a use, the chains lag
    # more; 1 s by default, what keeps a busy user's use under $3 per million (BENCHMARKS.md).
    assert intake_stream["MaximumBatchingWindowInSeconds"] == {"Ref": "SequencerBatchingWindowSeconds"}
    assert template["Parameters"]["SequencerBatchingWindowSeconds"]["Default"] == 1
    assert intake_stream["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert intake_stream["BisectBatchOnFunctionError"] is True
    assert 0 < intake_stream["MaximumRetryAttempts"] <= 10 and intake_stream["MaximumRecordAgeInSeconds"] < 86400
    assert intake_stream["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["FailedBatchesBucket", "Arn"]}
    assert [json.loads(f["Pattern"]) for f in intake_stream["FilterCriteria"]["Filters"]] == [
        {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"decided_us": {"N": [{"exists": True}]}}}}
    ]
    assert sequencer["Environment"]["Variables"]["AUDIT_INTAKE_TABLE"] == {"Ref": "AuditIntakeTable"}
    indexes = {i["IndexName"] for i in resources["AuditTable"]["Properties"]["GlobalSecondaryIndexes"]}
    assert indexes == {"by-actor", "by-time"}
    for name in ["SigningKey", "CheckpointKey", "ReceiptKey"]:
        key = resources[name]["Properties"]
        assert (key["KeySpec"], key["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    checkpoint = resources["CheckpointFunction"]["Properties"]
    assert checkpoint["Events"]["Schedule"]["Type"] == "Schedule"
    own_checkpoint_key = {"Fn::If": ["OwnCheckpointKey", {"Ref": "CheckpointKey"}, {"Ref": "CheckpointSigningKeyArn"}]}
    assert checkpoint["Environment"]["Variables"]["KMS_KEY_ID"] == own_checkpoint_key
    # The tokens' JWK Set is the token keys' alone: the checkpoint keys have their own document.
    jwks = resources["JwksFunction"]["Properties"]["Environment"]["Variables"]
    assert jwks["CHECKPOINT_KEY_ID"] == own_checkpoint_key
    assert jwks["CHECKPOINT_PUBLISHED_KEY_IDS"] == {"Fn::Join": [",", {"Ref": "CheckpointPublishedKeyArns"}]}
    # export-audit signs each export's receipt with the receipt key (it refuses to start
    # without one), and is given no checkpoint key at all; jwks publishes the receipt keys.
    own_receipt_key = {"Fn::If": ["OwnReceiptKey", {"Ref": "ReceiptKey"}, {"Ref": "ReceiptSigningKeyArn"}]}
    export = resources["ExportAuditFunction"]["Properties"]["Environment"]["Variables"]
    assert export["RECEIPT_KEY_ID"] == own_receipt_key and "CHECKPOINT_KEY_ID" not in export
    assert jwks["RECEIPT_KEY_ID"] == own_receipt_key
    assert jwks["RECEIPT_PUBLISHED_KEY_IDS"] == {"Fn::Join": [",", {"Ref": "ReceiptPublishedKeyArns"}]}
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["KMS_KEY_ID"] == {"Fn::If": ["OwnSigningKey", {"Ref": "SigningKey"}, {"Ref": "SigningKeyArn"}]}
    assert env["KMS_PUBLISHED_KEY_IDS"] == {"Fn::Join": [",", {"Ref": "PublishedKeyArns"}]}


def test_the_functions_are_one_list(template):
    """The template names the functions (scripts/build-lambdas builds what it names): they are
    exactly the workspace's function crates but local-api (not a Lambda), and the crate table
    of docs/development.md lists each, so a new function is never left unbuilt or unmentioned."""
    import re

    root = TEMPLATE.parents[1]
    binaries = {
        r["Metadata"]["BuildProperties"]["Binary"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Serverless::Function"
    }
    crates = {p.name for p in (root / "functions").iterdir() if (p / "Cargo.toml").exists()} - {"local-api"}
    assert binaries == crates, binaries ^ crates
    row = next(line for line in (root / "docs" / "development.md").read_text().splitlines() if line.startswith("| `functions/<job>`"))
    listed = set(re.findall(r"`([a-z-]+)`", row.split("|")[3].split(":", 1)[1]))
    assert listed == binaries, listed ^ binaries


def test_every_function_is_a_rust_arm64_binary_and_every_route_but_jwks_is_authorized(template):
    resources = template["Resources"]
    globals_ = template["Globals"]["Function"]
    assert (globals_["Runtime"], globals_["Architectures"]) == ("provided.al2023", ["arm64"])
    assert globals_["LoggingConfig"]["LogFormat"] == "JSON"
    api = resources["HttpApi"]["Properties"]["Auth"]
    assert api["DefaultAuthorizer"] == "IdentityJwt"
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        assert resource["Metadata"]["BuildMethod"] == "rust-cargolambda", name
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                auth = event["Properties"].get("Auth", {})
                public = auth.get("Authorizer") == "NONE"
                public_paths = {
                    # The token exchange: its caller's identity token is in the body, verified
                    # by the function (test_the_token_exchange_verifies_the_identity_token_itself).
                    "/token",
                    "/.well-known/jwks.json",
                    "/.well-known/checkpoint-keys.json",
                    "/.well-known/oauth-authorization-server",
                    "/.well-known/openid-configuration",
                }
                assert public == (event["Properties"]["Path"] in public_paths), name


def test_the_token_exchange_verifies_the_identity_token_itself(template):
    # POST /token has no JWT authorizer in front, so its function must know the identity
    # provider the authorizer trusts, the same parameters, and only it and the app API's
    # authorizer take them (no other function verifies an identity token).
    resources = template["Resources"]
    provider = {
        "SUPPORT_ACCESS_IDENTITY_ISSUER": {"Ref": "IdentityIssuer"},
        "SUPPORT_ACCESS_IDENTITY_AUDIENCE": {"Ref": "IdentityAudience"},
    }
    verifying = set()
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        env = resource["Properties"].get("Environment", {}).get("Variables", {})
        if any(variable in env for variable in provider):
            assert {k: env[k] for k in provider} == provider, name
            verifying.add(name)
    assert verifying == {"MintTokenFunction", "AuthorizerFunction"}, verifying
    events = resources["MintTokenFunction"]["Properties"]["Events"]
    exchange = next(e["Properties"] for e in events.values() if e["Properties"]["Path"] == "/token")
    assert (exchange["Method"], exchange["Auth"]["Authorizer"]) == ("POST", "NONE")


def test_every_policy_variable_is_a_parameter_and_step_up_is_off_by_default(template):
    # The variables the service's policy reads (shared/src/domain/policy.rs), each set for
    # every function from a template parameter, so no deployment runs a policy nobody chose.
    import re

    policy_rs = Path(__file__).resolve().parents[2] / "shared" / "src" / "domain" / "policy.rs"
    read = set(re.findall(r'"(SUPPORT_ACCESS_[A-Z_]+)"', policy_rs.read_text()))
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert read and read <= set(env), read - set(env)
    params = template["Parameters"]
    for variable in read:
        assert set(env[variable]) == {"Ref"} and env[variable]["Ref"] in params, variable
    assert env["SUPPORT_ACCESS_STEP_UP_AMR"] == {"Ref": "StepUpAmr"}
    assert params["StepUpAmr"]["Default"] == ""
    assert params["StepUpMaxAgeSeconds"]["Default"] == 0


def test_the_token_issuer_is_one_spelling_of_an_https_origin_or_empty(template):
    # The same rule as shared/src/domain/policy.rs (issuer_url_problem), so a value the
    # functions would refuse at start-up is refused at deploy time instead.
    import re

    param = template["Parameters"]["TokenIssuer"]
    assert param["Default"] == ""
    pattern = re.compile(param["AllowedPattern"])
    for good in ["", "support-access", "https://support.example.com", "https://abc123.execute-api.eu-west-1.amazonaws.com", "https://support.example.com:8443", "https://support.example.com:65535"]:
        assert pattern.fullmatch(good), good
    for bad in ["https://support.example.com/", "https://support.example.com/prod", "http://support.example.com", "https://Support.example.com", "https://support.example.com?x", "https://u@support.example.com", "other-name", "https://support.example.com:443", "https://support.example.com:65536", "https://support.example.com:0443", "https://support..example.com", "https://-support.example.com"]:
        assert not pattern.fullmatch(bad), bad


def test_cors_is_off_by_default_and_never_allows_credentials(template):
    import re

    param = template["Parameters"]["CorsAllowedOrigins"]
    assert param["Default"] == ""
    pattern = re.compile(param["AllowedPattern"])
    for good in ["", "*", "https://app.example.com", "https://app.example.com,http://localhost:5173"]:
        assert pattern.fullmatch(good), good
    for bad in ["https://app.example.com/", "https://a.example, https://b.example", "*,https://a.example", "app.example.com"]:
        assert not pattern.fullmatch(bad), bad
    cors = template["Resources"]["HttpApi"]["Properties"]["CorsConfiguration"]
    condition, on, off = cors["Fn::If"]
    assert condition == "CorsOn" and off == {"Ref": "AWS::NoValue"}
    assert on["AllowCredentials"] is False
    assert on["AllowOrigins"] == {"Fn::Split": [",", {"Ref": "CorsAllowedOrigins"}]}

    def cors_of(parameters):
        api = transformed(template, parameters)["Resources"]["HttpApi"]["Properties"]["Body"]
        return api.get("x-amazon-apigateway-cors")

    # After SAM's transform: one condition around the whole configuration, credentials off.
    body = cors_of({"CorsAllowedOrigins": "https://app.example.com"})
    condition, on, off = body["Fn::If"]
    assert condition == "CorsOn" and off == {"Ref": "AWS::NoValue"}
    assert on["allowCredentials"] is False and "allowOrigins" in on
    assert template["Conditions"]["CorsOn"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "CorsAllowedOrigins"}, ""]}]}


# --- Day-2 operations ----------------------------------------------------------------------

FUNCTIONS = sorted(EXPECTED)
TOPIC = {"Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]}


def test_every_function_logs_to_its_own_group_kept_for_the_retention_parameter(template):
    resources = template["Resources"]
    groups = set()
    for function in FUNCTIONS:
        group = resources[function]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert resources[group]["Type"] == "AWS::Logs::LogGroup", function
        assert resources[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, group
        groups.add(group)
    assert len(groups) == len(FUNCTIONS), "one group per function"
    api = resources["HttpApi"]["Properties"]
    access = api["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0]
    assert resources[access]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert "authorization" not in api["AccessLogSettings"]["Format"].lower(), "never a credential in the access log"
    assert api["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
    }


def test_only_the_authorizer_leaves_out_lambdas_records_and_no_function_filters_its_own_lines(template):
    # The authorizer runs for every request of the app's API: its system records are a
    # parameter, WARN by default (no platform.start, no platform.report). No function sets an
    # ApplicationLogLevel: Lambda would drop the lines under it by their `level`, and with them
    # the EMF metrics every request line carries.
    param = template["Parameters"]["AuthorizerSystemLogLevel"]
    assert (param["Default"], param["AllowedValues"]) == ("WARN", ["DEBUG", "INFO", "WARN"])
    # As deployed: SAM merges the Globals' LogFormat into each function's own LoggingConfig
    # (Lambda takes a log level only with the JSON format).
    resources = transformed(template)["Resources"]
    for function in FUNCTIONS:
        config = resources[function]["Properties"]["LoggingConfig"]
        assert config["LogFormat"] == "JSON", function
        assert "ApplicationLogLevel" not in config, function
        expected = {"Ref": "AuthorizerSystemLogLevel"} if function == "AuthorizerFunction" else None
        assert config.get("SystemLogLevel") == expected, (function, config)


def test_every_alarm_notifies_the_topic_and_every_function_has_one(template):
    resources = template["Resources"]
    alarms = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [TOPIC] and alarm["OKActions"] == [TOPIC], name
    watched = set()
    for alarm in alarms.values():
        for metric in alarm.get("Metrics", []):
            stat = metric.get("MetricStat", {}).get("Metric", {})
            if stat.get("MetricName") in {"Errors", "Throttles"}:
                watched.add((stat["MetricName"], stat["Dimensions"][0]["Value"]["Ref"]))
    assert watched >= {(m, f) for f in FUNCTIONS for m in ["Errors", "Throttles"]}
    ages = {a["Dimensions"][0]["Value"]["Ref"] for a in alarms.values() if a.get("MetricName") == "IteratorAge"}
    assert ages == {"ExpiryRecorderFunction", "NotifierFunction", "SequencerFunction"}
    checkpoint = alarms["CheckpointAgeAlarm"]
    # N buckets of 2 minutes, N the interval in minutes: in two intervals no run reported (a
    # failed run writes no metrics) or each left a head unsealed for two intervals.
    stats = [m["MetricStat"] for m in checkpoint["Metrics"] if "MetricStat" in m]
    assert [(s["Period"], s["Stat"], s["Metric"]["MetricName"]) for s in stats] == [(120, "Maximum", "UnsealedAgeSeconds")]
    assert stats[0]["Metric"]["Namespace"] == "SupportAccess"
    assert stats[0]["Metric"]["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "CheckpointFunction"}}]
    expression = [m for m in checkpoint["Metrics"] if "Expression" in m]
    assert expression[0]["Expression"] == {"Fn::Sub": "age / (60 * ${CheckpointIntervalMinutes})"}
    assert (checkpoint["Threshold"], checkpoint["ComparisonOperator"]) == (2, "GreaterThanOrEqualToThreshold")
    assert checkpoint["EvaluationPeriods"] == checkpoint["DatapointsToAlarm"] == {"Ref": "CheckpointIntervalMinutes"}
    assert checkpoint["TreatMissingData"] == "breaching"
    # The function runs shorter than the shortest interval: two runs never overlap.
    assert resources["CheckpointFunction"]["Properties"]["Timeout"] < 60 * template["Parameters"]["CheckpointIntervalMinutes"]["MinValue"]
    schedule = resources["CheckpointFunction"]["Properties"]["Events"]["Schedule"]["Properties"]["Schedule"]
    assert schedule == {"Fn::Sub": "rate(${CheckpointIntervalMinutes} minutes)"}
    # The dashboard's alarm widget shows every alarm.
    body = json.dumps(resources["Dashboard"]["Properties"]["DashboardBody"])
    for name in alarms:
        assert "${%s.Arn}" % name in body, name


def test_every_stream_mapping_and_schedule_keeps_what_failed(template):
    resources = transformed(template)["Resources"]
    mappings = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::Lambda::EventSourceMapping"}
    # The expiry recorder's, the sequencer's and the notifier's two (the Audit stream, the intake's).
    assert len(mappings) == 4
    for name, mapping in mappings.items():
        # The S3 destination keeps the batch itself, not just its position in the stream.
        assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["FailedBatchesBucket", "Arn"]}, name
    rules = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::Events::Rule" and "ScheduleExpression" in r["Properties"]}
    assert set(rules) == {"CheckpointFunctionSchedule", "RequestExpiryFunctionSchedule"}
    queue = {"Fn::GetAtt": ["FailuresQueue", "Arn"]}
    for name, rule in rules.items():
        (target,) = rule["Targets"]
        assert target["DeadLetterConfig"] == {"Arn": queue} and target["RetryPolicy"]["MaximumRetryAttempts"] >= 1, name
        function = target["Arn"]["Fn::GetAtt"][0]
        invoke = resources[f"{function}EventInvokeConfig"]["Properties"]
        assert invoke["DestinationConfig"]["OnFailure"]["Destination"] == queue, function
    bucket = resources["FailedBatchesBucket"]
    assert bucket["DeletionPolicy"] == "Retain" and bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(bucket["Properties"]["PublicAccessBlockConfiguration"].values())
    # Each new failed batch reaches the failures queue, whose alarm fires on the first message.
    pattern = resources["FailedBatchRule"]["Properties"]["EventPattern"]
    assert pattern["detail"]["bucket"]["name"] == [{"Ref": "FailedBatchesBucket"}]
    assert resources["FailuresAlarm"]["Properties"]["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["FailuresQueue", "QueueName"]}


def test_the_queues_take_messages_from_their_rules_alone(template):
    resources = template["Resources"]
    expected = {
        "FailuresQueue": {"FailedBatchRule", "CheckpointFunctionSchedule", "RequestExpiryFunctionSchedule"},
        "SecurityEventsQueue": {"KmsSignRule", "CheckpointKeySignRule", "ReceiptKeySignRule", "KmsGetPublicKeyRule"},
    }
    policies = {r["Properties"]["Queues"][0]["Ref"]: r["Properties"]["PolicyDocument"] for r in resources.values() if r["Type"] == "AWS::SQS::QueuePolicy"}
    assert set(policies) == set(expected)
    for queue, policy in policies.items():
        (statement,) = policy["Statement"]
        assert (statement["Effect"], statement["Principal"], statement["Action"]) == ("Allow", {"Service": "events.amazonaws.com"}, "sqs:SendMessage"), queue
        assert statement["Resource"] == {"Fn::GetAtt": [queue, "Arn"]}
        sources = {ref["Fn::GetAtt"][0] for ref in statement["Condition"]["ArnEquals"]["aws:SourceArn"]}
        assert sources == expected[queue], queue
        assert resources[queue]["Properties"]["SqsManagedSseEnabled"] is True


def test_the_kms_alarm_spares_exactly_the_roles_granted_each_use(template):
    """The KMS rules fire on Sign or GetPublicKey by any principal but the roles this file
    grants that action on those keys: widen a grant without the rule (or the reverse) and
    this fails. Sign is watched key by key (each kind's key spares its one signer), so
    export-audit signing with the checkpoint key, or the checkpoint function with the receipt
    key, fires the alarm."""
    resources = template["Resources"]
    rules = [
        ("KmsSignRule", "kms:Sign", {"SigningKey"}),
        ("CheckpointKeySignRule", "kms:Sign", {"CheckpointKey"}),
        ("ReceiptKeySignRule", "kms:Sign", {"ReceiptKey"}),
        ("KmsGetPublicKeyRule", "kms:GetPublicKey", {"SigningKey", "CheckpointKey", "ReceiptKey"}),
    ]
    watched_for_sign = set()
    for rule, action, watched in rules:
        props = resources[rule]["Properties"]
        assert props["State"] == "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS", "Sign and GetPublicKey are read-only events"
        detail = props["EventPattern"]["detail"]
        assert detail["eventName"] == [action.split(":")[1]]
        keys = {resource_name(k) for k in detail["resources"]["ARN"]}
        assert keys == watched, (rule, keys)
        if action == "kms:Sign":
            watched_for_sign |= keys
        not_a_role, other_role = detail["$or"]
        assert not_a_role == {"userIdentity": {"type": [{"anything-but": ["AssumedRole"]}]}}
        spared = other_role["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"][0]["anything-but"]
        spared = {ref["Fn::GetAtt"][0].removesuffix("Role") for ref in spared}
        granted = {f for f, g in EXPECTED.items() if any(a == action and r in watched for a, r in g)}
        assert spared == granted, (rule, spared, granted)
        assert props["Targets"][0]["Arn"] == {"Fn::GetAtt": ["SecurityEventsQueue", "Arn"]}
    assert watched_for_sign == {"SigningKey", "CheckpointKey", "ReceiptKey"}, "every key's Sign is watched"


def test_concurrency_reservations_and_caps_are_parameters_off_by_default(template):
    resources, params = template["Resources"], template["Parameters"]
    expected = {
        "GrantConsentFunction": ("ReserveUserWrites", "UserWritesReservedConcurrency"),
        "RevokeConsentFunction": ("ReserveUserWrites", "UserWritesReservedConcurrency"),
        "AuthorizerFunction": ("CapAuthorizer", "AuthorizerMaxConcurrency"),
        "JwksFunction": ("CapPublicKeys", "PublicKeysMaxConcurrency"),
        "SequencerFunction": ("CapSequencer", "SequencerMaxConcurrency"),
        "MintTokenFunction": ("CapMint", "MintMaxConcurrency"),
    }
    for function in FUNCTIONS:
        reserved = resources[function]["Properties"].get("ReservedConcurrentExecutions")
        if function not in expected:
            assert reserved is None, function
            continue
        condition, param = expected[function]
        assert reserved == {"Fn::If": [condition, {"Ref": param}, {"Ref": "AWS::NoValue"}]}, function
        assert params[param]["Default"] == 0
        assert template["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": param}, 0]}]}


def test_every_resource_that_takes_tags_is_tagged(template):
    untaggable = {
        "AWS::KMS::Alias", "AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::Events::Rule",
        "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard",
    }
    for name, resource in template["Resources"].items():
        if resource["Type"] in untaggable:
            continue
        tags = resource["Properties"].get("Tags")
        if resource["Type"].startswith("AWS::Serverless::"):
            tags = tags or template["Globals"]["Function"]["Tags"] if resource["Type"] == "AWS::Serverless::Function" else tags
            assert tags == {"app": "support-access"}, name
        else:
            assert {"Key": "app", "Value": "support-access"} in (tags or []), name


def test_the_cursor_secret_is_read_by_arn_and_generated_as_valid_base64(template):
    import base64
    import secrets
    import string

    resources = template["Resources"]
    generate = resources["CursorSecret"]["Properties"]["GenerateSecretString"]
    # Secrets Manager draws from [A-Za-z0-9] without punctuation: the base64 alphabet less + and /.
    assert generate["ExcludePunctuation"] is True
    length = generate["PasswordLength"]
    assert length % 4 == 0 and length * 6 // 8 >= 32, "a multiple of 4 (no padding) of at least 32 bytes"
    alphabet = string.ascii_letters + string.digits
    for _ in range(200):
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        assert len(base64.b64decode(value, validate=True)) >= 32
    for function in FUNCTIONS:
        env = resources[function]["Properties"].get("Environment", {}).get("Variables", {})
        assert "SUPPORT_ACCESS_CURSOR_KEY" not in env, f"{function} has the cursor key in its configuration"
        if ("secretsmanager:GetSecretValue", "CursorSecret") in EXPECTED[function]:
            assert env["SUPPORT_ACCESS_CURSOR_SECRET_ARN"] == {"Ref": "CursorSecret"}, function
    assert "resolve:secretsmanager" not in json.dumps(template), "no secret resolved into a configuration"


def test_the_stack_policy_forbids_replacing_or_deleting_every_retained_resource(template):
    """A change that would replace a table (a new key schema, a renamed index key) would
    leave the retained old table behind and start the audit log afresh in an empty one: the
    stack policy (infra/stack-policy.json, docs/operators.md) makes such an update fail."""
    policy = json.loads((TEMPLATE.parent / "stack-policy.json").read_text())
    allow, deny = policy["Statement"]
    assert (allow["Effect"], allow["Action"], allow["Resource"]) == ("Allow", "Update:*", "*")
    assert deny["Effect"] == "Deny" and set(deny["Action"]) == {"Update:Replace", "Update:Delete"}
    retained = {n for n, r in template["Resources"].items() if r.get("DeletionPolicy") == "Retain"}
    assert {"AuditTable", "ChainHeadsTable", "CheckpointsTable", "SigningKey", "CheckpointKey", "ReceiptKey"} <= retained
    assert set(deny["Resource"]) == {f"LogicalResourceId/{n}" for n in retained}


def test_every_checkov_skip_gives_its_reason():
    import re

    text = (TEMPLATE.parent / ".checkov.yaml").read_text()
    skips = re.findall(r"^\s+- (CKV\w+)(.*)$", text, re.M)
    assert skips, "the skip list is where it is read from"
    for check, rest in skips:
        reason = rest.strip().removeprefix("#").strip()
        assert rest.strip().startswith("#") and len(reason) >= 40, f"{check} is skipped without a reason"
    assert len({c for c, _ in skips}) == len(skips), "each check skipped once"
