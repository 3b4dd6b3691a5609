"""`python -m pipeline.preprocess`: the preprocess stage alone."""
from pipeline.preprocess.command import main

main()
