"""What the process-pool's fork server imports once, so that every worker forked from it
shares those pages instead of importing them again (~300 MB a worker with torch).

torch imports torch._dynamo, with sympy, on the first optimizer a process builds (~90 MB);
importing it here makes it shared too. gc.freeze() then keeps the collector from touching
(and so copying) the inherited objects in every worker.
"""
import gc

import torch._dynamo  # noqa: F401 -- the optimizer's first-use import, shared from here

# what a pool worker unpickles (execute_unit, probe, _init_worker) and the training code it runs
from ..train import ensemble, loop  # noqa: F401
from . import execution, pool  # noqa: F401

gc.freeze()
