"""pipeline package of the GA WALS recommendation pipeline."""
import os

# TensorFlow's C++ INFO lines (CUDA stubs, CPU features) drown the stage logs on CPU machines;
# warnings and errors still show. A value set by the user wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
