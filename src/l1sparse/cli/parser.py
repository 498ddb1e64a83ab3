"""The argument parser of every command, and ``--config`` files (TOML; flags win)."""

from __future__ import annotations

import argparse

from .. import __version__
from . import export, fit, inspect, train
from .common import (
    UsageError,
    _Parser,
    _batch,
    _exit_table,
    _grad_samples,
    _val_fraction,
    _hidden,
    _layer_fractions,
    _layer_counts,
    _layer_lam,
    _number,
)



def _patterns(text: str) -> list[str]:
    """``"fc1,layers.*"`` → ``["fc1", "layers.*"]``."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected patterns separated by commas, got {text!r}")
    return items

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="settings as in the flags (e.g. target-sparsity = 0.9); flags win")
    p.add_argument("--data", default=None, metavar="FILE",
                   help=".npz (X_train, y_train[, X_test, y_test]) or .csv (header row, last "
                        "column the target), or a built-in name (mg, mnist-5k, sine1d, "
                        "oscillating; a built-in name implies --task)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the IDX files of --data mnist / fashion-mnist are")
    p.add_argument("--test", default=None, metavar="FILE",
                   help="test data: a .csv like --data, or an .npz (its X_test, y_test, or "
                        "else X_train, y_train); checked against the training data's features "
                        "and classes; replaces a test split of --data")
    p.add_argument("--standardize", action="store_true",
                   help="train on standardised features (and, for regression, target): mean 0, "
                        "scale 1 on the training data; the saved model takes raw inputs and "
                        "predicts raw targets, and lambda is on the standardised scale")
    p.add_argument("--task", choices=["regression", "classification"], default=None,
                   help="squared loss (regression) or cross-entropy on labels 0..C-1 "
                        "(classification)")
    p.add_argument("--hidden", type=_hidden, default=[300, 100], metavar="W1,W2,...",
                   help='hidden widths (default 300,100); "" for a linear model')
    from ..models import ACTIVATIONS

    p.add_argument("--activation", default="relu", choices=sorted(ACTIVATIONS),
                   help="activation of the hidden layers (default relu)")
    p.add_argument("--epochs", type=_number(int, low=1), default=None,
                   help="length of one full training (default 20; 3000 full-batch)")
    p.add_argument("--batch-size", type=_batch, default="auto", metavar="B",
                   help="mini-batch size, or 'full' for full-batch proximal gradient "
                        "(default 128; full for a linear regression model)")
    p.add_argument("--lr", type=_number(float, low=0, low_open=True), default=None,
                   help="learning rate, > 0 (default 0.1 for sgd, 1e-3 for adam; full-batch "
                        "linear: 1/L)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None,
                   help="proximal SGD (default) or proximal Adam")
    p.add_argument("--momentum", type=_number(float, low=0, high=1, high_open=True),
                   default=None,
                   help="heavy-ball momentum of --optimizer sgd, in [0, 1) (default 0.9 "
                        "mini-batch, 0 full batch)")
    p.add_argument("--seed", type=_number(int), default=0,
                   help="seed of the initial weights, the batches and built-in data (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where training runs (default: cuda when available)")
    _output_flags(p)


def _output_flags(p: argparse.ArgumentParser) -> None:
    """-v and --quiet after the command too; SUPPRESS keeps a value given before it."""
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log the library's steps")
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress output (warnings, errors and the one-line result stay)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="l1sparse",
        description="Sparse neural networks with l1 regularisation: state the sparsity you "
                    "want, get the lambda that gives it.",
        epilog="examples:\n"
               "  l1sparse train --task regression --lam 5\n"
               "  l1sparse fit --data mnist-5k --task classification --target-sparsity 0.9 "
               "--out runs/mnist\n\n" + _exit_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"l1sparse {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the library's steps")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress output (warnings, errors and the one-line result stay)")
    parser.add_argument("--threads", type=_number(int, low=1), default=None, metavar="N",
                        help="PyTorch intra-op threads (default: $L1SPARSE_THREADS, else 1; "
                             "small layers run slower, not faster, on several threads)")
    sub = parser.add_subparsers(dest="command", required=True)
    parser.commands = sub.choices  # name -> subparser, for --config

    p = sub.add_parser("train", help="train at a given lambda and characterise the result",
                       description="Train at a given lambda (summed-loss scale) and print "
                                   "per-layer sparsity, the error and the first-order-condition "
                                   "summary. Without --data: synthetic 4-D regression.",
                       epilog=_exit_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.set_defaults(hidden=[64, 64])
    p.add_argument("--lam", type=_number(float, low=0), default=None,
                   help="one lambda (>= 0, summed-loss scale) for all layers")
    p.add_argument("--layer-lam", type=_layer_lam, default=None,
                   help="per-layer lambdas: 1,2,3 or fc1=2,fc3=0.5")
    p.add_argument("--penalty", choices=["l1", "reweighted"], default="l1",
                   help="plain l1 (default, the paper's model) or reweighted l1 (weights c_i "
                        "refreshed each epoch during the first 85 %% of the run, then held)")
    p.add_argument("--stop-tol", type=_number(float, low=0), default=0.0,
                   help="stop when the objective's relative change is below this")
    p.add_argument("--polish", action="store_true",
                   help="after training, a full-batch L-BFGS-B solve at lambda to a stationary "
                        "point (data in memory; converges with smooth activations such as "
                        "tanh, stalls with relu)")
    p.set_defaults(func=train.cmd_train)

    p = sub.add_parser("fit", help="find lambda for a target sparsity and train",
                       description="Choose lambda (or one lambda_k per layer) so that the "
                                   "trained network has the requested sparsity.",
                       epilog=_exit_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    g = p.add_argument_group("target (exactly one)")
    g.add_argument("--target-sparsity", type=float, default=None, metavar="F",
                   help="fraction of zero weights overall, in [0, 1)")
    g.add_argument("--target-nnz", type=_number(int, low=0), default=None, metavar="K",
                   help="number of nonzero weights overall")
    g.add_argument("--layer-sparsity", type=_layer_fractions, default=None,
                   metavar="F1,F2,...|fc1=F1,...",
                   help="fraction of zero weights per layer, in layer order or by name")
    g.add_argument("--layer-nnz", type=_layer_counts, default=None,
                   metavar="K1,K2,...|fc1=K1,...",
                   help="number of nonzero weights per layer, in layer order or by name")
    p.add_argument("--tol", type=_number(float, low=0), default=None,
                   help="tolerance: a fraction with --target-sparsity/--layer-sparsity "
                        "(default 0.005), a count with --target-nnz/--layer-nnz (default 0: "
                        "exactly K)")
    p.add_argument("--rel-tol", type=_number(float, low=0, high=1, high_open=True),
                   default=None, metavar="R",
                   help="tolerance relative to each target count, |nnz - K| <= R*K (the "
                        "paper: 0.001 with one lambda, 0.05 or 0.1 per layer); instead of --tol")
    p.add_argument("--layers-met", type=_number(int, low=1), default=None, metavar="K",
                   help="a per-layer target is met when K of its layers are within their "
                        "tolerance (the paper: 3 of 4); default all; paper and retrain modes")
    p.add_argument("--mode", choices=["warm", "retrain", "paper"], default="warm",
                   help="warm: one continued training that moves lambda as it goes (default); "
                        "retrain: a full training from the same start for every lambda, the "
                        "next lambda from the sorted gradients; paper: the same trainings with "
                        "the paper's bracketed-median rule, each stopped on entering the "
                        "tolerance, at a constant lr and without momentum unless --momentum")
    p.add_argument("--include", type=_patterns, default=None, metavar="P1,P2,...",
                   help="warm mode: penalise only these tensors (shell-style patterns over "
                        "parameter names, e.g. 'fc1,fc2'); default every weight matrix")
    p.add_argument("--exclude", type=_patterns, default=None, metavar="P1,P2,...",
                   help="warm mode: leave these tensors dense (e.g. 'fc3', the classifier); "
                        "every count, target and report is over the rest")
    p.add_argument("--steps", type=_number(int, low=1), default=None, metavar="S",
                   help="warm mode: length of the run in optimizer steps (wins over --epochs; "
                        "default 20 epochs but at least 3000 steps)")
    p.add_argument("--val-fraction", type=_val_fraction, default="auto", metavar="F",
                   help="warm mode: the share of the training data held out to choose the "
                        "run length and to judge that the network works; 'auto' (default) "
                        "holds out 20 %% only on small data, where 20 epochs are under 3000 "
                        "steps; 0 never")
    p.add_argument("--penalty", choices=["auto", "reweighted", "l1"], default="auto",
                   help="warm mode: reweighted l1 (auto for networks) or plain l1 (auto for "
                        "a linear model; the paper's tables and retrain mode use it)")
    p.add_argument("--max-outer", type=_number(int, low=1), default=40,
                   help="most outer iterations (lambda updates) before giving up (default 40)")
    p.add_argument("--grad-samples", type=_grad_samples, default="auto", metavar="M",
                   help="no longer used: the retrain and paper rules read the full-data "
                        "gradient (kept so that old command lines and configs run; a given "
                        "value is warned about)")
    p.add_argument("--debias-epochs", type=_number(float, low=0), default=0, metavar="K",
                   help="after the target is met, fine-tune the surviving weights for K epochs "
                        "with the zeros fixed and no penalty (lr/10); result.json keeps the "
                        "l1 solution's metrics under 'debias'")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (result.json, history.csv, model.safetensors, "
                        "checkpoint.pt); must be empty or new unless --resume or --force")
    p.add_argument("--resume", action="store_true",
                   help="warm mode: continue from DIR/checkpoint.pt (written as the run goes); "
                        "retrain and paper modes cannot continue a run")
    p.add_argument("--force", action="store_true",
                   help="start afresh in a non-empty --out, replacing the previous run's files")
    p.add_argument("--polish", action="store_true",
                   help="after the selection, full-batch solves to a stationary point (data in "
                        "memory; converges with smooth activations such as tanh, stalls with "
                        "relu), lambda re-chosen on them until the count is within the "
                        "tolerance (exit 3 with the counts if not); result.json 'polish'")
    p.set_defaults(func=fit.cmd_fit)

    p = sub.add_parser("export", help="write a model file as dense or CSR safetensors",
                       description="Re-write a model (a fit output directory or a model file) "
                                   "as dense safetensors (zeros kept) or CSR per layer.",
                       epilog="example:\n  l1sparse export runs/demo --format csr "
                              "--out demo.csr.safetensors\n\n" + _exit_table(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="DIR|FILE",
                   help="a fit output directory or a model file (.safetensors)")
    p.add_argument("--format", choices=["dense", "csr"], default="csr",
                   help="csr: only the nonzeros of each weight matrix (default); dense: all")
    p.add_argument("--compact", action="store_true",
                   help="drop the hidden units with no incoming or no outgoing weight (same "
                        "function, a narrower MLP)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the model file to write (its directory must exist)")
    _output_flags(p)
    p.set_defaults(func=export.cmd_export)

    p = sub.add_parser("inspect", help="per-layer sparsity of a model file",
                       description="Print shape, nnz, zero fraction and lambda_k per layer; "
                                   "with --data, the first-order-condition summary.",
                       epilog="example:\n  l1sparse inspect runs/demo --data mnist-5k\n\n"
                              + _exit_table(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="DIR|FILE",
                   help="a fit output directory or a model file (.safetensors)")
    p.add_argument("--data", default=None, metavar="DATA",
                   help="the training data (file or built-in name) to check the first-order "
                        "conditions on: the data set the model was trained on")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the IDX files of --data mnist / fashion-mnist are")
    p.add_argument("--task", choices=["regression", "classification"], default=None,
                   help="the task of --data (default: the one recorded in the model file)")
    p.add_argument("--seed", type=_number(int), default=0,
                   help="seed of a built-in data set's split (as given to fit; default 0)")
    _output_flags(p)
    p.set_defaults(func=inspect.cmd_inspect)

    from ..experiments.run import add_parser as add_reproduce

    add_reproduce(sub)
    for name, command in sub.choices.items():
        for action in command._actions:
            # a flag given before the command must survive the command's own default
            if action.dest in ("verbose", "quiet"):
                action.default = argparse.SUPPRESS
    return parser


REQUIRED = {"fit": ("data", "task", "out"), "train": ("task",), "export": (), "inspect": (),
            "reproduce": ()}


def _apply_config(parser: argparse.ArgumentParser, args, argv) -> argparse.Namespace:
    """Re-parse with the TOML file's values as defaults: flags still win over the file."""
    import tomllib

    try:
        with open(args.config, "rb") as fh:
            config = tomllib.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {args.config!r} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read the config file {args.config!r}: {exc}") from None
    config = config.get(args.command, config)  # a [fit] table, or flat keys
    sub = parser.commands[args.command]
    known = {a.dest for a in sub._actions if a.dest not in ("help", "config")}
    values = {}
    for key, value in config.items():
        dest = key.replace("-", "_")
        if dest not in known:
            raise UsageError(f"unknown key {key!r} in {args.config}; the '{args.command}' "
                             f"settings are {sorted(k.replace('_', '-') for k in known)}")
        if isinstance(value, list):
            value = ",".join(map(str, value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # argparse then checks a file's value as it checks a flag's
        values[dest] = value
    sub.set_defaults(**values)
    return parser.parse_args(argv)
