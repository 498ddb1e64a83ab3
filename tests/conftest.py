import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def lasso_problem():
    """A small sparse linear regression problem with an intercept (float64)."""
    g = np.random.default_rng(0)
    n, p = 200, 20
    X = g.standard_normal((n, p))
    w = np.zeros(p)
    w[:5] = [3.0, -2.0, 1.5, 1.0, -0.5]
    y = X @ w + 0.5 * g.standard_normal(n) + 1.0
    return X, y
