"""Render a Kustomize directory of deploy/k8s without kustomize or kubectl (the subset these manifests use).

    python deploy/k8s/render.py deploy/k8s/overlays/prod > prod.yaml

`kubectl kustomize DIR` gives the same objects (tests/deploy/test_k8s_manifests.py compares the two where
kubectl is installed); this exists so the manifests can be rendered and checked offline, in CI, with only
Python. Supported, and nothing else (anything else is an error, never silently ignored):

- `resources`: YAML files and directories holding a kustomization.yaml;
- `patches`: `- path: FILE`, strategic-merge patches naming their target by kind and metadata.name. Lists of
  objects that all carry a `name` (containers, env, volumes) merge by name; other lists are replaced whole
  (as Kubernetes' strategic merge does for NetworkPolicy rules, HPA metrics and the like);
- `images`: `name` with `newName` and/or `newTag` (containers and init containers of workload templates);
- `namespace`: set on every namespaced object (and as the name of a Namespace object).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RenderError", "merge_patch", "render", "set_image"]

Obj = dict[str, Any]

_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
_WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


class RenderError(ValueError):
    """The kustomization uses something this renderer does not do, or a patch matches no object."""


def _load(path: Path) -> list[Obj]:
    with path.open() as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "name" not in doc.get("metadata", {}):
            raise RenderError(f"{path}: every document needs kind and metadata.name")
    return docs


def _merge_list(base: list[Any], patch: list[Any]) -> list[Any]:
    named = all(isinstance(i, dict) and "name" in i for i in [*base, *patch])
    if not (named and base):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    index = {item["name"]: n for n, item in enumerate(out)}
    for item in patch:
        if item["name"] in index:
            out[index[item["name"]]] = merge_patch(out[index[item["name"]]], item)
        else:
            out.append(copy.deepcopy(item))
    return out


def merge_patch(base: Obj, patch: Obj) -> Obj:
    """`base` with the strategic-merge `patch` applied (the subset described in the module docstring)."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if key.startswith("$"):
            raise RenderError(f"patch directive {key} is not supported")
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _merge_list(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _split_image(image: str) -> tuple[str, str]:
    """(name, ':tag' or '@digest' or '')."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def set_image(obj: Obj, rule: Obj) -> None:
    """Apply one `images` rule to the containers of a workload's pod template."""
    unknown = set(rule) - {"name", "newName", "newTag"}
    if unknown:
        raise RenderError(f"images: {sorted(unknown)} not supported")
    if obj["kind"] not in _WORKLOADS:
        return
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        name, suffix = _split_image(container["image"])
        if name != rule["name"]:
            continue
        if "newTag" in rule:
            suffix = ":" + str(rule["newTag"])
        container["image"] = rule.get("newName", name) + suffix


def render(directory: Path) -> list[Obj]:
    """Every object the kustomization in `directory` produces."""
    directory = Path(directory)
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - _KEYS
    if unknown:
        raise RenderError(f"{directory}/kustomization.yaml: {sorted(unknown)} not supported by render.py")
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        objects.extend(render(path) if path.is_dir() else _load(path))
    for entry in spec.get("patches", []):
        if set(entry) != {"path"}:
            raise RenderError(f"patches: only `path` is supported, not {sorted(entry)}")
        for patch in _load(directory / entry["path"]):
            targets = [
                n
                for n, o in enumerate(objects)
                if o["kind"] == patch["kind"] and o["metadata"]["name"] == patch["metadata"]["name"]
            ]
            if len(targets) != 1:
                raise RenderError(
                    f"{entry['path']}: {patch['kind']}/{patch['metadata']['name']} matches {len(targets)} objects"
                )
            objects[targets[0]] = merge_patch(objects[targets[0]], patch)
    for rule in spec.get("images", []):
        for obj in objects:
            set_image(obj, rule)
    if namespace := spec.get("namespace"):
        for obj in objects:
            if obj["kind"] == "Namespace":
                obj["metadata"]["name"] = namespace
            elif obj["kind"] not in _CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    return objects


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python deploy/k8s/render.py DIRECTORY\n")
        return 2
    sys.stdout.write(yaml.safe_dump_all(render(Path(argv[0])), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
