"""batch_predict package of the GA WALS recommendation pipeline."""
