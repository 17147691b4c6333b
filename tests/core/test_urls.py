"""Where a service may be told to send: https only, http only on loopback in development,
never a user, a query or a fragment (DESIGN.md §6 "Closed by default")."""

from __future__ import annotations

import pytest

from semops.core.errors import E, SemopsError
from semops.core.urls import check_endpoint_url, is_loopback_host


@pytest.mark.parametrize(
    "url",
    [
        "https://bank-a.example:8501",
        "https://bank-a.example/scheme",
        "https://127.0.0.1:8501",
        "https://[2001:db8::1]:443/base",
    ],
)
def test_https_endpoints_are_allowed(url: str) -> None:
    assert check_endpoint_url(url) == url


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8600/v1/notices", "http://localhost:9000", "http://[::1]:80/hook"],
)
def test_plain_http_only_on_loopback_in_development(url: str) -> None:
    assert check_endpoint_url(url, development=True) == url
    with pytest.raises(SemopsError) as refused:
        check_endpoint_url(url)
    assert refused.value.spec is E.URL_NOT_ALLOWED


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/v1/notices",  # plain http elsewhere, even in development
        "http://169.254.169.254/latest/meta-data",
        "https://bank-a.example:8501/?x=",  # a query swallows the path the caller appends
        "https://bank-a.example/#frag",
        "https://user:secret@bank-a.example/",
        "https://@bank-a.example/",
        "ftp://bank-a.example/",
        "file:///etc/passwd",
        "https://",
        "https://bank a.example/",
        "https://bank-a.example/\n",
        "https://bank-a.example:0/",
        "https://bank-a.example:99999/",
        "https://bänk.example/",
        "",
        "https://a.example/" + "x" * 600,
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(SemopsError) as refused:
        check_endpoint_url(url, development=True)
    assert refused.value.spec is E.URL_NOT_ALLOWED


def test_loopback_hosts() -> None:
    assert is_loopback_host("127.0.0.2")
    assert is_loopback_host("::1")
    assert is_loopback_host("LOCALHOST")
    assert not is_loopback_host("10.0.0.1")
    assert not is_loopback_host("localhost.example")
