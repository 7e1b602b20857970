"""eagle run --executor ray: each category's expert stages as one Ray task (the ``ray`` extra).

The tasks run the same stage functions as a local run with the same settings, so they write the
same artifacts with the same ids into the same artifacts folder, which every node must see at the
same path (a shared filesystem). Before any work, each task checks that it sees a marker the
driver wrote there; a node that does not is reported with the path and the fix. A task that dies
(a worker or node lost) is retried by Ray; a stage that fails with a user error is reported for its
category, as locally, while the other categories complete. Reasoning stays on the driver, where
the model (or the client of the model servers) lives.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

from eagle_cli.config import RunConfig
from eagle_cli.context import Context
from eagle_cli.errors import EagleError, ParameterError

#: How often Ray reruns a task whose worker or node died.
TASK_RETRIES = 2


def expert_chains_on_ray(config: RunConfig, categories: list[str], chain: Callable, *, context: Context
                         ) -> dict[str, list | str]:
    """Run ``chain(config, source, category, context=…)`` (the pipeline's expert chain) for every category as a
    Ray task: by category, the chain's outcomes, or why its task could not start."""
    try:
        import ray
    except ImportError:
        raise ParameterError("executor: ray needs the ray extra: pip install 'eagle-cli[ray]'.") from None
    config = _absolute(config)
    root = config.run.store.artifacts
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".eagle-ray-{secrets.token_hex(8)}"
    marker.write_text("written by the eagle run driver; every Ray node must see this folder\n")
    # Ray prints its own notices (a worker lost, a task retried) on stdout, which --json keeps for the result.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            return _run_tasks(ray, config, categories, marker, chain, context)
        finally:
            marker.unlink(missing_ok=True)


def _run_tasks(ray, config: RunConfig, categories: list[str], marker: Path, chain: Callable,
               context: Context) -> dict[str, list]:
    _connect(ray, config.run.ray_address)
    gpus = 1 if config.extract.device.startswith("cuda") else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=TASK_RETRIES)(_expert_chain_task)
    plain = Context(artifacts=config.run.store.artifacts, run=context.run, force=context.force,
                    on_error=context.on_error)
    futures = {category: task.remote(chain, config, category, str(marker), plain) for category in categories}
    return {category: ray.get(future) for category, future in futures.items()}


def _connect(ray, address: str | None) -> None:
    if ray.is_initialized():
        return
    where = f"at {address}" if address else "on this machine"
    try:
        if address and address != "auto":
            # Ray waits minutes for an absent head and then exits the process; a socket says it at once.
            host, _, port = address.removeprefix("ray://").rpartition(":")
            socket.create_connection((host, int(port)), timeout=10).close()
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (OSError, RuntimeError, ValueError, SystemExit) as exc:
        raise EagleError(f"Cannot reach a Ray cluster {where} ({exc}). Start one (`ray start --head`, then "
                         "`ray start --address HEAD:PORT` on the other machines) and pass its address, or drop "
                         "`executor: ray` to run here.") from None


def _absolute(config: RunConfig) -> RunConfig:
    """Paths as every node will read them: absolute, from the driver's working directory."""
    data, store = config.run.data, config.run.store
    absolute = {key: getattr(data, key).resolve() for key in ("data", "good", "test", "split_csv", "mmad_json")
                if getattr(data, key) is not None}
    run = replace(config.run, data=replace(data, **absolute), store=replace(store, artifacts=store.artifacts.resolve()))
    return replace(config, run=run)


def _expert_chain_task(chain: Callable, config: RunConfig, category: str, marker: str, context: Context
                       ) -> list | str:
    # The pipeline hands its chain in (Ray sends functions by reference): this module never imports it.
    from eagle_cli.data.source import DataSource

    if not Path(marker).is_file():
        return (f"The artifacts folder {config.run.store.artifacts} is not shared with Ray node "
                f"{socket.gethostname()}: it cannot see {marker}. Put the artifacts (and data) on a filesystem "
                "every node mounts at the same path, and pass that path as `artifacts:`.")
    import ray
    import torch

    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    try:
        source = DataSource.of(config.run.data).resolved()
    except EagleError as exc:
        return str(exc)
    return chain(config, source, category, context=context)
