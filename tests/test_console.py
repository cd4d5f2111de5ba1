"""The web console over HTTP on real servers: pages, login, CSRF, headers, prefix, fleet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from kbgit import KnowledgeStore
from kbgit.config import StoreSpec
from kbgit.history.documents import document_diff, last_changes

from .serve_helpers import TOKEN, get, start_server, wait_until

PAGES = ["/ui/search?q=keys", "/ui/documents", "/ui/documents/keys.md", "/ui/history",
         "/ui/diff?b=HEAD", "/ui/status", "/ui/login"]  # fmt: skip


@pytest.fixture
def primary(store: KnowledgeStore, docs: Path):
    """A primary server over an ingested store."""
    store.ingest(docs)
    srv = start_server(StoreSpec("default", str(store.root)), peers=("http://127.0.0.1:9",))
    wait_until(lambda: get(f"{srv.url}/ready").status_code == 200)
    yield srv
    srv.stop()


def csrf_token(session: requests.Session, url: str) -> str:
    """Open a console form and return its CSRF token (the session keeps the cookie)."""
    html = session.get(url, timeout=10).text
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def login(session: requests.Session, base: str, token: str = TOKEN) -> requests.Response:
    """Log in through the form, as a browser does."""
    csrf = csrf_token(session, f"{base}/ui/login")
    return session.post(
        f"{base}/ui/login",
        data={"csrf_token": csrf, "token": token, "next": "/ui/documents"},
        allow_redirects=False,
        timeout=10,
    )


def test_every_page_renders_with_security_headers(primary) -> None:
    for path in PAGES:
        resp = get(primary.url + path)
        assert resp.status_code == 200, (path, resp.text[:300])
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "<script" not in resp.text  # the console works without JavaScript


def test_search_highlights_and_answers_any_revision(primary, store, tmp_path) -> None:
    first = store.repo.head()
    (tmp_path / "docs" / "new.md").write_text("Espresso descaling happens on Fridays.\n")
    store.ingest(tmp_path / "docs")
    wait_until(lambda: get(f"{primary.url}/health").json()["head"]["commit"] == store.repo.head())
    now = get(f"{primary.url}/ui/search", params={"q": "espresso descaling", "k": 1}).text
    assert "new.md" in now and "<mark>Espresso</mark>" in now
    old = get(f"{primary.url}/ui/search", params={"q": "espresso", "k": 5, "rev": first}).text
    assert "new.md" not in old and first[:12] in old
    bad = get(f"{primary.url}/ui/search", params={"q": "x", "rev": "no-such-rev"})
    assert bad.status_code == 400 and "no-such-rev" in bad.text
    assert get(f"{primary.url}/ui/search", params={"q": "x", "k": "0"}).status_code == 400
    none = get(f"{primary.url}/ui/search", params={"q": "espresso", "min_score": "2"}).text
    assert "No hits." in none
    for mode in ("dense", "lexical", "hybrid"):
        page = get(f"{primary.url}/ui/search", params={"q": "espresso", "mode": mode, "k": 1})
        assert page.status_code == 200 and "new.md" in page.text
        assert f"<option selected>{mode}</option>" in page.text
    lexical_old = get(
        f"{primary.url}/ui/search", params={"q": "espresso", "mode": "lexical", "rev": first}
    )
    assert lexical_old.status_code == 200 and "new.md" not in lexical_old.text
    assert get(f"{primary.url}/ui/search", params={"q": "x", "mode": "fuzzy"}).status_code == 400
    bad_score = get(f"{primary.url}/ui/search", params={"q": "x", "min_score": "nan"})
    assert bad_score.status_code == 400 and "min score" in bad_score.text


def test_writes_need_csrf_and_login(primary, store) -> None:
    before = store.repo.head()
    files = {"files": ("x.md", b"hello\n")}
    anon = requests.Session()
    no_csrf = anon.post(f"{primary.url}/ui/documents/upload", files=files, timeout=10)
    assert no_csrf.status_code == 400 and "CSRF" in no_csrf.text
    csrf = csrf_token(anon, f"{primary.url}/ui/login")
    not_logged_in = anon.post(
        f"{primary.url}/ui/documents/upload", data={"csrf_token": csrf}, files=files, timeout=10
    )
    assert not_logged_in.status_code == 403
    assert get(f"{primary.url}/ui/rollback/HEAD~1").status_code == 403
    assert store.repo.head() == before


def test_login_session_upload_and_rollback(primary, store) -> None:
    browser = requests.Session()
    wrong = login(browser, primary.url, "wrong")
    assert wrong.status_code == 401 and "wrong token" in wrong.text
    ok = login(browser, primary.url)
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/ui/documents")
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    before = store.repo.head()
    csrf = csrf_token(browser, f"{primary.url}/ui/documents")
    resp = browser.post(
        f"{primary.url}/ui/documents/upload",
        data={"csrf_token": csrf, "folder": "notes"},
        files=[
            ("files", ("tea.md", b"Green tea steeps for two minutes.\n")),
            ("files", ("big.txt", b"A long page about coffee beans. " * 4000)),  # > max_body
        ],
        timeout=60,
    )
    assert resp.status_code == 200 and "2 added" in resp.text
    assert ".uploads/notes/tea.md" in get(f"{primary.url}/documents").text
    preview = browser.get(f"{primary.url}/ui/rollback/{before}", timeout=10)
    assert preview.status_code == 200 and ".uploads/notes/tea.md" in preview.text
    assert store.repo.head() != before  # a preview changes nothing
    csrf = csrf_token(browser, f"{primary.url}/ui/rollback/{before}")
    unconfirmed = browser.post(
        f"{primary.url}/ui/rollback/{before}",
        data={"csrf_token": csrf, "target": before},
        timeout=30,
    )
    assert unconfirmed.status_code == 400
    done = browser.post(
        f"{primary.url}/ui/rollback/{before}",
        data={"csrf_token": csrf, "target": before, "confirm": "yes"},
        timeout=30,
    )
    assert done.status_code == 200 and "rolled back" in done.text
    assert ".uploads/notes/tea.md" not in get(f"{primary.url}/documents").text
    logout_csrf = csrf_token(browser, f"{primary.url}/ui/history")
    browser.post(f"{primary.url}/ui/logout", data={"csrf_token": logout_csrf}, timeout=10)
    assert "log out" not in browser.get(f"{primary.url}/ui/history", timeout=10).text


def test_session_cookie_is_secure_behind_tls(primary) -> None:
    browser = requests.Session()
    csrf = csrf_token(browser, f"{primary.url}/ui/login")
    resp = browser.post(
        f"{primary.url}/ui/login",
        data={"csrf_token": csrf, "token": TOKEN},
        # over HTTPS Flask-WTF also checks that the form came from this site (Referer)
        headers={
            "X-Forwarded-Proto": "https",
            "Referer": primary.url.replace("http:", "https:") + "/ui/login",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 302 and "Secure" in resp.headers["Set-Cookie"]


def test_login_never_redirects_off_site(primary) -> None:
    browser = requests.Session()
    csrf = csrf_token(browser, f"{primary.url}/ui/login")
    resp = browser.post(
        f"{primary.url}/ui/login",
        data={"csrf_token": csrf, "token": TOKEN, "next": "https://evil.example/"},
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 302 and resp.headers["Location"] == "/ui/search"


def test_private_console_needs_login(store, docs) -> None:
    store.ingest(docs)
    srv = start_server(StoreSpec("default", str(store.root)), ui_public=False)
    try:
        wait_until(lambda: get(f"{srv.url}/ready").status_code == 200)
        resp = get(f"{srv.url}/ui/history", allow_redirects=False)
        assert resp.status_code == 302 and "/ui/login" in resp.headers["Location"]
        assert get(f"{srv.url}/ui/login").status_code == 200
        browser = requests.Session()
        assert login(browser, srv.url).status_code == 302
        assert browser.get(f"{srv.url}/ui/history", timeout=10).status_code == 200
    finally:
        srv.stop()


def test_links_carry_a_forwarded_prefix(primary) -> None:
    page = get(f"{primary.url}/ui/history", headers={"X-Forwarded-Prefix": "/kb"}).text
    assert 'href="/kb/ui/static/console.css"' in page
    assert 'href="/kb/ui/documents?store=default"' in page


def test_status_shows_a_down_peer(primary) -> None:
    page = get(f"{primary.url}/ui/status").text
    assert "http://127.0.0.1:9" in page and "down" in page


def test_standby_console_is_read_only(primary, store, hub, tmp_path) -> None:
    standby = start_server(StoreSpec("default", str(tmp_path / "replica"), hub=str(hub)))
    try:
        wait_until(lambda: get(f"{standby.url}/ready").status_code == 200)
        browser = requests.Session()
        assert login(browser, standby.url).status_code == 302
        page = browser.get(f"{standby.url}/ui/documents", timeout=10).text
        assert 'type="file"' not in page and "standby" in page
        csrf = csrf_token(browser, f"{standby.url}/ui/documents")
        resp = browser.post(
            f"{standby.url}/ui/documents/upload",
            data={"csrf_token": csrf},
            files={"files": ("x.md", b"x\n")},
            timeout=10,
        )
        assert resp.status_code == 409
    finally:
        standby.stop()


def test_document_diff_and_last_change(store: KnowledgeStore, docs: Path) -> None:
    first = store.ingest(docs).commit
    (docs / "keys.md").write_text("# Rotating keys\n\nRotate API keys every thirty days.\n")
    second = store.ingest(docs).commit
    assert first and second
    lines = document_diff(store.repo, first, second, "keys.md")
    assert any(line.startswith("+") and "thirty" in line for line in lines)
    assert any(line.startswith("-") and "ninety" in line for line in lines)
    assert last_changes(store.repo, second, ["keys.md", "backup.txt"]) == {
        "keys.md": second,
        "backup.txt": first,
    }
