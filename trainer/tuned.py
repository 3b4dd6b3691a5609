"""The tune stage's result read back: best.json's chosen values applied to the trainer's flags
(flags given explicitly win), each checked by the flag's own type and choices."""
from __future__ import annotations

import argparse
import logging

from stagekit.artifacts import exists, join, read_json
from trainer import flags, search_space

LOG = logging.getLogger("trainer.tune")
TUNED_FLAGS = tuple(sorted({p.name for p in search_space.SPACE} | {"epochs"}))


def read_chosen(path: str) -> dict:
    """best.json's "chosen" values, each checked and converted by the trainer flag's own type
    and choices (a hand-edited or foreign file fails here, naming the value)."""
    data = read_json(path, missing=lambda p: ValueError(f"--tuning_file {p}: no such file"))
    chosen = data.get("chosen") if isinstance(data, dict) else None
    if not isinstance(chosen, dict):
        raise ValueError(f"{path}: not a tune result (no \"chosen\" object)")
    unknown = sorted(set(chosen) - set(TUNED_FLAGS))
    if unknown:
        raise ValueError(f"{path}: {unknown} are not tuned trainer flags ({', '.join(TUNED_FLAGS)})")
    actions = {a.dest: a for a in flags.build_parser()._actions}
    values = {}
    for name, value in chosen.items():
        action = actions[name]
        if value is None and action.default is None:
            values[name] = None
            continue
        if action.type is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        try:
            values[name] = action.type(str(value)) if action.type else str(value)
        except (ValueError, argparse.ArgumentTypeError):
            raise ValueError(f"{path}: {name}={value!r} is not a valid --{name}") from None
        if action.choices and values[name] not in action.choices:
            raise ValueError(f"{path}: {name}={value!r} is not one of {list(action.choices)}")
    return values


def apply_tuning(args: argparse.Namespace, explicit: set[str], path: str,
                 quiet: bool = False) -> dict:
    """Sets every tuned flag from best.json's "chosen" unless given explicitly; returns what
    it set. A parameter that only means something under its parent's tuned value (λ's range per
    --reg_scaling, the exponent of --col_weights log, ...) is not applied when that parent flag is
    given explicitly with another value."""
    chosen = read_chosen(path)
    overridden = {name for name in explicit & set(chosen) if getattr(args, name) != chosen[name]}
    dependent = {p.name for p in search_space.SPACE
                 if p.when is not None and p.when[0] in overridden
                 and chosen.get(p.when[0]) == p.when[1]}
    applied = {name: value for name, value in chosen.items()
               if name not in explicit and name not in dependent}
    for name, value in applied.items():
        setattr(args, name, value)
    args.tuning_file = path
    if quiet:
        return applied
    LOG.info("train: hyperparameters from %s: %s%s%s", path, applied,
             f"; explicit flags kept: {sorted(explicit & set(chosen))}" if explicit & set(chosen) else "",
             f"; not applied, tuned for another {sorted(overridden)}: {sorted(dependent)}"
             if dependent else "")
    _warn_if_stale(path, getattr(args, "input_dir", None))
    return applied


def _warn_if_stale(path: str, preproc_dir: str | None) -> None:
    tuned_on = (read_json(path).get("input") or {}).get("preproc_run_id")
    metadata = join(preproc_dir, "metadata.json") if preproc_dir else None
    current = read_json(metadata).get("run_id") if metadata and exists(metadata) else None
    if tuned_on and current and tuned_on != current:
        LOG.warning("train: %s was tuned on another preprocess run (%s) than %s (%s); rerun the "
                    "tune stage if the data changed much", path, tuned_on, preproc_dir, current)
