"""The WALS model, shared by the stages that train it, predict with it and fold users into it;
it imports no stage.

    objective       the weighted objective: targets, confidence weights, per-row lambda
    wals            the solver (exact and CG half-steps), its state, the loss
    ranking         top-k over factor scores with exclusions
    fold_in         factors of new users against fixed item factors
    warm_start      a previous model's factors aligned to new vocabularies
    input           the preproc TFRecords read into a sparse matrix (both sides)
    pmi_embeddings  item embeddings factorised from a PMI matrix
"""
import stagekit  # noqa: F401 (TensorFlow's log level, before any module here imports it)
