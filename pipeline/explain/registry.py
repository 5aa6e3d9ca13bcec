"""The one registry of explanation methods: a method is a function plus ``@register_method``.

Everything that lists or checks method names (params validation, CLI help, ``explain``,
the explanation benchmark, the tests) reads this registry, so adding a method is one
function and one decorator in ``pipeline/explain/methods.py`` and no other wiring.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

MethodFn = Callable[..., Tensor]  # (model, images, class_ids, start_layer[, recompute=...]) -> maps


@dataclass(frozen=True)
class ExplanationMethod:
    """A registered method: ``function(model, images, class_ids, start_layer)`` returns raw maps on
    the token grid, or per pixel when ``pixels`` (which needs a plain patch-embedding convolution).
    A ``recomputable`` method reads every block's trace top-down and also takes ``recompute``
    (``explain``): whether to run each block again in the top-down pass rather than keep its trace."""

    name: str
    function: MethodFn
    pixels: bool
    recomputable: bool
    summary: str


METHODS: dict[str, ExplanationMethod] = {}


def register_method(*, pixels: bool = False, recomputable: bool = False) -> Callable[[MethodFn], MethodFn]:
    """Register the decorated function under its own name; its docstring's first paragraph is its summary."""

    def decorator(function: MethodFn) -> MethodFn:
        name = function.__name__
        if name in METHODS:
            raise ValueError(f"explanation method {name!r} is registered twice")
        summary = " ".join((function.__doc__ or "").strip().split("\n\n")[0].split())  # first paragraph
        METHODS[name] = ExplanationMethod(name, function, pixels, recomputable, summary)
        return function

    return decorator


def method_names() -> tuple[str, ...]:
    """Every registered method, in registration order."""
    return tuple(METHODS)


def token_method_names() -> tuple[str, ...]:
    """The methods that stop at the tokens (they work on hybrid models too)."""
    return tuple(name for name, method in METHODS.items() if not method.pixels)


def get_method(name: str) -> ExplanationMethod:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]
