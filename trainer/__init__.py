"""The train stage (`python -m trainer.task`) and the tune stage (`python -m trainer.tune`).

    task          the train stage's command line: `run`, `main`
    flags         the trainer's flags and their checks (no heavy import)
    training      the training loop: phases, checkpoints, resume, metrics, model/ published
    model_dir     the scratch folder named after the run's settings, resumed or published
    metrics       held-out ranking metrics against a popularity baseline
    tune          the tune stage: Optuna search over search_space, best.json published
    search_space  the tuned flags, their ranges and conditions
    tuned         best.json read back into the trainer's flags
"""
import stagekit  # noqa: F401 (TensorFlow's log level, before any module here imports it)
