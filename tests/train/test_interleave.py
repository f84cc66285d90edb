"""Speech-text interleaving: span selection, the sequences it makes, the mixture of streams, and the
trainer's equivalences on interleaved data (packed = padded, resumed = uninterrupted, 2 processes = 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.kill_resume import assert_bit_identical_runs, kill_then_resume, write_kill_script
from tests.model_shapes import tiny_node
from tests.text_tokenizers import save_tiny_text_tokenizer, tiny_text_tokenizer
from twist.checkpoint import load_checkpoint
from twist.contract import VocabLayout
from twist.errors import ConfigError, InputError
from twist.interleave import (
    aligned_words,
    runs,
    sequence,
    sequence_length,
    span_lengths,
    speech_spans,
    spoken_words,
)
from twist.lm.config import ModelConfig
from twist.lm.packing import IGNORE_INDEX, pad_documents
from twist.train.config import InterleaveConfig, MixRatios
from twist.train.data import TrainStream, open_split
from twist.train.mixture import MixedDocuments
from twist.train.trainer import Trainer
from twist.units import UnitShardWriter, merge_shards

ALIGNER = {"aligner": "tts", "fingerprint": "tts-test"}


def _run_lengths(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.diff(np.concatenate([[0], mask.astype(np.int64), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return starts, ends, ends - starts


# ---------------------------------------------------------------------------------------
# spans
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("span", "fraction"), [(10.0, 0.3), (5.0, 0.5), (20.0, 0.2)])
def test_span_selection_over_10000_words_keeps_the_fraction_and_the_mean_span(span, fraction):
    for seed in range(3):
        mask = speech_spans(10_000, span=span, fraction=fraction, rng=np.random.default_rng(seed))
        starts, ends, lengths = _run_lengths(mask)
        assert abs(mask.mean() - fraction) <= 0.02, mask.mean()
        assert abs(lengths.mean() - span) <= 0.1 * span, lengths.mean()
        # runs never touch, so every run is a switch: read back, they are exactly the runs drawn
        assert lengths.tolist() == span_lengths(10_000, span=span, fraction=fraction, rng=np.random.default_rng(seed))
        again = speech_spans(10_000, span=span, fraction=fraction, rng=np.random.default_rng(seed))
        assert np.array_equal(mask, again)
    other = speech_spans(10_000, span=span, fraction=fraction, rng=np.random.default_rng(99))
    assert not np.array_equal(mask, other)


def test_short_utterances_get_the_fraction_of_their_words_and_modes_speech_and_text_are_whole():
    rng = np.random.default_rng(0)
    for n in range(1, 30):
        for seed in range(20):
            m = speech_spans(n, span=10, fraction=0.3, rng=np.random.default_rng(seed))
            drawn = span_lengths(n, span=10, fraction=0.3, rng=np.random.default_rng(seed))
            assert m.sum() == int(np.ceil(n * 0.3)) and _run_lengths(m)[2].tolist() == drawn
    assert spoken_words(7, "speech", span=10, fraction=0.3, rng=rng).all()
    assert not spoken_words(7, "text", span=10, fraction=0.3, rng=rng).any()
    assert speech_spans(0, span=10, fraction=0.3, rng=rng).size == 0


# ---------------------------------------------------------------------------------------
# one sequence, by hand
# ---------------------------------------------------------------------------------------
def test_word_boundaries_become_unit_positions_and_the_sequence_switches_with_markers():
    """Units of 2, 3, 1 and 4 frames at 50 Hz hold frames [0,2) [2,5) [5,6) [6,10): w4 from 0 to
    0.04 s is unit 0, w5 from 0.04 to 0.12 s units 1-2, w6 from 0.12 to 0.2 s unit 3."""
    tok = tiny_text_tokenizer()
    lay = VocabLayout.text_units(20, text_vocab=300, bos_id=1, eos_id=2, pad_id=0)
    record = {"id": "u", "words": [{"word": "w4", "start": 0.0, "end": 0.04}, {"word": "w5", "start": 0.04, "end": 0.12},
                                   {"word": "w6", "start": 0.12, "end": 0.2}]}
    units = np.array([7, 8, 9, 10])
    words = aligned_words(record, durations=np.array([2, 3, 1, 4]), n_units=4, frame_rate=50.0, tokenizer=tok,
                          layout=lay)
    assert words.spans.tolist() == [[0, 1], [1, 3], [3, 4]]
    w = [tok.convert_tokens_to_ids(f"w{i}") for i in (4, 5, 6)]
    assert words.text_ids == ((w[0],), (w[1],), (w[2],))
    seq = sequence(words, units, np.array([False, True, False]), lay)
    assert seq.tolist() == [1, lay.text_id, w[0], lay.speech_id, 308, 309, lay.text_id, w[2], 2]
    seq = sequence(words, units, np.array([True, True, False]), lay)
    assert seq.tolist() == [1, lay.speech_id, 307, 308, 309, lay.text_id, w[2], 2]
    assert [m for m, _ in runs(words, units, np.array([True, False, True]))] == ["speech", "text", "speech"]
    # all spoken: the word span's units; all text: the transcript's ids
    assert sequence(words, units, np.ones(3, bool), lay).tolist() == [1, lay.speech_id, 307, 308, 309, 310, 2]
    assert sequence(words, units, np.zeros(3, bool), lay).tolist() == [1, lay.text_id, *w, 2]
    for spoken in ([False, True, False], [True, True, False], [True, False, True], [True] * 3, [False] * 3):
        s = np.array(spoken)
        assert sequence_length(words, s) == len(sequence(words, units, s, lay))


# ---------------------------------------------------------------------------------------
# an aligned unit dataset and a text corpus
# ---------------------------------------------------------------------------------------
def make_aligned_units(root, contract, *, n: int = 40, seed: int = 0):
    """Utterances of 3-12 words ``w<k>``; each word 1-3 units of 1-3 frames; learnable unit runs."""
    rng = np.random.default_rng(seed)
    k = contract.n_units
    with UnitShardWriter(root, contract, shard_items=15, alignment=ALIGNER) as w:
        for i in range(n):
            n_words = int(rng.integers(3, 13))
            per_word = rng.integers(1, 4, size=n_words)
            n_units = int(per_word.sum())
            units = (int(rng.integers(0, k)) + np.arange(n_units)) % k
            durs = rng.integers(1, 4, size=n_units)
            frames = np.concatenate([[0], np.cumsum(durs)])
            edges = np.concatenate([[0], np.cumsum(per_word)])
            words = [{"word": f"w{int(rng.integers(4, 60))}", "start": frames[edges[j]] / 50.0,
                      "end": frames[edges[j + 1]] / 50.0, "how": "timed"} for j in range(n_words)]
            rec = {"id": f"utt{i:04d}", "aligner": "tts", "transcript": " ".join(x["word"] for x in words),
                   "duration": frames[-1] / 50.0, "words": words}
            w.add(f"utt{i:04d}", units, durations=durs, raw=False, alignment=rec)
    merge_shards(root, split={"seed": 0, "valid": 0.2, "test": 0.0})
    return root


@pytest.fixture
def aligned(tmp_path, contract):
    return make_aligned_units(tmp_path / "aligned", contract)


@pytest.fixture
def text_corpus(tmp_path):
    rng = np.random.default_rng(1)
    lines = [" ".join(f"w{int(x)}" for x in rng.integers(60, 290, size=int(rng.integers(4, 20)))) for _ in range(25)]
    p = tmp_path / "text" / "corpus.txt"
    p.parent.mkdir()
    p.write_text("\n\n".join(lines) + "\n")
    return p.parent


def _layout(ds):
    return VocabLayout.text_units(ds.contract.n_units, text_vocab=300, bos_id=1, eos_id=2, pad_id=0)


def _settings(corpus=None, **kw):
    ratios = MixRatios(**{k: kw.pop(k) for k in ("text", "interleaved", "speech") if k in kw})
    return InterleaveConfig(ratios=ratios, text=[str(corpus)] if corpus else [], **kw)


def test_the_mixture_holds_every_utterance_once_and_text_in_its_ratio_deterministically(aligned, text_corpus):
    ds = open_split(aligned, "train")
    lay, tok = _layout(ds), tiny_text_tokenizer()
    s = _settings(text_corpus, text=0.5, interleaved=0.6, speech=0.4)
    mix = MixedDocuments(ds, lay, s, tok, seed=3)
    counts = mix.kinds_of(0)
    assert counts["interleaved"] + counts["speech"] == len(ds)
    assert counts["text"] == round(len(ds) * 0.5)
    assert 0.3 < counts["interleaved"] / len(ds) < 0.9
    again = MixedDocuments(ds, lay, s, tok, seed=3)
    docs0 = [mix.document(j, 0) for j in range(len(mix.lengths(0)))]
    assert all(np.array_equal(a, again.document(j, 0)) for j, a in enumerate(docs0))
    assert [len(d) for d in docs0] == mix.lengths(0).tolist()
    # another epoch draws other spans and kinds; every document is framed and its ids legal
    docs1 = [mix.document(j, 1) for j in range(len(mix.lengths(1)))]
    assert [len(d) for d in docs1] == mix.lengths(1).tolist()
    n = len(ds)
    assert not np.array_equal(mix.kinds(0)[:n], mix.kinds(1)[:n])  # each utterance's kind is drawn per epoch
    assert any(not np.array_equal(mix._spoken(i, 0), mix._spoken(i, 1)) for i in range(n))  # and its spans
    for d in docs0 + docs1:
        assert d[0] == lay.bos_id and d[-1] == lay.eos_id and d[1] in lay.marker_ids
        assert ((d < lay.n_real) & (d >= 0)).all()
    # an interleaved utterance holds exactly its words' text or units, in order
    j = int(np.flatnonzero(mix.kinds(0) == 1)[0])
    i = int(mix.indices(0)[j])
    spoken = mix._spoken(i, 0)
    assert abs(spoken.sum() - np.ceil(len(spoken) * 0.3)) < 1
    assert np.array_equal(mix.document(j, 0), sequence(mix.words[i], np.asarray(ds[i], np.int64), spoken, lay))


def test_the_mixture_refuses_missing_alignments_text_and_a_units_first_layout(tmp_path, contract, unit_data, aligned):
    ds = open_split(unit_data, "train")
    tok = tiny_text_tokenizer()
    with pytest.raises(InputError, match="no word alignments.*align set to tts"):
        MixedDocuments(ds, _layout(ds), _settings(interleaved=1.0), tok, seed=0)
    with pytest.raises(ConfigError, match="data.interleave.loss=units.*text\\+units"):
        MixedDocuments(ds, ds.contract.layout, _settings(speech=1.0, loss="units"), tok, seed=0)
    with pytest.raises(ConfigError, match="data.interleave.ratios.text / ratios.interleaved"):
        MixedDocuments(ds, ds.contract.layout, _settings(interleaved=1.0), tok, seed=0)
    with pytest.raises(ConfigError, match="data.interleave.text"):
        _settings(text=0.2, interleaved=1.0)
    with pytest.raises(ConfigError, match="interleaved \\+ speech"):
        _settings(text=1.0, speech=0.0)
    al = open_split(aligned, "train")
    with pytest.raises(Exception, match="does not exist"):
        MixedDocuments(al, _layout(al), _settings(tmp_path / "nope.txt", text=1.0, interleaved=1.0), tok, seed=0)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="hold no text"):
        MixedDocuments(al, _layout(al), _settings(empty, text=1.0, interleaved=1.0), tok, seed=0)


def test_loss_on_units_keeps_unit_targets_and_eos_after_a_unit_only(aligned):
    ds = open_split(aligned, "train")
    lay, tok = _layout(ds), tiny_text_tokenizer()
    mix = MixedDocuments(ds, lay, _settings(interleaved=1.0, loss="units"), tok, seed=0)
    stream = TrainStream(ds, max_tokens=64, global_batch=4, micro_batch=4, layout=lay, source=mix)
    b = stream.next_step()[0]
    full = TrainStream(ds, max_tokens=64, global_batch=4, micro_batch=4, layout=lay,
                       source=MixedDocuments(ds, lay, _settings(interleaved=1.0), tok, seed=0)).next_step()[0]
    assert torch.equal(full.input_ids, b.input_ids)

    def is_unit(x):
        return (x >= lay.unit_offset) & (x < lay.unit_offset + lay.n_units)

    # exactly: every unit target, and an eos target right after a unit; nothing else
    keep = is_unit(full.targets) | ((full.targets == lay.eos_id) & is_unit(full.input_ids))
    assert torch.equal(b.targets, torch.where(keep, full.targets, torch.full_like(full.targets, IGNORE_INDEX)))
    assert is_unit(b.targets).any() and (b.targets == lay.eos_id).any()
    text_targets = (full.targets >= 4) & (full.targets < 300)
    assert text_targets.any() and (b.targets[text_targets] == IGNORE_INDEX).all()


def test_a_step_across_an_epoch_boundary_reads_each_window_in_its_own_epoch(aligned, text_corpus):
    """Windows of one step may come from two epochs; each is read from its own epoch's documents,
    as a fresh mixture builds them."""
    from twist.lm.packing import pack_sequences

    ds = open_split(aligned, "train")
    lay, tok = _layout(ds), tiny_text_tokenizer()
    s = _settings(text_corpus, text=0.5, interleaved=0.6, speech=0.4)
    kw = {"max_tokens": 64, "global_batch": 8, "micro_batch": 8, "layout": lay, "seed": 5}
    stream = TrainStream(ds, source=MixedDocuments(ds, lay, s, tok, seed=5), **kw)
    planner = TrainStream(ds, source=MixedDocuments(ds, lay, s, tok, seed=5), **kw)
    fresh = MixedDocuments(ds, lay, s, tok, seed=5)
    crossed = False
    for _ in range(40):
        got = stream.next_step()[0]
        windows = [planner._next_window() for _ in range(8)]
        epochs = {e for e, _ in windows}
        crossed |= len(epochs) == 2
        docs = []
        for e, w in windows:
            docs.append([fresh.document(p.index, e)[p.start : p.stop] for p in w])
            assert all(len(fresh.document(p.index, e)) >= p.stop for p in w)
        want = pack_sequences(docs, lay, 64)
        assert torch.equal(got.input_ids, want.input_ids) and torch.equal(got.targets, want.targets)
        if crossed and stream.position.epoch >= 2:
            break
    assert crossed


# ---------------------------------------------------------------------------------------
# the trainer on interleaved data
# ---------------------------------------------------------------------------------------
def interleaved_cfg(make_cfg, data, out, text, tok_dir, loss="all", **train):
    cfg = make_cfg(data, out, **train)
    cfg.model = ModelConfig(**tiny_node("llama", vocab_size=300, max_position_embeddings=128), tokenizer=str(tok_dir))
    cfg.init.name, cfg.init.vocab = "warm", "text+units"
    cfg.data.interleave.ratios.text = 0.3
    cfg.data.interleave.ratios.interleaved = 0.5
    cfg.data.interleave.ratios.speech = 0.5
    cfg.data.interleave.text = [str(text)]
    cfg.data.interleave.loss = loss
    return cfg


@pytest.mark.parametrize("loss", ["all", "units"])
def test_packed_equals_padded_on_interleaved_data(make_cfg, aligned, text_corpus, tmp_path, loss):
    tok_dir = save_tiny_text_tokenizer(tmp_path / "tok")
    tr = Trainer(interleaved_cfg(make_cfg, aligned, tmp_path / "run", text_corpus, tok_dir, loss=loss))
    assert tr.objective.packing == "packed"
    tr.objective.prepare(tmp_path)
    assert json.loads((tmp_path / "mixture.json").read_text())["epoch0_documents"] == tr.stream.source.kinds_of(0)
    tr.model.eval()
    got = [tr.stream._next_window() for _ in range(4)]
    windows, epochs = [w for _, w in got], [e for e, _ in got]
    assert sum(len(w) for w in windows) > len(windows)  # documents share windows
    packed = tr.stream.make_batch(windows, epochs)
    kinds = {int(tr.stream.source.kinds(e)[p.index]) for w, e in zip(windows, epochs) for p in w}
    assert len(kinds) >= 2  # the windows mix streams
    docs = [tr.stream._read(p, e) for w, e in zip(windows, epochs) for p in w]
    padded = pad_documents(docs, tr.contract.layout)
    if loss == "units":
        from twist.train.mixture import unit_targets

        padded = unit_targets(padded, tr.contract.layout)
    assert packed.n_targets == padded.n_targets
    with torch.no_grad():
        lp = tr.objective.forward_loss(packed) / packed.n_targets
        lu = tr.objective.forward_loss(padded) / padded.n_targets
    assert torch.allclose(lp, lu, atol=1e-5, rtol=0), (float(lp), float(lu))


@pytest.mark.slow
def test_interleaved_training_killed_and_resumed_is_bit_identical(make_cfg, aligned, text_corpus, tmp_path):
    tok_dir = save_tiny_text_tokenizer(tmp_path / "tok")
    common = {"max_steps": 8, "valid_every": 0, "save_every": 3}
    ref = tmp_path / "ref"
    Trainer(interleaved_cfg(make_cfg, aligned, ref, text_corpus, tok_dir, **common)).fit()
    run = tmp_path / "run"
    script = write_kill_script(tmp_path / "kill.py", interleaved_cfg(make_cfg, aligned, run, text_corpus, tok_dir,
                                                                      **common))
    kill_then_resume(script, kill_at=5, saved_step=3, run_dir=run)
    assert_bit_identical_runs(ref, run, steps=8)


@pytest.mark.slow
def test_interleaved_training_on_two_gloo_processes_equals_one(make_cfg, aligned, text_corpus, tmp_path):
    from tests.train.test_distributed import run_on_two_gloo
    from twist.train.loggers import read_metrics

    tok_dir = save_tiny_text_tokenizer(tmp_path / "tok")
    Trainer(interleaved_cfg(make_cfg, aligned, tmp_path / "one", text_corpus, tok_dir, micro_batch=2,
                            max_steps=4)).fit()
    run_on_two_gloo(interleaved_cfg(make_cfg, aligned, tmp_path / "two", text_corpus, tok_dir, micro_batch=1,
                                    max_steps=4, strategy="ddp"), tmp_path)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    for key in ("loss", "valid_ppl"):
        a = {r["step"]: r[key] for r in one if key in r}
        b = {r["step"]: r[key] for r in two if key in r}
        assert a.keys() == b.keys() and a, key
        assert all(abs(a[s] - b[s]) <= 1e-5 * max(1.0, abs(a[s])) for s in a), (key, a, b)  # PPL: relative
    wa = load_checkpoint(tmp_path / "one" / "checkpoints" / "last")["model"]
    wb = load_checkpoint(tmp_path / "two" / "checkpoints" / "last")["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
