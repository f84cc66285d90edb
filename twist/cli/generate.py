"""``twist-generate``: continue spoken prompts with a speech LM and vocode the result.

prompt audio (~3 s) -> units (the tokenizer) -> speech-LM sampling -> units -> vocoder -> wav,
with the transcript when an ASR backend is configured. The library does the work
(:mod:`twist.generate`); see ``docs/vocoder.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from twist.cli.common import save_resolved_config, user_errors


@hydra.main(config_path="../configs", config_name="generate", version_base="1.3")
@user_errors("twist-generate")
def main(cfg: DictConfig) -> None:
    import torch

    from twist.asr import get_asr
    from twist.atomic import atomic_write_text
    from twist.generate import SamplingConfig, generate_continuations, read_prompts
    from twist.lm import load_speech_lm
    from twist.rejects import RejectsLog
    from twist.tokenizer import UnitTokenizer
    from twist.vocoder import load_vocoder

    for key in ("lm", "tokenizer_dir", "vocoder"):
        if not cfg.get(key):
            raise ValueError(f"twist-generate needs {key}=<path>")
    if not cfg.prompts:
        raise ValueError("twist-generate needs prompts=[file_or_dir,...]")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, out)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    sampling = SamplingConfig.from_mapping(OmegaConf.to_container(cfg.sampling, resolve=True))
    vocoder, vcontract = load_vocoder(cfg.vocoder, device=cfg.device)
    tok = UnitTokenizer.load(cfg.tokenizer_dir)
    # the LM's contract is checked against the vocoder's inside generate_continuations (dedup-aware)
    lm, lm_contract = load_speech_lm(cfg.lm, device=cfg.device, dtype=cfg.dtype)
    asr = get_asr(OmegaConf.to_container(cfg.asr, resolve=True))
    prompts_in = [cfg.prompts] if isinstance(cfg.prompts, str) else list(cfg.prompts)
    with RejectsLog(out / "rejects.jsonl", stage="generate") as rej:
        prompts = read_prompts(prompts_in, tok.sample_rate, rejects=rej)
        if cfg.limit:
            prompts = prompts[: int(cfg.limit)]
        records = generate_continuations(
            lm=lm,
            lm_contract=lm_contract,
            tokenizer=tok,
            vocoder=vocoder,
            prompts=prompts,
            sampling=sampling,
            prompt_seconds=cfg.prompt_seconds,
            out_dir=out,
            asr=asr,
            names={"lm": f"speech LM {cfg.lm}", "vocoder": f"vocoder {cfg.vocoder}", "tokenizer": f"tokenizer {cfg.tokenizer_dir}"},
            rejects=rej,
        )
    # transcripts.jsonl gathers every finished prompt (also those of earlier, resumed runs)
    rows = []
    for p in sorted(out.glob("*.json")):
        rec = json.loads(p.read_text())
        if isinstance(rec, dict) and "transcript" in rec:
            rows.append(json.dumps({"id": rec["id"], "transcript": rec["transcript"],
                                    "transcript_continuation": rec.get("transcript_continuation", "")}))
    if rows:
        atomic_write_text(out / "transcripts.jsonl", "\n".join(rows) + "\n")
    print(f"[twist-generate] {len(records)} new continuations ({rej.count} prompts rejected) -> {out}")


if __name__ == "__main__":
    main()
