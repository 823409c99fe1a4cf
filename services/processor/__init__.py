"""The processor: SWarp mosaics, HiPS and previews of accepted uploads."""

import os

# The HiPS tile threads do many small matrix products; OpenBLAS's own
# threads would fight them for the same cores (measured: 4x slower).
# Set before numpy is first imported by this process.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
