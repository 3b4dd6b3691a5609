"""Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE): the launcher runs this file with
every template parameter as --name=value plus the Dataflow options; it is `python -m pipeline.run`.

A launch only builds and stages one Dataflow job (stages=preprocess, or stages=predict with
engine=beam): `run()` returns before the job runs, so each stage's job publishes its own output
as its last step (docs/GCP.md, "Runs that complete by construction")."""
from pipeline.run import exit_now, main

if __name__ == "__main__":
    exit_now(main())
