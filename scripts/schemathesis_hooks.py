"""Schemathesis hooks of `scripts/contract`: the schema-valid requests the API may refuse.

A schema says which requests are well formed, not which state they meet. Two refusals of
schema-valid data depend on state no schema can state, and only these are accepted from
the `positive_data_acceptance` check (ST202); every other refusal of valid data still fails:

- 400 `invalid-cursor` on a request that carries a `cursor`: a cursor is opaque and valid
  only when this API issued it for this query (the stateful phase follows real `next`
  cursors through the links of infra/openapi.yaml);
- 422 on `POST /commands` when the aggregate's current state refuses the command (`rejected`
  with a rule of the aggregate's state: an order that does not exist yet, stock that is not
  there, a payment not pending, an overflow of a line), or the `Idempotency-Key` was used
  before with another body (`idempotency-key-reused`). A rejection of the input itself
  (`<field>-invalid`, `<field>-required`, `...-must-be-...`, `...-too-long`) is what the
  schema does say (patterns, lengths, minimums), so it is never accepted here;
- 400 `invalid-request` on `POST /publish` for `data` DynamoDB cannot store (a number
  outside its range, nesting past 24 levels, an empty object key): the schema states the
  limit in words (`data` is any JSON a DynamoDB item can hold) but JSON Schema cannot
  express it for arbitrary JSON;
- 400 `out-of-range` on `POST /consume/commit`: an offset past the partition's head
  depends on what was published, not on the request's shape.

One input is bounded: a consume's `wait_ms` is capped at 200 ms in generated cases, since a
long poll on an empty topic holds each request up to 20 s (the long poll itself is tested
in tests/it/streaming.rs).
"""

import json
import re

import schemathesis

PROBLEMS = "https://eventfold.dev/problems/"
# Rules that judge the input alone: the schema states them, so a refusal is a mismatch.
INPUT_RULE = re.compile(r"(-invalid|-required|-too-long)$|-must-be-|-must-not-be-")


def _problem(response):
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _state_dependent(case, response):
    problem = _problem(response)
    kind = problem.get("type", "")
    if response.status_code == 400 and kind == PROBLEMS + "invalid-cursor":
        return "cursor" in (case.query or {})
    if response.status_code == 400 and kind == PROBLEMS + "invalid-request":
        detail = problem.get("detail", "")
        storable = "storable" in detail or "nest" in detail or "key is empty" in detail
        return case.method.upper() == "POST" and case.path.endswith("/publish") and storable
    if response.status_code == 400 and kind == PROBLEMS + "out-of-range":
        return case.method.upper() == "POST" and case.path.endswith("/consume/commit")
    if response.status_code == 422 and case.method.upper() == "POST":
        if kind == PROBLEMS + "idempotency-key-reused":
            return True
        if kind == PROBLEMS + "rejected":
            rule = problem.get("rule", "")
            return bool(rule) and not INPUT_RULE.search(rule)
    return False


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure but a positive-data refusal that depends on state (see above)."""
    if getattr(failure, "code", None) == "ST202" and _state_dependent(case, response):
        return False
    return True


@schemathesis.hook
def map_case(context, case):
    """In the stateful phase, let commands start streams: a drawn `expected_version` almost
    never matches (409), so a command there goes without one and the links from its answer
    to the stream's state and history have a stream to read. The other phases send it."""
    query = case.query if isinstance(case.query, dict) else None
    if case.path.endswith("/consume") and query and isinstance(query.get("wait_ms"), int):
        query["wait_ms"] = min(query["wait_ms"], 200)
    meta = case.meta
    if (
        meta is not None
        and meta.phase.name == "stateful"
        and meta.generation.mode.is_positive
        and case.method.upper() == "POST"
        and isinstance(case.body, dict)
    ):
        case.body.pop("expected_version", None)
    return case
