"""Which checkpoints hold sane weights, judged by the loss computed with them (no extra pass).

The checkpoint of step ``s`` holds the weights after ``s`` updates, and train step ``s``
(0-based) computes its loss with exactly those weights before it updates them. So the
verdict on checkpoint ``s`` costs nothing: it is the loss the next step computes anyway.
A checkpoint is *sane* when that loss is finite and at most ``factor`` times the reference
loss (the loss of the run's first step, i.e. of its initial weights; carried in every
checkpoint's meta so a resumed run keeps it). The newest sane checkpoint is never removed by
checkpoint rotation (:class:`KeepNewestSane`), and when a run diverges it is the one named
and resumed (``Checkpointer.set_aside_diverged``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

DEFAULT_FACTOR = 100.0  # config.train.sane_loss_factor when a config predates it


def _to_json(loss: float) -> float | str:
    return loss if math.isfinite(loss) else str(loss)  # 'nan', 'inf': strict JSON


@dataclasses.dataclass
class Health:
    """Losses computed with each checkpoint's weights, and the reference they are judged by.

    ``losses``: checkpoint step -> the loss of train step ``step`` (0-based), i.e. computed
    with that checkpoint's weights. ``pending``: checkpoint steps whose loss is not known yet.
    """

    factor: float = DEFAULT_FACTOR
    reference: float | None = None
    losses: dict[int, float] = dataclasses.field(default_factory=dict)
    pending: set[int] = dataclasses.field(default_factory=set)

    def watch(self, step: int) -> None:
        """``step`` is a checkpoint (saved or restored): its loss is recorded when it comes."""
        self.pending.add(int(step))

    def observe(self, index: int, loss: float) -> None:
        """The loss of train step ``index`` (0-based), computed with the weights after
        ``index`` updates. The first loss a run sees is its reference unless one was restored."""
        if self.reference is None:
            self.reference = float(loss)
        if index in self.pending:
            self.pending.discard(index)
            self.losses[index] = float(loss)

    def limit(self) -> float | None:
        return None if self.reference is None else self.factor * self.reference

    def sane(self, step: int) -> bool | None:
        """True/False once the loss of ``step``'s weights is known; None before."""
        loss = self.losses.get(int(step))
        if loss is None:
            return None
        return math.isfinite(loss) and self.reference is not None and loss <= self.limit()

    def newest_sane(self, steps: Iterable[int]) -> int | None:
        return max((s for s in steps if self.sane(s)), default=None)

    def describe(self, step: int) -> str:
        """'step 5: loss 2.1 ok', '... too large', or '... not judged' (loss not seen)."""
        loss = self.losses.get(int(step))
        verdict = {True: "ok", False: "too large", None: "not judged"}[self.sane(step)]
        if loss is not None and not math.isfinite(loss):
            verdict = "non-finite"
        return f"step {step}: " + (verdict if loss is None else f"loss {loss:.4g} {verdict}")

    def rule(self) -> str:
        ref = "unknown" if self.reference is None else f"{self.reference:.4g}"
        return f"finite and <= {self.factor:g} x the first step's loss {ref}"

    def to_meta(self, steps: Iterable[int]) -> dict:
        """JSON for a checkpoint's meta: the reference and the known losses of ``steps``."""
        return {
            "reference_loss": self.reference,
            "factor": self.factor,
            "losses": {str(s): _to_json(self.losses[s]) for s in sorted(steps) if s in self.losses},
        }

    def load(self, meta: dict | None) -> None:
        """Takes the reference and the recorded losses from a restored checkpoint's meta."""
        if not meta:
            return  # a checkpoint written before this guard: the first loss seen is the reference
        if meta.get("reference_loss") is not None:
            self.reference = float(meta["reference_loss"])
        for step, loss in meta.get("losses", {}).items():
            self.losses.setdefault(int(step), float(loss))


class KeepNewestSane:
    """orbax preservation policy: keeps the newest sane checkpoint on disk.

    Combined with ``LatestN(max_to_keep)``; in a healthy run the newest sane checkpoint is
    the second newest, which ``LatestN`` keeps anyway for ``max_to_keep >= 2``.
    """

    def __init__(self, health: Health):
        self.health = health

    def should_preserve(self, checkpoints, *, context=None) -> list[bool]:
        del context
        newest = self.health.newest_sane(c.step for c in checkpoints)
        return [c.step == newest for c in checkpoints]
