"""One connection to Ray per piece of work: join a running cluster or start a local one.

govml shuts down only a Ray it started itself; a Ray that was already connected in
this process (a notebook, a test fixture, ``ray.init`` by the caller) is left running.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TypeVar

from govml.config import ComputeConfig
from govml.errors import ConfigError, GovmlError

_Executor = TypeVar("_Executor")


class ComputeError(GovmlError):
    """The distributed engine is missing or cannot be reached."""


def import_ray() -> ModuleType:
    """The ``ray`` module, or a clear error naming the extra that installs it."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ComputeError(
            "compute engine 'ray' needs Ray: pip install 'govml[scale]' (or engine: local)"
        ) from None
    return ray


@contextmanager
def ray_connection(*, address: str | None = None, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """Yield the connected ``ray`` module; start a local Ray when ``address`` is None.

    ``address`` is anything ``ray.init`` takes: ``auto``, ``ray://head:10001``, ``host:6379``.
    """
    if address is not None and num_cpus is not None:
        raise ConfigError(
            "compute.num_cpus sizes a local Ray only; a cluster at compute.address has its own CPUs"
        )
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(
            address=address, num_cpus=num_cpus, include_dashboard=False,
            logging_level=logging.WARNING, log_to_driver=False, configure_logging=False,
        )
    except (ConnectionError, TimeoutError, ValueError) as exc:
        where = f"at {address!r}" if address else "locally"
        raise ComputeError(f"cannot start or reach Ray {where}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_cpus(ray: ModuleType) -> int:
    """The CPUs the connected cluster offers (at least one)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


@contextmanager
def compute_session(config: ComputeConfig) -> Iterator[None]:
    """Hold one Ray connection over several stages (the trials, then the evaluation); nothing for ``local``."""
    if config.engine == "local":
        yield
        return
    with ray_connection(address=config.address, num_cpus=config.num_cpus):
        yield


@contextmanager
def engine_executor(config: ComputeConfig, make: Callable[[int], _Executor]) -> Iterator[_Executor | None]:
    """None (work stays in process) for ``local``; for ``ray``, ``make(cluster CPUs)`` on an open connection."""
    if config.engine == "local":
        yield None
        return
    with ray_connection(address=config.address, num_cpus=config.num_cpus) as ray:
        yield make(cluster_cpus(ray))
