"""For tests that run the deployment's own entry points (``docker/entrypoint.py``, ``python -m service``) in
subprocesses on the service tests' tiny model: those processes must know the test model family, as an installed
family would be registered. A ``sitecustomize`` on ``PYTHONPATH`` does that, in service processes only (the
entry point's supervisor never loads a model, and importing torch there would only slow it down)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_HOOK = '''import sys
if sys.argv[:1] == ["-m"] or "--worker-fd" in sys.argv:  # python -m service, or an entry point worker
    sys.path.insert(0, {tests!r})
    import service_fixtures
    service_fixtures.register_test_preset()
'''


def write_preset_hook(folder: Path) -> Path:
    """Write ``folder/sitecustomize.py`` registering the ``tinytest`` family; put ``folder`` on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_HOOK.format(tests=str(ROOT / "tests")))
    return folder
