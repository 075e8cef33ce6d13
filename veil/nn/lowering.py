"""What an op's lowering rule sees of an fx node: :class:`Lowering`, and fx helpers.

Each op of :mod:`veil.nn.ops` turns the fx nodes it claims into a
:class:`~veil.nn.layer.Layer` through a :class:`Lowering`: the node, its output
shape, the names of its tensor inputs, and a :meth:`Lowering.refuse` that names
the model source line in its error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.fx

from veil.nn.layer import Layer, UnsupportedModelError

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s+(.*)')


def source_of(node: torch.fx.Node) -> str:
    """``file:line (function): code`` of the user's line that created ``node``."""
    frames = _FRAME.findall(node.stack_trace or "")
    user = [f for f in frames if "/torch/" not in f[0]]
    if not user:
        return f"fx node {node.name!r}"
    path, line, func, code = user[-1]
    return f"{path}:{line} (in {func}): {code.strip()}"


def pair(v: Any) -> tuple[int, int]:
    """An int or a pair as ``(int, int)``."""
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def refuse(node: torch.fx.Node, what: str, why: str = "is not supported"
           ) -> UnsupportedModelError:
    """The error for an unsupported ``what`` at ``node``, naming its source line."""
    return UnsupportedModelError(f"{what} {why} in secure computation; used at "
                                 f"{source_of(node)}")


def meta_shape(node: Any) -> tuple[int, ...] | None:
    """The traced shape of ``node`` (``None`` for non-tensors)."""
    if not isinstance(node, torch.fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def target_name(node: torch.fx.Node) -> str:
    t = node.target
    return getattr(t, "__name__", str(t))


@dataclass
class Lowering:
    """One fx node being lowered.

    Attributes
    ----------
    node: the fx node.
    module: the called ``nn.Module`` for ``call_module`` nodes, else ``None``.
    out_shape: the node's output shape without the batch dimension.
    src: maps a tensor argument (an fx node) to the name of the layer producing it.
    """

    node: torch.fx.Node
    module: Any
    out_shape: tuple[int, ...]
    src: Callable[[Any], str]

    @property
    def kind(self) -> str:
        """``"call_module"``, ``"call_function"`` or ``"call_method"``."""
        return self.node.op

    def layer(self, op: str, inputs: tuple[str, ...], **kw: Any) -> Layer:
        """A layer named like the node, with its output shape and source line."""
        target = str(self.node.target) if self.node.op == "call_module" else ""
        return Layer(self.node.name, op, inputs, self.out_shape, source=source_of(self.node),
                     target=target, **kw)

    def refuse(self, what: str, why: str = "is not supported") -> UnsupportedModelError:
        return refuse(self.node, what, why)

    def first_input(self) -> str:
        return self.src(self.node.args[0])

    def tensor_args(self) -> list[torch.fx.Node]:
        return [a for a in self.node.args if isinstance(a, torch.fx.Node) and meta_shape(a)]

    def args(self, names: tuple[str, ...]) -> dict[str, Any]:
        """Positional and keyword arguments of a function call, by name."""
        out = dict(zip(names, self.node.args, strict=False))
        out.update(self.node.kwargs)
        return out

    def in_shape(self, i: int = 0) -> tuple[int, ...]:
        """The per-sample shape of tensor argument ``i``."""
        return meta_shape(self.node.args[i])[1:]
