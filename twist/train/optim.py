"""The optimiser of the TWIST recipe: AdamW (paper appendix A.1), weight decay on matrices only."""

from __future__ import annotations

import torch

from twist.train.config import OptimConfig


def build_optimizer(model: torch.nn.Module, o: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over ``model``'s trainable parameters; decay on matrices, not on biases or norms;
    fused kernels on CUDA (``optim.fused=auto``). The learning rate is set by the schedule."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": float(o.weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda" if o.fused == "auto" else o.fused == "true"
    return torch.optim.AdamW(groups, lr=1e-8, betas=(float(o.betas[0]), float(o.betas[1])), eps=float(o.eps),
                             fused=fused or None)
