"""Reading each `--source` into interaction rows.

    ga       GA semantics (presets, sessions -> interactions): pure Python
    sql      the presets' BigQuery SQL: pure Python
    rows, interactions, textio   row batches, delimited files, line reading (pyarrow; Beam I/O)
    read     the Beam PTransforms the preprocess stage reads with (`source_transform`)

This package module imports nothing, so flag definitions can use `ga`'s and `sql`'s constants
without importing Beam.
"""
