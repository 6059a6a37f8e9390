"""The Gauss-Newton side of inna_jax: EGN, SGN and the layer-wise Gram they share.

This subpackage is the implementation's home, not a second public API: the public names
(:func:`inna_jax.egn`, :func:`inna_jax.egn_direction`, :func:`inna_jax.sgn`,
:class:`inna_jax.GaussNewtonState`, :func:`inna_jax.ntk_gram`, :func:`inna_jax.ntk_plan`,
:class:`inna_jax.NTKPlan`, :class:`inna_jax.NTKPlanRow`, :func:`inna_jax.ntk_gram_blocked`,
:func:`inna_jax.ntk_block_plan`, :class:`inna_jax.BlockPlan`) are imported from
``inna_jax`` itself, and every module here is private (its name starts with ``_``). One
concept per module, from the bottom up:

- ``_layers``: a placed layer: the views of a parameter leaf and the canonical layouts of a
  dense, convolution, embedding, scale or shift layer.
- ``_find_layers``: finds those layers in the traced program (``jax.make_jaxpr``), inside
  ``jit``/``remat`` calls, ``scan`` bodies, ``cond`` branches and ``custom_jvp``/``custom_vjp``
  bodies, and re-runs the program with hooks on them.
- ``_layerwise_jacobian``: the layer-wise Jacobian pieces: inputs A, cotangents Δ, Jv and Jᵀv.
- ``_gram``: the Gram J Jᵀ (``ntk_gram``) and its per-layer plan (``ntk_plan``);
  ``_gram_blocked``: the same kernel over whole data sets in memory-bounded blocks.
- ``_loss_roots``: the losses' Hessian roots Q = Lᵀ L (MSE, cross-entropy, ...).
- ``_step``: the Gauss-Newton step shared by EGN and SGN (regularization, line search,
  momentum, the optax state).
- ``_egn``, ``_sgn``: the EGN direction (a b x b solve) and SGN's (conjugate gradients).
"""

__all__: list[str] = []
