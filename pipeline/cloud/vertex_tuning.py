"""The tune stage on Google Cloud: a Vertex AI hyperparameter tuning job (Vertex AI Vizier).

`pipeline.run --stages tune --trainer vertex` searches the same space as the local Optuna search
(trainer/search_space.py, including its conditional parameters) with Vizier's default Bayesian
algorithm. Each trial is one replica running `python -m trainer.task` on the preproc folder with
--eval_fraction = --tune_holdout and --no_refit_full; Vertex AI appends the trial's values as
`--name=value` flags. The trainer reports its held-out metric through `cloudml-hypertune` under
the tag `<metric>_at_<k>` (e.g. ndcg_at_10), the StudySpec's metric_id. Trial models go to
OUTPUT/tuning/trials/<trial id>/. When the job ends, the driver writes OUTPUT/tuning/best.json
from the best trial, in the local search's format, so the train stage reads either alike.

Building the spec is pure and tested offline against the Vertex AI API's own message types
(`aiplatform_v1.HyperparameterTuningJob`); only `submit` talks to Google Cloud.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import time
import uuid

from stagekit.artifacts import join

log = logging.getLogger(__name__)

TRIAL_PLACEHOLDER = "{trial}"  # the trainer replaces it with CLOUD_ML_TRIAL_ID
# local-search flags a Vertex AI job has no use for (warned about when set), with their defaults
IGNORED_ON_VERTEX = {"tune_folds": 1, "tune_seconds": 0.0, "tune_eval_users": 5000}
TERMINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")


def metric_id(args: argparse.Namespace) -> str:
    return f"{args.tune_metric}_at_{args.top_k}"


def build_tuning_job_spec(tune_args: argparse.Namespace, *, image: str, machine_type: str,
                          display_name: str, parallel_trials: int) -> dict:
    """HyperparameterTuningJob fields (Vertex AI API names) for the tune stage's flags."""
    from pipeline.cloud import vertex
    from trainer import search_space

    trial_args = argparse.Namespace(**vars(tune_args))
    trial_args.output_dir = join(tune_args.output_dir, "trials", TRIAL_PLACEHOLDER)
    trial_args.eval_fraction, trial_args.no_refit_full = tune_args.tune_holdout, True
    # another split than the final model's metrics.json one (a trial sees all the data, so
    # unlike the local search those metrics are not fully independent of it: docs/GCP.md)
    trial_args.seed = tune_args.seed + 1
    trial_args.hypertune_metric = tune_args.tune_metric
    trial_args.tuning_file = trial_args.warm_start_from = None
    custom = vertex.build_custom_job_spec(trial_args, image=image, machine_type=machine_type,
                                          display_name=display_name)
    searched = {p.name for p in search_space.SPACE} | {"epochs"}
    container = custom["worker_pool_specs"][0]["container_spec"]
    container["args"] = [a for a in container["args"] if a.split("=", 1)[0][2:] not in searched]
    return {
        "display_name": display_name,
        "max_trial_count": tune_args.tune_trials,
        "parallel_trial_count": min(parallel_trials, tune_args.tune_trials),
        "max_failed_trial_count": max(1, tune_args.tune_trials // 4),
        "study_spec": {
            "metrics": [{"metric_id": metric_id(tune_args), "goal": "MAXIMIZE"}],
            "parameters": search_space.vertex_parameters(max_k=tune_args.tune_max_k,
                                                         max_epochs=tune_args.tune_max_epochs),
            "measurement_selection_type": "BEST_MEASUREMENT",
        },
        "trial_job_spec": {"worker_pool_specs": custom["worker_pool_specs"]},
    }


def _number(value: float | str):
    """A trial parameter's value from the API's JSON: categorical values come as strings (the
    factor counts among them), integers as floats."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        return value
    return int(value) if float(value).is_integer() else value


def best_from_job(job: dict, args: argparse.Namespace, seconds: float) -> dict:
    """best.json (the local search's format) from a finished job, as the API returns it (dict)."""
    wanted = metric_id(args)
    trials = []
    for trial in job.get("trials", []):
        values = [m["value"] for m in trial.get("final_measurement", {}).get("metrics", [])
                  if m.get("metric_id") == wanted]
        trials.append({"number": int(trial["id"]), "state": trial.get("state", "").replace(
                           "SUCCEEDED", "COMPLETE"),
                       "params": {p["parameter_id"]: _number(p["value"])
                                  for p in trial.get("parameters", [])},
                       "value": values[0] if values else None, "epochs": None, "curve": None,
                       "seconds": None})
    done = [t for t in trials if t["value"] is not None]
    if not done:
        raise ValueError(f"Vertex AI tuning job {job.get('name')} has no trial with a "
                         f"{wanted} measurement")
    best = max(done, key=lambda t: t["value"])
    chosen = dict(best["params"])
    best["epochs"] = chosen.get("epochs")
    return {"run_id": uuid.uuid4().hex, "metric": f"{args.tune_metric}@{args.top_k}",
            "direction": "maximize", "chosen": chosen, "best_value": best["value"],
            "best_trial": best["number"], "default_value": None, "default": None,
            "trials": trials, "n_trials": len(trials),
            "states": {s: sum(t["state"] == s for t in trials) for s in {t["state"] for t in trials}},
            "seconds": round(seconds, 3), "seed": args.seed,
            "split": {"holdout": args.tune_holdout}, "search": "Vertex AI Vizier",
            "vertex_job": job.get("name"),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat()}


def submit(spec: dict, *, project: str, region: str, poll_seconds: float = 60) -> dict:
    """Creates the job, waits for it to end and returns it as a dict (raises if it failed)."""
    from google.cloud import aiplatform_v1

    client = aiplatform_v1.JobServiceClient(
        client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"})
    job = client.create_hyperparameter_tuning_job(
        parent=f"projects/{project}/locations/{region}", hyperparameter_tuning_job=spec)
    log.info("tune: Vertex AI hyperparameter tuning job %s created", job.name)
    while job.state.name not in TERMINAL:
        time.sleep(poll_seconds)
        job = client.get_hyperparameter_tuning_job(name=job.name)
        log.info("tune: %s is %s (%d trials so far)", job.name, job.state.name, len(job.trials))
    if job.state.name != "JOB_STATE_SUCCEEDED":
        raise RuntimeError(f"Vertex AI tuning job {job.name} ended {job.state.name}: {job.error}")
    return type(job).to_dict(job)


def run(tune_args: argparse.Namespace, beam_argv: list[str], options: argparse.Namespace) -> dict:
    """Tune on Vertex AI; publishes tuning/best.json from the best trial."""
    from pipeline.cloud import vertex
    from trainer.tune import check_inputs, publish_best, refuse_existing, validate_args

    started = time.time()
    validate_args(tune_args)
    check_inputs(tune_args)
    refuse_existing(tune_args)
    for name, default in IGNORED_ON_VERTEX.items():
        if getattr(tune_args, name) != default:
            log.warning("tune: --%s is not used by a Vertex AI tuning job (Vizier chooses the "
                        "trials; each trial trains its `epochs` on one holdout)", name)
    project, region, _ = vertex.cloud_options(beam_argv)
    if not (project and region):
        raise ValueError("--stages tune --trainer vertex needs --project and --region")
    spec = build_tuning_job_spec(tune_args, image=options.vertex_image,
                                 machine_type=options.vertex_machine_type,
                                 display_name=f"ga-wals-tune-{time.strftime('%Y%m%d-%H%M%S')}",
                                 parallel_trials=options.vertex_parallel_trials)
    job = submit(spec, project=project, region=region)
    best = best_from_job(job, tune_args, time.time() - started)
    publish_best(tune_args.output_dir, best, keep=("trials/",))  # trial models stay
    return {"output_dir": tune_args.output_dir, "best_value": best["best_value"],
            "chosen": best["chosen"], "n_trials": best["n_trials"], "vertex_job": job.get("name")}
