"""The API's JSON body decoder: only ApiError escapes it, and nesting is measured exactly."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbtunnel.edge.api_json import MAX_JSON_DEPTH, ApiError, json_depth, parse_body

FAST = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(alphabet='[]{}"\\k', max_size=4), inner, max_size=3),
    max_leaves=30)


def depth(doc: Any) -> int:
    if isinstance(doc, list):
        return 1 + max((depth(x) for x in doc), default=0)
    if isinstance(doc, dict):
        return 1 + max((depth(x) for x in doc.values()), default=0)
    return 0


@FAST
@given(documents)
def test_depth_ignores_brackets_in_strings(doc: Any) -> None:
    assert json_depth(json.dumps(doc).encode()) == depth(doc)


@FAST
@given(st.one_of(st.binary(max_size=300), documents.map(lambda d: json.dumps(d).encode()),
                 st.integers(0, 3000).map(lambda n: b"[" * n + b"]" * n),
                 st.integers(0, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n)))
def test_parse_body_raises_only_api_errors(body: bytes) -> None:
    try:
        parse_body(body)
    except ApiError as exc:
        assert exc.status in (400, 413)
        if json_depth(body) > MAX_JSON_DEPTH:
            assert "nested" in exc.message
