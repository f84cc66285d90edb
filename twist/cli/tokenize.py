"""``twist-tokenize``: audio -> unit dataset (fit k-means, apply, merge) and legacy converters.

Thin Hydra entry point; the work is in :mod:`twist.tokenizer.pipeline`. See docs/tokenize.md.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from twist.cli.common import save_resolved_config, user_errors
from twist.dist import rank_and_world


@user_errors("twist-tokenize")
def run(cfg: DictConfig) -> None:
    mode = str(cfg.mode)
    out_dir = Path(str(cfg.out_dir))
    rank, _ = rank_and_world()
    if mode == "convert-legacy":
        from twist.tokenizer.kmeans import convert_legacy_kmeans

        if not cfg.convert.src:
            raise ValueError("mode=convert-legacy needs convert.src=<legacy k-means .bin>")
        dst = Path(cfg.convert.dst or out_dir / "kmeans.safetensors")
        q = convert_legacy_kmeans(cfg.convert.src, dst, allow_pickle=bool(cfg.convert.allow_pickle))
        print(f"[twist-tokenize] wrote {dst}: K={q.n_units}, dim={q.dim}, fingerprint {q.fingerprint()}")
        return
    if mode == "convert-fairseq":
        from twist.tokenizer.fairseq_convert import convert_fairseq_hubert

        if not cfg.convert.src:
            raise ValueError("mode=convert-fairseq needs convert.src=<fairseq HuBERT .pt>")
        dst = convert_fairseq_hubert(cfg.convert.src, cfg.convert.dst or out_dir / "hubert_hf",
                                     allow_pickle=bool(cfg.convert.allow_pickle))
        print(f"[twist-tokenize] wrote the HF HuBERT directory {dst}")
        return
    from twist.tokenizer.pipeline import TokenizeSettings, run_tokenize

    settings = TokenizeSettings.from_config(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    if rank == 0 and mode != "merge":
        out_dir.mkdir(parents=True, exist_ok=True)
        save_resolved_config(cfg, out_dir)
    run_tokenize(settings, mode=mode)


@hydra.main(config_path="../configs", config_name="tokenize", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
