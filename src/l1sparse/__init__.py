"""l1sparse: sparse neural networks with ℓ1 regularisation, at the sparsity you ask for."""

from .characterize import Characterization, characterize, full_gradient, lambda_max, lasso_lambda_max
from .models import MLP, build_model, mlp
from .penalty import (
    lambda_per_sample,
    lambda_summed,
    layer_names,
    map_lambda,
    param_groups,
    penalised_layers,
    resolve_lambdas,
    set_group_l1,
)
from .prox import ProxAdam, ProxSGD, soft_threshold
from .sparsity import SparsityReport, sparsity
from .train import DivergenceError, TrainResult, make_optimizer, train

__version__ = "0.1.0"

__all__ = [
    "Characterization",
    "DivergenceError",
    "MLP",
    "ProxAdam",
    "ProxSGD",
    "SparsityReport",
    "TrainResult",
    "build_model",
    "characterize",
    "full_gradient",
    "lambda_max",
    "lambda_per_sample",
    "lambda_summed",
    "lasso_lambda_max",
    "layer_names",
    "make_optimizer",
    "map_lambda",
    "mlp",
    "param_groups",
    "penalised_layers",
    "resolve_lambdas",
    "set_group_l1",
    "soft_threshold",
    "sparsity",
    "train",
    "__version__",
]
