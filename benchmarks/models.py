"""Both sides of every comparison: our trainer's flags at their defaults, and implicit's ALS
fitted on the same COO interactions (implicit is imported only where it is fitted)."""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from trainer import tune

K = 10  # top-k of every ranking metric here
IMPLICIT = {"regularization": 1.0, "alpha": 10.0}  # speed does not depend on them (3 CG steps)


def trainer_args(**overrides) -> argparse.Namespace:
    """The flags of `trainer.tune` (trainer flags included) at their defaults, plus overrides."""
    args = tune.build_parser().parse_args(["--input_dir", "-", "--output_dir", "-"])
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


def default_args(**overrides) -> argparse.Namespace:
    """The trainer's flags at their defaults, seeded, ranking the top K."""
    return trainer_args(**{"seed": 42, "top_k": K, **overrides})


def implicit_model(users, items, ratings, shape, k, use_cg, iterations, callback=None,
                   regularization=IMPLICIT["regularization"], alpha=IMPLICIT["alpha"],
                   threads=None, seed=1):
    """implicit's ALS fitted on the COO interactions (no TensorFlow imported here)."""
    import scipy.sparse as sparse
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits
    model = AlternatingLeastSquares(factors=k, iterations=iterations, use_cg=use_cg,
                                    regularization=regularization, alpha=alpha,
                                    num_threads=threads or os.cpu_count(), random_state=seed)
    with threadpool_limits(1, "blas"):  # implicit's own advice; it parallelises by rows
        model.fit(sparse.csr_matrix((ratings, (users, items)), shape=shape),
                  show_progress=False, callback=callback)
    return model


def fit_implicit(train, nusers, nitems, factors, regularization, alpha, iterations, threads,
                 seed, use_cg=True):
    """implicit's ALS on the same split: (user factors, item factors, seconds per iteration)."""
    users, items, ratings = train
    tick = time.perf_counter()
    model = implicit_model(users, items, ratings, (nusers, nitems), factors, use_cg, iterations,
                           regularization=regularization, alpha=alpha, threads=threads, seed=seed)
    seconds = time.perf_counter() - tick
    return np.asarray(model.user_factors), np.asarray(model.item_factors), seconds / iterations
