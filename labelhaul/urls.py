"""Stable data row URLs: signing parameters out, and where the media is hosted.

Labelbox re-signs Labelbox-hosted `row_data` on every export
(`https://storage.labelbox.com/...?Expires=<epoch>&KeyName=...&Signature=...`, valid about a
day), and users upload presigned URLs to their own buckets (`X-Amz-*`, `X-Goog-*`, Azure SAS).
A dataset keeps the URL without those parameters, so two exports of unchanged data give the
same rows and the stored URL never pretends to be a working signed link; the signed URL
stays in the version's raw export.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

LABELBOX_HOSTED = "labelbox"
USER_HOSTED = "user"
INLINE = "inline"

# Labelbox's CDN signing (Google Cloud CDN signed URLs) and GCS V2 signed URLs.
_SIGNING_NAMES = frozenset({"expires", "keyname", "signature", "googleaccessid"})
_SIGNING_PREFIXES = ("x-amz-", "x-goog-")
# Azure SAS tokens: only stripped when the URL carries a SAS signature (`sig`).
_AZURE_SAS = frozenset(
    {"sv", "ss", "srt", "sp", "se", "st", "spr", "sig", "sr", "si", "sdd"}
    | {"skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid"}
)


def _name(piece: str) -> str:
    return piece.split("=", 1)[0].lower()


def strip_signing(url: str) -> str:
    """Return `url` without its signing and expiry query parameters (others kept in order).

    Anything that is not an http(s) URL is returned unchanged.
    """
    # The scheme is in the first 8 characters: lowering a whole inline text (row data can be
    # megabytes of it) to look at them would copy it for nothing.
    if "?" not in url or not url[:8].lower().startswith(("http://", "https://")):
        return url
    parts = urlsplit(url)
    pieces = [p for p in parts.query.split("&") if p]
    names = {_name(p) for p in pieces}
    azure = "sig" in names

    def signing(piece: str) -> bool:
        name = _name(piece)
        return (
            name in _SIGNING_NAMES
            or name.startswith(_SIGNING_PREFIXES)
            or (azure and name in _AZURE_SAS)
        )

    kept = [p for p in pieces if not signing(p)]
    if len(kept) == len(pieces):
        return url
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(kept), parts.fragment))


def is_signed(url: str) -> bool:
    """Tell whether `url` carries signing parameters `strip_signing` would remove."""
    return strip_signing(url) != url


def hosting_of(row_data: str | None) -> str | None:
    """Return who hosts a data row's media: `labelbox`, `user` or `inline`.

    `user` is any other URL (the user's own bucket, delegated or presigned, or a public URL);
    `inline` is row data that is not a URL (text, conversation JSON); None when absent.
    """
    if row_data is None:
        return None
    if not row_data[:8].lower().startswith(("http://", "https://", "gs://", "s3://")):
        return INLINE
    host = (urlsplit(row_data).hostname or "").lower()
    if host == "labelbox.com" or host.endswith(".labelbox.com"):
        return LABELBOX_HOSTED
    return USER_HOSTED
