"""Render a kustomization to a list of manifests: ``kubectl kustomize`` when it is installed, else a small renderer.

The built-in renderer implements only what this repository's kustomizations use, and refuses anything else
rather than render it wrongly: ``resources`` (files and kustomization folders), ``namespace``, ``images``,
``patches`` with a ``target`` and an inline JSON 6902 patch, and ``configMapGenerator`` (``files``/``literals``)
with ``generatorOptions.disableNameSuffixHash: true``. A test renders every kustomization both ways and compares
them when kubectl is present.

    python -m deploy.kustomize k8s/overlays/gpu [--engine python|kubectl]     prints the YAML stream
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

Manifest = Dict[str, Any]
SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "patches", "configMapGenerator", "generatorOptions"}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class UnsupportedKustomization(ValueError):
    pass


def kubectl() -> Optional[str]:
    path = shutil.which("kubectl")
    if not path:
        return None
    try:
        subprocess.run([path, "kustomize", "--help"], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return path


def render(path: Path, engine: str = "auto") -> List[Manifest]:
    """Manifests of the kustomization in ``path`` (``engine``: auto, kubectl or python)."""
    path = Path(path)
    if engine in ("auto", "kubectl"):
        exe = kubectl()
        if exe:
            out = subprocess.run([exe, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                raise UnsupportedKustomization(f"kubectl kustomize {path} failed: {out.stderr.strip()}")
            return [doc for doc in yaml.safe_load_all(out.stdout) if doc]
        if engine == "kubectl":
            raise FileNotFoundError("kubectl is not installed")
    return render_python(path)


# -- the built-in renderer -------------------------------------------------------------------------------------
def render_python(path: Path) -> List[Manifest]:
    path = Path(path)
    kfile = next((path / n for n in ("kustomization.yaml", "kustomization.yml", "Kustomization") if (path / n).is_file()), None)
    if kfile is None:
        raise UnsupportedKustomization(f"{path} has no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise UnsupportedKustomization(f"{kfile}: fields not supported by the built-in renderer: {sorted(unknown)}")
    out: List[Manifest] = []
    for entry in spec.get("resources", []):
        target = (path / entry).resolve()
        if target.is_dir():
            out.extend(render_python(target))
        else:
            out.extend(doc for doc in yaml.safe_load_all(target.read_text()) if doc)
    out.extend(_generate_configmaps(path, spec))
    for patch in spec.get("patches", []):
        _apply_patch(path, out, patch)
    for image in spec.get("images", []):
        _set_image(out, image)
    if spec.get("namespace"):
        for doc in out:
            doc.setdefault("metadata", {})["namespace"] = spec["namespace"]
    return out


def _generate_configmaps(path: Path, spec: dict) -> List[Manifest]:
    options = spec.get("generatorOptions", {})
    out = []
    for gen in spec.get("configMapGenerator", []):
        if not (gen.get("options", {}).get("disableNameSuffixHash") or options.get("disableNameSuffixHash")):
            raise UnsupportedKustomization("configMapGenerator needs disableNameSuffixHash: true (no name hashes here)")
        if set(gen) - {"name", "files", "literals", "options"}:
            raise UnsupportedKustomization(f"configMapGenerator fields {sorted(set(gen))} not supported")
        data: Dict[str, str] = {}
        for item in gen.get("files", []):
            key, _, rel = item.rpartition("=") if "=" in item else ("", "", item)
            data[key or Path(rel).name] = (path / rel).read_text()
        for item in gen.get("literals", []):
            key, _, value = item.partition("=")
            data[key] = value
        meta: Dict[str, Any] = {"name": gen["name"]}
        labels = {**options.get("labels", {}), **gen.get("options", {}).get("labels", {})}
        annotations = {**options.get("annotations", {}), **gen.get("options", {}).get("annotations", {})}
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    return out


def _apply_patch(path: Path, docs: List[Manifest], patch: dict) -> None:
    if set(patch) - {"target", "patch", "path"} or "target" not in patch:
        raise UnsupportedKustomization(f"patch {patch} not supported (needs target + patch or path)")
    text = patch["patch"] if "patch" in patch else (path / patch["path"]).read_text()
    ops = yaml.safe_load(text)
    if not isinstance(ops, list):
        raise UnsupportedKustomization("only JSON 6902 patches (a list of operations) are supported")
    target = patch["target"]
    if set(target) - {"kind", "name", "group", "version"}:
        raise UnsupportedKustomization(f"patch target {target} not supported")
    matched = [d for d in docs if d.get("kind") == target.get("kind", d.get("kind"))
               and d.get("metadata", {}).get("name") == target.get("name", d.get("metadata", {}).get("name"))]
    if not matched:
        raise UnsupportedKustomization(f"patch target {target} matches nothing")
    for doc in matched:
        for op in ops:
            json_patch(doc, op)


def _pointer(path: str) -> List[str]:
    if not path.startswith("/"):
        raise UnsupportedKustomization(f"bad JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def json_patch(doc: Any, op: dict) -> None:
    """Apply one RFC 6902 operation (add, replace, remove) in place."""
    kind, parts = op["op"], _pointer(op["path"])
    parent = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    value = copy.deepcopy(op.get("value"))
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, value)
        elif kind == "replace":
            parent[index] = value
        elif kind == "remove":
            del parent[index]
        else:
            raise UnsupportedKustomization(f"JSON patch op {kind!r} not supported")
        return
    if kind == "add":
        parent[last] = value
    elif kind == "replace":
        if last not in parent:
            raise UnsupportedKustomization(f"replace of missing {op['path']}")
        parent[last] = value
    elif kind == "remove":
        del parent[last]
    else:
        raise UnsupportedKustomization(f"JSON patch op {kind!r} not supported")


def _split_image(image: str):
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, None, digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :], None
    return image, None, None


def _set_image(docs: List[Manifest], rule: dict) -> None:
    for doc in docs:
        if doc.get("kind") not in POD_TEMPLATE_KINDS:
            continue
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            name, tag, digest = _split_image(container.get("image", ""))
            if name != rule["name"]:
                continue
            name = rule.get("newName", name)
            if rule.get("digest"):
                container["image"] = f"{name}@{rule['digest']}"
            else:
                tag = rule.get("newTag", tag)
                container["image"] = f"{name}:{tag}" if tag else (f"{name}@{digest}" if digest else name)


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--engine", choices=("auto", "kubectl", "python"), default="auto")
    args = parser.parse_args(argv)
    yaml.safe_dump_all(render(args.path, args.engine), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
