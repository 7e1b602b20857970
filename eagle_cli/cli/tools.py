"""Helpers around the stages: synthetic data, backbone weights, the artifact store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.markup import escape

from eagle_cli import artifacts
from eagle_cli.cli.app import Session, artifacts_app, backbones_app, command, data_app, err, out
from eagle_cli.cli.options import ArtifactsOpt, JsonOpt, QuietOpt, categories
from eagle_cli.errors import EagleError
from eagle_cli.params import Backbone


@command(data_app, "synth")
def data_synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the dataset into (MVTec-AD layout).")],
    variation: Annotated[Literal["clean", "realistic", "highres"], typer.Option(
        help="clean: steady parts and strong defects (easy; proves the plumbing). realistic: pose, lighting, "
             "blur and noise vary between good parts and defects are weak (for judging thresholds and quality). "
             "highres: realistic textures with small defects (each under 0.1 % of the image, a third near the "
             "border), for --size 1024 and up (for judging full-frame and tiled inspection).")
    ] = "clean",
    category: Annotated[Optional[str], typer.Option(
        "--categories", help="Comma-separated; clean: brick, grass, gravel, washer; realistic adds tissue and "
                             "coins; highres: brick, grass, gravel, tissue. Default: all of the variation.")] = None,
    train: Annotated[int, typer.Option(min=0, help="Good training images per category.")] = 30,
    test_good: Annotated[int, typer.Option(min=0, help="Good test images per category.")] = 10,
    test_per_defect: Annotated[int, typer.Option(min=0, help="Test images per defect kind (scratch, stain, hole, "
                                                             "patch).")] = 4,
    size: Annotated[int, typer.Option(min=64, help="Image side, px.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes the same pixels.")] = 0,
    quiet: QuietOpt = False,
):
    """Generate a seeded synthetic MVTec-AD-style dataset with exact defect masks (offline).

    Example: eagle data synth data/realistic --variation realistic --train 60 --test-good 20
    """
    from eagle_cli.data.synthetic import VARIATION_CATEGORIES, generate

    names = tuple(categories(category, list(VARIATION_CATEGORIES[variation])))
    with Session(quiet, False).task("synthesise", len(names)) as advance:
        folders = generate(out_dir, categories=names, variation=variation, n_train=train, n_test_good=test_good,
                           n_test_per_defect=test_per_defect, size=size, seed=seed, progress=advance)
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
    kind: Annotated[Optional[Literal[artifacts.KINDS]], typer.Option(help="Only this kind.")] = None,
    run: Annotated[Optional[str], typer.Option(help="Only this run.")] = None,
    category: Annotated[Optional[str], typer.Option(help="Only this category.")] = None,
    artifacts_root: ArtifactsOpt = Path("artifacts"), as_json: JsonOpt = False,
):
    """List artifacts, oldest first.

    Example: eagle artifacts ls --kind threshold --run demo
    """
    refs = artifacts.list_artifacts(artifacts_root, run=run, category=category, kind=kind)
    if as_json:
        print(json.dumps([{"kind": r.kind, "id": r.id, "path": str(r.path), "created": r.manifest.get("created")}
                          for r in refs], indent=2))
        return
    for ref in refs:
        out.print(f"{ref.manifest.get('created', '')[:19]}  {ref.kind:11} {ref.id}  {escape(str(ref.path))}")


@command(artifacts_app, "show")
def artifacts_show(
    ref: Annotated[str, typer.Argument(help="Artifact path or id (prefix).")],
    artifacts_root: ArtifactsOpt = Path("artifacts"),
):
    """Print an artifact's manifest and its lineage chain (validating hashes).

    Example: eagle artifacts show 3f2a
    """
    path = Path(ref)
    if not path.exists():
        matches = [r for r in artifacts.list_artifacts(artifacts_root) if r.id.startswith(ref)]
        if len(matches) != 1:
            raise EagleError(f"{len(matches)} artifacts match {ref!r} under {artifacts_root}; "
                             "give a path or more digits.")
        path = matches[0].path
    opened = artifacts.open_artifact(path)
    print(json.dumps(opened.manifest, indent=2))
    current = opened
    while current.manifest["inputs"]:
        item = current.manifest["inputs"][0]
        current = artifacts.open_artifact(current.locate(item), item["kind"], verify=False)
        err.print(f"  ← {current.kind} {current.id} {escape(str(current.path))}")
