"""Typed configs: every stage's settings are a dataclass, and each default is written there once.

Each stage declares its settings in ``twist/<stage>/config.py`` as dataclasses whose fields
carry their default and, in the docstring right below the field, their meaning (the style of
litgpt's ``args.py``). ``twist.cli.common`` registers them with Hydra's ConfigStore as the
schemas the YAML files extend, so an unknown key, a wrong type or a bad choice fails when the
config is composed, with one line that names the key, before any work starts.

A block whose keys depend on one of its fields (the ``asr`` backend, the TTS engine, the
tokenizer's encoder) is a :class:`Choice`: one dataclass per option, picked by that field after
composition, so a key of another option, or a mistyped one, is refused naming the key and the
closest valid one; its defaults are those of the option's dataclass and nowhere else.

This module holds what the schemas share: turning a composed config into the typed object
(:func:`to_typed`), the one-line message for a config error (:func:`describe_config_error`),
choice checks for ``__post_init__`` (:func:`check_choice`), blocks chosen by a field
(:class:`Choice`), and the field documentation read from the source (:func:`field_docs`), from
which ``docs/config-reference.md`` is generated.
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


def to_typed(schema: type[T], cfg: Any, where: str = "") -> T:
    """The typed object for ``cfg`` (a DictConfig, a mapping, ``None`` for the defaults, or already a
    ``schema`` instance).

    ``cfg`` is merged into a fresh structured config of ``schema``: a key the schema does not
    declare (also one added with Hydra's ``+``), a value of the wrong type, or a required
    setting left unset raises :class:`ConfigError` naming the key; ``__post_init__`` checks run.
    ``where`` is the dotted key of ``cfg`` in its stage's config (``asr``,
    ``tokenizer.encoder``), put in front of every key an error names.
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
            raise ConfigError(f"missing required setting(s): {', '.join(_under(where, k) for k in missing)}")
        return type_choices(OmegaConf.to_object(merged), where)  # to_object runs __post_init__
    except OmegaConfBaseException as e:
        raise ConfigError(describe_config_error(e, schema, where)) from None


def settings_of(cls: type[T], settings: T | None, overrides: Mapping[str, Any], where: str = "") -> T:
    """``settings`` (``None``: ``cls``'s defaults) with ``overrides`` applied, every key checked:
    for constructors that take a settings object or its fields as keyword arguments."""
    if settings is not None and not overrides:
        return settings
    base = dataclasses.asdict(settings) if settings is not None else {}  # type: ignore[call-overload]
    return to_typed(cls, {**base, **overrides}, where=where)


def _under(where: str, key: str) -> str:
    return f"{where}.{key}" if where and key else where or key


def describe_config_error(err: BaseException, schema: type | None = None, where: str = "") -> str:
    """One line for an OmegaConf/Hydra composition error: the key, what is wrong, a suggestion.
    ``where``: the dotted key of ``schema``'s block in its stage's config (see :func:`to_typed`)."""
    cause = err
    while getattr(cause, "full_key", None) is None and cause.__cause__ is not None:
        cause = cause.__cause__
    relative = getattr(cause, "full_key", None) or ""
    key = _under(where, relative) if relative else ""
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    kind = type(cause).__name__
    if kind in ("ConfigKeyError", "ConfigAttributeError") and key:
        hint = closest_key(relative, schema) if schema is not None else None
        return f"unknown setting {key}" + (f" (did you mean {_under(where, hint)}?)" if hint else "")
    if kind == "ValidationError" and key:
        return f"{key}: {first}"
    if kind == "MissingMandatoryValue" and key:
        return f"missing required setting {key}"
    return f"{key}: {first}" if key else first


def declared_keys(schema: type) -> list[str]:
    """Every dotted key a schema declares (nested dataclasses walked, every option of a
    :class:`Choice` too; free-form dicts are leaves)."""
    out: list[str] = []
    for f in dataclasses.fields(schema):
        choice = f.metadata.get(CHOICE)
        subs = list(choice.options.values()) if choice is not None else [_dataclass_type(f.type, schema)]
        name = f.name
        if subs == [None]:  # a mapping of dataclasses (the demo's runs): any key, then its fields
            subs, name = [_mapping_value_type(f.type, schema)], f"{f.name}.{ANY_KEY}"
        for sub in subs:
            if sub is not None:
                out += [k for k in (f"{name}.{k}" for k in declared_keys(sub)) if k not in out]
        out.append(f.name)
    return out


ANY_KEY = "<name>"  # in declared_keys: the key of a mapping of dataclasses


def closest_key(key: str, schema: type) -> str | None:
    """The declared key nearest to a mistyped one: same parent first, then anywhere."""
    parts = key.split(".")
    keys = [".".join(parts[i] if p == ANY_KEY and i < len(parts) else p for i, p in enumerate(k.split(".")))
            for k in declared_keys(schema)]
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in keys if k.rpartition(".")[0] == parent]
    started = [k for k in siblings if k.rpartition(".")[2].startswith(leaf) and k != key]
    if len(leaf) >= 3 and len(started) == 1:  # a key cut short (temp -> temperature)
        return started[0]
    for pool, target in ((siblings, key), (keys, key)):
        hit = difflib.get_close_matches(target, pool, n=1, cutoff=0.6)
        if hit:
            return hit[0]
    by_leaf = [k for k in keys if difflib.get_close_matches(leaf, [k.rpartition(".")[2]], n=1, cutoff=0.8)]
    return by_leaf[0] if len(by_leaf) == 1 else None


# ---------------------------------------------------------------------------------------
# blocks whose keys depend on one field
# ---------------------------------------------------------------------------------------
CHOICE = "twist_choice"  # field metadata: the Choice of a block
OPEN = "twist_open"  # field metadata: a block Hydra lets grow without `+` (it is checked after composition)


@dataclasses.dataclass(frozen=True)
class Choice:
    """A settings block whose keys depend on one of its fields: one dataclass per option.

    The ASR backends take other settings than each other, and so do the TTS engines and the
    encoders; one dataclass each holds its own keys, defaults and meanings. In a stage's schema
    the block is a :func:`choice_field`: composed as a plain mapping, then turned into the
    chosen option's dataclass by the stage schema's ``__post_init__`` (:func:`type_choices`). A key of
    another option is refused naming both options; an unknown key naming the closest valid one.

    Attributes:
        key: the field that chooses (``backend``, ``name``); every option's dataclass has it.
        options: option name -> its dataclass.
        what: what an option is, for messages (``ASR backend``, ``TTS engine``, ``encoder``).
    """

    key: str
    options: Mapping[str, type]
    what: str

    def keys(self, option: str) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options[option])]

    def typed(self, value: Any, where: str) -> Any:
        """The chosen option's dataclass for ``value`` (a mapping, or an option's instance).

        Args:
            value: the block as composed.
            where: its dotted key in the stage's config (``asr``, ``tokenizer.encoder``), for messages.
        """
        if any(isinstance(value, cls) for cls in self.options.values()):
            return value
        from omegaconf import OmegaConf

        plain = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else dict(value or {})
        option = plain.get(self.key)
        check_choice(f"{where}.{self.key}", option, self.options)
        own = self.keys(option)
        names = {cls: name for name, cls in reversed(list(self.options.items()))}  # an alias names its first spelling
        for k in plain:
            theirs = [name for cls, name in names.items() if k not in own and k in self.keys(name)]
            if theirs:
                what = self.what + ("s" if len(theirs) > 1 else "")
                raise ConfigError(f"{where}.{k} is a setting of the {' and '.join(theirs)} {what}, not of "
                                  f"{option} ({where}.{self.key}={option} takes: {', '.join(own)})")
        return to_typed(self.options[option], plain, where=where)


def type_choices(obj: T, where: str = "") -> T:
    """Turn every :class:`Choice` block in ``obj`` (a dataclass, nested ones walked) into its
    option's dataclass, in place; ``where`` is ``obj``'s key in its stage's config.

    A stage schema calls this first in its ``__post_init__`` (and :func:`to_typed` on what it
    returns), not the nested blocks themselves: Hydra composes onto the schema's defaults, and
    a nested block built as a default must still be a mapping there, so a group file can choose
    another option."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    for f in dataclasses.fields(obj):
        key = _under(where, f.name)
        value = getattr(obj, f.name, None)
        choice = f.metadata.get(CHOICE)
        if choice is not None:
            setattr(obj, f.name, choice.typed(value, key))
        elif isinstance(value, Mapping):
            for k, v in value.items():
                type_choices(v, f"{key}.{k}")
        else:
            type_choices(value, key)
    return obj


def choice_field(choice: Choice, default: str) -> Any:
    """A dataclass field holding a :class:`Choice` block, ``default`` its option.

    Its schema default holds only the choosing key, so a group file or a mapping that picks
    another option starts from that option's own defaults, not from a mix of both.
    """
    return dataclasses.field(default_factory=lambda: {choice.key: default}, metadata={CHOICE: choice, OPEN: True})


def with_choices(raw: Any, typed: Any) -> Any:
    """``raw`` (a composed config) with every :class:`Choice` block as ``typed`` holds it: every key
    of the chosen option, defaults included, so a saved config says what ran."""
    from omegaconf import OmegaConf

    out = OmegaConf.create(OmegaConf.to_container(raw, resolve=False) if OmegaConf.is_config(raw) else dict(raw))
    for path, value in _choice_values(typed):
        if OmegaConf.select(out, path) is not None:
            OmegaConf.update(out, path, dataclasses.asdict(value), merge=False)
    return out


def _choice_values(typed: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if not dataclasses.is_dataclass(typed) or isinstance(typed, type):
        return out
    for f in dataclasses.fields(typed):
        value = getattr(typed, f.name, None)
        if f.metadata.get(CHOICE) is not None and dataclasses.is_dataclass(value):
            out.append((prefix + f.name, value))
        else:
            out += _choice_values(value, f"{prefix}{f.name}.")
    return out


def open_paths(schema: type, prefix: str = "") -> list[str]:
    """The dotted keys of the fields Hydra must let grow without ``+`` (:data:`OPEN`), so that
    ``asr.beam_size=1`` works although the composed ``asr`` holds only ``backend``; what they
    hold is checked after composition, by the schema's ``__post_init__``."""
    out: list[str] = []
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        if f.metadata.get(OPEN):
            out.append(key)
            continue
        sub = _dataclass_type(f.type, schema)
        if sub is not None:
            out += open_paths(sub, key + ".")
    return out


def schema_node(schema: type) -> Any:
    """``schema`` as the structured config Hydra composes onto, its :func:`open_paths` unlocked."""
    from omegaconf import OmegaConf

    node = OmegaConf.structured(schema)
    for path in open_paths(schema):
        sub = OmegaConf.select(node, path)
        if sub is not None:
            OmegaConf.set_struct(sub, False)
    return node


def _mapping_value_type(tp: Any, owner: type) -> type | None:
    """``V`` of a ``dict[str, V]`` annotation when ``V`` is a dataclass."""
    import typing

    if isinstance(tp, str):
        import sys

        try:
            tp = eval(tp, vars(sys.modules[owner.__module__]))  # noqa: S307 (our own annotations)
        except Exception:  # noqa: BLE001
            return None
    args = typing.get_args(tp) if typing.get_origin(tp) is dict else ()
    return args[1] if len(args) == 2 and dataclasses.is_dataclass(args[1]) else None


def _dataclass_type(tp: Any, owner: type) -> type | None:
    """The dataclass of an annotation ``D`` or ``D | None``, else ``None``."""
    import typing

    if isinstance(tp, str):  # postponed annotations: resolve in the owner's module
        import sys

        try:
            tp = eval(tp, vars(sys.modules[owner.__module__]))  # noqa: S307 (our own annotations)
        except Exception:  # noqa: BLE001 (a typing construct eval cannot rebuild: not a dataclass)
            return None
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1 and type(None) in typing.get_args(tp):  # optional block (the duration predictor)
        tp = args[0]
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
    """``(key, type, default, meaning)`` for every field, nested dataclasses expanded; a
    :class:`Choice` block gives its choosing key, then each option's keys marked with the option."""
    rows: list[tuple[str, str, str, str]] = []
    docs = field_docs(schema)
    for f in dataclasses.fields(schema):
        sub = _dataclass_type(f.type, schema)
        key = prefix + f.name
        choice = f.metadata.get(CHOICE)
        if choice is not None:
            default = f.default_factory()[choice.key]  # type: ignore[misc]
            rows.append((f"{key}.{choice.key}", "str", default,
                         f"{docs.get(f.name, '')} One of: {', '.join(choice.options)}. Each key below is "
                         f"marked [with the {choice.what}] it belongs to; a key of another one is refused."))
            listed: set[type] = set()
            for option, cls in choice.options.items():
                if cls in listed:  # an alias (espeak-ng for espeak)
                    continue
                listed.add(cls)
                rows += [(k, t, d, f"[{option}] {m}") for k, t, d, m in reference_rows(cls, key + ".")
                         if k != f"{key}.{choice.key}"]
            continue
        if sub is not None:
            if f.default is None:  # an optional block: its own row (null = off), then its keys
                rows.append((key, _type_name(f.type), "null", docs.get(f.name, "")))
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
    if isinstance(v, Mapping) and any(dataclasses.is_dataclass(x) for x in v.values()):
        v = {k: dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x for k, x in v.items()}
    if v == "???":
        return "(required)"
    if isinstance(v, Mapping):
        return "{}" if not v else str(dict(v))
    if isinstance(v, bool):
        return str(v).lower()
    return "null" if v is None else str(v)
