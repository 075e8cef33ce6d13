"""The table of secure ops: one file per layer kind, every phase of it in that file.

See :mod:`veil.nn.ops.base` for what an op carries. Importing this package
registers the built-in ops.

Example
-------
>>> from veil.nn.ops import op_names
>>> sorted(op_names())[:3]
['add', 'affine', 'argmax']
"""

from veil.nn.ops import (  # noqa: F401  (each module registers its op)
    add,
    affine,
    argmax,
    avgpool,
    conv2d,
    identity,
    linear,
    maxpool,
    relu,
    reshape,
)
from veil.nn.ops.base import (
    Op,
    get_op,
    mask_id,
    op_for_function,
    op_for_method,
    op_for_module,
    op_names,
    register,
)

__all__ = ["Op", "get_op", "mask_id", "op_for_function", "op_for_method", "op_for_module",
           "op_names", "register"]
