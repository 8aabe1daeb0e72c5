"""Measures the console's overview against a stack of N orders (default 10,000): seeds the
events table (3 commits per order) and the read-models table (one order-summary document per
order, applied) straight through boto3, then loads the overview in headless Chromium through
chromedriver and prints its page weight and paint timings.

Not part of the test suite (it takes minutes); run it by hand against a running console:

    .venv/bin/python tests/browser/measure_overview.py ENDPOINT STACK CONSOLE_URL [N]

with ENDPOINT the emulator of the stack named STACK (provisioned by `eventfold local`), and
CONSOLE_URL an `eventfold console --stack STACK --endpoint ENDPOINT` serving it.
"""

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime, timezone

import boto3


def now():
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def table(ddb, stack, logical):
    names = [n for n in ddb.list_tables()["TableNames"] if n.startswith(f"{stack}-{logical}")]
    assert names, f"no {logical} table for stack {stack}"
    return names[0]


def commit(stream, version, etype, data, corr):
    event = {"event_id": {"S": str(uuid.uuid4())}, "type": {"S": etype}, "schema_version": {"N": "1"},
             "data": {"M": data}, "occurred_at": {"S": now()}}
    return {"stream_id": {"S": stream}, "version": {"N": str(version)}, "count": {"N": "1"},
            "events": {"L": [{"M": event}]},
            "metadata": {"M": {"tenant": {"S": "perf"}, "actor": {"S": "seed"},
                               "correlation_id": {"S": corr}, "causation_id": {"S": corr},
                               "command_id": {"S": str(uuid.uuid4())}}},
            "committed_at": {"S": now()}}


def seed(endpoint, stack, n):
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    events, models = table(ddb, stack, "EventsTable"), table(ddb, stack, "ReadModelsTable")
    batch = []

    def put(name, item):
        batch.append((name, item))
        if len(batch) == 25:
            flush()

    def flush():
        by = {}
        for name, item in batch:
            by.setdefault(name, []).append({"PutRequest": {"Item": item}})
        pending = by
        while pending:
            pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        batch.clear()

    started = time.time()
    for i in range(n):
        oid = f"o-{i}"
        stream, corr = f"perf/Order-{oid}", str(uuid.uuid4())
        put(events, commit(stream, 1, "OrderCreated", {"customer_id": {"S": "c-1"}}, corr))
        put(events, commit(stream, 2, "ItemAdded", {"sku": {"S": "book"}, "quantity": {"N": "1"},
                                                     "unit_price": {"N": "1250"}}, corr))
        put(events, commit(stream, 3, "OrderPlaced", {"payment_method": {"S": "card"}}, corr))
        put(models, {"pk": {"S": "perf#order-summary"}, "sk": {"S": oid}, "checkpoint": {"N": "3"},
                     "data": {"M": {"order_id": {"S": oid}, "status": {"S": "Placed"}}}})
    flush()
    print(f"seeded {n} orders in {time.time() - started:.0f} s", flush=True)


def webdriver(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())["value"]


def measure(console_url):
    port = 9517
    driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]}}}}
        session = webdriver(port, "POST", "/session", caps)["sessionId"]
        script = """const n = performance.getEntriesByType('navigation')[0];
            const r = performance.getEntriesByType('resource');
            const p = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint');
            return {html_bytes: n.transferSize, total_bytes: n.transferSize + r.reduce((s, e) => s + e.transferSize, 0),
                    requests: 1 + r.length, first_byte_ms: n.responseStart, fcp_ms: p ? p.startTime : null,
                    dom_content_loaded_ms: n.domContentLoadedEventEnd, load_ms: n.loadEventEnd,
                    snapshot: document.querySelector('main p.muted').textContent};"""
        for run in range(3):
            webdriver(port, "POST", f"/session/{session}/url", {"url": console_url + "/"})
            print(f"run {run}:", json.dumps(webdriver(port, "POST", f"/session/{session}/execute/sync",
                                                      {"script": script, "args": []})), flush=True)
        webdriver(port, "DELETE", f"/session/{session}")
    finally:
        driver.kill()


if __name__ == "__main__":
    endpoint, stack, console_url = sys.argv[1:4]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 10_000
    if n > 0:
        seed(endpoint, stack, n)
    measure(console_url)
