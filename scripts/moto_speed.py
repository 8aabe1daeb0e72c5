"""Speed-ups of moto 5.2.5 that change no answer, only how long it takes to give it.

Measured on 30,000 event commits (`Scan` with a projection of five top-level attributes):
reading the table took 97 s in 10 pages, where DynamoDB takes well under a second a page. Two
costs, both per item of a page:

- **Encoding.** moto encodes every DynamoDB response by walking botocore's output shapes
  value by value (`moto.core.serialize`). For the operations that return items, moto's result
  is already in wire form (`DynamoResult` has turned every `DynamoType` into `{"S": ...}`),
  except binary values, raw bytes that the JSON protocol sends in base64: `json.dumps` of it
  is the same document.
- **Sizes.** The size of each item of a page is computed twice (for the 1 MB page limit),
  by a recursion that rebuilds a `DynamoType` for every map value on the way down; the same
  sum over the values as they are gives the same number.
- **Projection.** `Item.project` turns the whole item into plain Python values and back, even
  when the projection only names top-level attributes; picking those attributes gives the
  same item.

- **Query.** A `Query` on a table's own key (no index) reads the one partition its key
  condition names, as DynamoDB does. moto walks the whole table instead, sorted, on every
  query (`Table.all_items` sorts every item by key with Python-level comparisons) and keeps
  the partition's items: a cost that grows with the table. Handing it the partition's items,
  in the same order, keeps every answer and makes the cost the partition's. A query on an
  index still reads every item, but unsorted: it sorts what it keeps by a total order.
- **Transactions.** `TransactWriteItems` deep-copies every table it touches, whole, before it
  starts, to put it back if the transaction fails: a cost that grows with the table, on every
  transaction (the projector's and the saga's, a tenth of the DynamoDB process's time in a
  30-order burst). For a table without a stream, copying the items the transaction names is
  the same backup: nothing else of the table can change. A table with a stream keeps moto's
  whole copy (its stream records are rolled back with it).

Beyond DynamoDB, two per-request costs of moto itself:

- **SQS queue attributes.** moto builds a queue's whole attribute map, the approximate
  message counts included (each a pass over every message in the queue, asking the clock
  per message), to read one flag: `ContentBasedDeduplication` four times per message sent,
  `MessageRetentionPeriod` (three maps) per message received. Under a backlog that is most
  of the SNS and SQS process's time (`py-spy`: 41% in a 30-order burst). Inside
  `SendMessage` and `ReceiveMessage` (which read no count) the map is built without the
  counts; `GetQueueAttributes` still gets moto's own.
- **Routing.** moto finds the service of every request by trying the URL patterns of every
  service it knows, in turn (`get_backend_for_host`: 12% of both processes); the answer for
  a host never changes, so it is kept.

`python scripts/moto_speed.py --check` (run by `./scripts/test`) sends a set of requests with
and without these speed-ups and fails unless every answer is the same.
"""

import base64
import json
import sys

# DynamoDB operations whose result is items (or nothing) in wire form.
ITEM_OPERATIONS = frozenset(
    {
        "GetItem",
        "BatchGetItem",
        "Query",
        "Scan",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "TransactGetItems",
    }
)


def _wire(value):
    # Binary attributes (`B`, `BS`) are raw bytes in the result; the JSON protocol sends base64.
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def encode(result):
    """The JSON body DynamoDB sends for an item operation's `result`."""
    return json.dumps(result, default=_wire, separators=(",", ":"))


def install():
    """Patches moto in this process; returns a function that undoes it."""
    from moto.dynamodb import responses
    from moto.dynamodb.models.dynamo_type import Item

    from moto.dynamodb.models.dynamo_type import DynamoType

    generic_result = responses.DynamoResult.execute_result
    generic_size = DynamoType.size
    generic_project = Item.project

    def execute_result(self, context):
        name = context.operation_model.name
        if name not in ITEM_OPERATIONS or not isinstance(self.result, dict):
            return generic_result(self, context)
        # The headers (content type, request id, date) come from moto's own response
        # builder, given an empty result; the body is the real one.
        status, headers, _ = generic_result(responses.DynamoResult({}), context)
        return status, headers, encode(self.result)

    def project(self, projection_expressions):
        paths = projection_expressions
        if not all(len(p) == 1 and "[" not in p[0] for p in paths):
            return generic_project(self, projection_expressions)
        names = {p[0] for p in paths}
        attrs = {k: v for k, v in self.attrs.items() if k in names}
        return Item(hash_key=self.hash_key, range_key=self.range_key, attrs=_raw(attrs))

    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    generic_transact = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        saved = _named_items(self, transact_items)
        if saved is None:
            return generic_transact(self, transact_items)
        # moto's own whole-table copy becomes the table itself (its rollback then puts back
        # the same object); the items named are put back here instead.
        real_copy = models.copy
        models.copy = _KeepTables(real_copy, Table)
        try:
            return generic_transact(self, transact_items)
        except Exception:
            for (table, hash_value, range_value), item in saved.items():
                _restore(table, hash_value, range_value, item)
            raise
        finally:
            models.copy = real_copy

    generic_query = Table.query

    def query(self, hash_key, *args, **kwargs):
        # `index_name` is the seventh argument after the hash key (moto passes it by position).
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if index_name:
            # An index query sorts what it keeps by the index's keys and then the table's,
            # a total order: the order it reads the items in does not matter.
            items = lambda: _unsorted(self)
        elif hash_key is not None:
            items = lambda: _partition(self, hash_key)
        else:
            return generic_query(self, hash_key, *args, **kwargs)
        # An instance attribute shadows the method for this one call (requests are serialized).
        self.all_items = items
        try:
            return generic_query(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.sqs import models as sqs

    generic_attributes = sqs.Queue.attributes
    generic_send = sqs.SQSBackend.send_message
    generic_receive = sqs.SQSBackend.receive_message
    generic_backend_for_host = DomainDispatcherApplication.get_backend_for_host
    lean = [0]  # > 0 inside a send or a receive (requests are serialized)

    def attributes(self):
        if lean[0]:
            return _attributes_without_counts(self, sqs.camelcase_to_underscores)
        return generic_attributes.fget(self)

    def leaning(method):
        def run(*args, **kwargs):
            lean[0] += 1
            try:
                return method(*args, **kwargs)
            finally:
                lean[0] -= 1

        return run

    def backend_for_host(self, host):
        known = self.__dict__.setdefault("_eventfold_backends", {})
        if host not in known:
            known[host] = generic_backend_for_host(self, host)
        return known[host]

    responses.DynamoResult.execute_result = execute_result
    Table.query = query
    sqs.Queue.attributes = property(attributes)
    sqs.SQSBackend.send_message = leaning(generic_send)
    sqs.SQSBackend.receive_message = leaning(generic_receive)
    DomainDispatcherApplication.get_backend_for_host = backend_for_host
    Item.project = project
    DynamoType.size = lambda self: _size(self.type, self.value)
    models.DynamoDBBackend.transact_write_items = transact_write_items

    def uninstall():
        responses.DynamoResult.execute_result = generic_result
        Item.project = generic_project
        Table.query = generic_query
        sqs.Queue.attributes = generic_attributes
        sqs.SQSBackend.send_message = generic_send
        sqs.SQSBackend.receive_message = generic_receive
        DomainDispatcherApplication.get_backend_for_host = generic_backend_for_host
        DynamoType.size = generic_size
        models.DynamoDBBackend.transact_write_items = generic_transact

    return uninstall


class _KeepTables:
    """The `copy` module as `transact_write_items` sees it: a table "copies" to itself."""

    def __init__(self, real, table_type):
        self._real, self._table = real, table_type

    def deepcopy(self, value, *args):
        if isinstance(value, self._table):
            return value
        return self._real.deepcopy(value, *args)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _named_items(backend, transact_items):
    """A copy of every item the transaction names, by (table, hash, range) (`None`: absent);
    `None` when that is not a full backup (a table with a stream, a table or key that does not
    resolve: moto's own path then decides what happens)."""
    import copy

    from moto.dynamodb.models.dynamo_type import DynamoType

    saved = {}
    try:
        for entry in transact_items:
            _, op = next(iter(entry.items()))
            table = backend.tables[op["TableName"]]
            if table.stream_shard is not None:
                return None
            key = op["Item"] if "Item" in op else op["Key"]
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = None
            if table.range_key_attr is not None:
                range_value = DynamoType(key[table.range_key_attr])
            current = table.get_item(hash_value, range_value)
            saved.setdefault((table, hash_value, range_value), copy.deepcopy(current))
    except Exception:
        return None
    return saved


SQS_COUNTS = frozenset(
    {
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesDelayed",
        "ApproximateNumberOfMessagesNotVisible",
    }
)


def _attributes_without_counts(queue, attribute_of):
    """A queue's attributes as `GetQueueAttributes` shows them, less the message counts."""
    names = [name for name in queue.BASE_ATTRIBUTES if name not in SQS_COUNTS]
    if queue.fifo_queue:
        names += queue.FIFO_ATTRIBUTES
    if queue.kms_master_key_id:
        names += queue.KMS_ATTRIBUTES
    result = {name: getattr(queue, attribute_of(name)) for name in names}
    if queue.policy:
        result["Policy"] = queue.policy
    if queue.redrive_policy:
        result["RedrivePolicy"] = json.dumps(queue.redrive_policy)
    return {k: str(v).lower() if isinstance(v, bool) else v for k, v in result.items()}


def _unsorted(table):
    """Every item of the table, unsorted."""
    if not table.range_key_attr:
        return list(table.items.values())
    return [item for partition in table.items.values() for item in partition.values()]


def _partition(table, hash_key):
    """The items of one partition, in `Table.all_items`'s order (by hash, then range key)."""
    if hash_key not in table.items:  # `items` is a defaultdict: `in` does not add the key
        return []
    partition = table.items[hash_key]
    if not table.range_key_attr:
        return [partition]
    return sorted(partition.values(), key=lambda item: item.range_key)


def _restore(table, hash_value, range_value, item):
    if range_value is not None:
        if item is None:
            table.items[hash_value].pop(range_value, None)
        else:
            table.items[hash_value][range_value] = item
    elif item is None:
        table.items.pop(hash_value, None)
    else:
        table.items[hash_value] = item


def _size(kind, value):
    """DynamoDB's size of a value of type `kind`, as moto counts it (`DynamoType.size`)."""
    if kind == "N":
        return len(str(value))
    if kind in ("SS", "NS", "BS"):
        return sum(_size(kind[0], v) for v in value)
    if kind == "L":
        return sum(_element_size(v) for v in value)
    if kind == "M":
        return sum(len(k.encode("utf-8")) + _element_size(v) for k, v in value.items())
    if isinstance(value, bool):
        return 1
    return len(value if isinstance(value, bytes) else value.encode("utf-8"))


def _element_size(value):
    # List elements are `DynamoType`s, map values wire-form dicts.
    if isinstance(value, dict):
        ((kind, inner),) = value.items()
        return _size(kind, inner)
    return _size(value.type, value.value)


def _raw(attrs):
    # `Item(attrs=...)` takes wire-form values and wraps them in `DynamoType` itself.
    return {k: v.to_json() for k, v in attrs.items()}


def _requests(ddb):
    """Answers to a fixed set of requests against a fresh table, in order."""
    ddb.create_table(
        TableName="t",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
    )
    answers = []
    for i in range(40):
        item = {
            "pk": {"S": f"p{i % 7}"},
            "sk": {"N": str(i)},
            "n": {"N": "1.50"},
            "b": {"B": bytes([0, i, 255])},
            "l": {"L": [{"S": "x" * i}, {"NULL": True}, {"BOOL": i % 2 == 0}]},
            "m": {"M": {"ss": {"SS": ["p"]}, "ns": {"NS": ["1"]}, "bs": {"BS": [b"\x02"]}}},
        }
        answers.append(ddb.put_item(TableName="t", Item=item, ReturnValues="ALL_OLD"))
    key = {"pk": {"S": "p1"}, "sk": {"N": "8"}}
    answers.append(ddb.get_item(TableName="t", Key=key))
    answers.append(ddb.get_item(TableName="t", Key=key, ProjectionExpression="b, #l", ExpressionAttributeNames={"#l": "l"}))
    answers.append(ddb.get_item(TableName="t", Key=key, ProjectionExpression="m.ss, l[0]"))
    answers.append(ddb.get_item(TableName="t", Key={"pk": {"S": "none"}, "sk": {"N": "0"}}))
    kw = {}
    while True:
        page = ddb.scan(TableName="t", Limit=6, ProjectionExpression="pk, sk, m", **kw)
        answers.append(page)
        if "LastEvaluatedKey" not in page:
            break
        kw = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    answers.append(ddb.scan(TableName="t", Select="COUNT"))
    answers.append(ddb.query(TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p3"}}, ScanIndexForward=False))
    # Queries on the table's key read one partition: pages, ranges, filters, projections,
    # counts, an absent partition; a table with a hash key only; an index (moto's own path).
    kw = {}
    while True:
        page = ddb.query(TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p4"}}, Limit=2, **kw)
        answers.append(page)
        if "LastEvaluatedKey" not in page:
            break
        kw = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    between = {":p": {"S": "p5"}, ":a": {"N": "5"}, ":b": {"N": "26"}}
    answers.append(ddb.query(TableName="t", KeyConditionExpression="pk = :p AND sk BETWEEN :a AND :b", ExpressionAttributeValues=between))
    answers.append(ddb.query(TableName="t", KeyConditionExpression="pk = :p AND sk > :a", FilterExpression="sk < :b", ProjectionExpression="sk, l", ExpressionAttributeValues=between, ScanIndexForward=False))
    answers.append(ddb.query(TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p6"}}, Select="COUNT"))
    answers.append(ddb.query(TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "nope"}}))
    ddb.create_table(
        TableName="h",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    for i in range(9):
        ddb.put_item(TableName="h", Item={"id": {"S": f"i{i}"}, "g": {"S": f"g{i % 2}"}, "v": {"N": str(i)}})
    for id_ in ("i3", "i9"):
        answers.append(ddb.query(TableName="h", KeyConditionExpression="id = :i", ExpressionAttributeValues={":i": {"S": id_}}))
    answers.append(ddb.query(TableName="h", IndexName="by-g", KeyConditionExpression="g = :g", ExpressionAttributeValues={":g": {"S": "g1"}}))
    kw = {}
    while True:
        page = ddb.query(TableName="h", IndexName="by-g", KeyConditionExpression="g = :g", ExpressionAttributeValues={":g": {"S": "g0"}}, Limit=2, ScanIndexForward=False, **kw)
        answers.append(page)
        if "LastEvaluatedKey" not in page:
            break
        kw = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    answers.append(ddb.batch_get_item(RequestItems={"t": {"Keys": [key, {"pk": {"S": "p2"}, "sk": {"N": "9"}}], "ProjectionExpression": "sk, b"}}))
    answers.append(ddb.update_item(TableName="t", Key=key, UpdateExpression="SET n = :v", ExpressionAttributeValues={":v": {"N": "2"}}, ReturnValues="ALL_NEW"))
    answers.append(ddb.delete_item(TableName="t", Key=key, ReturnValues="ALL_OLD"))
    answers.append(ddb.transact_get_items(TransactItems=[{"Get": {"TableName": "t", "Key": {"pk": {"S": "p2"}, "sk": {"N": "9"}}}}]))
    # Transactions: one that lands, one whose last condition fails after a put, an update and
    # a delete (all rolled back, a new item included), one refused as malformed.
    k = lambda p, n: {"pk": {"S": p}, "sk": {"N": str(n)}}
    ok = [
        {"Put": {"TableName": "t", "Item": {**k("tx", 1), "v": {"N": "1"}}, "ConditionExpression": "attribute_not_exists(pk)"}},
        {"Update": {"TableName": "t", "Key": k("p2", 9), "UpdateExpression": "ADD c :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}},
    ]
    answers.append(ddb.transact_write_items(TransactItems=ok))
    failing = [
        {"Put": {"TableName": "t", "Item": {**k("tx", 2), "v": {"N": "2"}}}},
        {"Update": {"TableName": "t", "Key": k("tx", 1), "UpdateExpression": "SET v = :v", "ExpressionAttributeValues": {":v": {"N": "9"}}}},
        {"Delete": {"TableName": "t", "Key": k("p2", 9)}},
        {"ConditionCheck": {"TableName": "t", "Key": k("p3", 3), "ConditionExpression": "attribute_not_exists(pk)"}},
    ]
    for items in (failing, ok + ok[:1]):
        try:
            ddb.transact_write_items(TransactItems=items)
            answers.append("landed")
        except ddb.exceptions.ClientError as e:
            answers.append((e.response["Error"]["Code"], e.response.get("CancellationReasons")))
    for key_ in (k("tx", 1), k("tx", 2), k("p2", 9), k("p3", 3)):
        answers.append(ddb.get_item(TableName="t", Key=key_))
    for a in answers:
        if isinstance(a, dict):
            a.pop("ResponseMetadata", None)
    # Item sizes decide where a page ends (1 MB) and what the item limit refuses (400 KB).
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends["123456789012"]["us-east-1"].get_table("t")
    answers.append(sorted(item.size() for item in table.all_items()))
    return answers


VARYING = frozenset(
    {
        "MessageId",
        "ReceiptHandle",
        "SequenceNumber",
        "SentTimestamp",
        "ApproximateFirstReceiveTimestamp",
        "CreatedTimestamp",
        "LastModifiedTimestamp",
        "ResponseMetadata",
        "RequestId",
    }
)


def _steady(answer):
    """An answer less what differs from run to run (ids, handles, timestamps)."""
    if isinstance(answer, dict):
        return {k: _steady(v) for k, v in answer.items() if k not in VARYING}
    if isinstance(answer, list):
        return [_steady(v) for v in answer]
    return answer


def _sqs_requests(sqs):
    """Answers to sends and receives on FIFO queues (content-based and explicit
    deduplication) and a standard queue, and their attribute maps, counts included."""
    answers = []

    def attempt(call, **kwargs):
        try:
            answers.append(_steady(call(**kwargs)))
        except sqs.exceptions.ClientError as e:
            answers.append((e.response["Error"]["Code"], e.response["Error"]["Message"]))

    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "true", "VisibilityTimeout": "30"}
    cb = sqs.create_queue(QueueName="cb.fifo", Attributes=fifo)["QueueUrl"]
    explicit = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    ex = sqs.create_queue(QueueName="ex.fifo", Attributes=explicit)["QueueUrl"]
    std = sqs.create_queue(QueueName="std", Attributes={"MessageRetentionPeriod": "60", "DelaySeconds": "0"})["QueueUrl"]
    for body, group in (("a", "g1"), ("b", "g2"), ("a", "g1"), ("c", "g1")):
        attempt(sqs.send_message, QueueUrl=cb, MessageBody=body, MessageGroupId=group)
    for body, dedup in (("x", "d1"), ("y", "d2"), ("x2", "d1")):
        attempt(sqs.send_message, QueueUrl=ex, MessageBody=body, MessageGroupId="g", MessageDeduplicationId=dedup)
    attempt(sqs.send_message, QueueUrl=ex, MessageBody="no group")
    attempt(sqs.send_message, QueueUrl=ex, MessageBody="no dedup", MessageGroupId="g")
    batch = [{"Id": str(i), "MessageBody": f"m{i}", "MessageGroupId": f"b{i % 2}"} for i in range(4)]
    attempt(sqs.send_message_batch, QueueUrl=cb, Entries=batch)
    for i in range(3):
        attempt(sqs.send_message, QueueUrl=std, MessageBody=f"s{i}")
    for url in (cb, ex, std):
        attempt(sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=3, AttributeNames=["All"])
        answers.append(_steady(sorted(received.get("Messages", []), key=lambda m: m["Body"])))
        attempt(sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "MessageRetentionPeriod"])
        for m in received.get("Messages", [])[:1]:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        attempt(sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
    return answers


def _hosts():
    """The backend moto's server picks for a set of hosts, twice each."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = DomainDispatcherApplication(create_backend_app)
    hosts = ["dynamodb.us-east-1.amazonaws.com", "sqs.eu-west-1.amazonaws.com", "sns.us-east-1.amazonaws.com", "kms.us-east-1.amazonaws.com", "moto_api", None, "localhost"]
    return [str(app.get_backend_for_host(h)) for h in hosts + hosts]


def check():
    """Fails unless the patched moto answers every request of `_requests` as stock moto does."""
    import boto3
    from moto import mock_aws

    def run():
        with mock_aws():
            answers = _requests(boto3.client("dynamodb", region_name="us-east-1"))
            answers += _sqs_requests(boto3.client("sqs", region_name="us-east-1"))
        return answers + _hosts()

    stock = run()
    uninstall = install()
    try:
        fast = run()
    finally:
        uninstall()
    differ = [i for i, (a, b) in enumerate(zip(stock, fast)) if a != b]
    if len(stock) != len(fast) or differ:
        for i in differ:
            print(f"request {i}: stock {stock[i]!r}\n  fast {fast[i]!r}", file=sys.stderr)
        sys.exit(f"moto_speed: {len(differ)} of {len(stock)} answers differ")
    print(f"moto_speed: {len(stock)} answers, all the same with and without the speed-ups")


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        check()
    else:
        sys.exit("usage: moto_speed.py --check")
