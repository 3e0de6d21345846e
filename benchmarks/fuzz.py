"""A fuzz campaign of fixed length against the bitstream decoder, with its figures on record.

    python benchmarks/fuzz.py [--runs 20000] [--merge]

Runs ``tests/fuzz/bitstream_target.py`` (atheris) for ``--runs`` inputs on a scratch copy of the committed corpus
and writes executions, time, executions/s, coverage, corpus size and the crashers count to
``benchmarks/results/fuzz.json`` (quoted in the README's "Reliability" section). ``--merge`` folds the new
coverage-increasing inputs back into ``tests/fuzz/corpus`` (libFuzzer -merge=1 keeps a minimal set). A crash
fails the script and leaves ``crash-*`` in the scratch folder it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "tests" / "fuzz"
TARGET = FUZZ / "bitstream_target.py"
RESULTS = ROOT / "benchmarks" / "results" / "fuzz.json"


def files(folder: Path) -> list:
    return [p for p in folder.iterdir() if p.is_file() and p.name != "README.md"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=20000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--merge", action="store_true", help="merge new inputs into tests/fuzz/corpus")
    args = p.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="lic-fuzz-"))
    corpus = scratch / "corpus"
    shutil.copytree(FUZZ / "corpus", corpus)
    flags = [f"-runs={args.runs}", f"-seed={args.seed}", "-timeout=10", "-rss_limit_mb=3072"]
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(TARGET), *flags, str(corpus)], cwd=scratch, capture_output=True, text=True
    )
    seconds = time.monotonic() - t0
    log = done.stderr
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", log)
    executions = re.search(r"Done (\d+) runs", log)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "target": str(TARGET.relative_to(ROOT)),
        "executions": int(executions.group(1)) if executions else None,
        "seconds": round(seconds, 1),
        "executions_per_s": round(int(executions.group(1)) / seconds, 1) if executions else None,
        "coverage_edges": int(coverage[-1][0]) if coverage else None,
        "coverage_features": int(coverage[-1][1]) if coverage else None,
        "corpus_committed": len(files(FUZZ / "corpus")),
        "corpus_after_run": len(files(corpus)),
        "crashers_committed": len(files(FUZZ / "crashers")),
        "crashes_found": len(list(scratch.glob("crash-*"))) + len(list(scratch.glob("timeout-*"))),
        "exit_code": done.returncode,
    }
    if args.merge and done.returncode == 0:
        merged = scratch / "merged"
        shutil.copytree(FUZZ / "corpus", merged)
        subprocess.run(
            [sys.executable, str(TARGET), "-merge=1", str(merged), str(corpus)], cwd=scratch, capture_output=True
        )
        for path in files(merged):
            shutil.copy(path, FUZZ / "corpus" / path.name)
        report["corpus_committed"] = len(files(FUZZ / "corpus"))
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if done.returncode != 0:
        print(f"the fuzzer failed (exit {done.returncode}); inputs and log in {scratch}", file=sys.stderr)
        (scratch / "fuzz.log").write_text(log)
        return 1
    shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
