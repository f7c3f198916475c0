"""A user's activation as data: what it is (an expression or `module:attr`), its fingerprint and
what is known of it. Plain data, no torch: the driver, the store and every worker read it."""
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Definition:
    """An activation from the user: an expression or a Python object, and what to know of it."""
    kind: str                 # "expr" or "object"
    text: str                 # the canonical expression, or "module:attr"
    fingerprint: str = ""     # sha256 of the expression text or the object's source: in the run id
    init: str = ""            # what init = "auto" uses ("": PyTorch's default)
    family: str = ""          # a family name for reports
    range: tuple | None = None  # (low, high) of the output, for the logit loss floor
    range_estimated: bool = False  # range measured on a grid, not given
    elementwise: bool = False  # parameter-free and elementwise on a probe: the ensemble runs it
    path: str = ""            # the folder the module was imported from: where, not what

    def identity(self) -> dict:
        """What decides the numbers: part of the run id."""
        return {"kind": self.kind, "text": self.text, "fingerprint": self.fingerprint, "init": self.init}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Definition":
        d = json.loads(text)
        return cls(**{**d, "range": tuple(d["range"]) if d.get("range") else None})
