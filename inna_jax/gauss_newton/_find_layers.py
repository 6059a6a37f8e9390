r"""Finds the layers of a traced model, and re-runs it with hooks.

:func:`find_layers` traces ``predict_fn`` on **one** example with :func:`jax.make_jaxpr` and
walks the program. A parameter leaf is followed through *views* (``reshape``, ``transpose``,
``squeeze``, ``convert_element_type``, ``copy``, ``broadcast_in_dim``) and into the
sub-programs that receive it:

* ``jit``/``pjit``/``closed_call``/``remat``/``checkpoint`` calls: their body, as if inlined;
* ``lax.scan`` bodies (as written by ``jax.lax.scan``, ``jax.lax.fori_loop`` with concrete
  bounds, ``nnx.scan``, ``flax.linen.scan``, ``eqx.nn.MLP(scan=True)``, ``nnx.RNN``): a loop
  constant reaches every iteration whole, a scanned-over input one slice per iteration, and a
  carry that the body hands back unchanged (through a ``remat`` body, say, which JAX's own
  forwarding of unchanged carries does not see through) is a loop constant too;
* ``lax.cond``/``lax.switch`` branches, each of them: a leaf used the same way in every branch
  (the same eqns on the same shapes, in the same order) gives one layer, hooked in every
  branch; a leaf used differently gives one layer per use, each hooked in its own branch (its
  Jacobian is the sum of the uses', of which only the taken branch's is not zero);
* ``custom_jvp``/``custom_vjp`` calls: their primal body, when a layer is found in it (a
  custom activation with a learnable parameter, a dense layer with a memory-saving VJP). The
  hooked program then differentiates that body with JAX's rules instead of the custom rule:
  the same derivative whenever the rule is the derivative of the body (what such rules are
  for: stability, memory), but not for a rule that changes it on purpose (a straight-through
  estimator), whose Gram matrix would then be the body's. A call in which no layer is found
  keeps its rule (``jax.nn.relu`` and the like receive no parameter and are never entered).

A ``while_loop`` that receives a parameter is not entered: JAX has no reverse mode for while
loops (a ``fori_loop`` with concrete bounds is a ``scan``, and is followed), so such a model
has no Jacobian by ``jax.vjp`` either, and the per-leaf fallback raises JAX's own error.

Each use of a leaf is classified:

* a *weight use*: the leaf (an isometric view of it: a permutation of its entries) is one
  operand of a ``dot_general``, or the kernel of a ``conv_general_dilated``, or the table
  of a row ``gather`` (an embedding), and the other operand does not come straight from a
  parameter;
* a *bias use*: an ``add`` of a view of the leaf to the output of a weight use (the only
  consumer of that output), broadcast over every axis that is not an output feature of the
  layer;
* an *element-wise use*: a ``mul``, ``add`` or ``sub`` of a (broadcast) view of the leaf and
  a value that does not come from a parameter (normalisation scales and biases, a bias added
  after a sum);
* anything else (the leaf is used in another way, changed by a loop that carries it, given
  to a ``while_loop``, or returned as is).

A leaf whose uses are all weight uses is *placed*: each use becomes a layer
(:class:`inna_jax.gauss_newton._layers.Layer`). A bias use merges into the layer it follows
(inside loops and branches too, when it enters them like the weight). A leaf whose uses are
all element-wise is placed as element-wise layers. Every other leaf is a *fallback* leaf,
whose exact per-example Jacobian is computed by reverse-mode differentiation restricted to
it (see :mod:`inna_jax.gauss_newton._layerwise_jacobian`).

:func:`run_with_hooks` re-evaluates the program eqn by eqn with
``eqn.primitive.bind(...)`` (the custom-interpreter pattern of the JAX documentation): it
adds a perturbation :math:`\varepsilon_l` to each layer's output and records the layer's input
operand. Sub-programs that hold layers are interpreted recursively: a ``scan`` as a new
``lax.scan`` whose body is interpreted and which scans over the layers' perturbations and
stacks their inputs, a ``cond`` as a ``lax.switch`` over interpreted branches; every other
eqn is re-bound untouched, so custom derivative rules are kept where no layer is found.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex

from inna_jax.gauss_newton._layers import (
    Layer,
    Loop,
    View,
    bind,
    conv_delta_indices,
    conv_shape,
    dense_delta_indices,
    dense_shape,
    is_permutation,
    outer_chain,
    replay_numpy,
)

VIEW_PRIMITIVES = frozenset(
    {"reshape", "transpose", "squeeze", "convert_element_type", "copy", "broadcast_in_dim"}
)
# The hooked interpreter unrolls a scan of at most this many iterations (its own program, not
# the model's): XLA:CPU does not fuse across the iterations of a while loop, and the layer pass
# of the residual MLP of benchmarks/egn_zoo.py (4 stacked blocks) took 1.4x its unrolled
# twin's time rolled and 1.3x unrolled (EGN step, b = 64, minimum of 15 interleaved calls on a
# 2-core AMD EPYC). Longer loops (long sequences) keep the model's own unroll setting.
UNROLL_LIMIT = 32
# primitives whose sub-program is followed, and interpreted eqn by eqn when it holds a layer
CALL_PRIMITIVES = frozenset({"jit", "pjit", "closed_call", "core_call", "remat2", "checkpoint"})
# custom derivative rules: their primal body is followed, and interpreted only where a layer
# is found in it (see the module)
CUSTOM_PRIMITIVES = frozenset({"custom_jvp_call", "custom_vjp_call"})
WEIGHT_KINDS = ("dense", "conv", "embed")
ELEMENTWISE_KINDS = ("bias", "scale", "shift", "negative shift")


def _sub_jaxpr(eqn: jex.JaxprEqn) -> tuple[jex.Jaxpr, Sequence[Any]]:
    """The sub-program of a call-like eqn and its constants."""
    for key in ("jaxpr", "call_jaxpr"):
        if key in eqn.params:
            sub = eqn.params[key]
            if isinstance(sub, jex.ClosedJaxpr):
                return sub.jaxpr, sub.consts
            return sub, ()
    raise KeyError(f"no sub-program in eqn {eqn.primitive.name}")


# --------------------------------------------------------------------------------------------
# the walk over the program


@dataclasses.dataclass(eq=False)
class _Use:
    """One use of a parameter leaf (see the module for the kinds).

    ``path`` locates the eqn: its index in each enclosing program, with the branch number
    after the index of a ``cond``. A use merged over the branches of ``cond`` eqns holds the
    paths of its twins in the other branches (``alternates``), and a bias their producers.
    """

    kind: str  # "dense", "conv", "embed", "bias", "scale", "shift", "negative shift", "other"
    path: tuple[int, ...]
    eqn: jex.JaxprEqn | None = None
    arg: int = 0
    view: View | None = None
    producer: tuple[int, ...] | None = None  # bias: the layer eqn behind the other operand
    through: tuple[jex.JaxprEqn, ...] = ()  # bias: views from that layer's output to the add
    single_consumer: bool = False  # bias: the other operand has no other consumer
    alternates: tuple[tuple[int, ...], ...] = ()
    alt_producers: tuple[tuple[int, ...] | None, ...] = ()

    @property
    def sites(self) -> tuple[tuple[int, ...], ...]:
        return (self.path, *self.alternates)

    @property
    def producers(self) -> tuple[tuple[int, ...] | None, ...]:
        return (self.producer, *self.alt_producers)


@dataclasses.dataclass(eq=False)
class _Found:
    """What the walk collects: the uses of each leaf, the sub-programs to interpret eqn by
    eqn, and which of those are custom-derivative calls."""

    uses: dict[int, list[_Use]]
    inline: set[tuple[int, ...]]
    custom: set[tuple[int, ...]]

    def add(self, leaf: int, use: _Use) -> None:
        self.uses[leaf].append(use)

    def other(self, views: Sequence[View | None], path: tuple[int, ...]) -> None:
        """Every view given is used in a way that places no layer."""
        for view in views:
            if view is not None:
                self.add(view.leaf, _Use("other", path))

    def fresh(self) -> _Found:
        """An empty record of uses sharing the sets of sub-programs (for a branch)."""
        return _Found({leaf: [] for leaf in self.uses}, self.inline, self.custom)


def _analyse(
    jaxpr: jex.Jaxpr,
    in_views: Sequence[View | None],
    path: tuple[int, ...],
    found: _Found,
    layer_outputs: list | None = None,
) -> list[View | None]:
    """Walks one (sub-)program whose inputs are the given views (``None``: not a parameter),
    records the uses in ``found``, and returns the views of its outputs. ``layer_outputs``,
    if given, receives for each output the layer (and views) it comes from, if it has no
    other reader (so that a bias added after a call can merge into a layer inside it)."""
    views = {v: view for v, view in zip(jaxpr.invars, in_views, strict=True) if view}
    consumers = _consumer_counts(jaxpr)
    # outputs of dot/conv eqns, possibly seen through single-consumer views: (path, views)
    derived: dict[Any, tuple[tuple[int, ...], tuple[jex.JaxprEqn, ...]]] = {}
    for idx, eqn in enumerate(jaxpr.eqns):
        p = (*path, idx)
        _track_layer_output(eqn, p, derived, consumers)
        ins = [views.get(v) if isinstance(v, jex.Var) else None for v in eqn.invars]
        if not any(ins):
            continue
        outs = _analyse_eqn(eqn, ins, p, found, derived, consumers)
        views.update((v, view) for v, view in zip(eqn.outvars, outs, strict=True) if view)
    if layer_outputs is not None:
        layer_outputs.extend(
            derived.get(v) if isinstance(v, jex.Var) and consumers[v] == 1 else None
            for v in jaxpr.outvars
        )
    return [views.get(v) if isinstance(v, jex.Var) else None for v in jaxpr.outvars]


def _consumer_counts(jaxpr: jex.Jaxpr) -> Counter:
    """How many eqns (and program outputs) read each variable."""
    consumers: Counter = Counter()
    for eqn in jaxpr.eqns:
        consumers.update(v for v in eqn.invars if isinstance(v, jex.Var))
    consumers.update(v for v in jaxpr.outvars if isinstance(v, jex.Var))
    return consumers


def _track_layer_output(eqn, p, derived, consumers) -> None:
    """Records the output of a dot/conv eqn, and single-consumer views of it (what a bias
    may be added to)."""
    name = eqn.primitive.name
    if name in ("dot_general", "conv_general_dilated"):
        derived[eqn.outvars[0]] = (p, ())
    elif name in VIEW_PRIMITIVES and name != "broadcast_in_dim" and len(eqn.invars) == 1:
        src = eqn.invars[0]
        if isinstance(src, jex.Var) and src in derived and consumers[src] == 1:
            layer_path, chain = derived[src]
            derived[eqn.outvars[0]] = (layer_path, (*chain, eqn))


def _analyse_eqn(eqn, ins, p, found, derived, consumers) -> list[View | None]:
    """One eqn that reads a parameter: a view, a sub-program to follow, or a use."""
    name = eqn.primitive.name
    if name in VIEW_PRIMITIVES and len(eqn.invars) == 1:
        return [ins[0].then(eqn)]
    if name in CALL_PRIMITIVES or name in CUSTOM_PRIMITIVES:
        found.inline.add(p)
        if name in CUSTOM_PRIMITIVES:
            found.custom.add(p)
        sub, _ = _sub_jaxpr(eqn)
        layer_outputs: list = []
        outs = _analyse(sub, ins, p, found, layer_outputs)
        derived.update((v, d) for v, d in zip(eqn.outvars, layer_outputs, strict=True) if d)
        return outs
    if name == "scan":
        found.inline.add(p)
        return _analyse_scan(eqn, ins, p, found)
    if name == "cond":
        found.inline.add(p)
        return _analyse_cond(eqn, ins, p, found)
    use = _classify(eqn, ins, p, derived, consumers)
    if use is None:
        found.other(ins, p)
    else:
        found.add(cast(View, use.view).leaf, use)
    return [None] * len(eqn.outvars)


def _classify(eqn, ins, p, derived, consumers) -> _Use | None:
    """The use that an eqn makes of its one parameter operand, or ``None`` (an "other" use)."""
    name = eqn.primitive.name
    params = [j for j, view in enumerate(ins) if view is not None]
    if len(params) != 1:
        return None
    arg = params[0]
    if name == "gather" and arg == 0 and _is_lookup(eqn):
        return _Use("embed", p, eqn, 0, ins[0])
    if name == "dot_general":
        return _Use("dense", p, eqn, arg, ins[arg])
    if name == "conv_general_dilated" and arg == 1:
        if int(eqn.params["batch_group_count"]) == 1:
            return _Use("conv", p, eqn, 1, ins[1])
        return None
    if name in ("mul", "sub"):
        kind = "scale" if name == "mul" else ("shift" if arg == 0 else "negative shift")
        return _Use(kind, p, eqn, arg, ins[arg])
    if name == "add":
        use = _Use("bias", p, eqn, arg, ins[arg])
        other = eqn.invars[1 - arg]
        if isinstance(other, jex.Var) and other in derived:
            use.producer, use.through = derived[other]
            use.single_consumer = consumers[other] == 1 and (
                other.aval.shape == eqn.outvars[0].aval.shape
            )
        return use
    return None


def _is_lookup(eqn: jex.JaxprEqn) -> bool:
    """A ``gather`` of whole rows of a ``(V, E)`` table (``table[tokens]``, ``jnp.take``)."""
    table = eqn.invars[0].aval.shape
    idx = eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    dn = eqn.params["dimension_numbers"]
    return (
        len(table) == 2
        and len(idx) >= 1
        and idx[-1] == 1
        and tuple(dn.offset_dims) == (len(out) - 1,)
        and tuple(dn.collapsed_slice_dims) == (0,)
        and tuple(dn.start_index_map) == (0,)
        and not tuple(getattr(dn, "operand_batching_dims", ()))
        and tuple(eqn.params["slice_sizes"]) == (1, table[1])
    )


def _analyse_scan(eqn, ins, path, found) -> list[View | None]:
    """Follows parameters into a ``lax.scan`` body: a constant of the loop is passed whole to
    every iteration, a scanned-over input is sliced, a carry that the body hands back
    unchanged is a constant; a parameter changed by the loop or returned stacked is an
    "other" use."""
    p = eqn.params
    n_consts, n_carry, length = int(p["num_consts"]), int(p["num_carry"]), int(p["length"])
    body = p["jaxpr"].jaxpr
    unchanged = _unchanged_carries(body, ins, n_consts, n_carry, length, path, found)
    body_ins: list[View | None] = []
    for j, view in enumerate(ins):
        if view is not None and n_consts <= j < n_consts + n_carry and j not in unchanged:
            found.other([view], path)
            view = None
        stacked = j >= n_consts + n_carry
        body_ins.append(None if view is None else view.then(Loop(length, stacked=stacked)))
    outs = _analyse(body, body_ins, path, found)
    result: list[View | None] = [None] * len(outs)
    for j, view in enumerate(outs):
        if j < n_carry and n_consts + j in unchanged:
            result[j] = ins[n_consts + j]  # the carried parameter, as it entered
        else:
            found.other([view], path)
    return result


def _unchanged_carries(body, ins, n_consts, n_carry, length, path, found) -> set[int]:
    """The positions (in ``ins``) of the carries holding a parameter that the body returns
    as it received them, found by a trial walk of the body (its uses are dropped)."""
    carried = [j for j in range(n_consts, n_consts + n_carry) if ins[j] is not None]
    if not carried:
        return set()
    trial = [
        None if view is None else view.then(Loop(length, stacked=j >= n_consts + n_carry))
        for j, view in enumerate(ins)
    ]
    scratch = _Found({leaf: [] for leaf in found.uses}, set(), set())
    outs = _analyse(body, trial, path, scratch)
    return {j for j in carried if outs[j - n_consts] is trial[j]}


def _analyse_cond(eqn, ins, path, found) -> list[View | None]:
    """Follows parameters into every branch of a ``lax.cond``/``lax.switch``: the uses of a
    leaf are merged over the branches when every branch makes the same ones, else kept
    apart (see :func:`_merge_branches`); a parameter returned by a branch is an "other"
    use."""
    found.other(ins[:1], path)  # a parameter as the branch index
    per_branch = []
    for k, closed in enumerate(eqn.params["branches"]):
        branch = found.fresh()
        outs = _analyse(closed.jaxpr, ins[1:], (*path, k), branch)
        branch.other(outs, path)
        per_branch.append(branch.uses)
    for leaf, leaf_uses in found.uses.items():
        leaf_uses.extend(_merge_branches([uses[leaf] for uses in per_branch]))
    return [None] * len(eqn.outvars)


def _merge_branches(branches: list[list[_Use]]) -> list[_Use]:
    """One leaf's uses in each branch of a ``cond``. When every branch makes the same uses
    (same :func:`_signature`, same order), each use of the first branch stands for its twins
    (``alternates``): one layer, hooked in every branch. Otherwise all the uses, each hooked
    in its own branch."""
    first, *others = branches
    same = all(len(o) == len(first) for o in others) and all(
        _signature(u) == _signature(v) for o in others for u, v in zip(first, o, strict=True)
    )
    if not (same and others):
        return [u for uses in branches for u in uses]
    merged = []
    for j, u in enumerate(first):
        twins = [o[j] for o in others]
        merged.append(
            dataclasses.replace(
                u,
                alternates=(*u.alternates, *(s for v in twins for s in v.sites)),
                alt_producers=(*u.alt_producers, *(q for v in twins for q in v.producers)),
            )
        )
    return merged


def _eqn_signature(eqn: jex.JaxprEqn) -> tuple:
    params = tuple(sorted((key, repr(value)) for key, value in eqn.params.items()))
    avals = tuple(str(v.aval) for v in (*eqn.invars, *eqn.outvars))
    return eqn.primitive.name, params, avals


def _signature(u: _Use) -> tuple:
    """What two branches' uses of a leaf must share for one layer to serve both: the kind,
    the eqn, the views of the leaf and (bias) of the layer output."""
    chain = () if u.view is None else u.view.chain
    return (
        u.kind,
        u.arg,
        None if u.eqn is None else _eqn_signature(u.eqn),
        tuple(e if isinstance(e, Loop) else _eqn_signature(e) for e in chain),
        tuple(_eqn_signature(e) for e in u.through),
        u.single_consumer,
        u.producer is None,
        len(u.alternates),
    )


# --------------------------------------------------------------------------------------------
# placing the layers


@dataclasses.dataclass(eq=False)
class ModelLayers:
    """The traced single-example program and where its parameters are used."""

    jaxpr: jex.Jaxpr
    consts: Sequence[Any]
    param_tree: Any
    param_avals: list[Any]
    leaf_names: list[str]
    input_tree: Any
    output_shape: tuple[int, ...]  # of one example, () or (C,)
    output_dtype: Any
    layers: list[Layer]
    fallback: list[int]  # leaf indices with an exact per-leaf Jacobian
    inline: frozenset[tuple[int, ...]]
    sites: dict[tuple[int, ...], int]  # eqn path -> layer index

    @property
    def num_outputs(self) -> int:
        return int(math.prod(self.output_shape))


class _Traced(NamedTuple):
    """``predict_fn`` traced on one example, with its flattened parameters and inputs."""

    closed: jex.ClosedJaxpr
    out_shape: jax.ShapeDtypeStruct
    param_tree: Any
    param_avals: list[jax.ShapeDtypeStruct]
    names: list[str]
    input_tree: Any
    num_inputs: int


def find_layers(predict_fn: Callable, params: Any, inputs: Any) -> ModelLayers:
    """Traces ``predict_fn`` on one example and places its layers (see the module).

    Args:
        predict_fn: ``predict_fn(params, x)`` with a batch ``x``.
        params: a pytree of arrays (may be abstract: ``jax.ShapeDtypeStruct``).
        inputs: the batch (a pytree of arrays with a leading batch axis).

    Returns:
        A :class:`ModelLayers`.
    """
    traced = _trace(predict_fn, params, inputs)
    avals, names = traced.param_avals, traced.names
    found = _Found({i: [] for i in range(len(avals))}, set(), set())
    in_views = [View(i, ()) for i in range(len(avals))] + [None] * traced.num_inputs
    found.other(_analyse(traced.closed.jaxpr, in_views, (), found), ())

    layers = _place_weights(found.uses, avals, names)
    placed = {layer.weight.leaf for layer in layers}
    placed |= _merge_biases(found.uses, avals, names, layers, placed)
    elementwise = _place_elementwise(found.uses, avals, names, placed)
    placed |= {layer.weight.leaf for layer in elementwise}
    layers = sorted([*layers, *elementwise], key=lambda layer: layer.path)  # program order
    sites = {site: k for k, layer in enumerate(layers) for site in layer.sites}
    # a custom-derivative call keeps its rule unless a layer is hooked inside it
    inline = {
        p
        for p in found.inline
        if p not in found.custom or any(site[: len(p)] == p for site in sites)
    }
    fallback = [
        i for i, aval in enumerate(avals) if i not in placed and found.uses[i] and _floating(aval)
    ]
    return ModelLayers(
        jaxpr=traced.closed.jaxpr,
        consts=traced.closed.consts,
        param_tree=traced.param_tree,
        param_avals=avals,
        leaf_names=names,
        input_tree=traced.input_tree,
        output_shape=tuple(traced.out_shape.shape[1:]),
        output_dtype=traced.out_shape.dtype,
        layers=layers,
        fallback=fallback,
        inline=frozenset(inline),
        sites=sites,
    )


def _trace(predict_fn: Callable, params: Any, inputs: Any) -> _Traced:
    """``jax.make_jaxpr`` of ``predict_fn`` on one example, its output shape checked."""
    leaves_with_path, param_tree = jax.tree_util.tree_flatten_with_path(params)
    param_avals = [_aval(x) for _, x in leaves_with_path]
    names = [_leaf_name(path) for path, _ in leaves_with_path]
    x_leaves, input_tree = jax.tree.flatten(inputs)
    x_avals = []
    for x in x_leaves:
        aval = _aval(x)
        if not aval.shape:
            raise ValueError("inputs must have a leading batch axis, got a scalar input")
        x_avals.append(jax.ShapeDtypeStruct((1, *aval.shape[1:]), aval.dtype))

    def flat_fn(*args):
        p = jax.tree.unflatten(param_tree, args[: len(param_avals)])
        x = jax.tree.unflatten(input_tree, args[len(param_avals) :])
        return predict_fn(p, x)

    closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*param_avals, *x_avals)
    if isinstance(out_shape, (list, tuple)) or not hasattr(out_shape, "shape"):
        raise ValueError("predict_fn must return one array of shape (b,) or (b, C)")
    if len(out_shape.shape) not in (1, 2) or out_shape.shape[0] != 1:
        raise ValueError(
            "predict_fn must return outputs of shape (b,) or (b, C) (traced on one example: "
            f"shape {out_shape.shape})"
        )
    return _Traced(closed, out_shape, param_tree, param_avals, names, input_tree, len(x_avals))


def _floating(aval: Any) -> bool:
    return bool(jnp.issubdtype(aval.dtype, jnp.inexact))


def _use_name(name: str, k: int, count: int) -> str:
    return name + (f"[use {k + 1}]" if count > 1 else "")


def _place_weights(uses: dict[int, list[_Use]], avals: list, names: list[str]) -> list[Layer]:
    """A layer per use of each leaf whose uses are all isometric dense, convolution or
    embedding uses (several uses: a shared weight)."""
    layers = []
    for leaf, leaf_uses in uses.items():
        aval = avals[leaf]
        if not leaf_uses or not _floating(aval):
            continue
        if not all(u.kind in WEIGHT_KINDS for u in leaf_uses):
            continue
        if not all(_weight_is_isometric(u, aval) for u in leaf_uses):
            continue
        shared = len(leaf_uses) > 1
        for k, u in enumerate(leaf_uses):
            name = _use_name(names[leaf], k, len(leaf_uses))
            layers.append(_weight_layer(u, name, shared=shared))
    return layers


def _merge_biases(uses, avals, names, layers: list[Layer], placed: set[int]) -> set[int]:
    """Merges into its layer each leaf whose single use adds it to the output of an unshared
    layer, in every branch where that layer is hooked; returns the merged leaves."""
    by_path = {layer.path: layer for layer in layers}
    merged = set()
    for leaf, leaf_uses in uses.items():
        aval = avals[leaf]
        if leaf in placed or len(leaf_uses) != 1 or leaf_uses[0].kind != "bias":
            continue
        if not _floating(aval):
            continue
        u = leaf_uses[0]
        layer = by_path.get(u.producer) if u.producer is not None else None
        if layer is None or layer.shared or layer.bias is not None or not u.single_consumer:
            continue
        if u.producers != layer.sites:
            continue
        order = _bias_order_in_loops(layer, u, aval)
        if order is False:
            continue
        layer.bias = u.view
        layer.bias_order = order
        layer.name = f"{layer.name} + {names[leaf]}"
        merged.add(leaf)
    return merged


def _place_elementwise(uses, avals, names, placed: set[int]) -> list[Layer]:
    """A scale or shift layer per use of each leaf whose uses all multiply or add a
    (broadcast) view of it."""
    layers = []
    for leaf, leaf_uses in uses.items():
        aval = avals[leaf]
        if leaf in placed or not leaf_uses or not _floating(aval):
            continue
        if not all(u.kind in ELEMENTWISE_KINDS for u in leaf_uses):
            continue
        for k, u in enumerate(leaf_uses):
            layers.append(_elementwise_layer(u, _use_name(names[leaf], k, len(leaf_uses)), aval))
    return layers


def _weight_is_isometric(use: _Use, aval) -> bool:
    shape = cast(jex.JaxprEqn, use.eqn).invars[use.arg].aval.shape
    stacked = [loop.length for loop in cast(View, use.view).loops if loop.stacked]
    shape = (*stacked, *shape)
    idx = cast(View, use.view).indices(aval.shape)
    return idx.shape == tuple(shape) and is_permutation(idx, math.prod(aval.shape))


def _bias_order(layer: Layer, bias: _Use, aval) -> np.ndarray | None | bool:
    """The (G, F) leaf index of each bias entry if the bias broadcasts over the positions
    (``None`` when it is the identity order), ``False`` when it does not fit the layer."""
    add_shape = cast(jex.JaxprEqn, bias.eqn).outvars[0].aval.shape
    try:
        idx = np.broadcast_to(cast(View, bias.view).indices(aval.shape), add_shape)
    except ValueError:
        return False
    for eqn in reversed(bias.through):  # back to the layer's output layout
        if eqn.primitive.name == "transpose":
            idx = idx.transpose(np.argsort(eqn.params["permutation"]))
        elif eqn.primitive.name in ("reshape", "squeeze"):
            if eqn.primitive.name == "reshape" and eqn.params.get("dimensions") is not None:
                return False
            idx = idx.reshape(eqn.invars[0].aval.shape)
    if layer.kind == "dense":
        canon = dense_delta_indices(layer.eqn, layer.weight_arg, idx)
    else:
        canon = conv_delta_indices(layer.eqn, idx)
    row = canon[0]
    if not np.all(canon == row[None]):
        return False
    size = math.prod(aval.shape)
    if not is_permutation(row, size):
        return False
    if np.array_equal(row.ravel(), np.arange(size)):
        return None
    return np.asarray(row)


def _weight_layer(u: _Use, name: str, *, shared: bool) -> Layer:
    eqn = cast(jex.JaxprEqn, u.eqn)  # dense and conv uses have theirs
    view = cast(View, u.view)
    if u.kind == "dense":
        s, g, d, f = dense_shape(eqn, u.arg)
    elif u.kind == "embed":
        table = eqn.invars[0].aval.shape
        s, g, d, f = math.prod(eqn.invars[1].aval.shape[:-1]), 1, table[0], table[1]
    else:
        s, g, d, f = conv_shape(eqn)
    for loop in view.loops:
        if loop.stacked:
            g *= loop.length
        else:
            s *= loop.length
    return Layer(
        name=name,
        kind=u.kind,
        path=u.path,
        eqn=eqn,
        weight=view,
        weight_arg=u.arg,
        positions=s,
        groups=g,
        features_in=d,
        features_out=f,
        shared=shared,
        alternates=u.alternates,
    )


def _elementwise_layer(u: _Use, name: str, aval: Any) -> Layer:
    eqn = cast(jex.JaxprEqn, u.eqn)
    view = cast(View, u.view)
    size = math.prod(aval.shape)
    out = math.prod(eqn.outvars[0].aval.shape) * math.prod(loop.length for loop in view.loops)
    return Layer(
        name=name,
        kind="scale" if u.kind == "scale" else "shift",
        path=u.path,
        eqn=eqn,
        weight=view,
        weight_arg=u.arg,
        positions=max(out // max(size, 1), 1),
        groups=1,
        features_in=1,
        features_out=size,
        sign=-1.0 if u.kind == "negative shift" else 1.0,
        alternates=u.alternates,
    )


def _bias_order_in_loops(layer: Layer, u: _Use, aval) -> np.ndarray | None | bool:
    """:func:`_bias_order` of one loop iteration: the bias must enter the layer's loops the
    same way as its weight, its slices whole parts of the leaf."""
    view = cast(View, u.view)
    if not view.loops:
        return _bias_order(layer, u, aval)
    if view.loops != layer.loops:
        return False
    outer = outer_chain(view.chain)
    idx = replay_numpy(outer, np.arange(math.prod(aval.shape)).reshape(aval.shape))
    if not is_permutation(idx, math.prod(aval.shape)):
        return False
    n_stacked = sum(loop.stacked for loop in view.loops)
    inner = dataclasses.replace(u, view=View(view.leaf, view.chain[len(outer) :]))
    return _bias_order(layer, inner, jax.ShapeDtypeStruct(idx.shape[n_stacked:], aval.dtype))


def _aval(x: Any) -> jax.ShapeDtypeStruct:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)
    return jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))


def _leaf_name(path) -> str:
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            if key.name != "value":
                parts.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    return ".".join(parts) if parts else "params"


# --------------------------------------------------------------------------------------------
# the interpreter


def run_with_hooks(
    model: ModelLayers,
    param_leaves: Sequence[Any],
    input_leaves: Sequence[Any],
    eps: Sequence[jax.Array],
) -> tuple[jax.Array, list[jax.Array]]:
    """Evaluates the single-example program with ``eps[l]`` added to layer ``l``'s output.

    ``eps[l]`` has :attr:`Layer.eps_shape`: one slice per iteration of the layer's loops.
    Returns the output (of one example, batch axis dropped) and each layer's recorded input
    (see :meth:`Layer.activation`), stacked over the iterations of its loops.
    """
    acts: dict[int, Any] = {}
    (out,) = _interpret(
        model.jaxpr,
        model.consts,
        [*param_leaves, *input_leaves],
        model,
        dict(enumerate(eps)),
        acts,
        (),
    )
    return out[0], [acts[k] for k in range(len(model.layers))]


def _interpret(jaxpr, consts, args, model, eps, acts, path):
    env: dict[Any, Any] = {}

    def read(v):
        return v.val if isinstance(v, jex.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts, strict=True):
        env[v] = x
    for v, x in zip(jaxpr.invars, args, strict=True):
        env[v] = x
    for idx, eqn in enumerate(jaxpr.eqns):
        p = (*path, idx)
        invals = [read(v) for v in eqn.invars]
        if p in model.inline:
            outvals = _interpret_inline(eqn, invals, model, eps, acts, p)
        else:
            outvals = bind(eqn, invals)
        site = model.sites.get(p)
        if site is not None:
            acts[site] = model.layers[site].activation(invals)
            outvals = [outvals[0] + eps[site]]
        for v, x in zip(eqn.outvars, outvals, strict=True):
            env[v] = x
    return [read(v) for v in jaxpr.outvars]


def _interpret_inline(eqn, invals, model, eps, acts, path):
    """A sub-program that holds layers (or receives parameters), interpreted with hooks."""
    name = eqn.primitive.name
    if name == "scan":
        return _interpret_scan(eqn, invals, model, eps, acts, path)
    if name == "cond":
        return _interpret_cond(eqn, invals, model, eps, acts, path)
    sub, sub_consts = _sub_jaxpr(eqn)
    return _interpret(sub, sub_consts, invals, model, eps, acts, path)


def _layers_inside(model: ModelLayers, path: tuple[int, ...]) -> list[int]:
    """The layers hooked inside the eqn at ``path`` (in any of its branches)."""
    return sorted({k for site, k in model.sites.items() if site[: len(path)] == path})


def _interpret_scan(eqn, invals, model, eps, acts, path):
    """A ``lax.scan`` whose body is interpreted with hooks: the perturbations of the layers
    inside it are scanned over with the inputs, their recorded inputs stacked with the
    outputs."""
    p = eqn.params
    n_consts, n_carry = int(p["num_consts"]), int(p["num_carry"])
    closed = p["jaxpr"]
    consts, init, xs = (
        invals[:n_consts],
        invals[n_consts : n_consts + n_carry],
        invals[n_consts + n_carry :],
    )
    inside = _layers_inside(model, path)

    def body(carry, x):
        xs_t, eps_t = x
        acts_t: dict[int, Any] = {}
        outs = _interpret(
            closed.jaxpr,
            closed.consts,
            [*consts, *carry, *xs_t],
            model,
            dict(zip(inside, eps_t, strict=True)),
            acts_t,
            path,
        )
        return outs[:n_carry], (outs[n_carry:], [acts_t[k] for k in inside])

    carry, (ys, stacked) = lax.scan(
        body,
        list(init),
        (list(xs), [eps[k] for k in inside]),
        length=int(p["length"]),
        reverse=bool(p["reverse"]),
        unroll=True if int(p["length"]) <= UNROLL_LIMIT else p["unroll"],
    )
    acts.update(zip(inside, stacked, strict=True))
    return [*carry, *ys]


def _interpret_cond(eqn, invals, model, eps, acts, path):
    """A ``lax.switch`` over the branches, each interpreted with hooks. A layer that a branch
    does not hook records zeros there: its perturbation does not reach the output of that
    branch, so its cotangent is zero there too."""
    index, operands = invals[0], invals[1:]
    inside = _layers_inside(model, path)
    eps_in = [eps[k] for k in inside]

    def branch(k, closed):
        def run(ops, eps_k):
            acts_k: dict[int, Any] = {}
            hooks = dict(zip(inside, eps_k, strict=True))
            outs = _interpret(closed.jaxpr, closed.consts, ops, model, hooks, acts_k, (*path, k))
            return outs, [acts_k.get(j) for j in inside]

        return run

    runs = [branch(k, closed) for k, closed in enumerate(eqn.params["branches"])]
    recorded = [jax.eval_shape(run, operands, eps_in)[1] for run in runs]
    avals = [next(r[j] for r in recorded if r[j] is not None) for j in range(len(inside))]

    def filled(run):
        def run_filled(ops, eps_k):
            outs, a = run(ops, eps_k)
            return outs, [
                jnp.zeros(av.shape, av.dtype) if x is None else x
                for x, av in zip(a, avals, strict=True)
            ]

        return run_filled

    outs, branch_acts = lax.switch(index, [filled(run) for run in runs], operands, eps_in)
    acts.update(zip(inside, branch_acts, strict=True))
    return list(outs)
