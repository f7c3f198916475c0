"""What one run produced, as plain data: the loop and the ensemble return it, the store writes it.

No torch here: the driver and the store handle results without importing it."""
from dataclasses import dataclass, field

from ..study.config import RunSpec


@dataclass
class RunResult:
    """What one run produced: its status, epoch rows, batch arrays and environment."""
    spec: RunSpec
    status: str                      # done | diverged | failed
    epochs: list[dict] = field(default_factory=list)
    batches: dict = field(default_factory=dict)   # epoch, step, loss, accuracy: equal-length arrays
    diagnostics: list[tuple] = field(default_factory=list)  # (epoch, step, layer, metric, value)
    diverged_step: int | None = None
    error: str | None = None
    wall_s: float = 0.0
    env: dict = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.spec.run_id
