r"""Data parallelism on a device mesh, and multi-host start-up with ``jax.distributed``.

The training step is one ``jax.jit`` program with global semantics: parameters and optimizer
state are replicated (``PartitionSpec()``), and each batch is split along its first axis over
the mesh axis ``"data"`` (``PartitionSpec("data")``). XLA inserts the all-reduce that averages
the gradients,

.. math::

    g = \frac1b \sum_{d=1}^{D} \sum_{i \in B^{(d)}} \nabla \ell_i(\theta),

so the result is, up to the order of floating-point additions, that of one device on the
same global batch :math:`B = B^{(1)} \cup \dots \cup B^{(D)}`. Nothing here uses
``jax.pmap``. Across hosts each process holds the whole (small, in-memory) data set, builds
the same global batch from the seed, and hands its devices their rows.

A group of independent runs (:func:`~inna_jax.train.fit_many`) adds a mesh axis ``"runs"``:
the states, stacked along a leading axis of runs, are split over it
(``PartitionSpec("runs")``), and each run's batch over ``"data"``
(``PartitionSpec("runs", "data")`` on the ``(runs, batch, ...)`` array).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
RUNS_AXIS = "runs"

_XLA_HINT = (
    "on a CPU, simulate N devices by setting XLA_FLAGS=--xla_force_host_platform_device_count=N "
    "before starting Python"
)


def data_mesh(num_devices: int | None = None, *, devices: Any = None) -> Mesh:
    """A one-axis mesh named ``"data"`` over the first ``num_devices`` devices.

    Args:
        num_devices: how many devices to use; all of ``jax.devices()`` (every host's) when
            ``None``.
        devices: an explicit list of devices instead.

    Returns:
        A ``jax.sharding.Mesh`` with axis ``"data"``.

    Raises:
        ValueError: if ``num_devices`` is not in ``[1, len(jax.devices())]``.

    Example:
        >>> from inna_jax.train import data_mesh
        >>> data_mesh(1).axis_names
        ('data',)
    """
    if devices is None:
        devices = _first_devices(num_devices, "num_devices")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def _first_devices(n: int | None, name: str) -> list:
    available = jax.devices()
    count = len(available) if n is None else int(n)
    if not 1 <= count <= len(available):
        raise ValueError(
            f"{name} must be in [1, {len(available)}] (the devices JAX sees), got {name}={n!r}; "
            + _XLA_HINT
        )
    return available[:count]


def run_mesh(runs: int | None = None, data: int = 1, *, devices: Any = None) -> Mesh:
    """A two-axis mesh ``("runs", "data")`` for a group of runs (:func:`fit_many`).

    The runs of a group are split over the ``"runs"`` axis, and each run's batch over the
    ``"data"`` axis, on ``runs * data`` devices.

    Args:
        runs: size of the ``"runs"`` axis; ``None``: all devices (every host's) divided by
            ``data``.
        data: size of the ``"data"`` axis.
        devices: an explicit list of ``runs * data`` devices instead of the first ones.

    Returns:
        A ``jax.sharding.Mesh`` of shape ``(runs, data)`` with axes ``("runs", "data")``.

    Raises:
        ValueError: if the sizes are not positive or there are not enough devices.

    Example:
        >>> from inna_jax.train import run_mesh
        >>> mesh = run_mesh(1, 1)
        >>> mesh.axis_names, dict(mesh.shape)
        (('runs', 'data'), {'runs': 1, 'data': 1})
    """
    if int(data) != data or data < 1:
        raise ValueError(f"data must be an integer >= 1, got data={data!r}")
    if devices is None:
        if runs is None:
            total = len(jax.devices())
            if total % int(data):
                raise ValueError(
                    f"data={data} must divide the number of devices {total} when runs=None"
                )
            runs = total // int(data)
        if int(runs) != runs or runs < 1:
            raise ValueError(f"runs must be an integer >= 1, got runs={runs!r}")
        devices = _first_devices(int(runs) * int(data), "runs * data")
    devices = np.asarray(devices)
    if runs is None:
        runs = devices.size // int(data)
    if devices.size != int(runs) * int(data):  # pyright: ignore[reportArgumentType]
        raise ValueError(f"got {devices.size} devices for a mesh of runs={runs} x data={data}")
    return Mesh(devices.reshape(int(runs), int(data)), (RUNS_AXIS, DATA_AXIS))  # pyright: ignore[reportArgumentType]


def platform(mesh: Mesh | None) -> str:
    """The platform the runs compute on: the mesh's devices', else the default device's."""
    return (mesh.devices.flat[0] if mesh is not None else jax.devices()[0]).platform


def axis_size(mesh: Mesh | None, axis: str) -> int:
    """The size of ``axis`` in ``mesh`` (1 when the mesh is ``None`` or lacks it)."""
    if mesh is None or axis not in mesh.axis_names:
        return 1
    return int(mesh.shape[axis])


def check_mesh(mesh: Mesh, batch_size: int, *, runs: bool = False) -> int:
    """Checks the mesh's axes and that its ``"data"`` axis divides ``batch_size``.

    A single run needs a ``"data"`` axis; a group (``runs=True``) a ``"data"`` or a
    ``"runs"`` axis. Returns the size of the ``"data"`` axis (1 if absent).
    """
    allowed = (RUNS_AXIS, DATA_AXIS) if runs else (DATA_AXIS,)
    needed = f"an axis named {DATA_AXIS!r}" + (f" or {RUNS_AXIS!r}" if runs else "")
    if not any(a in mesh.axis_names for a in allowed):
        raise ValueError(f"mesh must have {needed}, got axis_names={mesh.axis_names!r}")
    size = axis_size(mesh, DATA_AXIS)
    if batch_size % size:
        raise ValueError(
            f"batch_size must be a multiple of the mesh's {DATA_AXIS!r} axis size {size}, "
            f"got batch_size={batch_size}"
        )
    return size


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of parameters and optimizer state: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The sharding of a batch: rows split over the ``"data"`` axis (if the mesh has one)."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS if DATA_AXIS in mesh.axis_names else None))


def runs_sharded(mesh: Mesh) -> NamedSharding:
    """The sharding of a group's stacked states: the leading axis split over ``"runs"``."""
    return NamedSharding(mesh, PartitionSpec(RUNS_AXIS if RUNS_AXIS in mesh.axis_names else None))


def run_batches_sharded(mesh: Mesh) -> NamedSharding:
    """The sharding of a group's batches ``(runs, batch, ...)``: over ``"runs"`` and ``"data"``."""
    names = mesh.axis_names
    return NamedSharding(
        mesh,
        PartitionSpec(
            RUNS_AXIS if RUNS_AXIS in names else None, DATA_AXIS if DATA_AXIS in names else None
        ),
    )


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def put_global(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """Places a pytree of host-identical values on ``sharding``, one process or many.

    Every process must pass the same values (it is so for parameters built from the same
    seed, and for a batch cut from the same seeded order). Typed PRNG keys are moved as
    their raw key data.
    """

    def put(x: Any) -> Any:
        if _is_key(x):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=impl)
        host = np.array(x)  # a copy: on CPU, device_put may alias host memory
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def to_local(tree: Any) -> Any:
    """Replicated global arrays to arrays on this process's first device (a no-op locally)."""

    def local(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x.addressable_data(0)
        return x

    return jax.tree.map(local, tree)


def host_scalar(x: jax.Array) -> float:
    """A replicated scalar as a Python float, also when it spans several processes."""
    return float(host_array(x))


def host_array(x: jax.Array) -> np.ndarray:
    """A replicated array as a NumPy array, also when it spans several processes."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = x.addressable_data(0)
    return np.asarray(x)


def host_arrays(tree: Any) -> Any:
    """:func:`host_array` of every leaf, in one transfer when this process holds them all."""
    leaves = jax.tree.leaves(tree)
    if all(not isinstance(x, jax.Array) or x.is_fully_addressable for x in leaves):
        return jax.tree.map(np.asarray, jax.device_get(tree))
    return jax.tree.map(host_array, tree)


def gather(tree: Any) -> Any:
    """Global arrays (replicated or split over devices of several processes) as local ones.

    Arrays that this process can address whole are returned as they are; others are
    gathered (``multihost_utils.process_allgather``) and put on this process's first device.
    Typed PRNG keys are moved as their raw key data.
    """
    from jax.experimental import multihost_utils

    def one(x: Any) -> Any:
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if _is_key(x):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=impl)
        if x.sharding.is_fully_replicated:
            return x.addressable_data(0)
        gathered = multihost_utils.process_allgather(x, tiled=True)
        return jax.device_put(gathered, jax.local_devices()[0])

    return jax.tree.map(one, tree)


_ENV_COORDINATOR = "INNA_JAX_COORDINATOR_ADDRESS"
_ENV_NUM_PROCESSES = "INNA_JAX_NUM_PROCESSES"
_ENV_PROCESS_ID = "INNA_JAX_PROCESS_ID"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Any = None,
    cpu_collectives: str | None = None,
) -> bool:
    """Starts multi-host JAX (``jax.distributed.initialize``) from arguments or environment.

    Three cases, in this order:

    1. arguments given: ``jax.distributed.initialize(coordinator_address, num_processes,
       process_id)``;
    2. else the environment variables ``INNA_JAX_COORDINATOR_ADDRESS``,
       ``INNA_JAX_NUM_PROCESSES`` and ``INNA_JAX_PROCESS_ID`` if set;
    3. else, on a TPU pod or under SLURM (``SLURM_JOB_ID`` with more than one task), or when
       JAX's own ``JAX_COORDINATOR_ADDRESS`` is set, ``jax.distributed.initialize()`` with
       no arguments, which detects the cluster itself.

    Otherwise it does nothing: a single process needs no set-up. Call it before any other
    JAX call, on every process.

    Args:
        coordinator_address: ``"host:port"`` of process 0, reachable from every process.
        num_processes: total number of processes.
        process_id: this process's index in ``[0, num_processes)``.
        local_device_ids: restricts this process to some of its local devices.
        cpu_collectives: for CPU-only clusters, the collectives library, ``"gloo"`` (or
            ``"mpi"``); sets ``jax_cpu_collectives_implementation``.

    Returns:
        ``True`` if ``jax.distributed`` was initialised, ``False`` for a single process.

    Example:
        >>> from inna_jax.train import initialize_distributed
        >>> initialize_distributed()  # one process, no cluster in the environment
        False
    """
    if cpu_collectives is not None:
        if cpu_collectives not in ("gloo", "mpi"):
            raise ValueError(
                f"cpu_collectives must be 'gloo' or 'mpi', got cpu_collectives={cpu_collectives!r}"
            )
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if coordinator_address is None and os.environ.get(_ENV_COORDINATOR):
        coordinator_address = os.environ[_ENV_COORDINATOR]
        num_processes = num_processes or int(os.environ[_ENV_NUM_PROCESSES])
        if process_id is None:
            process_id = int(os.environ[_ENV_PROCESS_ID])
    if coordinator_address is not None or num_processes is not None or process_id is not None:
        if coordinator_address is None or num_processes is None or process_id is None:
            raise ValueError(
                "give all of coordinator_address, num_processes and process_id (or none), got "
                f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
                f"process_id={process_id!r}"
            )
        if not 0 <= int(process_id) < int(num_processes):
            raise ValueError(
                f"process_id must be in [0, num_processes={num_processes}), "
                f"got process_id={process_id!r}"
            )
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=int(num_processes),
            process_id=int(process_id),
            local_device_ids=local_device_ids,
        )
        return True
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ
    tpu_pod = "TPU_WORKER_HOSTNAMES" in os.environ or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ
    if slurm or tpu_pod or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(local_device_ids=local_device_ids)
        return True
    return False
