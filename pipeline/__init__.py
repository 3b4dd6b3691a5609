"""The driver (`run`: every stage in one command), the Beam stages (`preprocess`, `cooc`), what
they read (`sources`, `sample`), the cloud launchers (`cloud`) and the run's report (`report`)."""
import stagekit  # noqa: F401 (TensorFlow's log level, before any stage imports it)
