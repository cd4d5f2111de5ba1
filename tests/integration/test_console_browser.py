"""The console in a real browser (Debian's chromium driven by Playwright).

Log in, upload a document, find it by search, see it in history, diff two versions,
roll back, and watch a standby's status page move to the new commit; no page may log a
console error (a CSP violation is one). Under CI=true a missing browser fails the test.

Set KBGIT_SCREENSHOTS=DIR to save a screenshot of each page there (docs/img/ in the repo).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from kbgit import KnowledgeStore
from kbgit.config import StoreSpec

from ..serve_helpers import TOKEN, get, start_server, wait_until

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _playwright():
    """Return sync_playwright, or fail (CI) / skip (elsewhere) when the browser is missing."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package (pip install -e '.[test]')")
        sync_playwright = None
    if not os.access(CHROMIUM, os.X_OK):
        missing.append("chromium (bash scripts/system-deps.sh)")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return sync_playwright


@pytest.fixture
def fleet(store: KnowledgeStore, docs: Path, hub: Path, tmp_path: Path):
    """A primary (with the standby as its peer) and a standby following the hub."""
    store.ingest(docs)
    standby = start_server(
        StoreSpec("default", str(tmp_path / "replica"), hub=str(hub)), interval=0.3
    )
    primary = start_server(StoreSpec("default", str(store.root)), peers=(standby.url,))
    for srv in (primary, standby):
        wait_until(lambda srv=srv: get(f"{srv.url}/ready").status_code == 200, timeout=30)
    yield primary, standby
    primary.stop()
    standby.stop()


def _shot(page, name: str) -> None:
    out = os.environ.get("KBGIT_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"console-{name}.png"), full_page=False)


def test_console_end_to_end(fleet, store: KnowledgeStore, tmp_path: Path) -> None:
    primary, standby = fleet
    sync_playwright = _playwright()
    errors: list[str] = []
    v1 = tmp_path / "espresso.md"
    v1.write_text("# Espresso\n\nThe espresso machine descales every Friday at noon.\n")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 720})
        page.on(
            "console",
            lambda m: errors.append(f"{m.text} at {m.location}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        ui = f"{primary.url}/ui"

        page.goto(f"{ui}/login")
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        assert page.locator("text=log out").count() == 1

        page.goto(f"{ui}/documents")
        page.set_input_files("input[name=files]", str(v1))
        page.click("form[enctype] button[type=submit]")
        flash = page.inner_text(".flash-ok")
        first = re.search(r"commit ([0-9a-f]{12})", flash).group(1)
        assert "1 added" in flash
        _shot(page, "documents")

        page.goto(f"{ui}/search?q=espresso+descales&k=3")
        hit = page.locator("li.hit").first
        assert ".uploads/espresso.md" in hit.inner_text()
        assert hit.locator("mark").count() >= 1
        _shot(page, "search")

        v1.write_text("# Espresso\n\nThe espresso machine descales every Monday at nine.\n")
        page.goto(f"{ui}/documents")
        page.set_input_files("input[name=files]", str(v1))
        page.click("form[enctype] button[type=submit]")
        assert "1 updated" in page.inner_text(".flash-ok")

        page.goto(f"{ui}/history")
        rows = page.locator("table.timeline tbody tr")
        assert rows.count() == 3
        assert "kbgit upload" in rows.nth(1).inner_text() and first in rows.nth(1).inner_text()
        _shot(page, "history")
        page.click("text=Diff selected versions")  # defaults: the newest two versions
        assert ".uploads/espresso.md" in page.inner_text("section.filediff h3")
        assert "Monday" in page.inner_text(".l-add") and "Friday" in page.inner_text(".l-del")
        _shot(page, "diff")

        page.goto(f"{ui}/history")
        page.locator("table.timeline tbody tr").nth(2).locator("text=roll back here").click()
        assert ".uploads/espresso.md" in page.inner_text("li.del")
        _shot(page, "rollback")
        page.check("input[name=confirm]")
        page.click("form.danger button[type=submit]")
        assert "rolled back" in page.inner_text(".flash-ok")
        head = store.repo.head()
        assert head is not None
        assert ".uploads/espresso.md" not in get(f"{primary.url}/documents").text

        def standby_serves_head() -> bool:
            page.goto(f"{standby.url}/ui/status")
            return head[:12] in page.inner_text("table.grid td.commit")

        wait_until(standby_serves_head, timeout=30, step=0.5)
        page.goto(f"{ui}/status")
        fleet_row = page.locator("table.fleet tbody tr").first
        assert head[:12] in fleet_row.inner_text() and "standby" in fleet_row.inner_text()
        _shot(page, "status")
        browser.close()
    assert errors == []
