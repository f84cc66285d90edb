"""Training metrics: JSONL always, TensorBoard and wandb when configured, MFU.

Every record goes to ``<out_dir>/metrics.jsonl`` (one JSON object per line, appended and
flushed, so a killed run keeps what it logged; strict JSON, a NaN or infinite value as null). ``logger.tensorboard`` adds a TensorBoard
event file under ``<out_dir>/tb``; ``logger.wandb`` adds a wandb run, in offline mode when
``WANDB_MODE`` is unset and no network is reachable. Only rank 0 logs.

MFU (model FLOP utilisation, as in PaLM / nanoGPT / torchtitan) is achieved training FLOP/s
over the accelerator's peak dense bf16 FLOP/s from :data:`PEAK_FLOPS`. Training FLOPs per
token are ``6 N + 12 L d T`` (N non-embedding parameters plus the output head, L layers, d width,
T context).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from twist.atomic import json_line
from twist.errors import MissingDependencyError, MissingInputError

if TYPE_CHECKING:
    from twist.train.config import TrainRunConfig

# Peak dense bf16 tensor-core FLOP/s (vendor data sheets, no sparsity), by device-name substring.
PEAK_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "A6000": 155e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,  # fp16: V100 has no bf16
    "T4": 65e12,  # fp16
}


def peak_flops(device: torch.device) -> float | None:
    """Peak FLOP/s of ``device`` from the table, ``None`` on CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_FLOPS.items():  # ordered: specific names before generic ones
        if key in name:
            return value
    return None


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: ``6 N + 12 L d T``.

    N counts the parameters that take part in a matmul per token: everything but the
    embedding lookups, plus the output head, also when it shares its weight with the
    token embedding (tied: OPT, BLOOM, LLaMA-family).
    """
    cfg = getattr(model, "config", None)
    emb = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    n = sum(p.numel() for p in model.parameters()) - emb
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and any(head.weight is m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)):
        n += head.weight.numel()  # tied: subtracted above as an embedding, but it is a matmul too
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0) or 0
    width = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0) or 0
    return 6.0 * n + 12.0 * layers * width * seq_len


class MetricsLogger:
    """Fan-out of metric records to JSONL, TensorBoard and wandb (rank 0 only)."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        enabled: bool = True,
        tensorboard: bool = False,
        wandb: bool = False,
        wandb_project: str = "twist",
        run_name: str | None = None,
        config: dict[str, Any] | None = None,
        purge_step: int | None = None,
    ) -> None:
        """``purge_step``: a resumed run's first step; TensorBoard then drops the events a
        killed run wrote from that step on (they are redone), as ``metrics.jsonl`` is cut."""
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self._tb = None
        self._wandb = None
        self._f = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._f = open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            self._tb = _logger_package("tensorboard")(str(self.out_dir / "tb"), purge_step=purge_step)
        if wandb:
            wb = _logger_package("wandb")

            if "WANDB_MODE" not in os.environ and not _online():
                os.environ["WANDB_MODE"] = "offline"
            self._wandb = wb.init(
                project=wandb_project,
                name=run_name,
                dir=str(self.out_dir),
                config=config,
                resume="allow",
                id=_wandb_id(self.out_dir),
            )

    def log(self, record: dict[str, Any], *, step: int) -> None:
        if not self.enabled:
            return
        rec = {"step": step, **{k: _plain(v) for k, v in record.items()}}
        assert self._f is not None
        self._f.write(json_line(rec) + "\n")  # NaN/inf as null; TensorBoard and wandb still get them
        self._f.flush()
        scalars = {k: v for k, v in rec.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def open_run_logs(cfg: TrainRunConfig, *, enabled: bool, resumed_at: int | None = None) -> MetricsLogger:
    """A run's metrics logs, as ``cfg.logger`` asks (``enabled``: this is rank 0). A resumed run's
    logs are first cut back to its checkpoint's step ``resumed_at``: the steps after it are redone."""
    lg = cfg.logger
    if enabled and resumed_at is not None:
        truncate_metrics(cfg.out_dir, resumed_at)
    if lg.wandb:
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(OmegaConf.structured(cfg))
    return MetricsLogger(cfg.out_dir, enabled=enabled, tensorboard=lg.tensorboard, wandb=lg.wandb,
                         wandb_project=lg.project, run_name=lg.run_name, config=config if lg.wandb else None,
                         purge_step=None if resumed_at is None else resumed_at + 1)


def check_logger_packages(*, tensorboard: bool, wandb: bool) -> None:
    """Refuse at start-up, in one line, a logger whose package is not installed (before a run
    spends minutes reading data and building a model only to fail when it opens its logs)."""
    if tensorboard:
        _logger_package("tensorboard")
    if wandb:
        _logger_package("wandb")


def _logger_package(name: str) -> Any:
    """TensorBoard's ``SummaryWriter`` or the ``wandb`` module, or a :class:`MissingDependencyError`
    that says how to install it (twist's extra of the same name) or how to log without it."""
    try:
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter
        import wandb

        return wandb
    except ImportError as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MissingDependencyError(
            f"logger.{name}=true needs the {name!r} package ({why}): pip install 'twist[{name}]' "
            f"(or pip install {name}), or pass logger=jsonl to write metrics.jsonl alone") from None


def progress_bar(enabled: bool, *, total: int | None, initial: int) -> Any:
    """The training steps' tqdm bar (rank 0 with ``train.progress``); disabled, it shows nothing."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, disable=not enabled)


def progress_items(items: Any, enabled: bool, *, desc: str, unit: str = "it", leave: bool = True) -> Any:
    """``items`` under a tqdm bar for work before the first step (rank 0 with ``train.progress``), or as they are."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, leave=leave)


METRIC_NAMES = {"valid_ppl": "valid PPL", "eval_loss": "held-out DPO loss"}


def result_message(prog: str, *, stop_reason: str, step: int, tokens: int, best_value: float, best_step: int,
                   export_dir: str | Path | None, checkpoint: str | Path, best_metric: str = "valid_ppl") -> str:
    """The line a finished (or stopped) run prints; a run that never validated says so."""
    best = (f"best {METRIC_NAMES.get(best_metric, best_metric)} {best_value:.3f} at step {best_step}" if best_step >= 0
            else "no validation yet (no valid split, or stopped before the first one)")
    where = (f"speech LM in {export_dir}" if export_dir is not None
             else f"checkpoint in {checkpoint}; run the same command to resume")
    return f"{prog}: {stop_reason or 'done'} at step {step} ({tokens} tokens); {best}; {where}"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` (a run dir or the file); a torn last line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.exists():
        raise MissingInputError(f"no metrics file at {path}")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return v


def _online(host: str = "api.wandb.ai", timeout: float = 1.5) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _wandb_id(out_dir: Path) -> str:
    """A stable run id per output dir, so a resumed run continues the same wandb run."""
    import hashlib

    return hashlib.sha1(str(out_dir.resolve()).encode()).hexdigest()[:12]


def truncate_metrics(out_dir: str | Path, step: int) -> None:
    """Drop the records a killed run logged after its last checkpoint (the resumed run redoes them)."""
    from twist.atomic import atomic_write_text

    path = Path(out_dir) / "metrics.jsonl"
    if not path.exists():
        return
    keep = [r for r in read_metrics(path) if int(r.get("step", 0)) <= step]
    atomic_write_text(path, "".join(json_line(r) + "\n" for r in keep))


class ThroughputMeter:
    """Training tokens/s and MFU over the steps since the last record (validation and saving
    are not timed). MFU needs the device's peak FLOP/s (:func:`peak_flops`); without it, MFU is left out."""

    def __init__(self, flops_per_token: float, device: torch.device, world_size: int = 1) -> None:
        self.flops_per_token, self.peak, self.world_size = flops_per_token, peak_flops(device), world_size
        self.seconds, self.tokens = 0.0, 0

    def add(self, seconds: float, tokens: int) -> None:
        self.seconds += seconds
        self.tokens += int(tokens)

    def record(self) -> dict[str, float]:
        """``tokens_per_s`` (and ``mfu``) of the window, which then starts again."""
        tps = self.tokens / max(1e-9, self.seconds)
        self.seconds, self.tokens = 0.0, 0
        out = {"tokens_per_s": tps}
        if self.peak:
            out["mfu"] = tps * self.flops_per_token / (self.peak * self.world_size)
        return out
