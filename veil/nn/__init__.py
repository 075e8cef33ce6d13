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
