"""Secure inference of PyTorch models: conversion, fixed-point twin, secure execution.

Example
-------
>>> from veil.models import build
>>> from veil.nn import convert
>>> convert(build("network1"), (1, 28, 28)).output_shape
(10,)
"""

from veil.nn.graph import SecureGraph, convert, fold_batchnorm_layers
from veil.nn.layer import Layer, UnsupportedModelError

__all__ = ["Layer", "SecureGraph", "UnsupportedModelError", "convert", "fold_batchnorm_layers"]

#: Private inference as services across machines (docs/deployment.md), imported on first use.
_SERVICE = ("DealerService", "InferenceClient", "InferenceServer", "query")


def __getattr__(name: str):
    if name in _SERVICE:
        from veil.nn import service

        return getattr(service, name)
    raise AttributeError(f"module 'veil.nn' has no attribute {name!r}")
