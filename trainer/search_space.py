"""What the tune stage searches, declared once as data: Optuna samples it locally (`suggest`) and
Vertex AI Vizier gets the same space as a StudySpec (`vertex_parameters`).

A parameter with `when=(parent, value)` exists only when the categorical `parent` takes `value`
(λ's useful range depends on whether it is scaled per row; the column-weight exponent only means
something for the log scheme). Names are the trainer's flags, so a trial's values are flags.
The epoch count is not sampled locally: every trial is evaluated after each epoch up to
--tune_max_epochs and keeps its best epoch (one trial covers every epoch count); on Vertex AI,
where a trial reports one number, `epochs` is a parameter.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None
    when: tuple[str, str] | None = None

    def __post_init__(self):
        if (self.choices is None) == (self.low is None):
            raise ValueError(f"{self.name}: give either choices or low/high")


SPACE = (
    Param("n_embeds", choices=(16, 32, 64, 128, 256)),
    Param("reg_scaling", choices=("none", "frequency")),
    Param("regularization", 1e-2, 1e3, log=True, when=("reg_scaling", "none")),
    # λ·(n_i + w0·n_other): the multiplier is ~w0 × catalog size, hence the far smaller range
    Param("regularization", 1e-6, 1e-1, log=True, when=("reg_scaling", "frequency")),
    Param("unobserved_weight", 1e-3, 10.0, log=True),
    Param("col_weights", choices=("none", "log", "linear")),
    Param("feature_wt_exp", -1.0, 1.0, when=("col_weights", "log")),
    Param("feature_wt_factor", 1.0, 1000.0, log=True, when=("col_weights", "linear")),
    Param("rating_target", choices=("rating", "binary")),
    Param("target_scale", 0.1, 100.0, log=True),
    # stored ratings are <= 1, so a cap >= target_scale is no cap
    Param("target_cap", 0.1, 10.0, log=True, when=("rating_target", "rating")),
    Param("init_scale", choices=(1.0, 0.1)),
)
EPOCHS = Param("epochs", 3, 40)  # Vertex AI only (see the module docstring)


def active(space, values: dict) -> list[Param]:
    """The parameters that exist given the parents' values (in declaration order)."""
    return [p for p in space if p.when is None or values.get(p.when[0]) == p.when[1]]


def suggest(trial, space=SPACE, max_k: int | None = None, current: dict | None = None) -> dict:
    """One Optuna trial's values (define-by-run: conditional parameters follow their parent).
    `current`: the flags' values, added to the categorical choices so trial 0 can be them."""
    values: dict = {}
    for param in space:
        if param.when is not None and values.get(param.when[0]) != param.when[1]:
            continue
        if param.choices is not None:
            choices = [c for c in param.choices
                       if param.name != "n_embeds" or max_k is None or c <= max_k]
            value = (current or {}).get(param.name)
            if value is not None and value not in choices and (
                    param.name != "n_embeds" or max_k is None or value <= max_k):
                choices.append(value)
            values[param.name] = trial.suggest_categorical(param.name, choices)
        else:
            values[param.name] = trial.suggest_float(param.name, param.low, param.high,
                                                     log=param.log)
    return values


def _vertex_spec(param: Param) -> dict:
    spec: dict = {"parameter_id": param.name}
    if param.choices is None and param.name == "epochs":
        spec["integer_value_spec"] = {"min_value": int(param.low), "max_value": int(param.high)}
    elif param.choices is None:
        spec["double_value_spec"] = {"min_value": param.low, "max_value": param.high}
    elif all(isinstance(c, float) for c in param.choices):
        spec["discrete_value_spec"] = {"values": sorted(param.choices)}
    else:  # ints too: Vertex AI passes discrete values as floats ("--n_embeds=128.0")
        spec["categorical_value_spec"] = {"values": [str(c) for c in param.choices]}
    if param.choices is None or spec.get("discrete_value_spec"):
        spec["scale_type"] = "UNIT_LOG_SCALE" if param.log else "UNIT_LINEAR_SCALE"
    return spec


def vertex_parameters(space=SPACE, max_k: int | None = None, max_epochs: int | None = None
                      ) -> list[dict]:
    """StudySpec.parameters (Vertex AI API field names): children nest under their parent's
    conditional_parameter_specs. The two λ ranges share the name `regularization` under disjoint
    parent values, which the API reference allows for conditional specs ("If two items in
    conditional_parameter_specs have the same name, they must have disjoint
    parent_value_condition"); never checked against the live service (docs/GCP.md)."""
    space = [dataclasses.replace(p, choices=tuple(c for c in p.choices if c <= max_k))
             if p.name == "n_embeds" and max_k else p for p in space]
    roots = {p.name: _vertex_spec(p) for p in space if p.when is None}
    for param in space:
        if param.when is not None:
            parent, value = param.when
            roots[parent].setdefault("conditional_parameter_specs", []).append(
                {"parent_categorical_values": {"values": [value]},
                 "parameter_spec": _vertex_spec(param)})
    epochs = dataclasses.replace(EPOCHS, high=max(max_epochs, EPOCHS.low)) if max_epochs else EPOCHS
    return [*roots.values(), _vertex_spec(epochs)]
