"""pipeline.report: summary text and report.html built from (small, hand-written) artifacts."""
import base64
import re

import numpy as np

from pipeline import report
from test_run_fixtures import write_model, write_predictions, write_preproc, write_run


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_full_run_report_is_self_contained_with_all_sections(tmp_path):
    write_run(str(tmp_path))
    path = report.write_report(str(tmp_path))
    assert path == f"{tmp_path}/report.html"
    page = (tmp_path / "report.html").read_text()
    images = _images(page)
    assert len(images) == 3 and all(img.startswith(b"\x89PNG") for img in images)
    for title in ("Training loss", "Rating distribution", "Item embeddings (PCA)",
                  "Held-out metrics", "Sample recommendations"):
        assert f"<h2>{title}</h2>" in page
    assert re.search(r"<td>ndcg@10</td><td>0.31</td><td>0.18</td>", page)
    assert "<th>wals</th><th>popularity</th>" in page
    assert "<td>visitor0</td><td>article3,article1</td>" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched when opened


def test_summary_has_counts_median_losses_metrics_paths_and_recommendations(tmp_path):
    ratings = write_preproc(str(tmp_path))
    write_model(str(tmp_path), losses=(3.5, 1.25, 0.75))
    write_predictions(str(tmp_path), ["visitor4\tarticle0,article2"])
    text = report.format_summary(report.collect_run(str(tmp_path)), {"train": 2.5})
    assert f"6 visitors x 5 contents, {len(ratings)} interactions" in text  # GA news words
    assert "2 rejected: {'invalid_json': 2}" in text
    assert "median raw value 31,000" in text
    assert "loss per epoch: 3.5 1.25 0.75" in text
    assert re.search(r"ndcg@10\s+0.31\s+0.18", text)
    assert f"predictions  {tmp_path}/predictions" in text and "train 2.5 s" in text
    assert "visitor4 -> article0,article2" in text
    assert "sample recommendations (visitor -> contents" in text
    assert f"{tmp_path}/cooc" not in text and "report.html" not in text  # only what exists


def test_preprocess_only_run_reports_what_exists(tmp_path):
    write_preproc(str(tmp_path))
    run = report.collect_run(str(tmp_path))
    assert run["model"] is None and run["recommendations"] == []
    page = tmp_path / "report.html"
    report.write_report(str(tmp_path), run)
    html = page.read_text()
    assert len(_images(html)) == 1 and "<h2>Rating distribution</h2>" in html
    assert "Training loss" not in html


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
    sample = report.sample_ratings(f"{tmp_path}/preproc")
    np.testing.assert_allclose(np.sort(sample), np.sort(list(ratings.values())), rtol=1e-6)
    assert report.sample_ratings(f"{tmp_path}/preproc", max_records=2).size < len(ratings)


def test_pca_projects_on_the_two_leading_axes():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(200, 2)) * [5.0, 2.0]
    basis = np.linalg.qr(rng.normal(size=(6, 6)))[0][:2]     # an orthonormal 2-D plane in 6-D
    factors = plane @ basis + 3.0 + rng.normal(scale=1e-3, size=(200, 6))
    points = report.pca_2d(factors)
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


def test_similar_items_table_pairs_both_sources_for_the_popular_items(tmp_path):
    """WALS (predictions/similar_items-*) and PMI (cooc/pmi_similar_items-*) side by side for the
    most popular items; '-' where a source has none; no table when neither was written."""
    from pipeline import report
    assert report.similar_items(str(tmp_path)) is None
    (tmp_path / "predictions").mkdir()
    (tmp_path / "cooc").mkdir()
    (tmp_path / "predictions" / "popular_items.txt").write_text("b\t9\na\t5\nz\t1\n")
    (tmp_path / "predictions" / "similar_items-00000-of-00001").write_text("a\tb,c\nb\ta,c\n")
    (tmp_path / "cooc" / "pmi_similar_items-00000-of-00001").write_text("a\tc\nc\ta\n")
    assert report.similar_items(str(tmp_path)) == [["b", "a, c", "-"], ["a", "b, c", "c"]]
    page = report.render_html(report.collect_run(str(tmp_path)), {})
    assert "<h2>Similar items</h2>" in page and "<td>b, c</td><td>c</td>" in page


def test_report_explains_itself(tmp_path):
    """Each section says how to read it; metrics say which direction is better; settings say
    what they mean; wide tables wrap instead of overflowing."""
    write_run(str(tmp_path))
    page = report.render_html(report.collect_run(str(tmp_path)), {"Rating distribution": ""})
    assert "<th>better</th>" in page and re.search(r"<td>ndcg@10</td>.*?<td>higher</td>", page)
    assert "popularity predicts each item&#x27;s mean rating" in page
    assert re.search(r"<td>n_embeds</td><td>\d+</td><td>Latent factors k.</td>", page)
    assert "capped at 1" in page and "overflow-wrap:anywhere" in page
    assert report._better("rmse") == "lower"


def test_pca_labels_keep_apart():
    rng = np.random.default_rng(0)
    points = np.vstack([rng.normal(0, 1, (200, 2)), [[10, 10], [10.01, 10.0], [-10, -10]]])
    labelled = report.spread_labels(points, 5)
    assert labelled[:2] == [200, 202] or labelled[:2] == [201, 202]  # one of the twin outliers
    assert not {200, 201} <= set(labelled)
    gap = 0.08 * np.ptp(points, axis=0).max()
    assert all(np.linalg.norm(points[a] - points[b]) >= gap
               for i, a in enumerate(labelled) for b in labelled[i + 1:])
