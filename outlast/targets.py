"""Resolving a CLI target (``module:function`` or ``path/to/file.py:function``) to a function."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from outlast.app import DurableFunction
from outlast.errors import TargetError


def _is_file(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or "\\" in module_part


def normalize_target(target: str) -> str:
    """The target in the form a run records and compares: a file path made absolute (so one
    file named from two directories is one target), a module name as given."""
    module_part, sep, attr = target.rpartition(":")
    if sep and module_part and attr and _is_file(module_part):
        return f"{Path(module_part).resolve()}:{attr}"
    return target


def same_target(given: str, recorded: str) -> bool:
    """Does the operator's target name the code a run was started with?"""
    return normalize_target(given) == normalize_target(recorded)


def load_target(target: str) -> DurableFunction[Any]:
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise TargetError(
            f"target {target!r} is not of the form module:function or path/to/file.py:function"
        )
    if _is_file(module_part):
        module = _load_file(Path(module_part), target)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            raise TargetError(
                f"target {target!r}: cannot import module {module_part!r} ({exc}); run from the "
                "directory that contains it, or give a path/to/file.py"
            ) from None
    found = getattr(module, attr, None)
    if found is None:
        raise TargetError(f"target {target!r}: {module_part} has no attribute {attr!r}")
    if not isinstance(found, DurableFunction):
        raise TargetError(
            f"target {target!r}: {attr!r} is a {type(found).__name__}, not a durable function; "
            "decorate it with @app.durable()"
        )
    return found


def _load_file(path: Path, target: str) -> Any:
    if not path.is_file():
        raise TargetError(f"target {target!r}: no file {str(path)!r}")
    resolved = path.resolve()
    name = "outlast_target_" + "".join(c if c.isalnum() else "_" for c in resolved.stem)
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(resolved):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise TargetError(f"target {target!r}: cannot load {str(path)!r} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # The file's own directory is importable, as it is for `python path/to/file.py`.
    sys.path.insert(0, str(resolved.parent))
    spec.loader.exec_module(module)
    return module
