"""The report of a real run, opened in headless Chromium: loads cleanly, every section shows.

Needs Debian's ``chromium`` package. Skipped when it is absent, except in CI (``CI=true``),
where its absence is a failure. Set ``GOVML_REPORT_SCREENSHOT=docs/img/report.png`` to
refresh the screenshot in the docs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from govml.governance.report import SECTION_IDS, render_report

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]
_CONSOLE = re.compile(r":CONSOLE[:(]")


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") == "true":
        pytest.fail(
            "chromium is not installed: `apt-get install -y chromium` (the Makefile does this)"
        )
    pytest.skip(
        "chromium is not installed (apt-get install -y chromium); CI=true makes this a failure"
    )


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_report_loads_in_headless_chromium(
    chromium: str, report_inputs: tuple[dict[str, Any], dict[str, Path]], tmp_path: Path
) -> None:
    record, plots = report_inputs
    page = tmp_path / "report.html"
    page.write_text(render_report(record, plots=plots), encoding="utf-8")
    url = page.as_uri()

    dom = _chromium(chromium, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if _CONSOLE.search(line)]
    assert console == [], "console messages while loading the report:\n" + "\n".join(console)
    assert f"<title>Governance report: {record['pipeline']}" in dom.stdout
    for section in SECTION_IDS:
        assert f'<section id="{section}"' in dom.stdout, section
    assert dom.stdout.count("<img ") == len(plots)

    shot = tmp_path / "report.png"
    taken = _chromium(
        chromium,
        tmp_path / "profile-shot",
        "--hide-scrollbars",
        "--window-size=1280,2200",
        f"--screenshot={shot}",
        url,
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    target = os.environ.get("GOVML_REPORT_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
