"""twist.generate: reproducible sampling, masking, batching, contracts and bad prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.model_shapes import tiny_config
from twist.contract import ContractMismatchError, UnitContract, VocabLayout
from twist.generate import (
    SamplingConfig,
    apply_repetition_penalty,
    filter_logits,
    generate_continuations,
    mask_for_sampling,
    sample_units,
)
from twist.vocoder.generator import build_generator
from twist.vocoder.infer import Vocoder

K = 20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def contract(**kw) -> UnitContract:
    base = dict(encoder="fake", encoder_fingerprint="fp", layer=None, frame_rate=50.0, n_units=K,
                kmeans_fingerprint="km", dedup=True, sample_rate=16000)
    base.update(kw)
    return UnitContract(**base)


class FakeTokenizer:
    """Frame-level units from each 320-sample frame's mean absolute amplitude."""

    sample_rate = 16000
    frame_rate = 50.0

    def __init__(self, c: UnitContract) -> None:
        self.contract = c

    def encode(self, wav: np.ndarray) -> np.ndarray:
        n = len(wav) // 320
        frames = np.abs(wav[: n * 320]).reshape(n, 320).mean(1)
        return (np.floor(frames * 40) % K).astype(np.int64)


def tiny_lm(seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VocabLayout(K).vocab_size, **tiny_config("llama", max_position_embeddings=1024))
    return LlamaForCausalLM(cfg).eval()


def tiny_vocoder(c: UnitContract, *, dur: bool = True) -> Vocoder:
    torch.manual_seed(0)
    g = build_generator({
        "num_embeddings": K, "embedding_dim": 8, "upsample_rates": [4, 4, 5, 4], "upsample_kernel_sizes": [8, 8, 11, 8],
        "upsample_initial_channel": 16, "resblock": "2", "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1]],
        "dur_predictor_params": {"encoder_embed_dim": 8, "var_pred_hidden_dim": 8, "var_pred_kernel_size": 3,
                                 "var_pred_dropout": 0.0} if dur else None,
    })
    return Vocoder(g, c)


def prompts(n: int = 3, seconds: float = 1.0) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(f"p{i}", (rng.standard_normal(int(seconds * 16000 * (1 + 0.3 * i))) * 0.3).astype(np.float32)) for i in range(n)]


def test_generation_with_a_fixed_seed_is_reproducible(tmp_path):
    c = contract()
    lm, tok, voc = tiny_lm(), FakeTokenizer(c), tiny_vocoder(c)
    s = SamplingConfig(temperature=1.0, top_k=10, top_p=0.9, max_seconds=0.5, seed=7, batch_size=2)
    a = generate_continuations(lm=lm, lm_contract=c, tokenizer=tok, vocoder=voc, prompts=prompts(), sampling=s, out_dir=tmp_path / "a")
    b = generate_continuations(lm=lm, lm_contract=c, tokenizer=tok, vocoder=voc, prompts=prompts(), sampling=s, out_dir=tmp_path / "b")
    assert [r["generated_units"] for r in a] == [r["generated_units"] for r in b]
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra["wav"], rb["wav"])
        assert ra["continuation_seconds"] <= s.max_seconds + 1e-9
        # the wav is the prompt (true durations) followed by the continuation (predicted durations)
        total = sum(ra["prompt_durations"]) + sum(ra["generated_durations"])
        assert len(ra["wav"]) == total * voc.hop
    s2 = SamplingConfig(temperature=1.0, top_k=10, top_p=0.9, max_seconds=0.5, seed=8, batch_size=2)
    c2 = generate_continuations(lm=lm, lm_contract=c, tokenizer=tok, vocoder=voc, prompts=prompts(), sampling=s2)
    assert [r["generated_units"] for r in a] != [r["generated_units"] for r in c2]
    saved = json.loads((tmp_path / "a" / "p0.json").read_text())
    assert saved["generated_units"] == a[0]["generated_units"] and (tmp_path / "a" / "p0.wav").exists()
    assert (tmp_path / "a" / "p0.continuation.wav").exists()
    # a rerun skips finished prompts
    assert generate_continuations(lm=lm, lm_contract=c, tokenizer=tok, vocoder=voc, prompts=prompts(), sampling=s,
                                  out_dir=tmp_path / "a") == []


def test_a_prompt_samples_the_same_units_whatever_the_batch_or_a_resume(tmp_path):
    """Each prompt has its own generator (seed + prompt id): batch size, the other prompts and
    skipping finished prompts on a rerun do not change its sample."""
    c = contract()
    lm, tok, voc = tiny_lm(), FakeTokenizer(c), tiny_vocoder(c)

    def run(batch_size, ps, out=None):
        s = SamplingConfig(temperature=1.0, max_seconds=0.5, seed=7, batch_size=batch_size)
        recs = generate_continuations(lm=lm, lm_contract=c, tokenizer=tok, vocoder=voc, prompts=ps, sampling=s,
                                      out_dir=out)
        return {r["id"]: r["generated_units"] for r in recs}

    all_prompts = prompts(3)
    one_by_one, together = run(1, all_prompts), run(3, all_prompts)
    assert one_by_one == together and len(together) == 3
    assert run(2, all_prompts[::-1]) == together  # other order, other batches
    # an interrupted run finished p0 only; the rerun does p1 and p2 and draws what a full run draws
    run(2, all_prompts[:1], out=tmp_path / "out")
    resumed = run(2, all_prompts, out=tmp_path / "out")
    assert set(resumed) == {"p1", "p2"} and resumed == {k: together[k] for k in ("p1", "p2")}


class _LoudSpecials(torch.nn.Module):
    """Wraps an LM and makes bos, pad and the alignment-padding ids by far the most likely."""

    def __init__(self, lm: torch.nn.Module, layout: VocabLayout) -> None:
        super().__init__()
        self.lm = lm
        self.bonus = torch.zeros(layout.vocab_size)
        self.bonus[layout.bos_id] = self.bonus[layout.pad_id] = 1e4
        self.bonus[layout.n_real :] = 1e4
        self.eos = layout.eos_id

    def forward(self, **kw):
        out = self.lm(**kw)
        out.logits = out.logits + self.bonus
        return out


def test_bos_pad_and_padding_rows_are_never_sampled():
    c = contract()
    layout = c.layout
    lm = _LoudSpecials(tiny_lm(), layout)
    units = [np.array([1, 2, 3]), np.array([4, 5])]
    for temp in (0.0, 1.0, 5.0):
        out = sample_units(lm, c, units, SamplingConfig(temperature=temp, max_seconds=0.4, stop_at_eos=False, seed=1))
        for u in out:
            assert len(u) == 20 and u.min() >= 0 and u.max() < K


def test_batched_left_padded_sampling_equals_one_at_a_time():
    c = contract()
    lm = tiny_lm(3)
    units = [np.array([1, 2, 3, 4, 5, 6, 7]), np.array([9]), np.array([3, 3, 8, 1])]
    greedy = SamplingConfig(temperature=0.0, max_seconds=0.3, stop_at_eos=False, batch_size=3)
    batched = sample_units(lm, c, units, greedy)
    for u, b in zip(units, batched):
        alone = sample_units(lm, c, [u], greedy)[0]
        np.testing.assert_array_equal(alone, b)


def tiny_opt(seed: int = 0) -> torch.nn.Module:
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    cfg = OPTConfig(vocab_size=VocabLayout(K).vocab_size, **tiny_config("opt", max_position_embeddings=256))
    return OPTForCausalLM(cfg).eval()


@pytest.mark.parametrize("make_lm", [tiny_lm, tiny_opt], ids=["llama", "opt"])
def test_cached_decoding_warns_nothing_and_equals_decoding_without_the_cache(make_lm):
    """The KV cache goes to the model under the name its transformers version uses (5.24:
    ``cache``, with a FutureWarning and a log line for the old ``past_key_values``; 5.17 knows
    only ``past_key_values``), so sampling warns about nothing. Greedy decoding with the cache
    equals recomputing every step from the whole sequence without one."""
    import logging
    import warnings

    c = contract()
    layout = c.layout
    lm = make_lm()
    prompt = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    greedy = SamplingConfig(temperature=0.0, max_seconds=0.2, stop_at_eos=False)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.Logger.warning_once.cache_clear()  # transformers says it once per process
    logging.getLogger("transformers").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cached = sample_units(lm, c, [prompt], greedy)[0]
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert not [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    ids = torch.from_numpy(layout.encode(prompt, bos=True, eos=False))[None]
    with torch.no_grad():
        for _ in range(len(cached)):
            logits = lm(input_ids=ids, use_cache=False).logits[:, -1].float()
            ids = torch.cat([ids, mask_for_sampling(logits, layout, allow_eos=False).argmax(-1, keepdim=True)], 1)
    np.testing.assert_array_equal(cached, layout.decode(ids[0, -len(cached):].numpy()))
    assert len(cached) == 10


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    k2 = filter_logits(logits, top_k=2)
    assert torch.isfinite(k2).tolist() == [[True, True, False, False, False]]
    p = filter_logits(logits, top_p=0.8)  # 0.5 + 0.2 < 0.8, + 0.15 reaches it
    assert torch.isfinite(p).tolist() == [[True, True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.1)).sum() == 1  # the top token always stays


def test_contract_mismatch_between_lm_and_vocoder_names_both_sides():
    lm_c = contract()
    voc = tiny_vocoder(contract(kmeans_fingerprint="other-km"))
    with pytest.raises(ContractMismatchError, match="kmeans_fingerprint: vocoder /v has 'other-km', speech LM /lm has 'km'"):
        generate_continuations(lm=tiny_lm(), lm_contract=lm_c, tokenizer=FakeTokenizer(lm_c), vocoder=voc,
                               prompts=prompts(1), sampling=SamplingConfig(), names={"lm": "speech LM /lm", "vocoder": "vocoder /v"})
    # dedup differs but the vocoder predicts durations: accepted (frame-level LM, dedup vocoder)
    frame_c = contract(dedup=False)
    recs = generate_continuations(lm=tiny_lm(), lm_contract=frame_c, tokenizer=FakeTokenizer(frame_c), vocoder=tiny_vocoder(contract()),
                                  prompts=prompts(1), sampling=SamplingConfig(max_seconds=0.2))
    assert set(recs[0]["generated_durations"]) <= {1}
    # a dedup LM with a vocoder that cannot predict durations is refused
    with pytest.raises(ValueError, match="no duration predictor"):
        generate_continuations(lm=tiny_lm(), lm_contract=lm_c, tokenizer=FakeTokenizer(lm_c), vocoder=tiny_vocoder(lm_c, dur=False),
                               prompts=prompts(1), sampling=SamplingConfig())


def test_prompt_shorter_than_one_frame_is_a_clear_error(tmp_path):
    c = contract()
    short = [("tiny", np.zeros(100, dtype=np.float32))]
    with pytest.raises(ValueError, match=r"prompt tiny is 6\.2 ms long, shorter than one unit frame \(320 samples"):
        generate_continuations(lm=tiny_lm(), lm_contract=c, tokenizer=FakeTokenizer(c), vocoder=tiny_vocoder(c),
                               prompts=short, sampling=SamplingConfig())
    from twist.rejects import RejectsLog

    with RejectsLog(tmp_path / "rej.jsonl", stage="generate") as rej:
        recs = generate_continuations(lm=tiny_lm(), lm_contract=c, tokenizer=FakeTokenizer(c), vocoder=tiny_vocoder(c),
                                      prompts=short + prompts(1), sampling=SamplingConfig(max_seconds=0.2), rejects=rej)
    assert [r["id"] for r in recs] == ["p0"]
    assert "shorter than one unit frame" in RejectsLog.read(tmp_path / "rej.jsonl")[0]["reason"]


def test_prompts_that_share_a_file_name_in_different_folders_keep_one_output_each(tmp_path):
    from twist.audio import save_audio
    from twist.errors import InputError
    from twist.generate import read_prompts

    for rel in ("spk1/u.wav", "spk2/u.wav", "v.wav"):
        save_audio(tmp_path / "p" / rel, np.zeros(1600, dtype=np.float32), 16000)
    # named as twist-vocoder mode=resynth names its outputs: the path under the directory given
    assert [pid for pid, _ in read_prompts([tmp_path / "p"], 16000)] == ["spk1__u", "spk2__u", "v"]
    assert [pid for pid, _ in read_prompts([tmp_path / "p" / "spk1" / "u.wav"], 16000)] == ["u"]
    with pytest.raises(InputError, match=r"both be named 'u': .*spk1/u\.wav and .*spk2/u\.wav"):
        read_prompts([tmp_path / "p" / "spk1", tmp_path / "p" / "spk2"], 16000)


def test_sampling_config_validation():
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="sampling.repetition_penalty: must be > 0"):
        SamplingConfig(repetition_penalty=0.0)
    with pytest.raises(ValueError, match="sampling.max_new_tokens: must be > 0"):
        SamplingConfig(max_new_tokens=0)
    from twist.schema import to_typed

    with pytest.raises(ValueError, match="unknown setting temp"):
        to_typed(SamplingConfig, {"temp": 1.0})


# ---------------------------------------------------------------------------------------
# repetition penalty and the token cap (Slam's generation settings)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("penalty", [1.1, 1.5, 0.7])
def test_repetition_penalty_equals_the_transformers_processor(penalty):
    """Divide the positive logits and multiply the negative ones of every id already in the row
    (prompt included, repeats counted once), as transformers' RepetitionPenaltyLogitsProcessor."""
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 64, generator=g) * 3
    logits[0, 5] = 0.0  # zero stays zero either way
    logits[1, 7] = float("-inf")  # a masked id stays masked
    ids = torch.tensor([[5, 9, 9, 30, 63, 1], [7, 2, 2, 2, 2, 2], [0, 1, 2, 3, 4, 5]])
    ours = apply_repetition_penalty(logits, ids, penalty)
    theirs = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
    assert torch.equal(ours, theirs)
    untouched = torch.ones(64, dtype=torch.bool)
    untouched[ids[0]] = False
    assert torch.equal(ours[0, untouched], logits[0, untouched])
    assert apply_repetition_penalty(logits, ids, 1.0) is logits


# Units the sampler drew for these prompts and settings before repetition_penalty and
# max_new_tokens existed (tiny_lm(0), one CPU thread, torch 2.13): the defaults must draw them again.
BEFORE = {"sample": [[12, 6, 14], [7, 1, 19, 15, 2]],
          "greedy": [[7, 12, 10, 6, 17, 12, 10, 6, 17, 12, 10, 6, 17, 12, 10],
                     [18, 17, 12, 10, 7, 12, 10, 12, 10, 12, 10, 12, 10, 10, 6]]}


def test_a_repetition_penalty_of_one_draws_the_same_units_as_before(monkeypatch):
    import twist.generate as gen

    c = contract()
    lm = tiny_lm()
    units = [np.array([1, 5, 7, 3, 3, 9]), np.array([2, 4])]
    settings = {"sample": dict(temperature=1.0, top_k=10, top_p=0.9, max_seconds=0.4, seed=7, batch_size=2),
                "greedy": dict(temperature=0.0, max_seconds=0.3, stop_at_eos=False)}
    calls = []
    monkeypatch.setattr(gen, "apply_repetition_penalty", lambda *a: calls.append(a) or a[0])
    for name, kw in settings.items():
        for s in (SamplingConfig(**kw), SamplingConfig(**kw, repetition_penalty=1.0)):
            assert [u.tolist() for u in sample_units(lm, c, units, s)] == BEFORE[name], name
    assert not calls  # 1.0 skips the penalty: the loop is the one that drew BEFORE


def test_greedy_decoding_with_a_repetition_penalty_equals_transformers_generate():
    """The whole loop (prompt ids, generated ids, KV cache) against plain ``generate()``:
    greedy, penalty 1.5, the ids twist never samples suppressed."""
    c = contract()
    layout = c.layout
    lm = tiny_lm()
    prompt = np.array([1, 5, 7, 3, 3, 9])
    s = SamplingConfig(temperature=0.0, max_seconds=0.3, stop_at_eos=False, repetition_penalty=1.5)
    ours = sample_units(lm, c, [prompt], s)[0]
    ids = torch.from_numpy(layout.encode(prompt, bos=True, eos=False))[None]
    never = [layout.bos_id, layout.eos_id, layout.pad_id, *range(layout.n_real, layout.vocab_size)]
    out = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=len(ours),
                      min_new_tokens=len(ours), repetition_penalty=1.5, suppress_tokens=never,
                      pad_token_id=layout.pad_id, eos_token_id=layout.eos_id)
    np.testing.assert_array_equal(ours, out[0, ids.shape[1]:].numpy())
    assert len(ours) == 15 and ours.tolist() != BEFORE["greedy"][0]
    # the penalised greedy continuation repeats itself less than the plain one (which loops 7 12 10 6 17)
    assert len(set(ours.tolist())) > len(set(BEFORE["greedy"][0]))


def test_max_new_tokens_caps_the_sampled_tokens_instead_of_max_seconds():
    c = contract()  # 50 Hz: max_seconds 0.1 alone would allow 5 tokens
    lm = tiny_lm()
    s = SamplingConfig(temperature=1.0, max_seconds=0.1, stop_at_eos=False, max_new_tokens=12)
    assert [len(u) for u in sample_units(lm, c, [np.array([1, 2, 3])], s)] == [12]


def test_a_continuation_capped_by_tokens_is_not_cut_to_max_seconds():
    c = contract()
    lm, tok, voc = tiny_lm(), FakeTokenizer(c), tiny_vocoder(c)
    s = SamplingConfig(temperature=1.0, max_seconds=0.1, stop_at_eos=False, max_new_tokens=12, seed=3)
    rec = generate_continuations(lm=lm, lm_contract=c, tokenizer=tok, vocoder=voc, prompts=prompts(1), sampling=s)[0]
    assert len(rec["generated_units"]) == 12 and rec["continuation_seconds"] > 0.1
    assert rec["sampling"]["max_new_tokens"] == 12 and rec["sampling"]["repetition_penalty"] == 1.0


def _text_units_contract() -> UnitContract:
    return contract(layout_name="text+units/speech-text-markers/v1", text_vocab=40, text_bos_id=1, text_eos_id=2,
                    text_pad_id=0, text_tokenizer="words", text_tokenizer_fingerprint="f")


class _LoudText(torch.nn.Module):
    """Wraps an LM: text ids (eos aside) and the markers far likelier than any unit; records prompts."""

    def __init__(self, lm: torch.nn.Module, layout: VocabLayout) -> None:
        super().__init__()
        self.lm, self.prompts = lm, []
        self.bonus = torch.zeros(layout.vocab_size)
        self.bonus[: layout.text_vocab] = 1e4
        self.bonus[layout.eos_id] = 0.0
        self.bonus[list(layout.marker_ids)] = 1e4
        self.bonus[layout.n_real :] = 1e4

    def forward(self, **kw):
        if "cache" not in kw and "past_key_values" not in kw:
            self.prompts.append(kw["input_ids"].tolist())
        out = self.lm(**kw)
        out.logits = out.logits + self.bonus
        return out


def test_a_text_units_lm_continues_a_speech_prompt_with_units_only_and_the_vocoder_gets_units():
    """The prompt is <bos> <speech> units (at their offset); text, markers and padding are never
    sampled; decoding gives units back (offset removed) for a units-first tokenizer and vocoder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = _text_units_contract()
    layout = c.layout
    torch.manual_seed(0)
    lm = _LoudText(LlamaForCausalLM(LlamaConfig(vocab_size=layout.vocab_size, **tiny_config(
        "llama", max_position_embeddings=1024))).eval(), layout)
    units = [np.array([1, 2, 3]), np.array([4, 5])]
    for temp in (0.0, 1.0):
        out = sample_units(lm, c, units, SamplingConfig(temperature=temp, max_seconds=0.4, stop_at_eos=False, seed=1))
        for u in out:
            assert len(u) == 20 and u.min() >= 0 and u.max() < K
    assert lm.prompts[0][0] == [1, layout.speech_id, 41, 42, 43]  # left-padded batch: the longest row
    assert lm.prompts[0][1][-4:] == [1, layout.speech_id, 44, 45]
    unit_c = contract()  # the tokenizer and the vocoder are units-first by nature: same units, they fit
    recs = generate_continuations(lm=lm, lm_contract=c, tokenizer=FakeTokenizer(unit_c), vocoder=tiny_vocoder(unit_c),
                                  prompts=prompts(1), sampling=SamplingConfig(max_seconds=0.2, stop_at_eos=False))
    assert recs[0]["generated_units"] and max(recs[0]["generated_units"]) < K


# ---------------------------------------------------------------------------------------
# text+units LMs: text and/or speech prompts, continued in a chosen modality
# ---------------------------------------------------------------------------------------
OLD_RECORD = {"id", "prompt_units", "prompt_durations", "generated_units", "generated_durations", "prompt_seconds",
              "continuation_seconds", "sampling", "contract", "made_by", "wav"}


def test_a_units_first_lm_is_continued_exactly_as_before_text_prompts_existed():
    """Units and wavs this pipeline made before text prompts and continue_in existed (tiny_lm(0),
    one CPU thread): the same again, and records with the same fields."""
    import hashlib

    c = contract()
    s = SamplingConfig(temperature=1.0, top_k=10, top_p=0.9, max_seconds=0.4, seed=7, batch_size=2)
    recs = generate_continuations(lm=tiny_lm(), lm_contract=c, tokenizer=FakeTokenizer(c), vocoder=tiny_vocoder(c),
                                  prompts=prompts(2), sampling=s)
    got = {r["id"]: (r["generated_units"], r["generated_durations"],
                     hashlib.sha256(np.ascontiguousarray(r["wav"], dtype=np.float32).tobytes()).hexdigest()[:16])
           for r in recs}
    assert got == {"p0": ([12, 4, 18, 16, 1, 6, 19, 10, 6, 19, 5, 11, 8, 10, 6, 2, 6, 6],
                          [1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2], "333886481b2602bd"),
                   "p1": ([], [], "2d6bd9021a783a3f")}
    assert all(set(r) == OLD_RECORD for r in recs)


def _loud_text_lm(layout: VocabLayout, seed: int = 0) -> _LoudText:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return _LoudText(LlamaForCausalLM(LlamaConfig(vocab_size=layout.vocab_size, **tiny_config(
        "llama", max_position_embeddings=1024))).eval(), layout)


def test_a_text_prompt_continued_in_speech_gives_units_only_after_the_speech_marker_and_a_wav(tmp_path):
    """<bos> <text> w1 w2 <speech>, then only units are sampled (text is far likelier: masked),
    and they are vocoded; the JSON holds the prompt's text and the sampled ids."""
    from tests.text_tokenizers import tiny_text_tokenizer
    from twist.generate import Prompt

    c = _text_units_contract()
    layout = c.layout
    lm = _loud_text_lm(layout)
    voc = tiny_vocoder(contract())
    s = SamplingConfig(max_seconds=0.2, stop_at_eos=False, seed=3)
    rec = generate_continuations(lm=lm, lm_contract=c, tokenizer=None, vocoder=voc, prompts=[Prompt("t0", text="w1 w2")],
                                 sampling=s, out_dir=tmp_path, text_tokenizer=tiny_text_tokenizer(40),
                                 continue_in="speech")[0]
    assert lm.prompts[0] == [[1, layout.text_id, 5, 6, layout.speech_id]]
    assert len(rec["generated_ids"]) == 10 and all(40 <= i < 40 + K for i in rec["generated_ids"])
    assert rec["generated_units"] == [i - 40 for i in rec["generated_ids"]] and rec["ended_by"] == "length"
    assert rec["prompt_units"] == [] and rec["prompt_seconds"] == 0.0
    assert len(rec["wav"]) == sum(rec["generated_durations"]) * voc.hop
    saved = json.loads((tmp_path / "t0.json").read_text())
    assert saved["prompt_text"] == "w1 w2" and saved["continue_in"] == "speech" and "generated_text" not in saved
    assert (tmp_path / "t0.wav").exists() and (tmp_path / "t0.continuation.wav").exists()
    # eos and <text> may end a continuation: a model that prefers <text> switches at once
    stop = generate_continuations(lm=lm, lm_contract=c, tokenizer=None, vocoder=voc, prompts=[Prompt("t0", text="w1")],
                                  sampling=SamplingConfig(max_seconds=0.2, seed=3), text_tokenizer=tiny_text_tokenizer(40),
                                  continue_in="speech")[0]
    assert stop["generated_ids"] == [] and stop["ended_by"] == "<text>"


def test_continued_in_text_a_speech_prompt_gives_text_and_no_wav(tmp_path):
    from tests.text_tokenizers import tiny_text_tokenizer

    c, unit_c = _text_units_contract(), contract()
    layout = c.layout
    lm = _loud_text_lm(layout)
    tok = tiny_text_tokenizer(40)
    s = SamplingConfig(max_new_tokens=6, stop_at_eos=False, seed=1)
    rec = generate_continuations(lm=lm, lm_contract=c, tokenizer=FakeTokenizer(unit_c), vocoder=None, prompts=prompts(1),
                                 sampling=s, out_dir=tmp_path, text_tokenizer=tok, continue_in="text")[0]
    sent = lm.prompts[0][0]
    assert sent[:2] == [1, layout.speech_id] and sent[-1] == layout.text_id
    assert all(40 <= i < 40 + K for i in sent[2:-1]) and [i - 40 for i in sent[2:-1]] == rec["prompt_units"]
    ids = rec["generated_ids"]
    assert len(ids) == 6 and all(3 <= i < 40 for i in ids)  # text ids, never <pad> 0, <s> 1, or </s> 2 here
    assert rec["generated_text"] == tok.decode(ids) and rec["generated_units"] == [] and rec["ended_by"] == "length"
    assert "wav" not in rec and not list(tmp_path.glob("*.wav"))
    assert json.loads((tmp_path / "p0.json").read_text())["generated_text"] == rec["generated_text"]


def test_both_prompts_are_laid_out_in_the_chosen_order_and_the_prompt_speech_is_vocoded(tmp_path):
    from tests.text_tokenizers import tiny_text_tokenizer
    from twist.generate import Prompt

    c, unit_c = _text_units_contract(), contract()
    layout = c.layout
    lm = _loud_text_lm(layout)
    wav = prompts(1)[0][1]
    s = SamplingConfig(max_seconds=0.1, stop_at_eos=False, seed=1)
    kw = dict(lm=lm, lm_contract=c, tokenizer=FakeTokenizer(unit_c), vocoder=tiny_vocoder(unit_c), sampling=s,
              text_tokenizer=tiny_text_tokenizer(40))
    text_first = generate_continuations(prompts=[Prompt("a", wav=wav, text="w3", text_first=True)], **kw)[0]
    units = [40 + u for u in text_first["prompt_units"]]
    assert lm.prompts[-1] == [[1, layout.text_id, 7, layout.speech_id, *units]]  # the speech span goes on
    assert text_first["ended_by"] == "length" and len(text_first["generated_units"]) == 5
    assert len(text_first["wav"]) == (sum(text_first["prompt_durations"]) + sum(text_first["generated_durations"])) * 320
    speech_first = generate_continuations(prompts=[Prompt("b", wav=wav, text="w3", text_first=False)], **kw)[0]
    assert lm.prompts[-1] == [[1, layout.speech_id, *units, layout.text_id, 7, layout.speech_id]]
    assert speech_first["prompt_order"] == "speech_first"


def test_text_prompts_and_text_continuations_are_refused_for_a_units_first_lm_in_one_line():
    from tests.text_tokenizers import tiny_text_tokenizer
    from twist.errors import ConfigError
    from twist.generate import Prompt

    c = contract()
    for kw in ({"prompts": [Prompt("t", text="w1")]}, {"prompts": prompts(1), "continue_in": "text"}):
        with pytest.raises(ConfigError) as e:
            generate_continuations(lm=tiny_lm(), lm_contract=c, tokenizer=FakeTokenizer(c), vocoder=tiny_vocoder(c),
                                   sampling=SamplingConfig(), text_tokenizer=tiny_text_tokenizer(40), **kw)
        assert len(str(e.value).splitlines()) == 1 and "units-first" in str(e.value)


def _compose_generate(overrides: list[str]):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    import twist

    with initialize_config_dir(config_dir=str(Path(twist.__file__).parent / "configs"), version_base="1.3"):
        return compose(config_name="generate", overrides=overrides)


def test_twist_generate_with_a_text_prompt_continues_a_text_units_lm_in_speech_or_in_text(tmp_path, capsys):
    """The command on a text+units model dir (its own tokenizer encodes the text): continue_in=speech
    writes units after the <speech> marker and a wav; continue_in=text writes text and no wav; a
    units-first LM is refused a text prompt in one line, before anything is written."""
    from tests.text_units_lm import save_tiny_text_units_lm
    from twist.cli.generate import main
    from twist.lm import read_contract, save_speech_lm
    from twist.vocoder import save_vocoder

    c = contract()
    voc = save_vocoder(tiny_vocoder(c).generator, c, tmp_path / "voc")
    lm = save_tiny_text_units_lm(tmp_path / "lm", c)
    layout = read_contract(lm).layout
    common = [f"lm={lm}", "text_prompts=['w1 w2 w3']", "sampling.max_seconds=0.2", "sampling.stop_at_eos=false"]
    main.run(_compose_generate([*common, f"vocoder={voc}", f"out_dir={tmp_path / 'speech'}"]))
    rec = json.loads((tmp_path / "speech" / "text0000.json").read_text())
    assert rec["prompt_ids"] == [1, layout.text_id, 5, 6, 7, layout.speech_id] and rec["prompt_text"] == "w1 w2 w3"
    assert rec["generated_ids"] and all(layout.unit_offset <= i < layout.unit_offset + K for i in rec["generated_ids"])
    assert (tmp_path / "speech" / "text0000.wav").exists()
    assert json.loads((tmp_path / "speech" / "texts.jsonl").read_text()) == {
        "id": "text0000", "prompt_text": "w1 w2 w3", "continuation_text": None}
    assert rec["made_by"]["continue_in"] == "speech" and rec["made_by"]["prompt_text"] == "w1 w2 w3"

    main.run(_compose_generate([*common, "continue_in=text", f"out_dir={tmp_path / 'text'}"]))
    rec = json.loads((tmp_path / "text" / "text0000.json").read_text())
    assert rec["generated_ids"] and all(i < layout.text_vocab for i in rec["generated_ids"])
    assert rec["prompt_ids"] == [1, layout.text_id, 5, 6, 7] and "generated_text" in rec  # text goes on: no marker
    assert not list((tmp_path / "text").glob("*.wav"))
    row = json.loads((tmp_path / "text" / "texts.jsonl").read_text())
    assert row["continuation_text"] == rec["generated_text"]

    units_first = tmp_path / "units_first"
    save_speech_lm(tiny_lm(), units_first, c)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main.run(_compose_generate([f"lm={units_first}", "text_prompts=[w1]", f"vocoder={voc}",
                                    f"out_dir={tmp_path / 'refused'}"]))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "units-first" in err and "text_prompts" in err
    assert not (tmp_path / "refused").exists()
