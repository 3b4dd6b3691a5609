"""Every flag of every stage is checked before any stage does work: finite numbers, ranges, and a
memory estimate of training against this machine. A bad value exits 2 with one line."""
import pytest

from stagekit import cli
from pipeline import run as driver


@pytest.mark.parametrize("argv, message", [
    (["--regularization", "nan"], "expected a finite number, got 'nan'"),
    (["--unobserved_weight=inf"], "expected a finite number, got 'inf'"),
    (["--rating_scale=-inf"], "expected a finite number"),
    (["--feature_wt_exp", "1e999"], "expected a finite number"),
    (["--regularization", "0"], "--regularization must be in (0, inf), got 0.0"),
    (["--eval_fraction", "1"], "--eval_fraction must be in [0, 1), got 1.0"),
    (["--n_embeds", "100000"], "--n_embeds must be in [1, 8192], got 100000"),
    (["--n_embeds", "8192", "--batch_size", "4096"], "needs about"),
    (["--feature_wt_factor", "0"], "--feature_wt_factor must be in (0, inf)"),
    (["--purchase_weight=-1"], "--purchase_weight must be in [0, inf)"),
    (["--content_dimension", "201"], "--content_dimension must be in [1, 200], got 201"),
    (["--group_shards", "0"], "--group_shards must be in [1, 4096], got 0"),
    (["--max_rejected_fraction", "1.5"], "--max_rejected_fraction must be in [0, 1], got 1.5"),
    (["--top_k", "0"], "--top_k must be in [1, inf), got 0"),
    (["--source", "interactions", "--input", "/nonexistent/ratings-*.csv"], "matches no files"),
    (["--bigquery_dataset", "my-project.recs.table"], "invalid BigQuery dataset"),
    (["--bigquery_dataset", "my-project.recs"], "--temp_location=gs://"),
    (["--bigquery_run_date", "20240131"], "--bigquery_run_date needs --bigquery_dataset"),
])
def test_a_bad_value_exits_2_with_one_line_before_any_work(argv, message, tmp_path, capsys, caplog):
    code = driver.main(["--output_dir", str(tmp_path / "out")] + argv)
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    printed = capsys.readouterr().err
    assert message in (" ".join(errors) + printed), (errors, printed[-500:])
    assert len(errors) <= 1 and "Traceback" not in printed
    assert not (tmp_path / "out").exists()


def test_the_memory_estimate_scales_with_k_squared_and_the_catalog():
    from trainer import flags

    args = flags.build_parser().parse_args(["--input_dir", "i", "--output_dir", "o"])
    base = flags.memory_estimate_bytes(args, nrows=0)
    args.n_embeds *= 2
    assert flags.memory_estimate_bytes(args, nrows=0) == pytest.approx(4 * base, rel=0.05)
    assert flags.memory_estimate_bytes(args, nrows=10**6) - flags.memory_estimate_bytes(args, 0) == \
        4 * 10**6 * args.n_embeds * 4
    assert cli.machine_memory_bytes() > 2**30  # this machine reports its memory
