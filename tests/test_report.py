"""pipeline.report: summary text, report.html and similar_items.html built from (small,
hand-written) artifacts. tests/test_report_browser.py checks the pages' layout in Chromium."""
import json
import re

import numpy as np

from pipeline import report
from pipeline.report import figures, page, run_data
from test_run_fixtures import write_model, write_predictions, write_preproc, write_run


def _charts(html: str) -> list[str]:
    """The inline SVG charts, each checked to be a whole <svg> element."""
    charts = re.findall(r"<svg.*?</svg>", html, re.S)
    assert html.count("<svg") == len(charts)
    return charts


def test_full_run_report_is_self_contained_with_all_sections(tmp_path):
    write_run(str(tmp_path))
    path = report.write_report(str(tmp_path))
    assert path == f"{tmp_path}/report.html"
    page = (tmp_path / "report.html").read_text()
    charts = _charts(page)
    assert len(charts) == 3 and all("<text" in chart for chart in charts)  # text stays text
    for title in ("Training loss", "Rating distribution", "Item embeddings (PCA)",
                  "Held-out metrics", "Sample recommendations"):
        assert f"<h2>{title}</h2>" in page
    assert re.search(r"<td>ndcg@10</td><td>0.31</td><td>0.18</td>", page)
    assert "<th>wals</th><th>popularity</th>" in page
    assert "<td class=ids>visitor0</td><td class=ids>article3, article1</td>" in page
    # nothing is fetched when the page is opened: the only addresses are XML namespaces
    assert set(re.findall(r"https?://[^\"]*", page)) <= {"http://www.w3.org/2000/svg",
                                                          "http://www.w3.org/1999/xlink"}
    assert "<image" in page  # the PCA scatter is rasterised inside its SVG


def test_summary_has_counts_median_losses_metrics_paths_and_recommendations(tmp_path):
    ratings = write_preproc(str(tmp_path))
    write_model(str(tmp_path), losses=(3.5, 1.25, 0.75))
    write_predictions(str(tmp_path), ["visitor4\tarticle0,article2"])
    text = report.format_summary(report.collect_run(str(tmp_path)), {"train": 2.5})
    assert f"6 visitors x 5 content items, {len(ratings)} interactions" in text  # GA news words
    assert "2 rejected: {'invalid_json': 2}" in text
    assert "median raw value 31,000" in text
    assert "loss per epoch: 3.5 1.25 0.75" in text
    assert re.search(r"ndcg@10\s+0.31\s+0.18", text)
    assert f"predictions  {tmp_path}/predictions" in text and "train 2.5 s" in text
    assert "visitor4 -> article0,article2" in text
    assert "sample recommendations (visitor -> content items" in text
    assert f"{tmp_path}/cooc" not in text and "report.html" not in text  # only what exists


def test_preprocess_only_run_reports_what_exists(tmp_path):
    write_preproc(str(tmp_path))
    run = report.collect_run(str(tmp_path))
    assert run["model"] is None and run["recommendations"] == []
    page = tmp_path / "report.html"
    report.write_report(str(tmp_path), run)
    html = page.read_text()
    assert len(_charts(html)) == 1 and "<h2>Rating distribution</h2>" in html
    assert "Training loss" not in html
    artifacts = html[html.index("<h2>Artifacts</h2>"):]
    assert f"{tmp_path}/preproc" in artifacts and f"{tmp_path}/report.html" in artifacts
    for absent in ("model", "predictions", "cooc", "similar_items.html"):  # only what exists
        assert f"{tmp_path}/{absent}" not in artifacts


def test_summary_words_fit_the_source_and_list_only_existing_paths(tmp_path):
    """An interactions file says user/item; a preprocess-only run lists no model/predictions."""
    import json
    write_preproc(str(tmp_path))
    meta_path = tmp_path / "preproc" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "source": "interactions", "ga_preset": None}))
    text = report.format_summary(report.collect_run(str(tmp_path)))
    assert "6 users x 5 items" in text
    assert f"{tmp_path}/preproc" in text
    assert f"{tmp_path}/model" not in text and f"{tmp_path}/predictions" not in text
    assert report.entity_words({"source": "bigquery", "ga_preset": "ecommerce"}) == ("visitor", "product")


def test_rating_sample_reads_the_scaled_ratings_from_the_tfrecords(tmp_path):
    ratings = write_preproc(str(tmp_path))
    sample, users = run_data.sample_ratings(f"{tmp_path}/preproc")
    np.testing.assert_allclose(np.sort(sample), np.sort(list(ratings.values())), rtol=1e-6)
    assert users == 6
    few, users = run_data.sample_ratings(f"{tmp_path}/preproc", max_records=2)
    assert few.size < len(ratings) and users == 2


def test_pca_projects_on_the_two_leading_axes():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(200, 2)) * [5.0, 2.0]
    basis = np.linalg.qr(rng.normal(size=(6, 6)))[0][:2]     # an orthonormal 2-D plane in 6-D
    factors = plane @ basis + 3.0 + rng.normal(scale=1e-3, size=(200, 6))
    points = figures.pca_2d(factors)
    assert points.shape == (200, 2)
    np.testing.assert_allclose(points.mean(axis=0), 0, atol=1e-9)
    centred = factors - factors.mean(axis=0)
    # a plane's points keep (almost) all their spread, and the axes come out uncorrelated
    assert np.sum(points ** 2) / np.sum(centred ** 2) > 0.9999
    assert abs(np.corrcoef(points.T)[0, 1]) < 1e-6
    assert points[:, 0].var() > points[:, 1].var()


def test_cli_writes_the_report_and_refuses_a_missing_folder(tmp_path, capsys):
    write_run(str(tmp_path))
    assert report.main(["--output_dir", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert "sample recommendations" in capsys.readouterr().out
    assert report.main(["--output_dir", str(tmp_path / "nope")]) == 2


def _similar_run(tmp_path, scored=True):
    """popular b, a, z; WALS lists a and b (with scores or TAB only), PMI lists a and c."""
    (tmp_path / "predictions").mkdir()
    (tmp_path / "cooc").mkdir()
    (tmp_path / "predictions" / "popular_items.txt").write_text("b\t9\na\t5\nz\t1\n")
    (tmp_path / "predictions" / "similar_items-00000-of-00001").write_text("a\tb,c\nb\ta,c\n")
    if scored:
        (tmp_path / "predictions" / "similar_items_scores-00000-of-00001.jsonl").write_text(
            json.dumps({"id": "a", "ids": ["b", "c"], "scores": [0.9, 0.25]}) + "\n"
            + json.dumps({"id": "b", "ids": ["a", "c"], "scores": [0.9, 0.5]}) + "\n")
    (tmp_path / "cooc" / "pmi_similar_items-00000-of-00001").write_text("a\tc\nc\ta\n")


def test_similar_items_table_pairs_both_sources_for_the_popular_items(tmp_path):
    """WALS (predictions/) and PMI (cooc/) side by side for the most popular items, scores from
    the JSON lines (TAB lines without scores for a source that wrote none); '-' where a source
    has none; nothing when neither was written."""
    assert run_data.similar_items(str(tmp_path), ["a"]) is None
    _similar_run(tmp_path)
    run = report.collect_run(str(tmp_path))
    assert run["popular"] == [("b", 9), ("a", 5), ("z", 1)]
    assert run["similar"]["items"] == ["b", "a"]  # z is listed by neither source
    assert run["similar"]["sources"] == {"WALS": {"a": [("b", 0.9), ("c", 0.25)],
                                                  "b": [("a", 0.9), ("c", 0.5)]},
                                         "PMI": {"a": [("c", None)]}}
    html = page.render_html(run, {})
    assert "<h2>Similar items</h2>" in html
    assert re.search(r'<a href="similar_items.html#item-1">b</a></td><td class=ids>a, c</td>'
                     r"<td class=ids>-</td>", html)


def test_similar_items_page_lists_neighbours_with_scores_and_links_resolve(tmp_path):
    _similar_run(tmp_path)
    report.write_report(str(tmp_path))
    similar = (tmp_path / "similar_items.html").read_text()
    anchors = set(re.findall(r'id="(item-\d+)"', similar))
    assert anchors == {"item-1", "item-2"}
    # item b's section: WALS neighbours a (0.9, linked to a's section) then c (0.5); PMI has none
    section_b = similar[similar.index('id="item-1"'):similar.index('id="item-2"')]
    assert re.search(r"<td>1</td><td class=ids><a href=\"#item-2\">a</a></td><td>0.9</td>.*"
                     r"<td>2</td><td class=ids>c</td><td>0.5</td>", section_b)
    assert "9 visitors" in section_b and "<h3>PMI</h3><p>-</p>" in section_b
    section_a = similar[similar.index('id="item-2"'):]
    assert re.search(r"<h3>PMI</h3>.*<td class=ids>c</td><td>-</td>", section_a)  # no scores
    # every link of report.html into the page names one of its sections
    html = (tmp_path / "report.html").read_text()
    targets = set(re.findall(r'href="similar_items.html#([^"]+)"', html))
    assert targets and targets <= anchors
    assert set(re.findall(r'href="#([^"]+)"', similar)) <= anchors


def test_similar_items_are_found_past_the_first_lines_and_ids_read_back_exactly(tmp_path):
    """Popular items anywhere in the (sharded, unordered) files; ids with TABs' neighbours,
    quotes, commas and non-ASCII read back exactly."""
    (tmp_path / "cooc").mkdir()
    odd = ['say "hi"', "a,b", "Zürich/ü", "x\\y"]
    lines = [json.dumps({"id": f"filler{i}", "ids": ["q"], "scores": [1.0]}) for i in range(500)]
    lines.insert(321, json.dumps({"id": odd[0], "ids": odd[1:], "scores": [3.0, 2.0, 1.5]}))
    lines.insert(7, json.dumps({"ids": ["q"], "scores": [1.0], "id": "keys in another order"}))
    (tmp_path / "cooc" / "pmi_similar_items_scores-00001-of-00002.jsonl").write_text(
        "\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "cooc" / "pmi_similar_items-00000-of-00002").write_text("")
    found = run_data.similar_items(str(tmp_path), [odd[0], "absent", "keys in another order"])
    assert found == {"items": [odd[0], "keys in another order"],
                     "sources": {"PMI": {odd[0]: [(odd[1], 3.0), (odd[2], 2.0), (odd[3], 1.5)],
                                         "keys in another order": [("q", 1.0)]}}}


def test_report_explains_itself(tmp_path):
    """Each section says how to read it; metrics say which direction is better; settings say
    what they mean; wide tables wrap instead of overflowing."""
    write_run(str(tmp_path))
    html = page.render_html(report.collect_run(str(tmp_path)), {"Rating distribution": ""})
    assert "<th>better</th>" in html and re.search(r"<td>ndcg@10</td>.*?<td>higher</td>", html)
    assert "popularity predicts each item&#x27;s mean rating" in html
    assert re.search(r"<td>n_<wbr>embeds</td><td class=ids>\d+</td><td>Latent factors k.</td>", html)
    assert "capped at 1" in html and "td.ids{overflow-wrap:anywhere;min-width:6em}" in html
    assert page.better("rmse") == "lower" and page.better("ndcg@10") == "higher"
    sections = re.findall(r"<h2>(.*?)</h2>(<p class=\"read\">)?", html)
    assert sections and all(read for _, read in sections), sections  # each says how to read it


def test_pca_labels_never_overlap_and_stay_inside_the_axes():
    """Long and short ids, a tight cluster of outliers: every placed label's text box (as
    matplotlib measures it) is clear of the others and inside the plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    points = np.vstack([rng.normal(0, 1, (300, 2)), rng.normal(8, 0.05, (20, 2))])
    names = [("a-very-long-content-id-" if i % 3 == 0 else "") + str(i) for i in range(len(points))]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    ax.scatter(points[:, 0], points[:, 1], s=6)
    placed = figures.place_labels(ax, points, names, n=10)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    area = ax.get_window_extent(renderer)
    assert len(placed) == len(ax.texts) >= 5 and [t.get_text() for t in ax.texts] == [names[j] for j in placed]
    assert any(j >= 300 for j in placed)  # the outliers' cluster gets a label, not ten
    assert sum(j >= 300 for j in placed) < 5
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert all(area.x0 <= b.x0 and b.x1 <= area.x1 and area.y0 <= b.y0 and b.y1 <= area.y1
               for b in boxes)
    plt.close(fig)
