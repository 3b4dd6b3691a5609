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


# Ids as preprocess lets them through (it rejects ids holding the file formats' separators).
AWKWARD_IDS = ["x" * 200, "$x$ and $5", "<b>bold</b> & co", 'say "hi"', "Zürich – ü", "semi;colon",
               "with  two  spaces", "back\\slash", "#hash?q=1", "plain"]


def _awkward_run(root):
    """A hand-made run whose content ids are all awkward (long, TeX-like, HTML, quotes...)."""
    import json

    from test_run_fixtures import write_model, write_preproc
    n = len(AWKWARD_IDS)
    write_preproc(str(root), nusers=8, nitems=n)
    (root / "preproc" / "transform_fn" / "assets" / "vocab_items").write_text(
        "".join(i + "\n" for i in AWKWARD_IDS), encoding="utf-8")
    write_model(str(root), nusers=8, nitems=n)
    predictions, cooc = root / "predictions", root / "cooc"
    predictions.mkdir()
    cooc.mkdir()
    (predictions / "popular_items.txt").write_text(
        "".join(f"{i}\t{n - r}\n" for r, i in enumerate(AWKWARD_IDS)), encoding="utf-8")
    lists = {i: [j for j in AWKWARD_IDS if j != i][:4] for i in AWKWARD_IDS}
    for folder, name in ((predictions, "similar_items"), (cooc, "pmi_similar_items")):
        (folder / f"{name}-00000-of-00001").write_text(
            "".join(f"{i}\t{','.join(js)}\n" for i, js in lists.items()), encoding="utf-8")
        (folder / f"{name}_scores-00000-of-00001.jsonl").write_text("".join(
            json.dumps({"id": i, "ids": js, "scores": [1.0 - 0.1 * r for r in range(len(js))]},
                       ensure_ascii=False) + "\n" for i, js in lists.items()), encoding="utf-8")
    (predictions / "batch_pred-00000-of-00001").write_text(
        "".join(f"visitor{u}\t{','.join(AWKWARD_IDS[u:u + 3])}\n" for u in range(3)),
        encoding="utf-8")


@pytest.mark.parametrize("width", WIDTHS)
def test_awkward_ids_show_exactly_and_lay_out_cleanly(tmp_path, width):
    import html

    from pipeline import report
    _awkward_run(tmp_path / "run")
    report.write_report(str(tmp_path / "run"))
    for name in PAGES:
        page = tmp_path / "run" / name
        text = page.read_text(encoding="utf-8")
        for item in AWKWARD_IDS:  # every id reads back exactly, escaped once, never as markup
            assert html.escape(item) in text, (name, item)
        assert "<b>bold" not in text
        found = browser.check_layout(str(page), width, str(tmp_path))
        print(f"screenshot: {browser.screenshot(str(page), width, found['height'], str(tmp_path / f'{name}-{width}.png'), str(tmp_path))}")
        assert found["scrollWidth"] <= found["viewport"] and found["overflow"] == [], found["overflow"][:5]
        assert found["overlaps"] == [] and found["outside"] == [], (found["overlaps"], found["outside"])
