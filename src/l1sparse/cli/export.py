"""``l1sparse export``: re-write a model file as dense or CSR safetensors."""

from __future__ import annotations

from pathlib import Path

from .common import EXIT_OK, UsageError


def cmd_export(args) -> int:
    from ..export import convert, load, read_metadata, save_model

    source = Path(args.source)
    if source.is_dir():
        source = source / "model.safetensors"
    meta = read_metadata(source)
    extra = meta["extra"]
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a directory; give a file name, such as "
                         f"{str(out / ('model.' + args.format + '.safetensors'))!r}")
    if out.parent and not out.parent.exists():
        raise UsageError(f"the directory of --out {str(out)!r} does not exist")
    note = ""
    if args.compact:
        from ..compact import compact
        from ..models import MLP

        model = load(source) if meta["architecture"] else None
        if not isinstance(model, MLP):
            raise UsageError(f"--compact needs an MLP model file; {source} holds a "
                             f"{meta['module'].get('class', 'module')}")
        before = model.hidden
        model = compact(model)
        extra = {**extra, "compacted_from_hidden": before}
        note = f"; hidden {before} -> {model.hidden}"
        written = save_model(model, out, format=args.format, metadata=extra)
    else:  # tensor by tensor, so a file of a user's own module converts without its class
        written = convert(source, out, format=args.format)
    print(f"wrote {out} ({args.format}, {written:,} bytes; source {source.stat().st_size:,} "
          f"bytes{note})")
    return EXIT_OK
