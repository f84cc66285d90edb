"""Typed configs: every stage's settings are a dataclass, and each default is written there once.

Each stage declares its settings in ``twist/<stage>/config.py`` as dataclasses whose fields
carry their default and, in the docstring right below the field, their meaning (the style of
litgpt's ``args.py``). ``twist.cli.common`` registers them with Hydra's ConfigStore as the
schemas the YAML files extend, so an unknown key, a wrong type or a bad choice fails when the
config is composed, with one line that names the key, before any work starts.

This module holds what the schemas share: turning a composed config into the typed object
(:func:`to_typed`), the one-line message for a config error (:func:`describe_config_error`),
choice checks for ``__post_init__`` (:func:`check_choice`), and the field documentation read
from the source (:func:`field_docs`), from which ``docs/configs.md`` is generated.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import textwrap
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from twist.errors import ConfigError

T = TypeVar("T")


def check_choice(key: str, value: Any, options: Iterable[Any]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``options``; the message names ``key``."""
    options = list(options)
    if value not in options:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, options))}")


def check_positive(key: str, value: float | int | None, *, allow_zero: bool = False) -> None:
    """Raise :class:`ConfigError` if ``value`` is negative (or zero, unless ``allow_zero``)."""
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def to_typed(schema: type[T], cfg: Any) -> T:
    """The typed object for ``cfg`` (a DictConfig, a mapping, ``None`` for the defaults, or already a
    ``schema`` instance).

    ``cfg`` is merged into a fresh structured config of ``schema``: a key the schema does not
    declare (also one added with Hydra's ``+``), a value of the wrong type, or a required
    setting left unset raises :class:`ConfigError` naming the key; ``__post_init__`` checks run.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(cfg, schema):
        return cfg
    if cfg is None:  # the schema's defaults
        cfg = {}
    try:
        base = OmegaConf.structured(schema)
        # as plain containers: a node Hydra typed already would carry keys added with `+`
        plain = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else dict(cfg)
        plain.pop("hydra", None)
        merged = OmegaConf.merge(base, plain)
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(f"missing required setting(s): {', '.join(missing)}")
        return OmegaConf.to_object(merged)  # runs __post_init__
    except OmegaConfBaseException as e:
        raise ConfigError(describe_config_error(e, schema)) from None


def describe_config_error(err: BaseException, schema: type | None = None) -> str:
    """One line for an OmegaConf/Hydra composition error: the key, what is wrong, a suggestion."""
    cause = err
    while getattr(cause, "full_key", None) is None and cause.__cause__ is not None:
        cause = cause.__cause__
    key = getattr(cause, "full_key", None) or ""
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    kind = type(cause).__name__
    if kind in ("ConfigKeyError", "ConfigAttributeError") and key:
        hint = closest_key(key, schema) if schema is not None else None
        return f"unknown setting {key}" + (f" (did you mean {hint}?)" if hint else "")
    if kind == "ValidationError" and key:
        return f"{key}: {first}"
    if kind == "MissingMandatoryValue" and key:
        return f"missing required setting {key}"
    return f"{key}: {first}" if key else first


def declared_keys(schema: type) -> list[str]:
    """Every dotted key a schema declares (nested dataclasses walked; free-form dicts are leaves)."""
    out: list[str] = []
    for f in dataclasses.fields(schema):
        sub = _dataclass_type(f.type, schema)
        if sub is not None:
            out += [f"{f.name}.{k}" for k in declared_keys(sub)]
        out.append(f.name)
    return out


def closest_key(key: str, schema: type) -> str | None:
    """The declared key nearest to a mistyped one: same parent first, then anywhere."""
    keys = declared_keys(schema)
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in keys if k.rpartition(".")[0] == parent]
    for pool, target in ((siblings, key), (keys, key)):
        hit = difflib.get_close_matches(target, pool, n=1, cutoff=0.6)
        if hit:
            return hit[0]
    by_leaf = [k for k in keys if difflib.get_close_matches(leaf, [k.rpartition(".")[2]], n=1, cutoff=0.8)]
    return by_leaf[0] if len(by_leaf) == 1 else None


def _dataclass_type(tp: Any, owner: type) -> type | None:
    if isinstance(tp, str):  # postponed annotations: resolve in the owner's module
        import sys

        try:
            tp = eval(tp, vars(sys.modules[owner.__module__]))  # noqa: S307 (our own annotations)
        except Exception:  # noqa: BLE001 (a typing construct eval cannot rebuild: not a dataclass)
            return None
    return tp if dataclasses.is_dataclass(tp) and isinstance(tp, type) else None


@functools.cache
def field_docs(schema: type) -> dict[str, str]:
    """``{field: docstring}`` from the string literal written right below each field."""
    docs: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def reference_rows(schema: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``(key, type, default, meaning)`` for every field, nested dataclasses expanded."""
    rows: list[tuple[str, str, str, str]] = []
    docs = field_docs(schema)
    for f in dataclasses.fields(schema):
        sub = _dataclass_type(f.type, schema)
        key = prefix + f.name
        if sub is not None:
            rows += reference_rows(sub, key + ".")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        rows.append((key, _type_name(f.type), _show(default), docs.get(f.name, "")))
    return rows


def _type_name(tp: Any) -> str:
    s = (tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))).replace("typing.", "")
    return s.replace(" | None", " or null")


def _show(v: Any) -> str:
    if v == "???":
        return "(required)"
    if isinstance(v, Mapping):
        return "{}" if not v else str(dict(v))
    if isinstance(v, bool):
        return str(v).lower()
    return "null" if v is None else str(v)
