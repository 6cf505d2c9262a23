"""The approval web as a browser meets it before any page: the requests every browser makes itself."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_the_favicon_request_is_answered_without_an_error() -> None:
    # a 404 for /favicon.ico shows as an error in the console of every page a person opens
    from web.app import create_app

    answer = TestClient(create_app()).get("/favicon.ico")
    assert answer.status_code == 204 and answer.content == b""


def test_the_sites_own_links_in_an_approvals_text_are_links_and_the_rest_stays_escaped(monkeypatch) -> None:
    """A customer on a phone opens the signing page from the plan's approval page by tapping it."""
    from models.settings import get_settings
    from web.pages import links

    monkeypatch.setenv("AFTERCARE_PUBLIC_BASE_URL", "https://service.example.com")
    get_settings.cache_clear()
    try:
        text = (
            "签字页面：https://service.example.com/reports/sign/abc.DEF-1_2\n"
            '<script>alert(1)</script> 外部 https://evil.example.net/x "q"'
        )
        html = str(links(text))
    finally:
        get_settings.cache_clear()
    assert (
        '<a href="https://service.example.com/reports/sign/abc.DEF-1_2">'
        "https://service.example.com/reports/sign/abc.DEF-1_2</a>"
    ) in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert (
        "evil.example.net/x" in html and 'href="https://evil' not in html
    )  # another site's address stays text
    assert "&#34;q&#34;" in html and "签字页面：" in html
