"""The approval web as a browser meets it before any page: the requests every browser makes itself."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_the_favicon_request_is_answered_without_an_error() -> None:
    # a 404 for /favicon.ico shows as an error in the console of every page a person opens
    from web.app import create_app

    answer = TestClient(create_app()).get("/favicon.ico")
    assert answer.status_code == 204 and answer.content == b""
