"""The paper's experiments: regression and MNIST-format classification, tables and figures.

=====  =====================================================================================
T1     regression, one λ for several sparsity targets (:func:`run_regression`)
T2     regression, one λ_k per layer
T3     MNIST-format classification with LeNet-300-100, one λ (:func:`run_classification`):
       rows for plain ℓ1 as in the paper and for the default of ``fit`` (reweighted ℓ1 on the
       scheduler)
T4     the same network, one λ_k per layer, the same two kinds of rows
T5     the first-order conditions at the chosen λ (:func:`characterization_table`)
=====  =====================================================================================

``l1sparse reproduce`` (:mod:`.run`) runs them and writes Markdown and CSV tables, PNG figures,
``report.md``, ``summary.json`` and ``config.json``. Configurations are frozen dataclasses with
``quick()`` (for the tests; a minute or two on one CPU thread) and ``full()`` variants.
"""

from .characterization import characterization_rows, characterization_table
from .classification import (
    CLASSIFICATION_DATASETS,
    ClassificationConfig,
    ClassificationResult,
    load_classification_data,
    run_classification,
)
from .common import Column, PathPoint, Run, Table, lambda_path, path_start
from .regression import (
    RegressionConfig,
    RegressionResult,
    relative_error,
    run_regression,
)
from .run import (
    TABLES,
    ReproduceConfig,
    add_parser,
    build_config,
    parse_args,
    run_reproduce,
)

__all__ = [
    "CLASSIFICATION_DATASETS",
    "TABLES",
    "ClassificationConfig",
    "ClassificationResult",
    "Column",
    "PathPoint",
    "RegressionConfig",
    "RegressionResult",
    "ReproduceConfig",
    "Run",
    "Table",
    "add_parser",
    "build_config",
    "characterization_rows",
    "characterization_table",
    "lambda_path",
    "load_classification_data",
    "parse_args",
    "path_start",
    "relative_error",
    "run_classification",
    "run_regression",
    "run_reproduce",
]
