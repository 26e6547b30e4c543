"""S3 throttling (503 SlowDown) is transient: waited out with backoff, never "unusable".

Through `bench.harness.FaultProxy` in front of moto's server: a burst of SlowDown answers
to every request, then a steady 45 % of requests throttled.
"""

from __future__ import annotations

import pytest

from bench.harness import FaultProxy
from labelhaul.errors import StoreThrottledError, StoreUnavailableError, is_terminal
from labelhaul.storage import _translate, open_object_store


def test_a_slowdown_burst_when_the_store_opens_is_waited_out(
    moto_server: str, s3_bucket: str
) -> None:
    # Today the probe tried twice and called the bucket "not usable" (terminal, no retry).
    with FaultProxy(moto_server, faults=("503",), burst=5) as proxy:
        objects = open_object_store(f"s3://{s3_bucket}/p", endpoint_url=proxy.url)
        objects.put("k", b"v")
        assert objects.get("k") == b"v"
        assert proxy.counts.faults == {"503": 5}


def test_45_percent_slowdown_loses_no_write(moto_server: str, s3_bucket: str) -> None:
    with FaultProxy(moto_server, rate=0.45, faults=("503",), seed=13) as proxy:
        objects = open_object_store(f"s3://{s3_bucket}/p", endpoint_url=proxy.url)
        # Adaptive retries back off for real (the point of them): 32 requests keep it short.
        for n in range(16):
            objects.put(f"obj/{n}", b"x" * n, if_none_match=True)
        for n in range(16):
            assert objects.get(f"obj/{n}") == b"x" * n
        assert proxy.counts.faults["503"] >= 6


def test_a_bucket_is_unusable_only_on_403_404_or_no_such_bucket(moto_server: str) -> None:
    from botocore.exceptions import ClientError

    def err(status: int, code: str) -> ClientError:
        return ClientError(
            {
                "Error": {"Code": code, "Message": "m"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "PutObject",
        )

    for status, code in ((503, "SlowDown"), (500, "InternalError"), (429, "TooManyRequests")):
        translated = _translate(err(status, code), "s3://b/k")
        assert isinstance(translated, StoreThrottledError), (status, code)
        assert not is_terminal(translated)
    for status, code in ((403, "AccessDenied"), (404, "NoSuchBucket")):
        translated = _translate(err(status, code), "s3://b/k")
        assert isinstance(translated, StoreUnavailableError), (status, code)
        assert is_terminal(translated)
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        open_object_store("s3://no-such-bucket-here/p", endpoint_url=moto_server)
