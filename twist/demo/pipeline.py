"""The demo pipeline: the paper's central experiment (warm vs cold, Table 2 / Fig. 2b) in miniature.

Steps, each cached (see :mod:`twist.demo.steps`)::

    corpus      English sentences spoken by espeak-ng in several voices
    tokenize    twist-tokenize: Whisper tiny.en encoder + k-means (K=100), dedup, train/valid/test
    train_text  the training split's transcripts (what the sWUGGY word frequencies count)
    bench       twist-bench: sSC/tSC (103 stories), sBLIMP-style (630 pairs) and sWUGGY-style
                (600 words) sets, generated from packaged sources
    train_<run> twist-train +model=smollm2-135m +init=<warm|cold> for each run in ``runs``:
                warm (real pretrained SmolLM2-135M), cold (same architecture, random weights),
                cold_lr (cold at warm's learning rates: a control for the LR difference);
                with ``seeds=N`` each run is repeated as ``<run>_seed<k>`` for k = 1..N-1
    eval_<run>  twist-eval: PPL, sWUGGY, sBLIMP, sSC, tSC
    table       twist-eval mode=compare: the Table-2-shaped comparison (seed 0)
    plot        twist-plot: valid PPL against steps for the runs of seed 0 (Fig. 2b)
    warm_vs_cold  Fig. 2b's number: the step at which warm reaches each cold run's final valid PPL
    seeds       (seeds > 1) mean ± sd over seeds of every metric
    vocoder     twist-vocoder mode=train: a small unit HiFi-GAN with duration predictor
    resynth     twist-vocoder mode=resynth: audio -> units -> audio (+ ASR WER)
    generate    twist-generate: a 3 s prompt continued by the warm model, vocoded
    generate_cold the same prompt and seed continued by the cold model
    mos         the MMOS listening-test page (twist-mos build) for the warm and cold continuations

With ``dpo=true`` (opt-in), Slam's second stage (Maimon et al. 2025) after ``train_warm``::

    prefs       twist-bench task=prefs: the built-in spoken preference pairs, with the demo's tokenizer
    train_dpo   twist-train +objective=dpo from the warm model's speech LM
    eval_dpo    twist-eval of the DPO model, as eval_<run>, plus its preference on the held-out pairs
    eval_warm_prefs  twist-eval of the warm model on the held-out pairs
    dpo         warm vs warm + DPO: intervals and paired tests, DPO's own held-out pair accuracy,
                and the time the DPO steps added
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from twist.demo.config import DemoConfig, stage_overrides
from twist.demo.steps import Step


def cli(name: str) -> list[str]:
    """The console script for a stage, or ``python -m twist.cli.<stage>`` if it is not on PATH."""
    script = f"twist-{name}"
    return [script] if shutil.which(script) else [sys.executable, "-m", f"twist.cli.{name}"]


def _list(xs: list[Any]) -> str:
    """A Hydra list override with every item quoted (paths and labels may hold , ( ) or spaces)."""
    return "[" + ",".join("'" + str(x).replace("\\", "\\\\").replace("'", "\\'") + "'" for x in xs) + "]"


def run_name(name: str, seed: int) -> str:
    """A run's directory and step name for a seed: seed 0 keeps the plain name."""
    return name if seed == 0 else f"{name}_seed{seed}"


def build_steps(cfg: DemoConfig) -> list[Step]:
    """The demo's steps for a typed demo config (see ``configs/demo.yaml``), in run order: data
    (corpus, units, benchmarks), one train + eval per run and seed, the reports, and audio
    (vocoder, resynthesis, continuations, listening-test page)."""
    out = Path(cfg.out_dir).resolve()
    runs = dict(cfg.runs)
    return [*_data_steps(cfg, out), *_train_eval_steps(cfg, out, runs), *_report_steps(cfg, out, runs),
            *_audio_steps(cfg, out, runs), *(_dpo_steps(cfg, out, runs) if cfg.dpo else []),
            *(_interleave_steps(cfg, out, runs) if cfg.interleave else [])]


def _corpus_voices(c: Any) -> list[str]:
    """The corpus's voices: its own, or the TTS engine's (so the step's key says which voices spoke)."""
    from twist.bench.config import TTS

    voices = c.voices if c.voices is not None else TTS.typed({"name": c.tts}, "corpus.tts").voices
    return list(voices or [])


def _data_steps(cfg: DemoConfig, out: Path) -> list[Step]:
    """Corpus, units, the text the frequency lists come from, and the benchmarks."""
    from twist.demo.analysis import write_train_text
    from twist.demo.corpus import build_corpus

    c = cfg.corpus
    corpus_dir, units, bench = out / "corpus", out / "units", out / "bench"
    steps: list[Step] = []

    corpus_cfg = {
        "n_sentences": int(c.n_sentences),
        "voices": _corpus_voices(c),
        "voices_per_sentence": int(c.voices_per_sentence),
        "tts": str(c.tts),
        "seed": int(c.seed),
        "word_times": bool(c.word_times),
    }
    steps.append(
        Step(
            "corpus",
            corpus_dir,
            fn=lambda: build_corpus(corpus_dir, workers=int(cfg.workers), **corpus_cfg),
            config=corpus_cfg,
            rerun=f"twist-demo out_dir={out} only=corpus",
        )
    )
    steps.append(
        Step(
            "tokenize",
            units,
            argv=cli("tokenize") + [
                f"input.audio_dir={corpus_dir / 'audio'}", f"out_dir={units}", *stage_overrides("tokenize", cfg.tokenize),
                f"num_workers={cfg.workers}", "progress=false",
            ],
            depends=["corpus"],
        )
    )  # fmt: skip
    train_text = out / "train_text" / "train.txt"
    steps.append(
        Step(
            "train_text",
            out / "train_text",
            fn=lambda: write_train_text(units, corpus_dir / "transcripts.jsonl", train_text),
            config={"file": train_text.name},
            depends=["corpus", "tokenize"],
            rerun=f"twist-demo out_dir={out} only=train_text",
        )
    )
    steps.append(
        Step(
            "bench",
            bench,
            argv=cli("bench") + [
                f"out_dir={bench}", f"workers={cfg.workers}", "progress=false", *stage_overrides("bench", cfg.bench),
                f"wuggy.frequency_text={train_text}",
            ],
            depends=["train_text"],
        )
    )  # fmt: skip
    return steps


def _train_eval_steps(cfg: DemoConfig, out: Path, runs: dict[str, Any]) -> list[Step]:
    """One training run and one evaluation per run and seed."""
    units, bench = out / "units", out / "bench"
    seeds = int(cfg.seeds)
    steps: list[Step] = []
    for seed in range(seeds):
        for name, r in runs.items():
            rn = run_name(name, seed)
            steps.append(
                Step(
                    f"train_{rn}",
                    out / "train" / rn,
                    argv=cli("train") + [
                        f"+model={cfg.model}", f"+init={r.init}", f"data.path={units}", f"out_dir={out / 'train' / rn}",
                        *stage_overrides("train", cfg.train, r.train), f"train.num_threads={cfg.threads}",
                        "train.progress=false", f"seed={seed}",
                    ],
                    depends=["tokenize"],
                )
            )  # fmt: skip
    for seed in range(seeds):
        for name in runs:
            rn = run_name(name, seed)
            steps.append(
                Step(
                    f"eval_{rn}",
                    out / "eval" / rn,
                    argv=cli("eval") + [
                        f"model_path={out / 'train' / rn / 'speech_lm'}", f"model_name={rn}",
                        f"tokenizer_dir={units / 'tokenizer'}", f"bench_root={bench}",
                        f"benchmarks.ppl.dataset={units}", *stage_overrides("eval", cfg.eval),
                        f"out_dir={out / 'eval' / rn}", f"cache_dir={out / 'eval' / 'unit_cache'}", "progress=false",
                    ],
                    depends=[f"train_{rn}", "bench"],
                )
            )  # fmt: skip
    return steps


def _report_steps(cfg: DemoConfig, out: Path, runs: dict[str, Any]) -> list[Step]:
    """The comparison table, the validation-PPL plot, warm-vs-cold and (several seeds) the seed table."""
    from twist.demo.analysis import write_seed_table, write_warm_vs_cold

    seeds = int(cfg.seeds)
    steps: list[Step] = []
    steps.append(
        Step(
            "table",
            out / "eval" / "table",
            argv=cli("eval") + [
                "mode=compare", f"compare.runs={_list([out / 'eval' / n for n in runs])}",
                f"compare.names={_list([r.label for r in runs.values()])}", f"out_dir={out / 'eval' / 'table'}",
            ],
            depends=[f"eval_{n}" for n in runs],
        )
    )  # fmt: skip
    steps.append(
        Step(
            "plot",
            out / "plot",
            argv=cli("plot") + [
                f"runs={_list([out / 'train' / n for n in runs])}",
                f"labels={_list([r.label for r in runs.values()])}", f"out={out / 'plot' / 'valid_ppl.png'}",
            ],
            depends=[f"train_{n}" for n in runs],
        )
    )  # fmt: skip
    labels = {n: str(r.label) for n, r in runs.items()}
    by_seed = {
        seed: (out / "train" / run_name("warm", seed),
               {n: out / "train" / run_name(n, seed) for n in runs if n != "warm"})
        for seed in range(seeds)
    }  # fmt: skip
    steps.append(
        Step(
            "warm_vs_cold",
            out / "warm_vs_cold",
            fn=lambda: write_warm_vs_cold(out / "warm_vs_cold", by_seed, labels),
            config={"seeds": seeds, "labels": labels},
            depends=[f"train_{run_name(n, k)}" for k in range(seeds) for n in runs],
            rerun=f"twist-demo out_dir={out} only=warm_vs_cold",
        )
    )
    if seeds > 1:
        per_label = {labels[n]: [out / "eval" / run_name(n, k) for k in range(seeds)] for n in runs}
        steps.append(
            Step(
                "seeds",
                out / "seeds",
                fn=lambda: write_seed_table(out / "seeds", per_label),
                config={"seeds": seeds, "labels": labels},
                depends=[f"eval_{run_name(n, k)}" for k in range(seeds) for n in runs],
                rerun=f"twist-demo out_dir={out} seeds={seeds} only=seeds",
            )
        )
    return steps


def _audio_steps(cfg: DemoConfig, out: Path, runs: dict[str, Any]) -> list[Step]:
    """Vocoder, resynthesis of a prompt, its warm (and cold) continuations, and the listening-test page."""
    corpus_dir, units = out / "corpus", out / "units"
    steps: list[Step] = []
    steps.append(
        Step(
            "vocoder",
            out / "vocoder",
            argv=cli("vocoder") + [
                "mode=train", f"units_dir={units}", f"audio_dir={corpus_dir / 'audio'}", f"out_dir={out / 'vocoder'}",
                *stage_overrides("vocoder", cfg.vocoder), f"threads={cfg.threads}", "progress=false", "asr=none",
            ],
            depends=["tokenize"],
        )
    )  # fmt: skip
    prompt = _pick_prompt(units, corpus_dir)
    steps.append(
        Step(
            "resynth",
            out / "resynth",
            argv=cli("vocoder") + [
                "mode=resynth", f"vocoder={out / 'vocoder'}", f"tokenizer_dir={units / 'tokenizer'}",
                f"audio={prompt}", f"out_dir={out / 'resynth'}", f"transcripts={corpus_dir / 'transcripts.jsonl'}",
                *stage_overrides("vocoder", cfg.resynth), f"threads={cfg.threads}",
            ],
            depends=["vocoder"],
        )
    )  # fmt: skip
    steps.append(
        Step(
            "generate",
            out / "generate",
            argv=cli("generate") + [
                f"lm={out / 'train' / 'warm' / 'speech_lm'}", f"tokenizer_dir={units / 'tokenizer'}",
                f"vocoder={out / 'vocoder'}", f"prompts={_list([prompt])}", f"out_dir={out / 'generate'}",
                *stage_overrides("generate", cfg.generate), f"threads={cfg.threads}",
            ],
            depends=["train_warm", "vocoder"],
        )
    )  # fmt: skip
    gen_dirs = {"warm": out / "generate"}
    if "cold" in runs:  # the same prompt and seed continued by the cold model: the listening test pairs the two
        swap = {f"lm={out / 'train' / 'warm' / 'speech_lm'}": f"lm={out / 'train' / 'cold' / 'speech_lm'}",
                f"out_dir={out / 'generate'}": f"out_dir={out / 'generate_cold'}"}
        steps.append(Step("generate_cold", out / "generate_cold", argv=[swap.get(a, a) for a in steps[-1].argv or []],
                          depends=["train_cold", "vocoder"]))
        gen_dirs["cold"] = out / "generate_cold"
    steps.append(
        Step(
            "mos",
            out / "mos",
            fn=lambda: _listening_test(gen_dirs, prompt, out / "mos"),
            config={"prompt": str(prompt)},
            depends=[d.name for d in gen_dirs.values()],
            rerun=f"twist-demo out_dir={out} only=mos",
        )
    )
    return steps


DPO_LABEL = "warm + DPO"


def _dpo_steps(cfg: DemoConfig, out: Path, runs: dict[str, Any]) -> list[Step]:
    """Slam's second stage on the warm model: pairs, DPO, its evaluation, and the before/after report."""
    from twist.demo.analysis import write_dpo_report

    units, bench, pairs = out / "units", out / "bench", out / "prefs" / "prefs"
    warm_lm = out / "train" / "warm" / "speech_lm"
    steps: list[Step] = []
    steps.append(
        Step(
            "prefs",
            out / "prefs",
            argv=cli("bench") + [
                "task=prefs", f"out_dir={out / 'prefs'}", f"tokenizer_dir={units / 'tokenizer'}",
                f"workers={cfg.workers}", "progress=false", *stage_overrides("bench", cfg.prefs),
            ],
            depends=["tokenize"],
        )
    )  # fmt: skip
    steps.append(
        Step(
            "train_dpo",
            out / "train" / "dpo",
            argv=cli("train") + [
                "+objective=dpo", f"dpo.policy={warm_lm}", f"data.path={pairs}", f"out_dir={out / 'train' / 'dpo'}",
                *stage_overrides("train", cfg.dpo_train), f"train.num_threads={cfg.threads}", "train.progress=false",
                "seed=0",
            ],
            depends=["train_warm", "prefs"],
        )
    )  # fmt: skip
    steps.append(
        Step(
            "eval_dpo",
            out / "eval" / "dpo",
            argv=cli("eval") + [
                f"model_path={out / 'train' / 'dpo' / 'speech_lm'}", "model_name=dpo",
                f"tokenizer_dir={units / 'tokenizer'}", f"bench_root={bench}",
                f"benchmarks.ppl.dataset={units}", *stage_overrides("eval", cfg.eval),
                f"benchmarks.prefs.path={pairs}",
                f"out_dir={out / 'eval' / 'dpo'}", f"cache_dir={out / 'eval' / 'unit_cache'}", "progress=false",
            ],
            depends=["train_dpo", "bench", "prefs"],
        )
    )  # fmt: skip
    steps.append(
        Step(
            "eval_warm_prefs",
            out / "eval" / "warm_prefs",
            argv=cli("eval") + [
                f"model_path={warm_lm}", "model_name=warm", *stage_overrides("eval", cfg.eval),
                f"benchmarks.prefs.path={pairs}", f"out_dir={out / 'eval' / 'warm_prefs'}", "progress=false",
            ],
            depends=["train_warm", "prefs"],
        )
    )  # fmt: skip
    step_dirs = {n: out / d for n, d in (("prefs", "prefs"), ("train_dpo", "train/dpo"), ("eval_dpo", "eval/dpo"),
                                         ("eval_warm_prefs", "eval/warm_prefs"))}
    warm_label = str(runs["warm"].label)
    steps.append(
        Step(
            "dpo",
            out / "dpo",
            fn=lambda: write_dpo_report(
                out / "dpo", before=[out / "eval" / "warm", out / "eval" / "warm_prefs"], after=out / "eval" / "dpo",
                dpo_run=out / "train" / "dpo", pairs=pairs, step_dirs=step_dirs, labels=(warm_label, DPO_LABEL),
                train_text=out / "train_text" / "train.txt"),
            config={"labels": [warm_label, DPO_LABEL]},
            depends=["eval_warm", "eval_warm_prefs", "eval_dpo", "train_text"],
            rerun=f"twist-demo out_dir={out} dpo=true only=dpo",
        )
    )
    return steps


INTERLEAVED_LABEL = "interleaved: SmolLM2-135M, text+units"


def _interleave_steps(cfg: DemoConfig, out: Path, runs: dict[str, Any]) -> list[Step]:
    """Speech-text interleaving: aligned units, the text stream, the interleaved warm model, its
    evaluation (speech-only and cross-modal StoryCloze) and the comparison with the warm model."""
    from twist.demo.analysis import write_interleave_report, write_interleave_text

    corpus_dir, units, bench = out / "corpus", out / "units", out / "bench"
    aligned, text = out / "units_aligned", out / "interleave_text" / "text.txt"
    run = out / "train" / "interleaved"
    steps: list[Step] = []
    steps.append(
        Step(
            "tokenize_aligned",
            aligned,
            argv=cli("tokenize") + [
                "mode=apply", f"tokenizer_dir={units / 'tokenizer'}", f"input.audio_dir={corpus_dir / 'audio'}",
                f"out_dir={aligned}", *stage_overrides("tokenize", cfg.tokenize), "align=tts",
                f"num_workers={cfg.workers}", "progress=false",
            ],
            depends=["tokenize"],
        )
    )  # fmt: skip
    steps.append(
        Step(
            "interleave_text",
            out / "interleave_text",
            fn=lambda: write_interleave_text(text, units, corpus_dir / "transcripts.jsonl"),
            config={"file": text.name},
            depends=["corpus", "tokenize"],
            rerun=f"twist-demo out_dir={out} interleave=true only=interleave_text",
        )
    )
    steps.append(
        Step(
            "train_interleaved",
            run,
            argv=cli("train") + [
                f"+model={cfg.model}", "+init=warm_interleaved", f"data.path={aligned}",
                f"data.interleave.text={_list([text])}", f"out_dir={run}",
                *stage_overrides("train", cfg.train, runs["warm"].train, cfg.interleave_train),
                f"train.num_threads={cfg.threads}",
                "train.progress=false", "seed=0",
            ],
            depends=["tokenize_aligned", "interleave_text"],
        )
    )  # fmt: skip
    steps.append(
        Step(
            "eval_interleaved",
            out / "eval" / "interleaved",
            argv=cli("eval") + [
                f"model_path={run / 'speech_lm'}", "model_name=interleaved",
                f"tokenizer_dir={units / 'tokenizer'}", f"bench_root={bench}",
                f"benchmarks.ppl.dataset={units}", *stage_overrides("eval", cfg.eval),
                f"out_dir={out / 'eval' / 'interleaved'}", f"cache_dir={out / 'eval' / 'unit_cache'}", "progress=false",
            ],
            depends=["train_interleaved", "bench"],
        )
    )  # fmt: skip
    warm_label = str(runs["warm"].label)
    step_dirs = {"tokenize_aligned": aligned, "interleave_text": out / "interleave_text", "train_interleaved": run,
                 "eval_interleaved": out / "eval" / "interleaved"}
    steps.append(
        Step(
            "interleave",
            out / "interleave",
            fn=lambda: write_interleave_report(
                out / "interleave", warm=out / "eval" / "warm", interleaved=out / "eval" / "interleaved",
                run=run, step_dirs=step_dirs, labels=(warm_label, INTERLEAVED_LABEL)),
            config={"labels": [warm_label, INTERLEAVED_LABEL]},
            depends=["eval_warm", "eval_interleaved"],
            rerun=f"twist-demo out_dir={out} interleave=true only=interleave",
        )
    )
    return steps


def _listening_test(gen_dirs: dict[str, Path], prompt: Path, out_dir: Path) -> None:
    from twist.mos.build import listening_test_page

    page = listening_test_page(gen_dirs, out_dir, original=[prompt], title="twist demo: how natural is the speech?")
    print(f"[demo] listening-test page (open it in a browser): {page}")


def _pick_prompt(units: Path, corpus_dir: Path) -> Path:
    """A held-out (test split) utterance to resynthesise and continue; deterministic.

    Before the corpus exists the path is a placeholder that the prompt steps never read:
    they run after ``tokenize``, and the pipeline rebuilds the step list then.
    """
    try:
        from twist.units import UnitDataset

        test = UnitDataset(units).split("test")
        longest = max(range(len(test)), key=lambda i: (test.rows[i]["duration"], test.rows[i]["id"]))
        return Path(test.rows[longest]["source"])
    except (FileNotFoundError, ValueError):
        return corpus_dir / "audio"


def summarize(out_dir: str | Path) -> str:
    """The closing report: the Table-2-shaped comparison and where every output is."""
    out = Path(out_dir).resolve()
    lines = []
    table = out / "eval" / "table" / "compare.md"
    if table.exists():
        lines += ["", "Warm vs cold, same data and budget (shaped like the paper's Table 2; PPL on the valid split):", "", table.read_text().strip()]
    seeds = out / "seeds" / "seeds.md"
    if seeds.exists():
        lines += ["", "Mean ± sd over seeds:", "", seeds.read_text().strip()]
    fig2b = out / "warm_vs_cold" / "warm_vs_cold.md"
    if fig2b.exists():
        lines += ["", "Steps to the cold runs' final valid PPL (the paper's Fig. 2b):"]
        lines += [f"  {line}" for line in fig2b.read_text().strip().splitlines()]
    report = out / "bench" / "bench_report.json"
    if report.exists():
        bias = json.loads(report.read_text()).get("tasks", {}).get("storycloze", {}).get("length_bias", {})
        for task, b in sorted(bias.items()):
            if b.get("pairs"):
                lines.append(f"{task} length bias: the true story is {b['mean_seconds']:+.2f} s (sd {b['sd_seconds']:.2f}) "
                             f"longer than the false one on average, longer in {b['positive_longer']} of {b['pairs']} pairs.")
    dpo = out / "dpo" / "dpo.md"
    if dpo.exists():
        lines += ["", "DPO on the built-in preference pairs (dpo=true), warm before and after:", "", dpo.read_text().strip()]
    inter = out / "interleave" / "interleave.md"
    if inter.exists():
        lines += ["", "Speech-text interleaving (interleave=true), beside the unit-only warm model:", "",
                  inter.read_text().strip()]
    corpus = out / "corpus" / "summary.json"
    if corpus.exists():
        s = json.loads(corpus.read_text())
        lines += ["", f"Corpus: {s['utterances']} utterances, {s['hours'] * 60:.1f} min of speech, {len(s['voices'])} voices."]
    outputs = [
        ("spoken corpus", out / "corpus" / "audio"),
        ("unit dataset", out / "units"),
        ("spoken benchmarks", out / "bench"),
        *((f"speech LM: {d.name}", d / "speech_lm") for d in sorted((out / "train").glob("*")) if d.is_dir()),
        ("eval results", out / "eval"),
        ("comparison table", table),
        ("valid PPL plot", out / "plot" / "valid_ppl.png"),
        ("warm vs cold steps", out / "warm_vs_cold" / "warm_vs_cold.md"),
        ("vocoder", out / "vocoder"),
        ("resynthesised audio", out / "resynth"),
        ("generated continuation", out / "generate"),
        ("listening-test page", out / "mos" / "page" / "index.html"),
        *((name, path) for name, path in (("preference pairs", out / "prefs" / "prefs"), ("DPO report", dpo))
          if (out / "dpo").exists()),
    ]
    lines += ["", "Outputs:"]
    for name, path in outputs:
        mark = "" if path.exists() else "  (missing)"
        lines.append(f"  {name:<24} {path}{mark}")
    return "\n".join(lines)
