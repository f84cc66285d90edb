"""The unit HiFi-GAN generator: output length, duration predictor, errors, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.vocoder.conftest import K, make_contract, tiny_generator_cfg
from twist.vocoder.generator import GeneratorConfig, build_generator, duration_loss, durations_from_log
from twist.vocoder.infer import Vocoder


@pytest.mark.parametrize(
    "rates,kernels,frame_rate",
    [((4, 4, 5, 4), (8, 8, 11, 8), 50.0), ((4, 4, 5, 4, 2), (8, 8, 11, 8, 4), 25.0)],
)
def test_output_length_is_sum_of_durations_times_hop(rates, kernels, frame_rate):
    torch.manual_seed(0)
    gen = build_generator(tiny_generator_cfg(rates, kernels))
    assert gen.hop == int(16000 / frame_rate)
    voc = Vocoder(gen, make_contract(frame_rate=frame_rate))
    rng = np.random.default_rng(0)
    for n in (1, 7, 23):
        units = rng.integers(0, K, n)
        durs = rng.integers(0, 5, n)
        durs[0] = max(durs[0], 1)
        wav = voc.synthesize(units, durs)
        assert wav.dtype == np.float32 and wav.ndim == 1
        assert len(wav) == int(durs.sum()) * gen.hop
    # predicted durations: the output is sum(predicted) * hop
    units = rng.integers(0, K, 9)
    _, pred = voc.frame_units(units, None, predict_durations=True)
    assert (pred >= 1).all()
    assert len(voc.synthesize(units)) == int(pred.sum()) * gen.hop


def test_duration_rounding_rule():
    d = torch.tensor([0.0, 1.0, 2.0, 5.0, 30.0])
    assert durations_from_log(torch.log(d + 1)).tolist() == [1, 1, 2, 5, 30]  # 0 is kept >= 1
    assert durations_from_log(torch.tensor([-3.0, math.log(2.4 + 1), math.log(2.6 + 1)])).tolist() == [1, 2, 3]


def test_duration_predictor_loss_falls_on_a_tiny_set():
    torch.manual_seed(0)
    gen = build_generator(tiny_generator_cfg())
    rng = np.random.default_rng(0)
    units = torch.from_numpy(rng.integers(0, K, (6, 15)))
    durs = units % 4 + 1  # a learnable rule: duration depends on the unit
    mask = torch.ones_like(units, dtype=torch.bool)
    mask[3:, 10:] = False
    params = list(gen.dict.parameters()) + list(gen.dur_predictor.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(150):
        loss = duration_loss(gen.dur_predictor, gen.embed(units), durs, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    gen.eval()
    pred = gen.predict_durations(units)
    assert (pred[mask] == durs[mask]).float().mean() > 0.9


def test_unit_id_at_or_above_num_embeddings_is_a_clear_error():
    gen = build_generator(tiny_generator_cfg())
    voc = Vocoder(gen, make_contract())
    with pytest.raises(ValueError, match=rf"unit id {K} is outside.*num_embeddings={K}"):
        voc.synthesize(np.array([0, 1, K]), np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="unit id -1"):
        voc.synthesize(np.array([-1, 1]), np.array([1, 1]))
    with pytest.raises(ValueError, match="empty"):
        voc.synthesize(np.array([], dtype=np.int64))


def test_batch_synthesis_equals_one_by_one_for_equal_lengths_and_longest():
    torch.manual_seed(0)
    voc = Vocoder(build_generator(tiny_generator_cfg(dur=False)), make_contract(dedup=False))
    rng = np.random.default_rng(1)
    items = [rng.integers(0, K, n) for n in (10, 10, 4)]
    batch = voc.synthesize_batch(items)
    for i in (0, 1):  # the longest items see no padding: identical to unbatched
        np.testing.assert_allclose(batch[i], voc.synthesize(items[i]), atol=1e-6)
    assert len(batch[2]) == 4 * voc.hop


def test_speaker_embedding_changes_output():
    torch.manual_seed(0)
    cfg = tiny_generator_cfg(multispkr=True, num_speakers=3)
    gen = build_generator(cfg)
    assert gen.cfg.model_in_dim == 16 and gen.spkr.weight.shape == (3, 8)
    voc = Vocoder(gen, make_contract())
    u, d = np.array([1, 2, 3]), np.array([2, 2, 2])
    a, b = voc.synthesize(u, d, speaker=0), voc.synthesize(u, d, speaker=2)
    assert np.abs(a - b).max() > 0  # (tiny at N(0, 0.01) init, but the speaker row reaches the output)
    np.testing.assert_array_equal(a, voc.synthesize(u, d, speaker=0))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="same length"):
        GeneratorConfig(num_embeddings=4, upsample_rates=[2, 2], upsample_kernel_sizes=[4])
    with pytest.raises(ValueError, match="model_in_dim"):
        GeneratorConfig(num_embeddings=4, embedding_dim=8, model_in_dim=16, upsample_initial_channel=32,
                        upsample_rates=[2], upsample_kernel_sizes=[4])
    with pytest.raises(ValueError, match="unknown generator config"):
        GeneratorConfig.from_dict({"num_embedings": 3})
