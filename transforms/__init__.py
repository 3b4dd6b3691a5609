"""The TF Transform side of preprocess and cooc: pure functions and schemas, no I/O."""
