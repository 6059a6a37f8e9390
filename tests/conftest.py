"""Test set-up: 8 host CPU devices and float64 (set before jax is imported), strict promotion."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("MPLBACKEND", "Agg")
# The commands' on-disk compilation cache stays off in tests (nothing written to ~/.cache;
# every test compiles what it runs); tests/test_cli.py turns it on in a temporary folder.
os.environ["INNA_JAX_COMPILATION_CACHE"] = "off"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402

# Every test runs under strict dtype promotion (an implicit int32/float32, bf16/float32 or
# float32/float64 mix is an error), except these, whose code path goes through third-party
# code that mixes dtypes itself under x64: optax's schedules and scale_by_learning_rate (a
# Python-float rate times an int32 count or float32 updates), Flax NNX's promote_dtype,
# normalization and pooling (float64 inputs with float32 parameters), and gymnax's
# environments. The package's own optimizers, Gram matrices and dynamics run strict in the
# shared optimizer suite, tests/test_ntk*.py and tests/test_dynamics*.py.
_STANDARD_PROMOTION = (
    "tests/test_checkpoint.py::test_resume_in_process_is_bit_identical",  # optax
    "tests/test_demo.py::test_demo_trains_every_method_and_writes_its_files",  # optax
    "tests/test_egn_experiment.py::test_run_writes_table_curves_and_histories",  # optax
    "tests/test_egn_experiment.py::"
    "test_breast_cancer_and_a_larger_mnist1d_through_the_cli",  # optax
    "tests/test_figure2.py::test_benchmark_is_an_alias_of_figure2",  # optax
    "tests/test_figure2.py::test_make_optimizer_steps_match_the_protocol",  # optax
    "tests/test_figure2.py::test_tiny_run_writes_everything",  # optax
    "tests/test_fit_many.py::test_grid_search_rows_without_test_evaluation",  # flax
    "tests/test_fit_many.py::test_group_metrics_files",  # flax
    "tests/test_fit_many.py::test_second_fit_compiles_nothing",  # flax
    "tests/test_flax_digits.py::test_inna_trains_mlp_on_digits_via_nnx_optimizer",  # flax
    "tests/test_innaprop_lm.py::test_tiny_run_writes_curves_table_figure_and_settings",  # optax
    "tests/test_innaprop_lm.py::test_mnist1d_num_samples_through_the_registry_and_figure2",
    "tests/test_models.py::test_nin_dropout_follows_train_and_eval",  # flax
    "tests/test_models.py::test_nin_forward_matches_lax_reference",  # flax
    "tests/test_ntk_structured.py::test_gram_equals_dense_jacobian_gram[batchnorm_eval]",  # flax
    "tests/test_ntk_structured.py::test_layers_found_in_flax_models",  # flax
    "tests/test_ntk_models.py::test_gram_matches_dense_jacobian[nnx_scan]",  # flax
    "tests/test_ntk_models.py::test_gram_matches_dense_jacobian[transformer]",  # flax
    "tests/test_ntk_models.py::test_plan_places_every_transformer_parameter",  # flax
    "tests/test_ntk_models.py::test_reductions_and_cross_gram",  # flax
    "tests/test_ntk_models.py::test_jvp_and_vjp_match_dense_jacobian[transformer]",  # flax
    "tests/test_protocol.py::test_cached_models_are_independent_modules_with_the_same_start",
    "tests/test_protocol.py::test_grid_search_picks_the_best_score_and_ties_go_to_the_smaller_value",
    "tests/test_registry.py::test_every_optimizer_builds_and_steps",  # optax
    "tests/test_rl_command.py::test_egn_rl_command_writes_tables_and_figures",  # gymnax
    "tests/test_rl_dqn.py::test_egn_dqn_runs_vmapped_over_seeds",  # gymnax
    "tests/test_rl_dqn.py::test_td_targets_and_target_updates_match_numpy",  # gymnax
    "tests/test_rl_dqn.py::test_transitions_store_the_true_next_observation_across_resets",
    "tests/test_train.py::test_the_optimizer_always_gets_the_batch",  # optax
)


@pytest.fixture(autouse=True)
def dtype_promotion(request):
    """Strict dtype promotion for the test, or standard for the few listed above."""
    mode = "standard" if request.node.nodeid in _STANDARD_PROMOTION else "strict"
    with jax.numpy_dtype_promotion(mode):
        yield
