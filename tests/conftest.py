"""Every cache the lab or its libraries write goes to a temporary folder during tests."""

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="mtplab-test-cache-")
for var, sub in (("MTPLAB_CACHE_DIR", "datasets"), ("TIKTOKEN_CACHE_DIR", "tiktoken"),
                 ("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("MPLCONFIGDIR", "matplotlib")):
    os.environ.setdefault(var, os.path.join(_CACHE, sub))
os.environ.setdefault("MPLBACKEND", "Agg")
