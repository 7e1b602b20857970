"""The package's shape: no import circles, no arrows back up between its layers, manifests read in one place.

The graph is read from the source (every import statement, those inside functions too), so a lazy
import that closes a circle is caught as well as a top-level one.
"""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "eagle_cli"

#: What each layer may not import (module-name prefixes): the algorithm knows no files, the file formats
#: no stages, a stage no other stage, and the service no stage.
FORBIDDEN = {
    "eagle_cli.expert": ("eagle_cli.artifacts", "eagle_cli.formats", "eagle_cli.stages", "eagle_cli.service",
                         "eagle_cli.cli", "eagle_cli.pipeline", "eagle_cli.ray_executor", "eagle_cli.config",
                         "eagle_cli.mllm", "eagle_cli.report"),
    "eagle_cli.formats": ("eagle_cli.stages", "eagle_cli.service", "eagle_cli.cli", "eagle_cli.pipeline",
                          "eagle_cli.pipeline", "eagle_cli.report", "eagle_cli.mllm"),
    "eagle_cli.stages": ("eagle_cli.service", "eagle_cli.cli", "eagle_cli.pipeline", "eagle_cli.ray_executor",
                         "eagle_cli.config"),
    "eagle_cli.service": ("eagle_cli.stages", "eagle_cli.cli", "eagle_cli.pipeline", "eagle_cli.ray_executor"),
    "eagle_cli.mllm": ("eagle_cli.stages", "eagle_cli.formats", "eagle_cli.service", "eagle_cli.cli"),
    "eagle_cli.prompts": ("eagle_cli.stages", "eagle_cli.formats", "eagle_cli.service", "eagle_cli.expert"),
}
#: The bottom layer: what every other module may import, importing nothing else of eagle's itself.
BOTTOM = ("eagle_cli.errors", "eagle_cli.devices", "eagle_cli.settings", "eagle_cli.params")
#: Stage modules that are helpers shared by stages, not stages.
STAGE_HELPERS = ("eagle_cli.stages.images",)


def _module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_of(path): path for path in PACKAGE.rglob("*.py")}


def _imports(module: str) -> set[str]:
    """The eagle_cli modules ``module`` imports (a name imported from a package counts as its submodule)."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base
                                                                                                      else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    return {name for name in found if name in MODULES and name != module}


#: The package root is a facade: its lazy exports (``from eagle_cli import Expert``) are not layers.
GRAPH = {module: _imports(module) for module in MODULES if module != "eagle_cli"}
for targets in GRAPH.values():
    targets.discard("eagle_cli")


def test_there_is_no_import_circle():
    state, circles = {}, []

    def visit(module, trail):
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == "open":
                circles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert circles == []


@pytest.mark.parametrize("layer", FORBIDDEN)
def test_no_layer_imports_one_above_it(layer):
    wrong = {module: sorted(t for t in targets if t.startswith(FORBIDDEN[layer]) and not t.startswith(layer))
             for module, targets in GRAPH.items() if module == layer or module.startswith(layer + ".")}
    assert {module: targets for module, targets in wrong.items() if targets} == {}


def test_the_settings_import_nothing_above_them():
    assert {module: sorted(GRAPH[module] - set(BOTTOM)) for module in BOTTOM} == dict.fromkeys(BOTTOM, [])


def test_no_stage_imports_another():
    stages = [m for m in GRAPH if m.startswith("eagle_cli.stages.") and m not in STAGE_HELPERS]
    # A stage may call extract to get its own inputs (update-bank extracts the new images).
    allowed = {("eagle_cli.stages.grow_bank", "eagle_cli.stages.extract")}
    crossing = [(m, t) for m in stages for t in GRAPH[m] if t in stages and (m, t) not in allowed]
    assert crossing == []


def test_only_the_formats_read_manifest_keys():
    pattern = re.compile(r"\.(params|summary|lineage|manifest)(\[|\.get\()")
    readers = [f"{module}: {line.strip()}" for module, path in MODULES.items()
               if not module.startswith(("eagle_cli.formats", "eagle_cli.artifacts"))
               for line in path.read_text().splitlines() if pattern.search(line) and "draft." not in line]
    assert readers == []
