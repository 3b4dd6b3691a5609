"""pipeline package of the GA WALS recommendation pipeline."""
