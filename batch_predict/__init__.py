"""The predict stage (`python -m batch_predict.run`) and batch fold-in (`python -m batch_predict.fold_in`).

    run            the predict stage's command line: flags, their checks, `main`
    predict        the stage's work: top-k lists, targeting, similar items, exports, SavedModel
    beam_job       the same top-k as a Beam job (--predict_engine beam)
    topk           blocked top-k scoring with exclusions and filters
    outputs        text outputs staged and published whole, with the manifest
    serving        the SavedModel (serving_default and fold_in signatures)
    artifacts      the preproc and model files the stage reads, checked
    filters        --include_items / --exclude_items
    bigquery, bigquery_write   the BigQuery tables and their load jobs
    fold_in        new and changed visitors folded into a trained model
"""
import stagekit  # noqa: F401 (TensorFlow's log level, before any module here imports it)
