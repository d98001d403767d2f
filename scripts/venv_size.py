#!/usr/bin/env python3
"""How much disk img2img's dependencies take in the running environment, runtime vs the dev extra.

    .venv/bin/python scripts/venv_size.py

Sums the installed files of each distribution in the dependency closure of img2img (runtime) and
of img2img[dev]; reports the CUDA packages (nvidia-*, triton) separately. Figures in README "Install".
"""

from __future__ import annotations

import importlib.metadata as md
import os

from packaging.requirements import Requirement


def _key(name: str) -> str:
    return name.lower().replace("_", "-")


DISTS = {_key(d.metadata["Name"]): d for d in md.distributions()}


def size(key: str) -> int:
    total = 0
    for f in DISTS[key].files or []:
        try:
            total += os.path.getsize(DISTS[key].locate_file(f))
        except OSError:
            pass
    return total


def closure(root: str, extras: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        key = _key(name)
        if key in seen or key not in DISTS:
            continue
        seen.add(key)
        for text in DISTS[key].requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
                continue
            todo.append((req.name, set(req.extras)))
    return seen


def gb(keys: set[str]) -> str:
    return f"{sum(size(k) for k in keys) / 1e9:.2f} GB ({len(keys)} distributions)"


if __name__ == "__main__":
    runtime = closure("img2img", set())
    dev = closure("img2img", {"dev"})
    cuda = {k for k in runtime if k.startswith("nvidia") or k == "triton"}
    print(f"runtime (make demo):       {gb(runtime)}")
    print(f"  of which nvidia-*/triton: {gb(cuda)}")
    print(f"dev extra adds (make test): {gb(dev - runtime)}")
