"""The INT8 export's choices, in a module without torch.

`finsent-train --help` and its argument errors must stay fast and work
without the `train` extra, so the CLI takes its choices from here rather
than from `training.export`, which imports torch.
"""

from __future__ import annotations

INT8_METHODS = ("dynamic-smooth", "weight-only", "dynamic")
# Arithmetic of weight-only INT8's MatMulNBits kernels, as its `accuracy_level` (0: unset, fp32; 4: int8).
INT8_COMPUTE = {"fp32": 0, "int8": 4}
