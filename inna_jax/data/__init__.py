"""Datasets: scikit-learn's digits and diabetes, mnist1d, CIFAR-100 and synthetic sets."""

from inna_jax.data._arrays import ArrayDataset as ArrayDataset
from inna_jax.data._cifar100 import load_cifar100 as load_cifar100
from inna_jax.data._mnist1d import load_mnist1d as load_mnist1d
from inna_jax.data._sklearn import load_diabetes as load_diabetes
from inna_jax.data._sklearn import load_digits as load_digits

__all__ = ["ArrayDataset", "load_cifar100", "load_diabetes", "load_digits", "load_mnist1d"]
