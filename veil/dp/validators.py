"""Model checks for DP-SGD: BatchNorm mixes samples, so it is refused (with a fixer)."""

from __future__ import annotations

import copy
import math

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class UnsupportedModuleError(ValueError):
    """The model contains a layer incompatible with per-sample privacy."""


def validate(model: nn.Module) -> None:
    """Refuse models whose layers couple the samples of a batch.

    BatchNorm normalises each sample with statistics of the whole batch, so one
    sample's gradient depends on all others and per-sample clipping bounds nothing.

    Example
    -------
    >>> validate(nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4)))   # fine
    """
    bad = [name or "<root>" for name, m in model.named_modules() if isinstance(m, _BatchNorm)]
    if bad:
        raise UnsupportedModuleError(
            f"BatchNorm layers are not compatible with DP-SGD (they mix samples): {bad}. "
            "Use GroupNorm instead, e.g. veil.dp.fix_batchnorm(model) replaces each "
            "BatchNorm with GroupNorm."
        )


def _groups(channels: int, max_groups: int) -> int:
    return math.gcd(channels, max_groups) or 1


def fix_batchnorm(model: nn.Module, max_groups: int = 32) -> nn.Module:
    """Replace every BatchNorm{1,2,3}d (in place) by ``GroupNorm(gcd(C, 32), C)``.

    Example
    -------
    >>> m = fix_batchnorm(nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8)))
    >>> type(m[1]).__name__, m[1].num_groups
    ('GroupNorm', 8)
    """
    if isinstance(model, _BatchNorm):
        return nn.GroupNorm(_groups(model.num_features, max_groups), model.num_features,
                            affine=model.affine)
    for name, child in model.named_children():
        setattr(model, name, fix_batchnorm(child, max_groups))
    return model


class ModuleValidator:
    """Opacus' ``opacus.validators.ModuleValidator``: list, check and fix what DP-SGD refuses.

    Example
    -------
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    >>> len(ModuleValidator.validate(model, strict=False))
    1
    >>> ModuleValidator.validate(ModuleValidator.fix(model), strict=False)
    []
    """

    @classmethod
    def validate(cls, module: nn.Module, *, strict: bool = False) -> list[UnsupportedModuleError]:
        """Every problem found (raised as one error with ``strict=True``)."""
        errors: list[UnsupportedModuleError] = []
        try:
            validate(module)
        except UnsupportedModuleError as exc:
            errors.append(exc)
        from veil.dp.grad_sample.functorch import fallback_for
        from veil.dp.grad_sample.registry import rule_for, trainable

        for name, m in module.named_modules():
            if trainable(m) and rule_for(m) is None:
                try:
                    fallback_for(m, name)
                except UnsupportedModuleError as exc:
                    errors.append(exc)
        if strict and errors:
            raise UnsupportedModuleError("; ".join(str(e) for e in errors))
        return errors

    @classmethod
    def is_valid(cls, module: nn.Module) -> bool:
        return not cls.validate(module, strict=False)

    @classmethod
    def fix(cls, module: nn.Module, **kwargs) -> nn.Module:
        """A copy of the model with BatchNorm replaced by GroupNorm (see
        :func:`fix_batchnorm`). Recurrent and attention layers need no replacement."""
        return fix_batchnorm(copy.deepcopy(module), **kwargs)

    @classmethod
    def fix_and_validate(cls, module: nn.Module, **kwargs) -> nn.Module:
        fixed = cls.fix(module, **kwargs)
        cls.validate(fixed, strict=True)
        return fixed
