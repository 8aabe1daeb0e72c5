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
"""

import argparse
import os
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566, help="0 picks a free port")
    parser.add_argument("--watch-stdin", action="store_true")
    parser.add_argument("--tls-port", type=int, default=0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()

    app = Serialized(DomainDispatcherApplication(create_backend_app))
    if args.tls_cert and args.tls_key:
        # One app (one lock, one set of backends) behind both listeners.
        tls = make_server(
            args.host,
            args.tls_port,
            app,
            threaded=True,
            request_handler=MotoRequestHandler,
            ssl_context=(args.tls_cert, args.tls_key),
        )
        print(f"READY_TLS {tls.server_port}", flush=True)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
    server = make_server(
        args.host,
        args.port,
        app,
        threaded=True,
        request_handler=MotoRequestHandler,
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
