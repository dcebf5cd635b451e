"""The proxy's one-pass response head equals the step-by-step rules (end_to_end, then
build_connect_response) for any origin fields, Connection headers included."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nbtunnel.connector.proxy import response_head
from nbtunnel.core.http1 import end_to_end
from nbtunnel.core.httpmeta import build_connect_response

NAMES = st.sampled_from(["Content-Type", "Content-Length", "Connection", "connection",
                         "Keep-Alive", "Transfer-Encoding", "X-Private", "Upgrade", "Date",
                         "TE", "x-private", "Server"])
VALUES = st.sampled_from(["1", "close", "keep-alive", "X-Private, Date", " x-private ,te",
                          "text/plain", ""]) | st.text(max_size=8)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.integers(100, 999), st.lists(st.tuples(NAMES | st.text(max_size=6), VALUES),
                                        max_size=8))
def test_one_pass_response_head_matches_the_rules(status: int,
                                                  headers: list[tuple[str, str]]) -> None:
    assert response_head(status, headers) == build_connect_response(status, end_to_end(headers))
