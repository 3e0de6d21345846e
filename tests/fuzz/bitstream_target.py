"""Coverage-guided fuzzing of the container parser and the decoder (atheris / libFuzzer).

    python tests/fuzz/bitstream_target.py -runs=20000 -timeout=10 -rss_limit_mb=3072 CORPUS_COPY tests/fuzz/corpus

The first directory receives new inputs, so point it at a scratch copy and merge back with -merge=1. The
invariant and the input format are in ``harness.py``; a failing input is saved as ``crash-*`` in the working
directory: minimise it (-minimize_crash=1), fix the bug, and add it to ``crashers/`` with a line in their README.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["model_store"]):
    import harness


def test_one_input(data: bytes) -> None:
    harness.check(data)


if __name__ == "__main__":
    harness.codec(), harness.seed_streams()  # build once, outside the timed runs
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
