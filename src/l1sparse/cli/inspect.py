"""``l1sparse inspect``: per-layer sparsity of a model file, and with ``--data`` the
first-order conditions at its recorded λ."""

from __future__ import annotations

from pathlib import Path

from .common import EXIT_OK, UsageError, _load_data
from .output import PENALTY_WEIGHTS, _read_penalty_weights


def _layer_lambdas(extra: dict, names: list[str]) -> dict[str, float] | None:
    lam = extra.get("lambda")
    if lam is None:
        return None
    if isinstance(lam, list):
        return dict(zip(names, (float(v) for v in lam)))
    return {n: float(lam) for n in names}


def cmd_inspect(args) -> int:
    from ..characterize import characterize
    from ..export import layer_sparsity, load, read_metadata

    source = Path(args.file)
    if source.is_dir():
        source = source / "model.safetensors"
    meta = read_metadata(source)
    cls = meta["module"].get("class", "YourNet")
    if args.data and not meta["architecture"]:
        raise UsageError(f"--data needs a model that l1sparse can rebuild; {source} holds the "
                         f"weights of a {cls} (the file names no code): check it in Python with "
                         f"l1sparse.load(FILE, model={cls}()) and l1sparse.characterize")
    # the table comes from the file alone, so a user's own module needs no class here
    model = load(source) if meta["architecture"] else None
    report = layer_sparsity(source)
    names = [layer.name for layer in report.layers]
    lambdas = _layer_lambdas(meta["extra"], names)
    described = (f"architecture {meta['architecture']}" if model is not None else
                 f"module {cls} (weights only: l1sparse.load(FILE, model={cls}()) fills it)")
    print(f"{source}: {meta['storage']} storage, {source.stat().st_size:,} bytes, {described}")
    w = max([10, *(len(n) + 2 for n in names)])
    print(f"{'layer':<{w}}{'shape':>14}{'nnz':>10}{'total':>10}{'zero frac':>11}{'lambda_k':>12}")
    for layer in report.layers:
        lam = f"{lambdas[layer.name]:.5g}" if lambdas else "-"
        print(f"{layer.name or '(root)':<{w}}{'x'.join(map(str, layer.shape)):>14}"
              f"{layer.nnz:>10}{layer.total:>10}{layer.zero_fraction:>11.4f}{lam:>12}")
    if report.layers:
        print(f"{'all':<{w}}{'':>14}{report.nnz:>10}{report.total:>10}"
              f"{report.zero_fraction:>11.4f}")
    from ..compact import unit_report
    from ..models import MLP

    if isinstance(model, MLP) and model.hidden:
        print("hidden units (live / width; without input, without output): " + "; ".join(
            f"after {u.layer} {u.live}/{u.width} ({u.no_input}, {u.no_output})"
            for u in unit_report(model)))
    if args.data:
        task = args.task or meta["extra"].get("task")
        if task is None:
            raise UsageError("give --task: the model file does not record it")
        if lambdas is None:
            raise UsageError("the model file records no lambda to check the conditions against")
        recorded = meta["extra"].get("task")
        if recorded is not None and args.task is not None and args.task != recorded:
            raise UsageError(f"--task {args.task}: the model in {source} was trained for "
                             f"{recorded}")
        args.task = task
        stats = meta["extra"].get("standardize")
        args.standardize = False  # the model file's own statistics are used, below
        data = _load_data(args)
        _check_model_fits_data(model, data, source, args.data)
        if stats is not None:
            # the saved network takes raw inputs; its λ belongs to the standardised problem
            import dataclasses

            from ..standardize import Standardization

            saved = Standardization.from_metadata(stats)
            if saved.x_mean.numel() != data.n_features:
                raise UsageError(f"the model file {source} has standardisation statistics for "
                                 f"{saved.x_mean.numel()} features, not {data.n_features}")
            data = dataclasses.replace(data, X_train=saved.transform_X(data.X_train),
                                       y_train=saved.transform_y(data.y_train))
            saved.unfold(model)
        model.eval()
        summary = characterize(model, data.X_train, data.y_train, task=task, lambdas=lambdas)
        print(summary.summary())
        from ..characterize import stationarity

        weights = _read_penalty_weights(source)
        print(stationarity(model, data.X_train, data.y_train, task=task,
                           lambdas=lambdas, weights=weights).line()
              + (" (weighted penalty: c_i from " + PENALTY_WEIGHTS + ")" if weights else ""))
    return EXIT_OK


def _check_model_fits_data(model, data, source, name) -> None:
    """The data set of ``inspect --data`` must be one the model can take, for its task."""
    inputs, outputs = getattr(model, "in_features", None), getattr(model, "out_features", None)
    if inputs is not None and data.n_features != inputs:
        raise UsageError(f"--data {name} has {data.n_features} features but the model in "
                         f"{source} takes {inputs}: give the data set it was trained on")
    if outputs is None:
        return
    if data.task == "classification":
        top = int(data.y_train.max()) + 1
        if top > outputs:
            raise UsageError(f"--data {name} has labels up to {top - 1} but the model in "
                             f"{source} has {outputs} outputs (classes 0..{outputs - 1})")
    elif data.n_outputs != outputs:
        raise UsageError(f"--data {name} has {data.n_outputs} target columns but the model in "
                         f"{source} predicts {outputs}")
