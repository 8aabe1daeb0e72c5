"""Smithy RPC v2 CBOR in front of moto, for the services whose AWS SDK for Rust speaks it.

The Rust SDK's CloudWatch client (`aws-sdk-cloudwatch` 1.x) sends every operation as
`POST /service/GraniteServiceVersion20100801/operation/{Operation}` with a CBOR body and
`smithy-protocol: rpc-v2-cbor`, which CloudWatch accepts and moto 5.2.5 does not (it serves
CloudWatch's JSON and query protocols on `/` and answers 404). This middleware turns such a
request into the same operation in the JSON protocol (`X-Amz-Target`), and moto's JSON answer
back into CBOR: timestamps as CBOR tag 1 (epoch seconds) where the operation's output shape
says timestamp, errors with their `__type`, as the protocol specifies. No other request is
touched.
"""

import base64
import datetime
import io
import json
import re

import cbor2

# Target prefix (the `service` path segment) -> botocore service name.
SERVICES = {"GraniteServiceVersion20100801": "cloudwatch"}

PATH = re.compile(r"^/service/([^/]+)/operation/([^/]+)$")


def _to_json(value):
    """A decoded CBOR request value as the JSON protocol sends it."""
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, cbor2.CBORTag) and value.tag == 1:
        return value.value
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def _to_cbor(value, shape):
    """A JSON answer's value as CBOR wants it, guided by its botocore `shape`."""
    if shape is None:
        return value
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {k: _to_cbor(v, shape.members.get(k)) for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [_to_cbor(v, shape.member) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _to_cbor(v, shape.value) for k, v in value.items()}
    if kind == "timestamp" and isinstance(value, (int, float)):
        return cbor2.CBORTag(1, float(value))
    if kind == "blob" and isinstance(value, str):
        return base64.b64decode(value)
    return value


class RpcV2Cbor:
    """WSGI middleware: RPC v2 CBOR requests of [`SERVICES`] served through moto's JSON."""

    def __init__(self, app):
        self.app = app
        self.models = {}

    def output_shape(self, service, operation):
        if service not in self.models:
            import botocore.session

            self.models[service] = botocore.session.get_session().get_service_model(service)
        try:
            return self.models[service].operation_model(operation).output_shape
        except Exception:
            return None

    def __call__(self, environ, start_response):
        match = PATH.match(environ.get("PATH_INFO", ""))
        if not match or match.group(1) not in SERVICES:
            return self.app(environ, start_response)
        prefix, operation = match.groups()
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        params = cbor2.loads(raw) if raw else {}
        body = json.dumps(_to_json(params)).encode("utf-8")
        environ = dict(environ)
        environ.update(
            {
                "PATH_INFO": "/",
                "CONTENT_TYPE": "application/x-amz-json-1.0",
                "CONTENT_LENGTH": str(len(body)),
                "HTTP_X_AMZ_TARGET": f"{prefix}.{operation}",
                "wsgi.input": io.BytesIO(body),
            }
        )
        environ.pop("HTTP_SMITHY_PROTOCOL", None)
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = status
            captured["headers"] = headers
            return lambda _data: None

        chunks = self.app(environ, capture)
        try:
            answer = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        status = captured.get("status", "500 Internal Server Error")
        try:
            doc = json.loads(answer) if answer.strip() else {}
        except ValueError:
            doc = {"__type": "InternalFailure", "message": answer.decode("utf-8", "replace")}
        if status.startswith("2"):
            doc = _to_cbor(doc, self.output_shape(SERVICES[prefix], operation))
        elif "__type" in doc:
            # The protocol's error code is the shape name, without a namespace.
            doc["__type"] = str(doc["__type"]).split("#")[-1]
        out = cbor2.dumps(doc)
        headers = [
            (k, v)
            for k, v in captured.get("headers", [])
            if k.lower() not in ("content-type", "content-length", "x-amz-crc32")
        ]
        headers += [
            ("Content-Type", "application/cbor"),
            ("Content-Length", str(len(out))),
            ("smithy-protocol", "rpc-v2-cbor"),
        ]
        start_response(status, headers)
        return [out]
