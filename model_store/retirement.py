"""Retire superseded weights files from the working tree, and restore them from git history when a stream needs them.

Why: the repository's weights budget (``registry.WEIGHTS_BUDGET_MIB``) covers the files a checkout carries, and
every release used to add files without ever removing one, because stored streams name their weights by digest.
Most of those files are *superseded*: no model's newest version serves them, only streams made before the upgrade
still name them. Retiring such a file removes it from the tree but never from the project:

* its manifest entries stay and gain ``"retired": {"commit": <sha>, "path": <repo path>}``, a commit that holds
  the exact bytes (checked against the manifest's sha256 before anything is deleted);
* a stream naming it is still recognised, and refused with :class:`~model_store.errors.WeightsRetiredError`
  (HTTP 410 ``weights_retired``) whose message is the restore command, never as unknown weights;
* ``python -m model_store.retirement restore [MODEL [VERSION]]`` brings the bytes back from git (sha256 checked)
  into any weights root, after which those streams decode bit-exactly as before (tests/test_golden_streams.py
  decodes every golden stream of a retired file that way).

Only files that no newest version serves can be retired, so what the service loads at start never changes, and
the default model's previous version is kept one release longer (:func:`previous_default_files`).

    python -m model_store.retirement list                      what is retired, and what could be
    python -m model_store.retirement retire [--dry-run]        retire every superseded file (after a release commit;
                                                               release.sh lists the candidates)
    python -m model_store.retirement restore [MODEL [VERSION]] [--root DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from model_store import model_card, registry
from model_store.errors import WeightsFileError

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class WeightsFile:
    """One stored file and every (version, quality) whose manifest names it."""

    path: Path  # where it lives (or lived) under the weights root
    sha256: str
    names: tuple  # ((model_id, version, quality), ...)
    retired: Optional[dict]

    @property
    def label(self) -> str:
        """``model version q…`` per version that names the file; runs of consecutive qualities as ``q1-q255`` (a
        variable-rate file is named by every code of its knob)."""
        groups: Dict[tuple, List[int]] = {}
        for m, v, q in self.names:
            groups.setdefault((m, v), []).append(int(q))
        return ", ".join(f"{m} {v} {_quality_runs(qs)}" for (m, v), qs in groups.items())


def _quality_runs(qualities: List[int]) -> str:
    """``[1, 3, 4, 5, 9]`` -> ``q1, q3-q5, q9``."""
    runs: List[List[int]] = []
    for q in sorted(set(qualities)):
        if runs and q == runs[-1][-1] + 1:
            runs[-1].append(q)
        else:
            runs.append([q])
    return ", ".join(", ".join(f"q{q}" for q in r) if len(r) < 3 else f"q{r[0]}-q{r[-1]}" for r in runs)


def weights_files(root: Path = registry.WEIGHTS_ROOT) -> Dict[Path, WeightsFile]:
    """Every file the manifests under ``root`` name, with the entries that name it."""
    registry.refresh()
    grouped: Dict[Path, List[registry.WeightsEntry]] = {}
    for versions in registry._all_versions(root).values():
        for entries in versions.values():
            for entry in entries.values():
                grouped.setdefault(entry.path, []).append(entry)
    return {
        path: WeightsFile(
            path=path,
            sha256=entries[0].sha256,
            names=tuple(sorted((e.model_id, e.version, e.quality) for e in entries)),
            retired=next((e.retired for e in entries if e.retired), None),
        )
        for path, entries in sorted(grouped.items())
    }


def previous_default_files(root: Path = registry.WEIGHTS_ROOT) -> set:
    """Files of the default model's version before its newest: kept installed, not superseded.

    Why: the default model's streams are the ones clients store in bulk, and the version a release just replaced
    made all of them until that release; retiring it at once would answer every one of them 410 until an operator
    restores it. One version back is kept (its streams decode as they did); the release after retires it. Only for
    a default the root names (``default.json``), not one inferred from what happens to be installed."""
    if not (root / "default.json").is_file():
        return set()
    versions = registry._all_versions(root).get(registry.default_model(root), {})
    if len(versions) < 2:
        return set()
    previous = sorted(versions, key=registry._version_key)[-2]
    return {entry.path for entry in versions[previous].values()}


def superseded(root: Path = registry.WEIGHTS_ROOT) -> List[WeightsFile]:
    """Files present under ``root`` that no model's newest version serves, that are not the default model's previous
    version (:func:`previous_default_files`) and that are not retired yet (what ``retire`` would remove; a restored
    file is left where a restore put it)."""
    served = {entry.path for entries in registry._index(root).values() for entry in entries.values()}
    served |= previous_default_files(root)
    return [f for path, f in weights_files(root).items() if path not in served and path.is_file() and not f.retired]


def _git(repo: Path, *args: str) -> bytes:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout
    except FileNotFoundError as exc:
        raise WeightsFileError("git is not installed; it is needed to retire or restore weights") from exc
    except subprocess.CalledProcessError as exc:
        raise WeightsFileError(f"git {' '.join(args)} failed: {exc.stderr.decode(errors='replace').strip()}") from exc


def _blob_at(repo: Path, commit: str, repo_path: str, sha256: str) -> bytes:
    """The bytes ``repo_path`` had at ``commit``, refused unless they hash to ``sha256``."""
    data = _git(repo, "show", f"{commit}:{repo_path}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise WeightsFileError(
            f"{repo_path} at {commit[:12]} has sha256 {actual[:12]}…, the manifest says {sha256[:12]}…"
        )
    return data


def _rewrite_manifests(root: Path, marks: Dict[Path, dict]) -> None:
    """Add ``retired`` to every manifest item whose file is in ``marks`` (same JSON layout the exporter writes),
    and the matching line to that version's model card."""
    for manifest_path in sorted(root.glob("*/*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        changed = False
        for item in manifest["qualities"].values():
            path = registry.weights_path(manifest_path.parent, item)
            if path in marks and item.get("retired") != marks[path]:
                item["retired"] = marks[path]
                changed = True
        if changed:
            manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            model_card.add_retired_note(manifest_path.parent)
    registry.refresh()


def retire(root: Path = registry.WEIGHTS_ROOT, repo: Path = REPO_ROOT, dry_run: bool = False, log=print) -> List[Path]:
    """Retire every superseded file under ``root``: record a commit holding its exact bytes, then delete it.

    The commit is ``HEAD`` of ``repo``; a file HEAD does not hold byte for byte (never committed, or changed) is
    refused, because deleting it would lose it. Returns the retired paths.
    """
    head = _git(repo, "rev-parse", "HEAD").decode().strip()
    marks: Dict[Path, dict] = {}
    for f in superseded(root):
        try:
            repo_path = f.path.resolve().relative_to(repo.resolve()).as_posix()
        except ValueError:
            raise WeightsFileError(f"{f.path} is outside the repository {repo}; only its history can keep it") from None
        _blob_at(repo, head, repo_path, f.sha256)
        marks[f.path] = {"commit": head, "path": repo_path}
        log(
            f"{'would retire' if dry_run else 'retire'} {repo_path} ({f.path.stat().st_size / 2**20:.1f} MiB; {f.label})"
        )
    if not dry_run and marks:
        _rewrite_manifests(root, marks)
        for path in marks:
            path.unlink()
    return sorted(marks)


def restore(
    root: Path = registry.WEIGHTS_ROOT,
    repo: Path = REPO_ROOT,
    model: Optional[str] = None,
    version: Optional[str] = None,
    log=print,
) -> List[Path]:
    """Write back every retired file under ``root`` (optionally of one model / version) from git, sha256 checked.

    ``root`` may be a copy of the weights tree (an image's read-only tree is copied first); the bytes always come
    from ``repo``'s history, at the commit each manifest records. Returns the paths written.
    """
    written = []
    for f in weights_files(root).values():
        if not f.retired or f.path.is_file():
            continue
        if model and not any(m == model and (version is None or v == version) for m, v, _ in f.names):
            continue
        data = _blob_at(repo, f.retired["commit"], f.retired["path"], f.sha256)
        f.path.parent.mkdir(parents=True, exist_ok=True)
        f.path.write_bytes(data)
        f.path.chmod(0o644)
        written.append(f.path)
        log(f"restored {f.retired['path']} ({len(data) / 2**20:.1f} MiB; {f.label})")
    if written and root.resolve() == registry.WEIGHTS_ROOT.resolve():
        log("restored files are untracked on purpose: do not commit them (`git status` lists them)")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_store.retirement", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=registry.WEIGHTS_ROOT, help="weights root (default: the repo's)")
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="git repository holding the history")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="retired files, and the superseded ones retire would remove")
    retire_cmd = sub.add_parser("retire", help="retire every superseded file")
    retire_cmd.add_argument("--dry-run", action="store_true")
    restore_cmd = sub.add_parser("restore", help="bring retired files back from git history")
    restore_cmd.add_argument("model", nargs="?")
    restore_cmd.add_argument("version", nargs="?")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for f in weights_files(args.root).values():
                if f.retired:
                    state = "restored" if f.path.is_file() else "retired"
                    print(f"{state:9} {f.retired['path']} @ {f.retired['commit'][:12]} ({f.label})")
            for f in superseded(args.root):
                print(f"{'superseded':9} {f.path.relative_to(args.root)} ({f.label})")
        elif args.command == "retire":
            paths = retire(args.root, args.repo, dry_run=args.dry_run)
            print(f"{len(paths)} file(s) {'would be ' if args.dry_run else ''}retired", file=sys.stderr)
        else:
            paths = restore(args.root, args.repo, args.model, args.version)
            print(f"{len(paths)} file(s) restored", file=sys.stderr)
    except WeightsFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
