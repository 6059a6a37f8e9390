r"""Empirical NTKs larger than memory: the kernel built block by block under a memory bound.

An :math:`N_1C \times N_2C` kernel over two data sets is cut into blocks of :math:`B`
examples by :math:`B` examples; each block is one :func:`inna_jax.ntk_gram` cross-kernel of
two slices, computed on the device and copied into a host (NumPy) array. :math:`B` is the
largest power of two (or the whole set) whose compiled block program, as XLA accounts it
(``memory_analysis``: arguments, outputs and temporaries), fits in the bound. With one data
set only the blocks on and above the diagonal are computed; with a device mesh, one block per
device runs at a time (``jax.shard_map``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from inna_jax.gauss_newton._gram import (
    PredictFn,
    check_implementation,
    check_reduction,
    check_second_batch,
    ntk_gram,
)


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    r"""How :func:`ntk_gram_blocked` cuts a kernel into blocks.

    Attributes:
        block_size: :math:`B`, examples per block side.
        rows: :math:`N_1`, examples of the first data set.
        columns: :math:`N_2`, examples of the second (:math:`N_1` without one).
        row_blocks: :math:`\lceil N_1/B \rceil`.
        column_blocks: :math:`\lceil N_2/B \rceil`.
        blocks: blocks computed: all, the upper half with the diagonal for one data set,
            the diagonal for ``reduction="diagonal"``.
        symmetric: whether the kernel is a Gram matrix (one data set).
        block_bytes: XLA's estimate of one block's peak device memory, in bytes.
        max_memory: the bound, in bytes (``None``: no bound).
        devices: devices computing blocks side by side.

    Example:
        >>> import jax.numpy as jnp
        >>> import inna_jax
        >>> predict = lambda w, x: jnp.tanh(x @ w)
        >>> w, x = jnp.ones((3, 2)), jnp.ones((10, 3))
        >>> plan = inna_jax.ntk_block_plan(predict, w, x, block_size=4)
        >>> plan.block_size, plan.row_blocks, plan.blocks  # 6 of 3 x 3 blocks: q >= p
        (4, 3, 6)

    References:
        Jacot, Gabriel, Hongler, "Neural Tangent Kernel", NeurIPS 2018 (the kernel).
        Novak, Xiao, Hron, Lee, Alemi, Sohl-Dickstein, Schoenholz, "Neural Tangents: Fast and
        Easy Infinite Neural Networks in Python", ICLR 2020 (kernels computed in batches of
        examples and spread over devices, their ``nt.batch``).
    """

    block_size: int
    rows: int
    columns: int
    row_blocks: int
    column_blocks: int
    blocks: int
    symmetric: bool
    block_bytes: int
    max_memory: int | None
    devices: int


def _batch(inputs: Any) -> int:
    return int(jnp.shape(jax.tree.leaves(inputs)[0])[0])


def _abstract_slice(inputs: Any, size: int) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((size, *jnp.shape(x)[1:]), jnp.result_type(x)), inputs
    )


def _block_fn(predict_fn, implementation, reduction, chunk_size):
    def block(params, a, b):
        return ntk_gram(
            predict_fn,
            params,
            a,
            b,
            implementation=implementation,
            reduction=reduction,
            chunk_size=chunk_size,
        )

    return block


def _block_bytes(block, params, inputs, size: int) -> int:
    """XLA's account of the compiled block: arguments + outputs + temporaries."""
    abstract = _abstract_slice(inputs, size)
    params_abs = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), params
    )
    compiled = jax.jit(block).lower(params_abs, abstract, abstract).compile()
    mem = compiled.memory_analysis()
    if mem is None:  # a backend without the analysis: count the block's output only
        out = jax.eval_shape(block, params_abs, abstract, abstract)
        return int(out.size * out.dtype.itemsize)
    return int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes)


def _block_pairs(
    row_blocks: int, column_blocks: int, symmetric: bool, reduction: str
) -> list[tuple[int, int]]:
    """The blocks (p, q) computed: the diagonal ones for ``"diagonal"``, those with q >= p
    for a Gram matrix (the others are their transposes), all of them otherwise."""
    if reduction == "diagonal":
        return [(p, p) for p in range(row_blocks)]
    if symmetric:
        return [(p, q) for p in range(row_blocks) for q in range(p, row_blocks)]
    return [(p, q) for p in range(row_blocks) for q in range(column_blocks)]


def _devices(mesh: Mesh | None) -> int:
    return 1 if mesh is None else int(mesh.devices.size)


def _check(implementation, reduction, chunk_size, block_size, max_memory, mesh):
    check_implementation(implementation, chunk_size)
    check_reduction(reduction)
    if block_size is not None and int(block_size) < 1:
        raise ValueError(f"block_size must be None or an integer >= 1, got {block_size!r}")
    if max_memory is not None and not max_memory > 0:
        raise ValueError(f"max_memory must be None or a number of bytes > 0, got {max_memory!r}")
    if mesh is not None and not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be None or a jax.sharding.Mesh, got {type(mesh).__name__}")


def ntk_block_plan(
    predict_fn: PredictFn,
    params: Any,
    inputs: Any,
    inputs2: Any = None,
    *,
    implementation: str = "auto",
    reduction: str = "full",
    chunk_size: int | None = None,
    block_size: int | None = None,
    max_memory: float | None = None,
    mesh: Mesh | None = None,
) -> BlockPlan:
    r"""The block size and block count :func:`ntk_gram_blocked` will use.

    Without ``block_size``, :math:`B` is the largest of :math:`\max(N_1, N_2)` and the powers
    of two below it whose block program fits in ``max_memory`` bytes (XLA's
    ``memory_analysis`` of the compiled block; one compilation per size tried). Without a
    bound either, :math:`B = \max(N_1, N_2)`: one block. The host array that receives the
    kernel is not counted: the bound is the device memory of one block.

    Args:
        predict_fn: as for :func:`inna_jax.ntk_gram`.
        params: the parameters.
        inputs: the first data set, leading axis :math:`N_1` (arrays or
            ``jax.ShapeDtypeStruct``).
        inputs2: the second data set, or ``None`` for the Gram matrix of ``inputs``.
        implementation: as for :func:`inna_jax.ntk_gram`.
        reduction: ``"full"``, ``"trace"`` or ``"diagonal"``.
        chunk_size: as for :func:`inna_jax.ntk_gram`, within a block.
        block_size: :math:`B`, to skip the search.
        max_memory: the bound on one block's device memory, in bytes.
        mesh: a device mesh; its devices compute blocks side by side.

    Returns:
        A :class:`BlockPlan`.

    Raises:
        ValueError: for a bad argument, or a bound that not even :math:`B = 1` fits.

    Example:
        >>> import jax.numpy as jnp
        >>> import inna_jax
        >>> predict = lambda w, x: jnp.tanh(x @ w)
        >>> plan = inna_jax.ntk_block_plan(
        ...     predict, jnp.ones((3, 2)), jnp.ones((64, 3)), max_memory=2**14
        ... )
        >>> plan.block_bytes <= 2**14 < plan.rows * 2 * plan.rows * 2 * 4
        True

    References:
        Jacot, Gabriel, Hongler, "Neural Tangent Kernel", NeurIPS 2018 (the kernel).
        Novak, Xiao, Hron, Lee, Alemi, Sohl-Dickstein, Schoenholz, "Neural Tangents: Fast and
        Easy Infinite Neural Networks in Python", ICLR 2020 (kernels computed in batches of
        examples and spread over devices, their ``nt.batch``).
    """
    _check(implementation, reduction, chunk_size, block_size, max_memory, mesh)
    check_second_batch(
        predict_fn,
        params,
        _abstract_slice(inputs, 1),
        None if inputs2 is None else _abstract_slice(inputs2, 1),
        reduction,
    )
    n1 = _batch(inputs)
    n2 = n1 if inputs2 is None else _batch(inputs2)
    if reduction == "diagonal" and n1 != n2:
        raise ValueError(
            f"reduction='diagonal' needs data sets of one size, got {n1} and {n2} examples"
        )
    block = _block_fn(predict_fn, implementation, reduction, chunk_size)
    largest = max(n1, n2)
    if block_size is not None:
        size = min(int(block_size), largest)
        nbytes = _block_bytes(block, params, inputs, size)
    else:
        sizes = [largest] + [2**k for k in range(int(math.log2(largest)), -1, -1) if 2**k < largest]
        for size in sizes:
            nbytes = _block_bytes(block, params, inputs, size)
            if max_memory is None or nbytes <= max_memory:
                break
        else:
            raise ValueError(
                f"max_memory={max_memory!r} bytes is below one example's block ({nbytes} bytes)"
            )
    rb, cb = -(-n1 // size), -(-n2 // size)
    symmetric = inputs2 is None
    blocks = len(_block_pairs(rb, cb, symmetric, reduction))
    return BlockPlan(
        block_size=size,
        rows=n1,
        columns=n2,
        row_blocks=rb,
        column_blocks=cb,
        blocks=blocks,
        symmetric=symmetric,
        block_bytes=nbytes,
        max_memory=None if max_memory is None else int(max_memory),
        devices=_devices(mesh),
    )


def _pad(inputs: Any, total: int) -> Any:
    """Pads the leading axis to ``total`` with copies of the first example."""

    def one(x):
        x = jnp.asarray(x)
        extra = total - x.shape[0]
        if extra == 0:
            return x
        return jnp.concatenate([x, jnp.repeat(x[:1], extra, axis=0)], axis=0)

    return jax.tree.map(one, inputs)


def _take(inputs: Any, start: int, size: int) -> Any:
    return jax.tree.map(lambda x: x[start : start + size], inputs)


def ntk_gram_blocked(
    predict_fn: PredictFn,
    params: Any,
    inputs: Any,
    inputs2: Any = None,
    *,
    implementation: str = "auto",
    reduction: str = "full",
    chunk_size: int | None = None,
    block_size: int | None = None,
    max_memory: float | None = None,
    mesh: Mesh | None = None,
    progress: bool = True,
) -> np.ndarray:
    r""":func:`inna_jax.ntk_gram` over whole data sets, in blocks that fit in memory.

    The kernel :math:`K(X_1, X_2)` (or the Gram matrix :math:`K(X_1, X_1)`) is cut into
    :math:`B \times B`-example blocks, :math:`B` from :func:`ntk_block_plan`; block
    :math:`(p, q)` is ``ntk_gram(predict_fn, params, X1[pB:(p+1)B], X2[qB:(q+1)B], ...)``,
    computed by one compiled program (the last, partial blocks are padded with copies of an
    example and cut back) and copied into a NumPy array. For a Gram matrix only the blocks
    :math:`q \ge p` are computed and the others are their transposes. With ``mesh``, as many
    blocks as the mesh has devices are computed at once, one per device (``jax.shard_map``
    over a leading block axis). A ``tqdm`` bar counts the blocks.

    The result equals the one-block :func:`inna_jax.ntk_gram`, with the same layout: rows
    :math:`(i, c)`, columns :math:`(j, d)` for ``"full"``, ``(N1, N2)`` for ``"trace"``,
    ``(N, C, C)`` for ``"diagonal"``.

    Args:
        predict_fn: as for :func:`inna_jax.ntk_gram`.
        params: the parameters.
        inputs: the first data set, leading axis :math:`N_1`.
        inputs2: the second data set, or ``None``.
        implementation: as for :func:`inna_jax.ntk_gram`.
        reduction: ``"full"``, ``"trace"`` or ``"diagonal"``.
        chunk_size: as for :func:`inna_jax.ntk_gram`, within a block.
        block_size: :math:`B`; chosen from ``max_memory`` when ``None``.
        max_memory: the bound on one block's device memory, in bytes.
        mesh: a ``jax.sharding.Mesh``; blocks are spread over all its devices.
        progress: show a progress bar.

    Returns:
        The kernel, a NumPy array in the dtype of the outputs.

    Raises:
        ValueError: as :func:`ntk_block_plan`.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> import inna_jax
        >>> predict = lambda w, x: jnp.tanh(x @ w)
        >>> w, x = jnp.ones((3, 2)), jax.random.normal(jax.random.key(0), (10, 3))
        >>> k = inna_jax.ntk_gram_blocked(predict, w, x, block_size=4, progress=False)
        >>> bool(np.allclose(k, inna_jax.ntk_gram(predict, w, x), atol=1e-6))
        True

    References:
        Jacot, Gabriel, Hongler, "Neural Tangent Kernel", NeurIPS 2018 (the kernel).
        Novak, Xiao, Hron, Lee, Alemi, Sohl-Dickstein, Schoenholz, "Neural Tangents: Fast and
        Easy Infinite Neural Networks in Python", ICLR 2020 (kernels computed in batches of
        examples and spread over devices, their ``nt.batch``).
    """
    plan = ntk_block_plan(
        predict_fn,
        params,
        inputs,
        inputs2,
        implementation=implementation,
        reduction=reduction,
        chunk_size=chunk_size,
        block_size=block_size,
        max_memory=max_memory,
        mesh=mesh,
    )
    from tqdm.auto import tqdm

    size = plan.block_size
    x1 = _pad(inputs, plan.row_blocks * size)
    x2 = x1 if inputs2 is None else _pad(inputs2, plan.column_blocks * size)
    block = _block_fn(predict_fn, implementation, reduction, chunk_size)
    out_abs = jax.eval_shape(
        block, params, _abstract_slice(inputs, size), _abstract_slice(inputs, size)
    )
    pairs = _block_pairs(plan.row_blocks, plan.column_blocks, plan.symmetric, reduction)
    kernel = _KernelBlocks(plan, reduction, out_abs)
    if mesh is None:
        computed = _blocks_one_device(block, params, x1, x2, pairs, size)
    else:
        computed = _blocks_on_mesh(block, params, x1, x2, pairs, size, mesh, plan.devices)
    with tqdm(total=len(pairs), desc="NTK blocks", unit="block", disable=not progress) as bar:
        for p, q, value in computed:
            kernel.store(p, q, value)
            bar.update(1)
    return kernel.array


class _KernelBlocks:
    """The NumPy kernel that the blocks are copied into, mirrored for a Gram matrix."""

    def __init__(self, plan: BlockPlan, reduction: str, out_abs: Any):
        size, n1, n2 = plan.block_size, plan.rows, plan.columns
        self.size, self.n1, self.n2 = size, n1, n2
        self.reduction, self.symmetric = reduction, plan.symmetric
        # c: output columns per example, 1 but for "full"
        self.c = int(out_abs.shape[0]) // size if reduction == "full" else 1
        if reduction == "full":
            shape = (n1 * self.c, n2 * self.c)
        elif reduction == "trace":
            shape = (n1, n2)
        else:
            shape = (n1, *out_abs.shape[1:])
        self.array = np.empty(shape, out_abs.dtype)

    def store(self, p: int, q: int, value: Any) -> None:
        """Copies block ``(p, q)`` in (and its transpose, for a Gram matrix), padding cut."""
        value, size, c = np.asarray(value), self.size, self.c
        r0, r1 = p * size, min((p + 1) * size, self.n1)
        s0, s1 = q * size, min((q + 1) * size, self.n2)
        if self.reduction == "diagonal":
            self.array[r0:r1] = value[: r1 - r0]
            return
        part = value[: (r1 - r0) * c, : (s1 - s0) * c]
        self.array[r0 * c : r1 * c, s0 * c : s1 * c] = part
        if self.symmetric and p != q:
            self.array[s0 * c : s1 * c, r0 * c : r1 * c] = part.T


def _blocks_one_device(block, params, x1, x2, pairs, size):
    """Yields ``(p, q, block)`` for each pair, one compiled call each."""
    compiled = jax.jit(block)
    for p, q in pairs:
        yield p, q, compiled(params, _take(x1, p * size, size), _take(x2, q * size, size))


def _blocks_on_mesh(block, params, x1, x2, pairs, size, mesh: Mesh, devices: int):
    """Yields ``(p, q, block)`` for each pair, ``devices`` blocks per call, one per device."""
    spec = P(tuple(mesh.axis_names))

    def per_device(params, a, b):
        first = lambda tree: jax.tree.map(lambda x: x[0], tree)  # noqa: E731
        return block(params, first(a), first(b))[None]

    # check_vma=False: the layer finder re-binds the model's traced primitives, which
    # carry no varying-axis annotation for the replicated parameters
    sharded = jax.jit(
        jax.shard_map(
            per_device, mesh=mesh, in_specs=(P(), spec, spec), out_specs=spec, check_vma=False
        )
    )
    sharding = NamedSharding(mesh, spec)

    def stacked(x, starts):
        return jax.device_put(
            jax.tree.map(lambda *xs: jnp.stack(xs), *[_take(x, s * size, size) for s in starts]),
            sharding,
        )

    for start in range(0, len(pairs), devices):
        group = pairs[start : start + devices]
        padded = group + [group[-1]] * (devices - len(group))
        a = stacked(x1, [p for p, _ in padded])
        b = stacked(x2, [q for _, q in padded])
        values = np.asarray(sharded(params, a, b))
        for (p, q), value in zip(group, values, strict=False):
            yield p, q, value
