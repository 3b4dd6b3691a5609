"""The short plain-text summary that pipeline.run prints at the end of a run."""
from __future__ import annotations

from stagekit.artifacts import exists
from pipeline.report.run_data import PAGES, entity_words, epoch_losses, metrics_table, run_words


def fmt(value) -> str:
    """A number as a person reads it: 4 significant digits, thousands separated from 10,000."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return "-" if value is None else str(value)


def format_summary(run: dict, seconds: dict | None = None) -> str:
    user, item = entity_words(run["metadata"])
    lines = [f"== run summary: {run['root']} =="]
    if seconds:
        lines.append("stages: " + ", ".join(f"{s} {t:.1f} s" for s, t in seconds.items()))
    meta = run["metadata"]
    if meta:
        lines.append(f"data: {meta['nusers']} {user}s x {meta['nitems']} {item}s, "
                     f"{meta.get('interactions', '?')} interactions from {meta.get('input_rows', '?')} "
                     f"input rows ({run_words(run)['rows']}; {meta.get('rejected_rows', 0)} rejected"
                     + (f": {meta['rejected_by_reason']}" if meta.get("rejected_by_reason") else "") + ")")
        rating = meta.get("rating") or {}
        if rating:
            lines.append(f"ratings: median raw value {fmt(rating.get('median_value'))}, scaled "
                         f"min/mean/max {fmt(rating.get('min'))}/{fmt(rating.get('mean'))}/"
                         f"{fmt(rating.get('max'))}")
    losses = epoch_losses(run["model"])
    if losses:
        lines.append(f"training: {len(losses)} epochs, loss per epoch: "
                     + " ".join(fmt(loss) for loss in losses))
        epoch_seconds = (run["model"] or {}).get("epoch_seconds") or []
        if epoch_seconds:
            lines.append("seconds per epoch: " + " ".join(f"{s:.2f}" for s in epoch_seconds))
    columns, rows = metrics_table(run["metrics"])
    if rows:
        about = ", ".join(f"{k}={run['metrics'][k]}" for k in ("k", "heldout_interactions")
                          if k in run["metrics"])
        lines.append(f"held-out metrics ({about}): " + " | ".join(columns))
        lines += [f"  {name:<16}" + "  ".join(f"{fmt(v):>10}" for v in values) for name, values in rows]
    written = {name: path for name, path in run["paths"].items()
               if name not in PAGES and exists(path)}
    if written:  # only what exists; the pages are written (and printed) after this summary
        lines.append("artifacts:")
        lines += [f"  {name:<12} {path}" for name, path in written.items()]
    if run["recommendations"]:
        lines.append(f"sample recommendations ({user} -> {item}s, best first):")
        lines += [f"  {line.replace(chr(9), ' -> ', 1)}" for line in run["recommendations"]]
    return "\n".join(lines)
