import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

torch.set_num_threads(1)

# The machine is shared: no per-example deadline, and the same examples every run so that a
# failure is reproducible and CI is not at the mercy of a lucky draw.
settings.register_profile("l1sparse", deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much])
settings.load_profile("l1sparse")


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


@pytest.fixture(scope="session")
def cls_file(tmp_path_factory):
    """A 4-class problem in 20 dimensions as an .npz: 1,000 training and 200 test samples."""
    g = np.random.default_rng(0)
    X = g.standard_normal((1200, 20)).astype(np.float32)
    y = (X @ g.standard_normal((20, 4)) + 0.3 * g.standard_normal((1200, 4))).argmax(1)
    path = tmp_path_factory.mktemp("data") / "cls.npz"
    np.savez(path, X_train=X[:1000], y_train=y[:1000], X_test=X[1000:], y_test=y[1000:])
    return path
