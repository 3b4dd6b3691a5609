"""The preprocessing_fn's settings the command line exposes (defaults and choices).

Constants only, no TensorFlow: flag definitions (pipeline/preprocess/command.py) import them without
paying for TF Transform; transforms/preprocessing.py uses the same names.
"""

DEFAULT_RATING_SCALE = 0.3
VOCABULARY_ANALYZERS = ("batched", "tft")  # transforms/vocabulary.py's analyzer, or TFT's own
