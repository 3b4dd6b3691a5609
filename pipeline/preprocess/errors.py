"""The stage's error, below every module of the stage that raises it (no heavy import)."""
from pipeline.sources.counts import InputRefused


class PreprocessError(InputRefused):
    """The stage refused or failed for a reason the message explains (exit code 1)."""
