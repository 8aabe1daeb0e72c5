#!/usr/bin/env python3
"""Serve moto's AWS emulator one request at a time.

Stock `moto_server` handles requests on threads with no lock, so a conditional PutItem or
UpdateItem can have two winners. DynamoDB is linearizable per item; our tests depend on that.
This launcher keeps werkzeug's threaded HTTP/1.1 server (keep-alive for the SDK) but runs the
WSGI application under one global lock and drains the response body inside it, so every
request sees every earlier request complete.

Prints `READY <port>` on stdout once listening. With --watch-stdin it exits when stdin closes,
so a parent that dies (a test binary, `eventfold local`) never leaves an orphan behind.

With --tls-cert and --tls-key it also serves the same emulator over HTTPS on --tls-port
(printed first as `READY_TLS <port>`): `eventfold-bench cold-start` measures what a TLS
handshake costs a function's first request, as it would in AWS.

Every request also passes [`Limits`]: the AWS quotas moto 5.2.5 does not enforce itself are
refused here, with the error AWS answers, so a request that would fail after a deploy fails
locally too, whoever sends it (a function through the IAM proxy, a test, the CLI). What moto
already refuses is left to moto; docs/limits.md has the table.

`moto_cbor` serves the Smithy RPC v2 CBOR protocol the Rust SDK's CloudWatch client speaks.
`moto_speed` removes three per-item costs of moto's DynamoDB that change no answer (checked by
`moto_speed.py --check`): a whole-table `Scan` of 30,000 commits went from 97 s to 21 s.
"""

import argparse
import base64
import io
import json
import os
import sys
import threading
import uuid
from urllib.parse import parse_qsl

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

import moto_cbor
import moto_speed


class QuietHandler(MotoRequestHandler):
    """moto's request handler without werkzeug's line per request: the launcher discards the
    emulator's stderr, and writing it took a tenth of the emulator's time under load. Errors
    are still logged."""

    def log_request(self, code="-", size="-"):
        pass


class Serialized:
    """WSGI middleware: one request inside the emulator at a time."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            captured = {}

            def capture(status, headers, exc_info=None):
                captured["args"] = (status, headers, exc_info)
                return lambda _chunk: None  # moto never uses the legacy write()

            result = self.app(environ, capture)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        status, headers, exc_info = captured["args"]
        start_response(status, headers, exc_info)
        return [body]


KIB = 1024
# SQS: a message (body and attributes) and a batch request together, since August 2025.
SQS_MAX_MESSAGE = 1024 * KIB
# SNS: a message (body and attributes), and a PublishBatch request's messages together.
SNS_MAX_MESSAGE = 256 * KIB
# DynamoDB: partition and sort key values, the items of one TransactWriteItems, and the
# requests of one BatchWriteItem.
DDB_MAX_HASH_KEY = 2048
DDB_MAX_RANGE_KEY = 1024
DDB_MAX_TRANSACTION = 4 * KIB * KIB
DDB_MAX_BATCH_WRITE = 25
BATCH_ENTRIES = 10


def utf8(text):
    return len(text.encode("utf-8"))


def number_size(text):
    """DynamoDB's size of a number: 1 byte per two significant digits, plus 1."""
    digits = text.lstrip("-+").replace(".", "").split("e")[0].split("E")[0].strip("0")
    return (len(digits) + 1) // 2 + 1


def value_size(value):
    """The size DynamoDB counts for one attribute value (its documented item-size rules)."""
    (kind, v), = value.items()
    if kind == "S":
        return utf8(v)
    if kind == "N":
        return number_size(v)
    if kind == "B":
        return len(base64.b64decode(v))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(utf8(x) for x in v)
    if kind == "NS":
        return sum(number_size(x) for x in v)
    if kind == "BS":
        return sum(len(base64.b64decode(x)) for x in v)
    if kind == "L":
        return 3 + sum(1 + value_size(x) for x in v)
    if kind == "M":
        return 3 + sum(1 + utf8(k) + value_size(x) for k, x in v.items())
    return 0


def item_size(item):
    return sum(utf8(name) + value_size(value) for name, value in (item or {}).items())


def key_value_size(value):
    (kind, v), = value.items()
    return len(base64.b64decode(v)) if kind == "B" else utf8(str(v))


class Limits:
    """WSGI middleware: refuses what AWS refuses and moto 5.2.5 lets through, with AWS's
    error (code, message, HTTP status, protocol shape), so every SDK parses it as AWS's.

    Checked (moto checks the rest of each quota itself; see docs/limits.md):
    - DynamoDB: key value sizes on GetItem, DeleteItem, BatchGetItem, TransactGetItems and
      BatchWriteItem deletes (moto checks them on writes only); TransactWriteItems over 4 MB;
      BatchWriteItem over 25 requests.
    - SQS (JSON protocol): a message's body and attributes together over 1 MiB, counted in
      UTF-8 bytes (moto counts body characters); a SendMessageBatch the same; more than 10
      entries in DeleteMessageBatch and ChangeMessageVisibilityBatch.
    - SNS: a message's body and attributes together over 256 KiB (moto counts the body); a
      PublishBatch's messages together over 256 KiB.
    SQS requests in the older query protocol (form-encoded) pass unchecked: no client of ours
    sends them (the Rust SDK and boto3 speak JSON to SQS).
    """

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        refusal = None
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        auth = environ.get("HTTP_AUTHORIZATION", "")
        service, _, operation = target.partition(".")
        form = "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", "")
        # A body without a length (chunked) is left to moto unread: reading it here would
        # take it from moto.
        sized = bool(environ.get("CONTENT_LENGTH"))
        if sized and (service in ("DynamoDB_20120810", "AmazonSQS") or (form and "/sns/" in auth)):
            body = self.body(environ)
            try:
                if service == "DynamoDB_20120810":
                    refusal = self.dynamodb(operation, json.loads(body), auth)
                elif service == "AmazonSQS":
                    refusal = self.sqs(operation, json.loads(body))
                else:
                    refusal = self.sns(dict(parse_qsl(body.decode("utf-8"))))
            except (ValueError, KeyError, TypeError, AttributeError):
                refusal = None  # a request we cannot read is moto's to refuse
        if refusal is None:
            return self.app(environ, start_response)
        status, headers, payload = refusal
        headers = headers + [
            ("x-amzn-requestid", str(uuid.uuid4())),
            ("Content-Length", str(len(payload))),
        ]
        start_response(status, headers)
        return [payload]

    @staticmethod
    def body(environ):
        """Reads the request body and puts it back for moto."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        return body

    # DynamoDB

    @staticmethod
    def ddb_error(message):
        payload = json.dumps(
            {"__type": "com.amazonaws.dynamodb.v20120810#ValidationException", "message": message}
        ).encode()
        return "400 Bad Request", [("Content-Type", "application/x-amz-json-1.0")], payload

    @staticmethod
    def key_schema(auth, table):
        """(hash attribute, range attribute) of `table`, from moto's own backend."""
        from moto.dynamodb.models import dynamodb_backends

        region = auth.split("Credential=", 1)[-1].split("/")[2] if "Credential=" in auth else ""
        for account in list(dynamodb_backends.keys()):
            backend = dynamodb_backends[account].get(region)
            found = backend.tables.get(table) if backend is not None else None
            if found is not None:
                return found.hash_key_attr, found.range_key_attr
        return None, None

    def key_refusal(self, auth, table, key):
        hash_attr, range_attr = self.key_schema(auth, table)
        if hash_attr in key and key_value_size(key[hash_attr]) > DDB_MAX_HASH_KEY:
            return self.ddb_error(
                "One or more parameter values were invalid: Size of hashkey has exceeded "
                f"the maximum size limit of{DDB_MAX_HASH_KEY} bytes"
            )
        if range_attr in key and key_value_size(key[range_attr]) > DDB_MAX_RANGE_KEY:
            return self.ddb_error(
                "One or more parameter values were invalid: Aggregated size of all range keys "
                f"has exceeded the size limit of {DDB_MAX_RANGE_KEY} bytes"
            )
        return None

    def dynamodb(self, operation, request, auth):
        keys = []  # (table, key) pairs whose sizes moto does not check
        if operation in ("GetItem", "DeleteItem"):
            keys.append((request["TableName"], request["Key"]))
        elif operation == "BatchGetItem":
            for table, wanted in request["RequestItems"].items():
                keys.extend((table, key) for key in wanted.get("Keys", []))
        elif operation == "TransactGetItems":
            keys.extend((t["Get"]["TableName"], t["Get"]["Key"]) for t in request["TransactItems"])
        elif operation == "BatchWriteItem":
            writes = [w for ws in request["RequestItems"].values() for w in ws]
            if len(writes) > DDB_MAX_BATCH_WRITE:
                return self.ddb_error("Too many items requested for the BatchWriteItem call")
            for table, ws in request["RequestItems"].items():
                keys.extend((table, w["DeleteRequest"]["Key"]) for w in ws if "DeleteRequest" in w)
        elif operation == "TransactWriteItems":
            # The items' aggregate size: what each action writes or names (an Update counts
            # its key and the values it sets; the stored item it changes is not read here).
            total = 0
            for action in request["TransactItems"]:
                (kind, spec), = action.items()
                total += item_size(spec.get("Item") or spec.get("Key"))
                total += sum(value_size(v) for v in (spec.get("ExpressionAttributeValues") or {}).values())
            if total > DDB_MAX_TRANSACTION:
                return self.ddb_error(
                    "Transaction request cannot be larger than 4 MB"
                )
        for table, key in keys:
            refusal = self.key_refusal(auth, table, key)
            if refusal is not None:
                return refusal
        return None

    # SQS (JSON protocol; the Rust SDK and current boto3 speak it)

    @staticmethod
    def sqs_error(shape, query_code, message):
        payload = json.dumps(
            {"__type": f"com.amazonaws.sqs#{shape}", "message": message, "Message": message}
        ).encode()
        headers = [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("x-amzn-query-error", f"{query_code};Sender"),
        ]
        return "400 Bad Request", headers, payload

    @staticmethod
    def sqs_size(entry):
        """Body plus every part of every attribute (name, type, value), in bytes; the
        AWSTraceHeader system attribute does not count."""
        size = utf8(entry.get("MessageBody", ""))
        for name, attr in (entry.get("MessageAttributes") or {}).items():
            size += utf8(name) + utf8(attr.get("DataType", ""))
            if "StringValue" in attr:
                size += utf8(attr["StringValue"])
            if "BinaryValue" in attr:
                size += len(base64.b64decode(attr["BinaryValue"]))
        return size

    def sqs(self, operation, request):
        if operation == "SendMessage":
            if self.sqs_size(request) > SQS_MAX_MESSAGE:
                return self.sqs_error(
                    "InvalidParameterValue",
                    "InvalidParameterValue",
                    "One or more parameters are invalid. Reason: Message must be shorter "
                    f"than {SQS_MAX_MESSAGE} bytes.",
                )
        elif operation == "SendMessageBatch":
            total = sum(self.sqs_size(e) for e in request.get("Entries", []))
            if len(request.get("Entries", [])) <= BATCH_ENTRIES and total > SQS_MAX_MESSAGE:
                return self.sqs_error(
                    "BatchRequestTooLong",
                    "AWS.SimpleQueueService.BatchRequestTooLong",
                    f"Batch requests cannot be longer than {SQS_MAX_MESSAGE} bytes. "
                    f"You have sent {total} bytes.",
                )
        elif operation in ("DeleteMessageBatch", "ChangeMessageVisibilityBatch"):
            count = len(request.get("Entries", []))
            if count > BATCH_ENTRIES:
                return self.sqs_error(
                    "TooManyEntriesInBatchRequest",
                    "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                    f"Maximum number of entries per request are {BATCH_ENTRIES}. "
                    f"You have sent {count}.",
                )
        return None

    # SNS (query protocol)

    @staticmethod
    def sns_error(code, message):
        payload = (
            '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error>'
            f"<Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        ).encode()
        return "400 Bad Request", [("Content-Type", "text/xml")], payload

    @staticmethod
    def sns_size(form, prefix):
        """Message plus every part of every attribute (name, type, value), in bytes."""
        size = utf8(form.get(f"{prefix}Message", ""))
        attrs = f"{prefix}MessageAttributes.entry."
        for name, value in form.items():
            if not name.startswith(attrs):
                continue
            part = name[len(attrs):].split(".", 1)[-1]
            if part in ("Name", "Value.DataType", "Value.StringValue"):
                size += utf8(value)
            elif part == "Value.BinaryValue":
                size += len(base64.b64decode(value))
        return size

    def sns(self, form):
        action = form.get("Action")
        if action == "Publish" and self.sns_size(form, "") > SNS_MAX_MESSAGE:
            return self.sns_error("InvalidParameter", "Invalid parameter: Message too long")
        if action == "PublishBatch":
            members = {
                k.split(".")[2]
                for k in form
                if k.startswith("PublishBatchRequestEntries.member.")
            }
            if len(members) > BATCH_ENTRIES:
                return None  # moto refuses it (TooManyEntriesInBatchRequest)
            total = sum(
                self.sns_size(form, f"PublishBatchRequestEntries.member.{m}.") for m in members
            )
            if total > SNS_MAX_MESSAGE:
                return self.sns_error(
                    "BatchRequestTooLong",
                    "The length of all the messages put together is more than the limit.",
                )
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566, help="0 picks a free port")
    parser.add_argument("--watch-stdin", action="store_true")
    parser.add_argument("--tls-port", type=int, default=0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()

    moto_speed.install()
    app = Serialized(moto_cbor.RpcV2Cbor(Limits(DomainDispatcherApplication(create_backend_app))))
    if args.tls_cert and args.tls_key:
        # One app (one lock, one set of backends) behind both listeners.
        tls = make_server(
            args.host,
            args.tls_port,
            app,
            threaded=True,
            request_handler=QuietHandler,
            ssl_context=(args.tls_cert, args.tls_key),
        )
        print(f"READY_TLS {tls.server_port}", flush=True)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
    server = make_server(
        args.host,
        args.port,
        app,
        threaded=True,
        request_handler=QuietHandler,
    )
    os.environ.setdefault("MOTO_PORT", str(server.server_port))
    print(f"READY {server.server_port}", flush=True)

    if args.watch_stdin:
        def watch():
            while sys.stdin.buffer.read(4096):
                pass
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()

    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
