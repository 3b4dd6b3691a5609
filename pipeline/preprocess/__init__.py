"""The preprocess stage: sessions (or interactions) -> TFT vocabularies and WALS TFRecords.

    command   its flags, their checks and `run` (no heavy import until the stage runs)
    job       the Beam + TF Transform pipeline (reads the source, writes both record sides)
    finish    the job's last step: counts checked, metadata.json written, preproc/ published
    examples  tf.train.Example bytes for whole columns at once
    errors    PreprocessError, the stage's refusal

The command module is the stage's public face: `from pipeline import preprocess` gives its
`add_args`, `validate_args`, `check_inputs`, `run` and `main`.
"""
from pipeline.preprocess.command import (add_args, check_inputs, main, print_query, run,  # noqa: F401
                                         validate_args, with_default_input)
from pipeline.preprocess.errors import PreprocessError  # noqa: F401
