"""Each rater's running order: seeded, shuffled, with one item repeated as an attention check.

The listening-test page computes this order in the browser (``assets/page.js``) and the scorer
recomputes it here to check that a ratings file holds the items its rater was shown. Both
sides use the same few integer steps (a 32-bit FNV-1a hash of ``"<seed>|<rater id>"`` seeds an
xorshift32 generator; Fisher-Yates shuffles), so the two agree exactly; the browser test
checks that they do.

The order, for a rater:

1. with ``prompts_per_rater`` set, a seeded sample of that many prompts (every system's clip
   of a chosen prompt is kept, so within-rater comparisons between systems stay paired);
2. the chosen items, shuffled;
3. with ``repeat``, one item from the first half is played again at a seeded place in the
   second half (far enough from its first hearing that the rater cannot just copy the score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_MASK = 0xFFFFFFFF


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a of the UTF-8 bytes of ``text``."""
    h = 0x811C9DC5
    for b in text.encode("utf-8"):
        h ^= b
        h = (h * 0x01000193) & _MASK
    return h


class XorShift32:
    """Marsaglia's xorshift32: tiny, and the same bit for bit in Python and in JavaScript."""

    def __init__(self, seed: int) -> None:
        self.state = (seed & _MASK) or 0x9E3779B9  # the all-zero state would stay zero forever
        for _ in range(8):  # let nearby seeds drift apart before the first draw
            self.next_u32()

    def next_u32(self) -> int:
        x = self.state
        x ^= (x << 13) & _MASK
        x ^= x >> 17
        x ^= (x << 5) & _MASK
        self.state = x
        return x

    def random(self) -> float:
        """A float in [0, 1) with 32 random bits (exact in IEEE doubles on both sides)."""
        return self.next_u32() / 4294967296.0

    def below(self, n: int) -> int:
        return int(self.random() * n)


def shuffle(xs: list, rng: XorShift32) -> list:
    """Fisher-Yates, in place (and returned), drawing from the end as page.js does."""
    for i in range(len(xs) - 1, 0, -1):
        j = rng.below(i + 1)
        xs[i], xs[j] = xs[j], xs[i]
    return xs


@dataclass(frozen=True)
class Slot:
    """One position in a rater's session."""

    item: str
    repeat: bool = False  # True for the second hearing of the repeated item


def rater_plan(
    seed: int,
    items: Sequence[tuple[str, int]],
    rater: str,
    *,
    prompts_per_rater: int | None = None,
    repeat: bool = True,
) -> list[Slot]:
    """The running order shown to ``rater``.

    Args:
        seed: the test's seed (``build.seed``).
        items: ``(item id, prompt index)`` in the manifest's order.
        rater: the rater id as typed on the page (after trimming).
        prompts_per_rater: rate a seeded sample of this many prompts (None = all prompts).
        repeat: append one repeated item as an attention check.
    """
    rng = XorShift32(fnv1a32(f"{int(seed)}|{rater}"))
    prompts = sorted({p for _, p in items})
    if prompts_per_rater is not None and 0 < prompts_per_rater < len(prompts):
        chosen = set(shuffle(list(prompts), rng)[:prompts_per_rater])
    else:
        chosen = set(prompts)
    order = shuffle([i for i, p in items if p in chosen], rng)
    slots = [Slot(i) for i in order]
    if repeat and order:
        half = (len(order) + 1) // 2
        first = rng.below(half)
        at = half + rng.below(len(order) - half + 1)
        slots.insert(at, Slot(order[first], repeat=True))
    return slots
