"""Signing parameters out of data row URLs, and who hosts the media."""

from __future__ import annotations

import pytest

from labelhaul.urls import hosting_of, is_signed, strip_signing

LB = "https://storage.labelbox.com/cjhfn5y6s0pk507024nz1ocys%2F1d60856c-59b7-3060-2754.jpg"


@pytest.mark.parametrize(
    ("url", "bare"),
    [
        (f"{LB}?Expires=1717000000&KeyName=labelbox-assets-key-3&Signature=abc_-=", LB),
        (
            "https://b.s3.amazonaws.com/a/b.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AK%2F2024&X-Amz-Date=20240101T000000Z&X-Amz-Expires=60"
            "&X-Amz-SignedHeaders=host&X-Amz-Signature=ff",
            "https://b.s3.amazonaws.com/a/b.png",
        ),
        (
            "https://storage.googleapis.com/b/o.png?x-goog-algorithm=GOOG4-RSA-SHA256"
            "&x-goog-credential=x&x-goog-date=20240101T000000Z&x-goog-expires=900"
            "&x-goog-signedheaders=host&x-goog-signature=aa",
            "https://storage.googleapis.com/b/o.png",
        ),
        (
            "https://storage.googleapis.com/b/o.png?GoogleAccessId=a@b&Expires=1&Signature=s",
            "https://storage.googleapis.com/b/o.png",
        ),
        (
            "https://acct.blob.core.windows.net/c/o.png?sv=2022-11-02&ss=b&srt=o&sp=r"
            "&se=2024-01-02T00:00:00Z&st=2024-01-01T00:00:00Z&spr=https&sig=abc%3D",
            "https://acct.blob.core.windows.net/c/o.png",
        ),
        # Parameters that are not signing stay, in order.
        ("https://h/x.png?v=2&X-Amz-Signature=ff&size=large", "https://h/x.png?v=2&size=large"),
        # Without a SAS signature, `sp`/`sv` are just parameters.
        ("https://h/x.png?sv=1&sp=2", None),
        ("https://storage.googleapis.com/labelbox-datasets/a.jpeg", None),
        ("plain text row data ?Signature=1", None),
    ],
)
def test_strip_signing(url: str, bare: str | None) -> None:
    assert strip_signing(url) == (url if bare is None else bare)
    assert is_signed(url) == (bare is not None)
    assert strip_signing(strip_signing(url)) == strip_signing(url)


def test_hosting_of() -> None:
    assert hosting_of(f"{LB}?Expires=1&KeyName=k&Signature=s") == "labelbox"
    assert hosting_of("https://b.s3.amazonaws.com/a.png") == "user"
    assert hosting_of("gs://bucket/a.png") == "user"
    assert hosting_of("https://evil-labelbox.com.example/a.png") == "user"
    assert hosting_of("Some text data row") == "inline"
    assert hosting_of(None) is None
