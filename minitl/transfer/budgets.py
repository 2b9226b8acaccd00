"""Each method's training budget, fixed in advance on development data."""

import math
from dataclasses import dataclass

from minitl.checks import check_number, is_int, positive_int
from minitl.training import SCHEDULES


@dataclass(frozen=True)
class Budget:
    """A method's training budget, fixed in advance (chosen on a development draw, never on a test set).

    A run takes at least `steps` optimizer steps and at least `epochs` passes over its
    training set, and at most `max_steps` (so a large training set gets the passes it needs,
    a small one the steps it needs). `schedule="cosine"` decays the learning rates to zero
    over the run, so the last steps settle instead of hopping around the optimum.
    """
    steps: int = 200
    epochs: float = 0.0
    max_steps: int = 0        # 0: no more than `steps`
    batch_size: int = 32
    lr: float = 1e-3          # Adam, every layer when training from scratch
    head_lr: float = 1e-2     # Adam, a new head
    backbone_lr_scale: float = 0.1  # fine-tuning: the backbone moves 10x slower than the head
    schedule: str = "constant"

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            positive_int("Budget", name, getattr(self, name))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Budget: schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not is_int(self.max_steps) or self.max_steps < 0:
            raise ValueError(f"Budget: max_steps must be an integer >= 0 (0: no more than steps), got "
                             f"{self.max_steps!r}")
        if 0 < self.max_steps < self.steps:  # steps_for would quietly run `steps`, past the cap
            raise ValueError(f"Budget: max_steps={self.max_steps} is below steps={self.steps}: a run takes at least "
                             f"`steps` and at most `max_steps` (0: no more than steps)")
        for name in ("steps", "batch_size", "max_steps"):  # np.int64(3) is welcome, and is kept as 3
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("epochs", "lr", "head_lr", "backbone_lr_scale"):
            check_number("Budget", name, getattr(self, name))

    def steps_for(self, n):
        """How many steps a run on n training examples takes."""
        n = positive_int("Budget.steps_for", "the number of training examples", n)
        passes = math.ceil(self.epochs * n / min(self.batch_size, n)) if self.epochs else 0
        return min(max(self.steps, passes), max(self.max_steps, self.steps))


# Each method's budget, chosen on development data (minitl.data.development_data: the glyphs drawn
# with seed 1, half of the digits' target pool), never on a reported test set, so that every method
# has converged there: twice the steps changes neither its development accuracy nor its training
# loss much (benchmarks/budgets.py --check measures it; benchmarks/README.md has the numbers). All
# decay their learning rates with a cosine. Budgets differ by method: a head reading cached
# features costs microseconds a step, and the linear probe is the same computation, so it gets the
# same budget. The digits need more steps than their few examples would suggest (8x8 images, a
# small pool), so they have budgets of their own.
def _by_method(scratch, head, fine_tune):
    """One budget per method: the probe and the proxy share the head's, the fine-tunings theirs."""
    return {"scratch": scratch, "linear_probe": head, "proxy": head, "fine_tune": fine_tune,
            "fine_tune+feature_mse": fine_tune, "fine_tune+l2sp": fine_tune}


BUDGETS = _by_method(
    scratch=Budget(steps=200, epochs=25, max_steps=1000, lr=4e-3, schedule="cosine"),
    head=Budget(steps=400, epochs=50, max_steps=1600, head_lr=0.1, schedule="cosine"),
    fine_tune=Budget(steps=200, epochs=12, max_steps=800, head_lr=2e-2, schedule="cosine"))
DIGITS_BUDGETS = _by_method(
    scratch=Budget(steps=400, epochs=50, max_steps=1600, lr=4e-3, schedule="cosine"),
    head=Budget(steps=3200, head_lr=0.1, schedule="cosine"),
    fine_tune=Budget(steps=400, epochs=25, max_steps=1600, head_lr=2e-2, schedule="cosine"))


def budgets_for(dataset):
    """The budgets of a dataset's methods, by its name: the digits have their own; the glyphs' suit the
    photos too (doubling them moved the photos' development accuracy by 0.8 points at most)."""
    return DIGITS_BUDGETS if dataset.startswith("digits") else BUDGETS
