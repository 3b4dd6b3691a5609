"""report.html and similar_items.html of a real run (every stage, DirectRunner, the bundled GA
sample), opened in headless Chromium at a desktop and a narrow width: nothing overflows the page,
no two chart labels overlap or leave their chart, every image loads. Screenshots of each page are
written under pytest's tmp folder (not committed) and their paths printed (pytest -s shows them).

Skipped, with the reason, where Chromium is not installed (Debian: apt-get install chromium).
"""
import os
import subprocess
import sys

import pytest

import browser

pytestmark = pytest.mark.skipif(not browser.CHROMIUM, reason=browser.MISSING)

WIDTHS = (1280, 520)  # desktop, and about the narrowest window headless Chromium opens
PAGES = ("report.html", "similar_items.html")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser_run") / "output"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.run", "--output_dir", str(out),
         "--stages", "preprocess,cooc,tune,train,predict", "--tune_trials", "3",
         "--tune_max_epochs", "3", "--epochs", "4"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", PAGES)
def test_page_lays_out_cleanly_in_chromium(run_dir, name, width, tmp_path):
    page = str(run_dir / name)
    found = browser.check_layout(page, width, str(tmp_path))
    shot = browser.screenshot(page, width, found["height"], str(tmp_path / f"{name}-{width}.png"),
                              str(tmp_path))
    print(f"screenshot: {shot}")
    assert os.path.getsize(shot) > 10_000
    assert found["scrollWidth"] <= found["viewport"], found["overflow"][:10]
    assert found["overflow"] == []
    assert found["overlaps"] == [] and found["outside"] == []
    assert all(image["ok"] for image in found["images"]), found["images"]
    if name == "report.html":  # loss, ratings, held-out NDCG, tuning, PCA; the PCA's raster
        assert found["svgs"] == 5 and len(found["images"]) >= 1


def test_the_check_finds_overflow_overlapping_labels_and_broken_images(tmp_path):
    """The same check on a page made to fail it: it must report each fault."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body>"
        f"<table><tr><td>{'x' * 400}</td></tr></table>"
        '<svg width="300" height="100"><text x="10" y="50">label-one</text>'
        '<text x="20" y="52">label-two</text><text x="290" y="50">outside</text></svg>'
        '<img alt="broken" src="data:image/png;base64,AAAA">'
        "</body></html>")
    found = browser.check_layout(str(bad), 800, str(tmp_path))
    assert found["scrollWidth"] > found["viewport"] and any("xxxx" in e for e in found["overflow"])
    assert found["overlaps"] == ["label-one / label-two"]
    assert found["outside"] == ["outside"]
    assert [image["ok"] for image in found["images"]] == [False]
