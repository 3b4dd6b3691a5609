"""WALS math against a direct dense NumPy treatment of the same objective (small matrices)."""
import json

import numpy as np
import pytest
import tensorflow as tf

from factorization import wals

W0, LAMBDA, K = 0.1, 0.3, 4


def dense_problem(seed=0, nusers=12, nitems=9, density=0.35):
    rng = np.random.default_rng(seed)
    observed = rng.random((nusers, nitems)) < density
    observed[3] = False                       # a user with no ratings at all
    observed[:, 5] = False                    # an item with no ratings
    observed[0] = observed[0] | (np.arange(nitems) < 8)  # a row longer than K (Cholesky path)
    observed[:, 5] = False
    ratings = np.where(observed, rng.uniform(0.1, 1.0, (nusers, nitems)), 0.0)
    col_weight = rng.uniform(0.5, 2.0, nitems)
    users, items = np.nonzero(observed)
    return observed, ratings, col_weight, users, items


def dense_weights(observed, col_weight):
    """Weight of every (user, item) pair in the objective: w0 + c_j if observed, else w0."""
    return np.where(observed, W0 + col_weight[None, :], W0)


def dense_objective(u, v, observed, ratings, col_weight):
    """L of the wals module docstring, written out over the full dense matrix."""
    weight = dense_weights(observed, col_weight)
    return float((weight * (ratings - u @ v.T) ** 2).sum() + LAMBDA * ((u ** 2).sum() + (v ** 2).sum()))


def dense_row_solve(fixed, weight, ratings):
    """argmin of the dense weighted least squares for every row, `fixed` held constant."""
    out = np.zeros((weight.shape[0], fixed.shape[1]))
    for i in range(weight.shape[0]):
        lhs = fixed.T @ (weight[i][:, None] * fixed) + LAMBDA * np.eye(fixed.shape[1])
        out[i] = np.linalg.solve(lhs, fixed.T @ (weight[i] * ratings[i]))
    return out


def make_solver(users, items, ratings, col_weight, nusers, nitems, k=K, **kwargs):
    return wals.WALS(users, items, ratings[users, items].astype(np.float32), nusers, nitems, k,
                     LAMBDA, W0, col_weight[items].astype(np.float32), seed=7, **kwargs)


# CG in the whitened basis reaches the exact solution of a k-dim system in k steps (exact
# arithmetic), so cg_steps=K must pass the same closed-form check as the exact solver.
SOLVERS = [{}, {"solver": "cg", "cg_steps": K}]


@pytest.mark.parametrize("solver", SOLVERS, ids=["exact", "cg"])
@pytest.mark.parametrize("max_rows,max_entries", [(4096, 1 << 17), (2, 6)])
def test_half_steps_match_dense_closed_form(max_rows, max_entries, solver):
    observed, ratings, col_weight, users, items = dense_problem()
    solver = make_solver(users, items, ratings, col_weight, *observed.shape,
                         max_rows=max_rows, max_entries=max_entries, **solver)
    v0 = solver.col_factors.numpy().astype(np.float64)
    loss = solver.epoch()
    u1 = solver.row_factors.numpy().astype(np.float64)
    weight = dense_weights(observed, col_weight)
    np.testing.assert_allclose(u1, dense_row_solve(v0, weight, ratings), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(solver.col_factors.numpy(), dense_row_solve(u1, weight.T, ratings.T),
                               atol=1e-4, rtol=1e-4)
    assert np.all(solver.row_factors.numpy()[3] == 0)      # empty user -> zero factors
    assert np.all(solver.col_factors.numpy()[5] == 0)      # empty item -> zero factors
    dense = dense_objective(solver.row_factors.numpy(), solver.col_factors.numpy(), observed,
                            ratings, col_weight)
    assert loss == pytest.approx(dense, rel=1e-4)


def test_loss_decreases_monotonically_and_batching_does_not_change_results():
    observed, ratings, col_weight, users, items = dense_problem(seed=1, nusers=30, nitems=20,
                                                                density=0.3)
    coarse = make_solver(users, items, ratings, col_weight, *observed.shape)
    fine = make_solver(users, items, ratings, col_weight, *observed.shape, max_rows=3,
                       max_entries=8)
    assert fine.user_side.n_batches > coarse.user_side.n_batches
    losses = [coarse.epoch() for _ in range(8)]
    for _ in range(8):
        fine.epoch()
    assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(fine.row_factors.numpy(), coarse.row_factors.numpy(), atol=1e-4)


@pytest.mark.parametrize("solver", SOLVERS, ids=["exact", "cg"])
def test_single_factor_matches_closed_form(solver):
    observed, ratings, col_weight, users, items = dense_problem(seed=2)
    one = make_solver(users, items, ratings, col_weight, *observed.shape, k=1, **solver)
    v0 = one.col_factors.numpy().astype(np.float64)
    one.epoch()
    weight = dense_weights(observed, col_weight)
    np.testing.assert_allclose(one.row_factors.numpy(), dense_row_solve(v0, weight, ratings),
                               atol=1e-5, rtol=1e-4)


def test_batches_scale_with_128_over_k_and_stay_exact():
    """The trainer flags size batches at k=128; k=32 plans 4x the rows and entries per solve."""
    observed, ratings, col_weight, users, items = dense_problem(seed=5, nusers=40, nitems=30)
    flags = {"regularization": LAMBDA, "unobserved_weight": W0, "reg_scaling": "none",
             "rating_target": "rating", "target_scale": 1.0, "target_cap": None,
             "col_weights": "none", "feature_wt_factor": 1.0, "feature_wt_exp": 1.0, "seed": 7,
             "batch_size": 2, "batch_entries": 40, "solver": "cg", "cg_steps": 41,
             "init_scale": 1.0}
    plans = {k: wals.WALS.from_settings(users, items, ratings[users, items].astype(np.float32),
                                        *observed.shape, {**flags, "n_embeds": k})
             for k in (32, 128)}
    assert plans[32].item_side.n_batches < plans[128].item_side.n_batches
    row_sizes = lambda side: np.diff(side.row_starts.numpy())  # noqa: E731
    assert row_sizes(plans[128].item_side).max() <= 2 < row_sizes(plans[32].item_side).max() <= 8
    for solver in plans.values():  # CG with more steps than ratings per row: exact either way
        v0 = solver.col_factors.numpy().astype(np.float64)
        solver.epoch()
        np.testing.assert_allclose(
            solver.row_factors.numpy(),
            dense_row_solve(v0, dense_weights(observed, np.ones(observed.shape[1])), ratings),
            atol=1e-4, rtol=1e-4)

def test_cg_error_shrinks_with_steps_towards_the_exact_half_step():
    observed, ratings, col_weight, users, items = dense_problem(seed=4, nusers=40, nitems=30,
                                                                density=0.5)
    k = 8
    exact = make_solver(users, items, ratings, col_weight, *observed.shape, k=k)
    exact.epoch()
    errors = []
    for steps in (1, 2, 4, 8):
        cg = make_solver(users, items, ratings, col_weight, *observed.shape, k=k, solver="cg",
                         cg_steps=steps)
        cg.epoch()
        errors.append(np.abs(cg.col_factors.numpy() - exact.col_factors.numpy()).max())
    assert errors[0] > 1e-3, errors                       # one step is visibly approximate
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-4, errors


def test_cg_is_deterministic_and_decreases_the_loss():
    observed, ratings, col_weight, users, items = dense_problem(seed=1, nusers=30, nitems=20,
                                                                density=0.3)
    runs = []
    for _ in range(2):
        cg = make_solver(users, items, ratings, col_weight, *observed.shape, solver="cg",
                         cg_steps=2, max_rows=3, max_entries=8)
        runs.append(([cg.epoch() for _ in range(6)], cg.row_factors.numpy()))
    losses = runs[0][0]
    assert losses == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:])), losses


def test_rejects_unknown_solver_and_zero_cg_steps():
    observed, ratings, col_weight, users, items = dense_problem()
    with pytest.raises(ValueError, match="solver"):
        make_solver(users, items, ratings, col_weight, *observed.shape, solver="lu")
    with pytest.raises(ValueError, match="cg_steps"):
        make_solver(users, items, ratings, col_weight, *observed.shape, solver="cg", cg_steps=0)


def test_short_row_woodbury_path_equals_direct_cholesky():
    rng = np.random.default_rng(3)
    whitened = tf.constant(rng.normal(size=(10, K)), tf.float32)
    cols = tf.constant([[1, 2, 0], [4, 5, 6]], tf.int32)                  # width 3 < K
    ratings = tf.constant([[0.5, 0.2, 0.0], [0.1, 0.9, 0.4]], tf.float32)
    weights = tf.constant([[1.0, 2.0, 0.0], [0.5, 1.5, 3.0]], tf.float32)  # 0 = padding
    short, short_loss = wals.solve_short_rows(whitened, cols, ratings, weights, W0)
    long, long_loss = wals.solve_long_rows(whitened, cols, ratings, weights, W0)
    np.testing.assert_allclose(short.numpy(), long.numpy(), atol=1e-5)
    assert float(short_loss) == pytest.approx(float(long_loss), abs=1e-5)
    z = whitened.numpy().astype(np.float64)[[4, 5, 6]]                   # row 2, by hand
    c, a = np.array([0.5, 1.5, 3.0]), np.array([0.1, 0.9, 0.4])
    want = np.linalg.solve(np.eye(K) + z.T @ (c[:, None] * z), z.T @ ((W0 + c) * a))
    np.testing.assert_allclose(short.numpy()[1], want, atol=1e-5)


def test_column_weight_schemes():
    counts = np.array([0, 1, 4, 100])
    np.testing.assert_allclose(wals.column_weights(counts, "none", 5, 2), [1, 1, 1, 1])
    np.testing.assert_allclose(wals.column_weights(counts, "linear", 10, 2), [0, 10, 2.5, 0.1])
    np.testing.assert_allclose(wals.column_weights(counts, "log", 10, 0.5), [0, 1, 0.5, 0.1])
    np.testing.assert_allclose(wals.column_weights(counts, "log", 10, -0.5), [0, 1, 2, 10])
    with pytest.raises(ValueError, match="col_weights"):
        wals.column_weights(counts, "sqrt", 1, 1)


def test_rejects_non_positive_regularization():
    observed, ratings, col_weight, users, items = dense_problem()
    with pytest.raises(ValueError, match="regularization"):
        wals.WALS(users, items, ratings[users, items], *observed.shape, K, 0.0, W0,
                  col_weight[items], seed=1)


def test_trainer_solver_flags_reach_the_solver(tmp_path):
    """--solver cg with k steps (exact in k-dim) matches --solver exact; 1 step does not."""
    from tests.trainer_fixtures import random_matrix, train_args, write_preproc
    from trainer import task
    nusers, nitems, k = 40, 30, 5
    preproc = write_preproc(str(tmp_path / "preproc"), *random_matrix(nusers, nitems, 0.2, seed=3),
                            nusers, nitems)

    def train(name, *flags):
        task.run(train_args(preproc, str(tmp_path / name), "--n_embeds", str(k), "--epochs", "2",
                            "--eval_fraction", "0", *flags))
        hyper = json.load(open(tmp_path / name / "model.json"))["hyperparameters"]
        return np.load(tmp_path / name / "col_factors.npy"), hyper

    exact, exact_hyper = train("exact")
    full_cg, cg_hyper = train("cg", "--solver", "cg", "--cg_steps", str(k))
    one_step, _ = train("cg1", "--solver", "cg", "--cg_steps", "1")
    assert (exact_hyper["solver"], cg_hyper["solver"], cg_hyper["cg_steps"]) == ("exact", "cg", k)
    np.testing.assert_allclose(full_cg, exact, atol=1e-4)
    assert np.abs(one_step - exact).max() > 1e-3


def dense_row_solve_per_row(fixed, weight, ratings, row_lambda):
    out = np.zeros((weight.shape[0], fixed.shape[1]))
    for i in range(weight.shape[0]):
        lhs = fixed.T @ (weight[i][:, None] * fixed) + row_lambda[i] * np.eye(fixed.shape[1])
        out[i] = np.linalg.solve(lhs, fixed.T @ (weight[i] * ratings[i]))
    return out


@pytest.mark.parametrize("solver", SOLVERS, ids=["exact", "cg"])
def test_per_row_regularization_matches_dense_closed_form(solver):
    """Frequency-scaled λ (Rendle et al.): λ_i = λ·(n_i + w0·n_other), each row its own λ."""
    from factorization.objective import Objective
    observed, ratings, col_weight, users, items = dense_problem(seed=5)
    loss = Objective(regularization=0.02, unobserved_weight=W0, reg_scaling="frequency")
    user_lambda = loss.row_regularization(observed.sum(1), observed.shape[1])
    item_lambda = loss.row_regularization(observed.sum(0), observed.shape[0])
    assert len(set(user_lambda.tolist())) > 1
    model = make_solver(users, items, ratings, col_weight, *observed.shape,
                        row_regularization=(user_lambda, item_lambda), **solver)
    v0 = model.col_factors.numpy().astype(np.float64)
    value = model.epoch()
    weight = dense_weights(observed, col_weight)
    u1 = model.row_factors.numpy().astype(np.float64)
    np.testing.assert_allclose(u1, dense_row_solve_per_row(v0, weight, ratings, user_lambda),
                               atol=1e-4, rtol=1e-4)
    v1 = model.col_factors.numpy().astype(np.float64)
    np.testing.assert_allclose(v1, dense_row_solve_per_row(u1, weight.T, ratings.T, item_lambda),
                               atol=1e-4, rtol=1e-4)
    dense = float((weight * (ratings - u1 @ v1.T) ** 2).sum()
                  + (user_lambda * (u1 ** 2).sum(1)).sum() + (item_lambda * (v1 ** 2).sum(1)).sum())
    assert value == pytest.approx(dense, rel=1e-4)


def test_objective_targets_and_weights():
    from factorization.objective import Objective
    stored, item_weight = np.array([0.2, 0.5, 1.0], np.float32), np.array([1.0, 2.0, 0.5], np.float32)
    a, c = Objective(target_scale=3.0, target_cap=1.2).targets(stored, item_weight)
    np.testing.assert_allclose(a, [0.6, 1.2, 1.2]) and np.testing.assert_allclose(c, item_weight)
    a, c = Objective(rating_target="binary", target_scale=10.0).targets(stored, item_weight)
    np.testing.assert_allclose(a, [1, 1, 1])
    np.testing.assert_allclose(c, [2.0, 10.0, 5.0], rtol=1e-6)
    assert Objective().row_regularization([1, 2], 5) is None
    np.testing.assert_allclose(
        Objective(regularization=0.5, unobserved_weight=0.0, reg_scaling="frequency")
        .row_regularization([0, 4], 9), [0.5, 2.0])  # an empty row keeps plain λ
    with pytest.raises(ValueError, match="rating_target"):
        Objective(rating_target="stars")


def test_epoch_graph_does_not_grow_with_the_number_of_batches():
    """Each side is one in-graph loop: 3 batches or hundreds trace to the same graph."""
    observed, ratings, col_weight, users, items = dense_problem(seed=6, nusers=60, nitems=40,
                                                                density=0.3)

    def graph_size(**budget):
        solver = make_solver(users, items, ratings, col_weight, *observed.shape, **budget)
        graph = solver._epoch.get_concrete_function().graph
        return solver.user_side.n_batches + solver.item_side.n_batches, len(graph.as_graph_def().node)

    few, few_nodes = graph_size()
    many, many_nodes = graph_size(max_rows=1, max_entries=1)
    assert many >= 50 * few
    assert many_nodes == few_nodes
