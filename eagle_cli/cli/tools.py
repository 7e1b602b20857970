"""Helpers around the stages: synthetic data, backbone weights, the artifact store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.markup import escape

from eagle_cli import artifacts
from eagle_cli.cli.app import (
    Session,
    artifact_entry,
    artifacts_app,
    backbones_app,
    command,
    data_app,
    document,
    err,
    only,
    out,
)
from eagle_cli.cli.options import Categories
from eagle_cli.errors import EagleError
from eagle_cli.params import Backbone, OutputParams, StoreParams, SynthParams

Store = Annotated[StoreParams, only("artifacts")]


@command(data_app, "synth")
def data_synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the dataset into (MVTec-AD layout).")],
    data: Categories, settings: SynthParams, output: OutputParams,
):
    """Generate a seeded synthetic MVTec-AD-style dataset with exact defect masks (offline). Categories: clean has
    brick, grass, gravel, washer; realistic adds tissue and coins; highres has the realistic ones.

    Example: eagle data synth data/realistic --variation realistic --train 60 --test-good 20
    """
    from eagle_cli.data.synthetic import VARIATION_CATEGORIES, generate

    names = data.category or VARIATION_CATEGORIES[settings.variation]
    session = Session("data synth", output)
    with session.task("synthesise", len(names)) as advance:
        folders = generate(out_dir, categories=tuple(names), variation=settings.variation, n_train=settings.train,
                           n_test_good=settings.test_good, n_test_per_defect=settings.test_per_defect,
                           size=settings.size, seed=settings.seed, progress=advance)
    if output.json:
        print(json.dumps(document("data synth", written=[str(folder) for folder in folders]), indent=2))
    else:
        err.print(f"[green]wrote[/] {len(folders)} categories under [bold]{escape(str(out_dir))}[/]")


@command(backbones_app, "ls")
def backbones_ls():
    """List backbones, their feature layers and whether ImageNet weights are cached.

    Example: eagle backbones ls
    """
    from eagle_cli.expert.backbones import BACKBONES, cache_dir

    for spec in BACKBONES.values():
        cached = (cache_dir() / spec.weights_file).is_file()
        out.print(f"{spec.name:18} layers={','.join(spec.layers):24} {spec.weights_file:36} "
                  f"{'[green]cached[/]' if cached else '[yellow]not cached[/]'}")
    out.print(f"cache: {escape(str(cache_dir()))}")


@command(backbones_app, "import-weights")
def backbones_import(
    name: Annotated[Backbone, typer.Argument(help="Backbone name.")],
    file: Annotated[Path, typer.Argument(help="torchvision's ImageNet .pth file for it, copied from elsewhere.")],
):
    """Check a weights file's published sha256 prefix and put it in the torchvision cache.

    Example: eagle backbones import-weights wide_resnet50_2 /mnt/usb/wide_resnet50_2-95faca4d.pth
    """
    from eagle_cli.expert.backbones import get_spec, import_weights

    target = import_weights(get_spec(name), file)
    err.print(f"[green]wrote[/] {escape(str(target))}")


@command(artifacts_app, "ls")
def artifacts_ls(
    data: Categories, store: Store, output: Annotated[OutputParams, only("json")],
    kind: Annotated[Optional[Literal[artifacts.KINDS]], typer.Option(help="Only this kind.")] = None,
    run: Annotated[Optional[str], typer.Option(help="Only this run.")] = None,
):
    """List artifacts, oldest first.

    Example: eagle artifacts ls --kind threshold --run demo
    """
    refs = [ref for ref in artifacts.list_artifacts(store.artifacts, run=run, kind=kind)
            if not data.category or ref.category in data.category]
    if output.json:
        print(json.dumps(document("artifacts ls", artifacts=[artifact_entry(ref) for ref in refs]), indent=2))
        return
    for ref in refs:
        out.print(f"{ref.created[:19]}  {ref.kind:11} {ref.id}  {escape(str(ref.path))}")


@command(artifacts_app, "show")
def artifacts_show(
    ref: Annotated[str, typer.Argument(help="Artifact path or id (prefix).")], store: Store,
):
    """Print an artifact's manifest (as JSON, validated) and its lineage chain.

    Example: eagle artifacts show 3f2a
    """
    path = Path(ref)
    if not path.exists():
        matches = [r for r in artifacts.list_artifacts(store.artifacts) if r.id.startswith(ref)]
        if len(matches) != 1:
            raise EagleError(f"{len(matches)} artifacts match {ref!r} under {store.artifacts}; "
                             "give a path or more digits.")
        path = matches[0].path
    opened = artifacts.open_artifact(path)
    print(json.dumps(opened.manifest, indent=2))
    for source in opened.upstream():
        err.print(f"  ← {source.kind} {source.id} {escape(str(source.path))}")

