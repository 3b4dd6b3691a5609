"""The cooc stage: similar items by shifted positive PMI over the same sources as preprocess.

    command   its flags, their checks and `run` (no heavy import until the stage runs)
    job       the Beam pipeline: groups, pair counts, SPPMI, top-n, embeddings; publishes cooc/

`from pipeline import cooc` gives the command's `add_args`, `validate_args`, `check_inputs`,
`run` and `main`.
"""
from pipeline.cooc.command import (add_args, check_inputs, main, print_query, run,  # noqa: F401
                                   validate_args)
