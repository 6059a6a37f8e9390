"""Datasets: scikit-learn's digits, diabetes, breast-cancer, wine and California housing,
mnist1d, CIFAR-100."""

from inna_jax.data._arrays import ArrayDataset as ArrayDataset
from inna_jax.data._batching import batch_at_step as batch_at_step
from inna_jax.data._batching import batch_indices as batch_indices
from inna_jax.data._batching import epoch_permutation as epoch_permutation
from inna_jax.data._batching import steps_per_epoch as steps_per_epoch
from inna_jax.data._cifar100 import load_cifar100 as load_cifar100
from inna_jax.data._mnist1d import load_mnist1d as load_mnist1d
from inna_jax.data._sklearn import load_breast_cancer as load_breast_cancer
from inna_jax.data._sklearn import load_california as load_california
from inna_jax.data._sklearn import load_diabetes as load_diabetes
from inna_jax.data._sklearn import load_digits as load_digits
from inna_jax.data._sklearn import load_wine as load_wine

__all__ = [
    "ArrayDataset",
    "batch_at_step",
    "batch_indices",
    "epoch_permutation",
    "load_breast_cancer",
    "load_california",
    "load_cifar100",
    "load_diabetes",
    "load_digits",
    "load_mnist1d",
    "load_wine",
    "steps_per_epoch",
]
