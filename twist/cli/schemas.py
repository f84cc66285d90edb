"""Every primary config and the dataclass schema it extends (``<name>_schema`` in Hydra's ConfigStore).

``twist/configs/<name>.yaml`` lists ``<name>_schema`` first in its defaults; the schema
holds every key's default and meaning (``twist/<stage>/config.py``). ``docs/config-reference.md``
is generated from this table: ``python -m twist.cli.schemas > docs/config-reference.md``.
"""

from __future__ import annotations

from twist.asr import AsrRunConfig
from twist.bench.config import BenchRunConfig
from twist.demo.config import DemoConfig
from twist.eval.config import EvalRunConfig
from twist.generate import GenerateRunConfig
from twist.mos.config import MosBuildConfig, MosScoreConfig
from twist.tokenizer.config import TokenizeRunConfig
from twist.train.config import PlotConfig, TrainRunConfig
from twist.vocoder.config import VocoderRunConfig

SCHEMAS: dict[str, type] = {
    "asr_run": AsrRunConfig,
    "bench": BenchRunConfig,
    "demo": DemoConfig,
    "eval": EvalRunConfig,
    "generate": GenerateRunConfig,
    "mos_build": MosBuildConfig,
    "mos_score": MosScoreConfig,
    "plot": PlotConfig,
    "tokenize": TokenizeRunConfig,
    "train": TrainRunConfig,
    "vocoder": VocoderRunConfig,
}


# The config groups each command offers (directories of twist/configs/); a group of another
# command on the command line is refused naming the command it belongs to, and `--help` lists
# only these.
GROUPS: dict[str, tuple[str, ...]] = {
    "asr_run": ("asr",),
    "bench": ("tts",),
    "demo": (),
    "eval": ("genppl",),
    "generate": ("asr",),
    "mos_build": (),
    "mos_score": (),
    "plot": (),
    "tokenize": ("tokenizer", "align"),
    "train": ("model", "init", "objective", "data", "optim", "schedule", "logger", "experiment"),
    "vocoder": ("vocoder_model", "asr"),
}
# the command that reads each primary config
COMMANDS: dict[str, str] = {
    "asr_run": "twist-asr", "bench": "twist-bench", "demo": "twist-demo", "eval": "twist-eval",
    "generate": "twist-generate", "mos_build": "twist-mos build", "mos_score": "twist-mos score",
    "plot": "twist-plot", "tokenize": "twist-tokenize", "train": "twist-train", "vocoder": "twist-vocoder",
}


def reference_markdown() -> str:
    """docs/config-reference.md: every key of every stage's config, its type, default and meaning."""
    from twist.schema import reference_rows

    out = ["# Config reference", "",
           "Every key of every stage's primary config, with its type, default and meaning. Generated from the",
           "schemas (`python -m twist.cli.schemas > docs/config-reference.md`; a test checks it is current).",
           "Which files each config group offers is in [configs.md](configs.md).", ""]
    for name, schema in SCHEMAS.items():
        doc = (schema.__doc__ or "").strip().splitlines()[0]
        out += [f"## {name}.yaml", "", f"{doc} Schema: `{schema.__module__}.{schema.__name__}`.", "",
                "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, typ, default, meaning in reference_rows(schema):
            out.append(f"| `{key}` | {_cell(typ)} | `{default}` | {_cell(meaning)} |")
        out.append("")
        free = getattr(schema, "RERUN_FREE", None)
        if free is not None:
            out += ["**Rerun into the same `out_dir`:** these may change (recorded in `identity.json`): "
                    + ", ".join(f"`{k}`" for k in free) + "; any other setting that differs is refused unless "
                    "listed in `allow_changes` ([run identity](guarantees.md#run-identity)).", ""]
    return "\n".join(out)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (no column breaks, no HTML tags)."""
    return text.replace("|", "&#124;").replace("<", "&lt;").replace(">", "&gt;")


if __name__ == "__main__":
    print(reference_markdown(), end="")
