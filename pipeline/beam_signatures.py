"""Beam's function signatures, computed once per function instead of at every look.

Building a pipeline's Beam graph introspects its DoFns again and again: `userstate.get_dofn_specs` walks every
method of a DoFn through `inspect.signature` (~30 per DoFn), and Beam asks it for each DoFn from its signature,
its validation and its runner-API translation, over the ~3,000 transforms TFT and TFDV build. In one
`recsys run` of the bundled sample that was 8,290 calls taking 12.4 s of a 143 s run, on every run.

A function's signature is fixed once it is defined, and a bound method's is its function's minus the first
parameter, so `apache_beam.typehints.decorators.get_signature` is memoized here per plain function (held
weakly: a pipeline's lambdas are freed with it). Anything else (builtins, callable objects, partials) is
computed as before. Upstream proposed the same (apache/beam PR #9925, "memoize expensive introspection
functions", closed unmerged); the pinned Beam's modules import `get_signature` by name, so each is patched.
"""

from __future__ import annotations

import threading
import types
import weakref

_MODULES = ("apache_beam.typehints.decorators", "apache_beam.transforms.core", "apache_beam.transforms.ptransform",
            "apache_beam.transforms.util")
_lock = threading.Lock()
_installed = False


def memoized(get_signature):
    """`get_signature`, cached per plain function (and per bound/unbound use of it)."""
    cache: "weakref.WeakKeyDictionary[types.FunctionType, dict]" = weakref.WeakKeyDictionary()

    def cached(func):
        if isinstance(func, types.MethodType) and isinstance(func.__func__, types.FunctionType):
            function, bound = func.__func__, True
        elif isinstance(func, types.FunctionType):
            function, bound = func, False
        else:
            return get_signature(func)
        with _lock:
            signature = cache.get(function, {}).get(bound)
        if signature is None:
            signature = get_signature(func)  # inspect.Signature is immutable: safe to share
            with _lock:
                cache.setdefault(function, {})[bound] = signature
        return signature

    cached.__wrapped__ = get_signature
    cached.cache = cache
    return cached


def install() -> None:
    """Patches the pinned Beam's `get_signature` where it is used (idempotent; this process only)."""
    global _installed
    import importlib

    with _lock:
        if _installed:
            return
        _installed = True
    decorators = importlib.import_module(_MODULES[0])
    fast = memoized(decorators.get_signature)
    for name in _MODULES:
        module = importlib.import_module(name)
        if getattr(module, "get_signature", None) is fast.__wrapped__:
            module.get_signature = fast
