"""The tune stage: Optuna search into tuning/best.json, train using it, and the Vertex AI
hyperparameter tuning job built from the same search space (checked offline)."""
import argparse
import json
import os

import numpy as np
import pytest

from pipeline import run as driver
from pipeline.cloud import vertex_tuning
from trainer import metrics, search_space, task, tune, tuned
from trainer_fixtures import random_matrix, write_preproc

NUSERS, NITEMS = 60, 25


@pytest.fixture()
def preproc(tmp_path):
    users, items, ratings = random_matrix(NUSERS, NITEMS, 0.25, seed=5)
    return write_preproc(str(tmp_path / "out" / "preproc"), users, items, ratings, NUSERS, NITEMS)


def tune_argv(preproc, output, *extra):
    return ["--input_dir", preproc, "--output_dir", output, "--tune_max_epochs", "3",
            "--tune_max_k", "16", "--n_embeds", "8", *extra]


def test_search_writes_every_trial_and_beats_or_matches_the_current_flags(preproc, tmp_path):
    output = str(tmp_path / "out" / "tuning")
    tune.main(tune_argv(preproc, output, "--tune_trials", "6", "--regularization", "2.5",
                        "--reg_scaling", "none", "--col_weights", "log"))
    best = json.load(open(os.path.join(output, "best.json")))
    assert best["n_trials"] == 6 and len(best["trials"]) == 6
    assert best["metric"] == "ndcg@10" and best["seconds"] > 0
    first = best["trials"][0]["params"]  # trial 0 is the flags as given
    assert first["n_embeds"] == 8 and first["regularization"] == 2.5
    assert first["reg_scaling"] == "none" and first["col_weights"] == "log"
    complete = [t for t in best["trials"] if t["state"] == "COMPLETE"]
    assert best["best_value"] == max(t["value"] for t in complete) >= best["default_value"]
    for trial in complete:
        assert trial["value"] == pytest.approx(max(trial["curve"]), abs=1e-6)
        assert trial["epochs"] == int(np.argmax(trial["curve"])) + 1
        low, high = ((1e-6, 1e-1) if trial["params"]["reg_scaling"] == "frequency" else (1e-2, 1e3))
        assert low <= trial["params"]["regularization"] <= high or trial["number"] == 0
        assert trial["params"]["n_embeds"] in (8, 16)
    assert best["chosen"]["epochs"] == best["trials"][best["best_trial"]]["epochs"]
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith("_tmp_tune_")]
    # the train stage's eval holdout (--eval_fraction 0.2, same seed) is never searched
    users = random_matrix(NUSERS, NITEMS, 0.25, seed=5)[0]
    held = metrics.split_holdout(users, 0.2, 42)
    assert best["input"]["interactions"] == users.size
    assert best["input"]["searched_interactions"] == users.size - held.sum()
    with pytest.raises(SystemExit):  # an existing result is kept without --overwrite
        tune.main(tune_argv(preproc, output, "--tune_trials", "1"))


def test_search_stops_at_the_time_limit(preproc, tmp_path):
    output = str(tmp_path / "out" / "tuning")
    summary = tune.main(tune_argv(preproc, output, "--tune_trials", "10000",
                                  "--tune_seconds", "3"))
    assert 1 <= summary["n_trials"] < 10000 and summary["seconds"] < 60


def test_folds_hold_out_each_interaction_at_most_once_and_keep_one_per_user():
    users = np.repeat(np.arange(20), np.arange(1, 21))
    args = argparse.Namespace(tune_folds=4, tune_holdout=0.2, seed=3)
    masks = tune.splits(users, args)
    assert len(masks) == 4
    times_held = np.sum(masks, axis=0)
    assert times_held.max() == 1
    never_held = np.bincount(users[times_held == 0], minlength=20)
    assert (never_held == 1).all()  # exactly one training interaction per user in every fold
    assert abs(masks[0].sum() - masks[3].sum()) <= 20


def test_train_uses_best_json_and_explicit_flags_win(preproc, tmp_path):
    out = str(tmp_path / "out")
    os.makedirs(os.path.join(out, "tuning"))
    chosen = {"n_embeds": 16, "regularization": 0.002, "reg_scaling": "frequency",
              "unobserved_weight": 0.3, "col_weights": "none", "rating_target": "binary",
              "target_scale": 4.0, "target_cap": None, "init_scale": 0.1, "epochs": 2}
    with open(os.path.join(out, "tuning", "best.json"), "w") as f:
        json.dump({"run_id": "x", "chosen": chosen}, f)
    assert driver.main(["--output_dir", out, "--stages", "train", "--n_embeds", "4",
                        "--eval_fraction", "0", "--no_report"]) == 0
    model = json.load(open(os.path.join(out, "model", "model.json")))
    hp = model["hyperparameters"]
    assert hp["n_embeds"] == 4                                        # explicit flag wins
    for name in ("regularization", "reg_scaling", "unobserved_weight", "col_weights",
                 "rating_target", "target_scale", "init_scale", "epochs"):
        assert hp[name] == chosen[name], name
    assert model["epochs_completed"] == 2
    assert hp["tuning_file"].endswith(os.path.join("tuning", "best.json"))


def test_vertex_tuning_job_spec_is_a_valid_api_message_with_trainer_flags(tmp_path):
    from google.cloud import aiplatform_v1

    args, _ = driver.parse_args(["--output_dir", "gs://bucket/run", "--stages", "tune",
                                 "--trainer", "vertex", "--tune_trials", "20"])
    ns = driver.stage_args("tune", args)
    spec = vertex_tuning.build_tuning_job_spec(ns, image="europe-docker.pkg.dev/p/r/i:1",
                                               machine_type="n1-standard-8",
                                               display_name="t", parallel_trials=4)
    message = aiplatform_v1.HyperparameterTuningJob(spec)  # unknown fields would raise
    assert message.max_trial_count == 20 and message.parallel_trial_count == 4
    assert message.study_spec.metrics[0].metric_id == "ndcg_at_10"
    container = spec["trial_job_spec"]["worker_pool_specs"][0]["container_spec"]
    assert container["command"] == ["python", "-m", "trainer.task"]
    parser = task.build_parser()
    trial = parser.parse_args(container["args"])
    assert trial.input_dir == "gs://bucket/run/preproc"
    assert trial.output_dir == "gs://bucket/run/tuning/trials/{trial}"
    assert trial.hypertune_metric == "ndcg" and trial.no_refit_full and trial.eval_fraction == 0.2
    # every value Vertex AI may pass parses as the trainer's own flag, children included
    specs = list(spec["study_spec"]["parameters"])
    for parent in list(specs):
        specs += [c["parameter_spec"] for c in parent.get("conditional_parameter_specs", [])]
    regularization_ranges = []
    for param in specs:
        name = param["parameter_id"]
        values = (param.get("categorical_value_spec", {}).get("values")
                  or param.get("discrete_value_spec", {}).get("values")
                  or list((param.get("double_value_spec") or param["integer_value_spec"]).values()))
        for value in values:
            parsed = parser.parse_args(container["args"] + [f"--{name}={value}"])
            assert str(getattr(parsed, name)) == str(value) or getattr(parsed, name) == float(value)
        if name == "regularization":
            regularization_ranges.append(tuple(param["double_value_spec"].values()))
    assert sorted(regularization_ranges) == [(1e-6, 1e-1), (1e-2, 1e3)]
    assert {p.name for p in search_space.SPACE} | {"epochs"} == {p["parameter_id"] for p in specs}


def test_trainer_reports_the_metric_the_way_vertex_reads_it(preproc, tmp_path, monkeypatch):
    metric_file = tmp_path / "hypertune" / "output.metrics"
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(metric_file))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
    trials = str(tmp_path / "trials" / "{trial}")
    task.main(["--input_dir", preproc, "--output_dir", trials, "--n_embeds", "4", "--epochs", "2",
               "--hypertune_metric", "ndcg", "--no_refit_full"])
    metrics = json.load(open(tmp_path / "trials" / "7" / "metrics.json"))
    line = json.loads(metric_file.read_text().splitlines()[-1])
    assert float(line["ndcg_at_10"]) == pytest.approx(metrics["wals"]["ndcg@10"])
    assert line["trial"] == "7"


def test_best_json_from_a_finished_vertex_job(tmp_path):
    job = {"name": "projects/p/locations/r/hyperparameterTuningJobs/1", "trials": [
        {"id": "1", "state": "SUCCEEDED",
         "parameters": [{"parameter_id": "n_embeds", "value": "64"},
                        {"parameter_id": "regularization", "value": 3.5},
                        {"parameter_id": "epochs", "value": 12.0}],
         "final_measurement": {"metrics": [{"metric_id": "ndcg_at_10", "value": 0.31}]}},
        {"id": "2", "state": "SUCCEEDED",
         "parameters": [{"parameter_id": "n_embeds", "value": "128"},
                        {"parameter_id": "reg_scaling", "value": "none"},
                        {"parameter_id": "epochs", "value": 20.0}],
         "final_measurement": {"metrics": [{"metric_id": "ndcg_at_10", "value": 0.35}]}},
        {"id": "3", "state": "INFEASIBLE", "parameters": []}]}
    args = argparse.Namespace(tune_metric="ndcg", top_k=10, seed=1, tune_holdout=0.2)
    best = vertex_tuning.best_from_job(job, args, 100.0)
    assert best["chosen"] == {"n_embeds": 128, "reg_scaling": "none", "epochs": 20}
    assert best["best_value"] == 0.35 and best["best_trial"] == 2 and best["n_trials"] == 3


@pytest.mark.parametrize("chosen, message", [
    ({"regularization": -1.0}, "--regularization must be in"),
    ({"n_embeds": "eight"}, "n_embeds='eight' is not a valid --n_embeds"),
    ({"reg_scaling": "sometimes"}, "is not one of"),
    ({"nepochs": 3}, "are not tuned trainer flags"),
    (None, "not a tune result"),
])
def test_a_bad_best_json_is_a_usage_error_before_any_stage_runs(preproc, tmp_path, chosen,
                                                                 message, caplog):
    out = str(tmp_path / "out")
    os.makedirs(os.path.join(out, "tuning"))
    with open(os.path.join(out, "tuning", "best.json"), "w") as f:
        json.dump({"chosen": chosen} if chosen is not None else ["not", "a", "dict"], f)
    metadata = os.path.join(out, "preproc", "metadata.json")
    before = os.path.getmtime(metadata)
    assert driver.main(["--output_dir", out, "--stages", "preprocess,train", "--overwrite",
                        "--no_report"]) == 2
    assert message in caplog.text
    assert os.path.getmtime(metadata) == before  # preprocess never ran


def test_best_json_values_are_converted_and_dependents_of_an_explicit_parent_are_kept(tmp_path):
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"chosen": {"n_embeds": 16.0, "reg_scaling": "frequency",
                                           "regularization": 0.004, "unobserved_weight": 0.1,
                                           "epochs": 3}}))
    args = task.build_parser().parse_args(["--input_dir", "p", "--output_dir", "m",
                                           "--reg_scaling", "none", "--regularization", "7"])
    applied = tuned.apply_tuning(args, {"input_dir", "output_dir", "reg_scaling"}, str(path))
    assert args.n_embeds == 16 and isinstance(args.n_embeds, int)
    assert args.reg_scaling == "none" and args.regularization == 7.0  # λ was tuned for frequency
    assert args.unobserved_weight == 0.1 and args.epochs == 3
    assert "regularization" not in applied


def test_n_embeds_above_the_tuning_cap_is_refused(preproc, tmp_path):
    args = tune.build_parser().parse_args(tune_argv(preproc, str(tmp_path / "t"),
                                                    "--n_embeds", "64"))
    with pytest.raises(ValueError, match="above --tune_max_k"):
        tune.validate_args(args)


def test_vertex_space_follows_the_tune_caps_and_same_name_children_have_disjoint_parents():
    parameters = search_space.vertex_parameters(max_k=64, max_epochs=12)
    by_id = {p["parameter_id"]: p for p in parameters}
    assert by_id["n_embeds"]["categorical_value_spec"]["values"] == ["16", "32", "64"]
    assert by_id["epochs"]["integer_value_spec"] == {"min_value": 3, "max_value": 12}
    for parent in parameters:
        seen = {}
        for child in parent.get("conditional_parameter_specs", []):
            name = child["parameter_spec"]["parameter_id"]
            values = set(child["parent_categorical_values"]["values"])
            assert not values & seen.get(name, set())
            seen[name] = seen.get(name, set()) | values
    assert len({p["parameter_id"] for p in parameters}) == len(parameters)  # top level unique
