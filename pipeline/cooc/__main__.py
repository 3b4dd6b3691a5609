"""`python -m pipeline.cooc`: the cooc stage alone."""
from pipeline.cooc.command import main

main()
