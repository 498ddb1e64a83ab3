"""l1sparse: sparse neural networks with ℓ1 regularisation, at the sparsity you ask for."""

from .characterize import (
    Characterization,
    Stationarity,
    characterize,
    full_gradient,
    lambda_max,
    lasso_lambda_max,
    stationarity,
)
from .convex import Certificate, ConvexSelection, ConvexSolution, certificate
from .convex import select as select_convex
from .convex import solve as solve_convex
from .convex import to_model as convex_to_model
from .compact import CompactResult, UnitReport, compact, compact_model, rebalance, unit_report
from .export import load, read_metadata, save_model
from .models import MLP, build_model, mlp, paper_cnn, paper_mlp, resnet_small, vit_small
from .polish import PolishResult, PolishSelection, polish, polish_to_target
from .penalty import (
    L1Penalty,
    ReweightedL1Penalty,
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
from .retrain import RetrainResult, retrain_select
from .scheduler import SparsityScheduler, live_units
from .targets import make_target
from .select import SelectionResult, Target, fit_sparse, resolve_steps
from .sparse_inference import SparseLinear, to_sparse
from .sparsity import SparsityReport, sparsity
from .train import DivergenceError, TrainResult, make_optimizer, recalibrate_batchnorm, train
from .standardize import Standardization
from .tensors import select_tensors
from .validation import check_training_data

__version__ = "0.1.0"

__all__ = [
    "SparsityScheduler",
    "recalibrate_batchnorm",
    "select_tensors",
    "compact_model",
    "CompactResult",
    "paper_cnn",
    "paper_mlp",
    "resnet_small",
    "vit_small",
    "PolishSelection",
    "polish_to_target",
    "RetrainResult",
    "retrain_select",
    "live_units",
    "L1Penalty",
    "ReweightedL1Penalty",
    "resolve_steps",
    "Certificate",
    "ConvexSelection",
    "ConvexSolution",
    "PolishResult",
    "Stationarity",
    "certificate",
    "convex_to_model",
    "polish",
    "select_convex",
    "solve_convex",
    "stationarity",
    "compact",
    "rebalance",
    "unit_report",
    "UnitReport",
    "to_sparse",
    "SparseLinear",
    "save_model",
    "read_metadata",
    "load",
    "Characterization",
    "DivergenceError",
    "MLP",
    "ProxAdam",
    "ProxSGD",
    "SelectionResult",
    "SparsityReport",
    "Target",
    "TrainResult",
    "build_model",
    "characterize",
    "check_training_data",
    "Standardization",
    "fit_sparse",
    "full_gradient",
    "lambda_max",
    "lambda_per_sample",
    "lambda_summed",
    "lasso_lambda_max",
    "layer_names",
    "make_optimizer",
    "make_target",
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
