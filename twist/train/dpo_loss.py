"""Preference losses on sequence log-probabilities: DPO (sigmoid), IPO and length-normalised DPO.

Direct Preference Optimization (Rafailov et al., 2023) trains a policy on pairs (prompt,
chosen, rejected) against a frozen reference: with ``delta = (log pi(c) - log ref(c)) -
(log pi(r) - log ref(r))``, the sigmoid loss is ``-log sigmoid(beta * delta)``. Slam (Maimon
et al., 2025) applies it to speech continuations with ``beta = 0.1``. Two variants:

* ``ipo`` (Azar et al., 2023, Eq. 17): ``(delta' - 1 / (2 beta))^2`` where ``delta'`` uses
  per-token mean log-ratios, the form TRL implements and the IPO authors report;
* ``sigmoid_norm``: the sigmoid loss on per-token mean log-ratios, so a long continuation
  does not weigh more than a short one.

The names and the metrics (``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies``,
``rewards/margins``, ``logps/chosen``, ``logps/rejected``) are TRL's, so dashboards match;
twist's values equal TRL's ``DPOTrainer`` on the same model and pairs (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "ipo", "sigmoid_norm")


@dataclass
class PairLogps:
    """Summed completion log-probabilities of a batch of pairs and the completion lengths."""

    chosen: torch.Tensor  # [n_pairs]
    rejected: torch.Tensor  # [n_pairs]
    chosen_tokens: torch.Tensor  # [n_pairs] tokens scored in the chosen completion
    rejected_tokens: torch.Tensor  # [n_pairs]


def preference_loss(policy: PairLogps, reference: PairLogps, *, beta: float,
                    loss_type: str = "sigmoid") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair losses (summed over the batch, not averaged) and the per-pair metric sums.

    Returns:
        ``(loss_sum, sums)``: divide both by the number of pairs of the global batch (the
        trainer does, over every micro-batch and rank) to get TRL's means.
    """
    chosen_ratio = policy.chosen - reference.chosen.to(policy.chosen.dtype)
    rejected_ratio = policy.rejected - reference.rejected.to(policy.rejected.dtype)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    elif loss_type in ("ipo", "sigmoid_norm"):
        delta = (chosen_ratio / policy.chosen_tokens.clamp(min=1) - rejected_ratio / policy.rejected_tokens.clamp(min=1))
        losses = (delta - 1 / (2 * beta)) ** 2 if loss_type == "ipo" else -F.logsigmoid(beta * delta)
    else:
        raise ValueError(f"unknown preference loss {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    chosen_rewards = beta * chosen_ratio.detach()
    rejected_rewards = beta * rejected_ratio.detach()
    sums = {
        "rewards/chosen": chosen_rewards.sum(),
        "rewards/rejected": rejected_rewards.sum(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().sum(),
        "rewards/margins": (chosen_rewards - rejected_rewards).sum(),
        "logps/chosen": policy.chosen.detach().sum(),
        "logps/rejected": policy.rejected.detach().sum(),
    }
    return losses.sum(), sums
