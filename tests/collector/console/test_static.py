"""The vendored chart library is the recorded release, and the console serves its files
from the installed package."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import httpx

from tollmeter.collector.console._static import STATIC_FILES, static_file

STATIC = resources.files("tollmeter.collector.console") / "static"


def recorded_digests() -> dict[str, str]:
    readme = (STATIC / "README.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\| (\S+) \| ([0-9a-f]{64}) \|$", readme, re.MULTILINE))


def test_vendored_files_match_the_recorded_digests() -> None:
    digests = recorded_digests()
    assert set(digests) == {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"}
    for file_name, digest in digests.items():
        assert hashlib.sha256((STATIC / file_name).read_bytes()).hexdigest() == digest, file_name
    assert "1.6.32" in (STATIC / "README.md").read_text(encoding="utf-8")
    assert "MIT License" in (STATIC / "uPlot.LICENSE").read_text(encoding="utf-8")


def test_static_files_are_served_as_shipped(collector) -> None:
    for file_name, content_type in STATIC_FILES.items():
        response = httpx.get(f"{collector.management_url}/console/static/{file_name}", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"] == content_type
        assert response.content == static_file(file_name)
        assert response.content == (STATIC / file_name).read_bytes()
    for missing in ["README.md", "uPlot.LICENSE", "..%2F_pages.py", "nothing.js"]:
        response = httpx.get(f"{collector.management_url}/console/static/{missing}", timeout=10)
        assert response.status_code == 404
