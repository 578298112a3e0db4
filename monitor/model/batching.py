"""How a batch of texts is cut and padded before it reaches onnxruntime.

Kept apart from the session code so that settings can name the defaults without importing numpy or
onnxruntime (the CLI's argument errors and `--help` should not wait for them).
"""

from __future__ import annotations

# Token lengths are padded up to a multiple of this, so onnxruntime sees few distinct shapes.
PAD_MULTIPLE = 8
# Texts per length-sorted chunk of a batch (0 = one chunk); ModelSettings.bucket_size defaults to it.
BUCKET_SIZE = 16
