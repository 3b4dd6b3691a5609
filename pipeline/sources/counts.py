"""Input = accepted + rejected: the check every stage that reads a source makes before it
publishes (preprocess and cooc), and the error it refuses with."""
import logging

from stagekit import artifacts

LOG = logging.getLogger("pipeline.sources")


class InputRefused(RuntimeError):
    """The rows read cannot make an output: none, too many rejected, or counts that do not add
    up. The stage publishes nothing and exits 1 with this message."""


def check_counts(plan: dict, stats: dict, stage: str) -> None:
    """Logs input = accepted + rejected; refuses (before publishing) an empty, over-rejected or
    inconsistent run."""
    input_rows, rejected = stats.get("input_rows", 0), stats.get("rejected_rows", 0)
    accepted = stats.get("accepted_rows", 0)
    LOG.info("%s: %d input rows = %d accepted + %d rejected %s", stage, input_rows,
             accepted, rejected, rejected_by_reason(stats))
    kept = f"; {plan.get('preproc') or plan['final']} was left as it was"  # or the cooc stage's
    rejects = artifacts.join(plan["staging"], "rejected-*")
    if input_rows != accepted + rejected:
        raise InputRefused(f"counts do not add up: {input_rows} input rows != {accepted} accepted "
                           f"+ {rejected} rejected{kept}")
    if input_rows == 0:
        raise InputRefused(f"no input rows read from {plan['input']}{kept}")
    if rejected > plan["max_rejected_fraction"] * input_rows:
        raise InputRefused(
            f"{rejected} of {input_rows} input rows rejected ({rejected / input_rows:.1%}), more than "
            f"--max_rejected_fraction={plan['max_rejected_fraction']}; see {rejects}{kept}")
    if not stats.get("rated_rows"):
        raise InputRefused("no interactions left after summing per (visitor, content); nothing "
                           f"to train on (rejects: {rejects}){kept}")


def rejected_by_reason(stats: dict) -> dict:
    return {key.split(".", 1)[1]: value for key, value in sorted(stats.items())
            if key.startswith("rejected.")}
