"""Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE): the launcher runs this file with
every template parameter as --name=value plus the Dataflow options; it is `python -m pipeline.run`."""
from pipeline.run import exit_now, main

if __name__ == "__main__":
    exit_now(main())
