"""How `call_graphql` reports a Labelbox host it cannot reach (no network, no emulator)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import requests
from lbox import exceptions as lbx

from labelhaul.errors import LabelboxUnreachableError, TransientError
from labelhaul.export import call_graphql
from labelhaul.retry import RetryPolicy

_CLIENT = SimpleNamespace(endpoint="http://127.0.0.1:9/graphql", headers={})
_REFUSED = (
    "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /graphql "
    "(Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=9): Failed to "
    'establish a new connection: [Errno 111] Connection refused"))'
)
_UNRESOLVED = (
    "HTTPConnectionPool(host='nosuchhost.invalid', port=80): Max retries exceeded with url: "
    "/graphql (Caused by NameResolutionError(\"HTTPConnection(host='nosuchhost.invalid', "
    "port=80): Failed to resolve 'nosuchhost.invalid' ([Errno -2] Name or service not "
    'known)"))'
)
_RESET = "('Connection aborted.', RemoteDisconnected('Remote end closed connection'))"


def _fail(message: str) -> Any:
    def call() -> None:
        # As the SDK raises it: the requests error, whose text the NetworkError repeats.
        raise lbx.NetworkError(requests.exceptions.ConnectionError(message))

    return call


def _call(message: str) -> None:
    call_graphql(
        _fail(message),
        _CLIENT,
        what="open project p1",
        policy=RetryPolicy(retries=2, base_s=0.0, cap_s=0.0),
        sleep=lambda _s: None,
    )


@pytest.mark.parametrize(
    ("message", "cause"),
    [(_REFUSED, "(Connection refused)"), (_UNRESOLVED, "(Name or service not known)")],
)
def test_an_unreachable_host_is_named_once_with_its_cause(message: str, cause: str) -> None:
    with pytest.raises(LabelboxUnreachableError) as raised:
        _call(message)
    text = str(raised.value)
    assert text.startswith("Cannot reach Labelbox at http://127.0.0.1:9/graphql to open project")
    assert f"after 3 attempts {cause}: check LABELBOX_ENDPOINT" in text
    # The SDK's text carries urllib3's chain twice; the message carries neither copy.
    assert "HTTPConnectionPool" not in text and "caused by" not in text.lower()


def test_a_dropped_connection_is_transient_but_not_unreachable() -> None:
    with pytest.raises(TransientError) as raised:
        _call(_RESET)
    assert not isinstance(raised.value, LabelboxUnreachableError)
    assert "Connection aborted." in str(raised.value)
    assert str(raised.value).count("RemoteDisconnected") == 1
