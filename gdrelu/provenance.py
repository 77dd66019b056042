"""The settings outside a spec that change results, recorded with every run and checked on
resume, and the versions and memory recorded as information (docs/design.md, "Store")."""

from __future__ import annotations

import hashlib
import json
import resource
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from gdrelu import native_general
from gdrelu.engine import general_kernel, propagator_kernel

if TYPE_CHECKING:
    from gdrelu.spec import ExperimentSpec


def settings(specs: Sequence[ExperimentSpec]) -> dict[str, str]:
    """What changes results besides the specs: `kernels`, the kernel as resolved on this
    platform ($GDRELU_PROPAGATOR_KERNEL, `engine.propagator_kernel`) for the optimizer and
    dtype of each of `specs` whose runs take the propagator, and the general path's C loop
    where a spec's general steps take it ("adam-native", "general-native":
    `native_general.kernel_name`; its bits are not XLA's general path's, which records
    nothing, as before), distinct names joined by commas, or "none" where no spec's runs
    take either. Starts JAX's backends."""
    platform = jax.devices()[0].platform
    kernels = []
    for spec in specs:
        if spec.path == "propagator":
            dtype = np.dtype(spec.dtype)
            kernels.append(propagator_kernel(platform, None, spec.trained_by, dtype))
        if general_kernel(None, spec.trained_by) == "native":
            kernels.append(native_general.kernel_name(spec.trained_by))
    return {"kernels": ",".join(dict.fromkeys(kernels)) or "none"}


def gd_kernel() -> str:
    """The kernel of full-batch GD's propagator in float64 on this platform: what a
    benchmark names, and what a manifest of an older gdrelu recorded as `kernel`."""
    return propagator_kernel(jax.devices()[0].platform)


def versions() -> dict[str, str]:
    """jax and jaxlib versions: information, not checked on resume."""
    import jaxlib

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}


def recorded(specs: Sequence[ExperimentSpec]) -> dict[str, Any]:
    """The keys every summary.json and manifest.json carry: the settings (`settings`) of a
    run of `specs`, and versions."""
    return {"settings": settings(specs), "versions": versions()}


def measured_on() -> dict[str, Any]:
    """What a benchmark's output names besides its numbers: the UTC date and time, the
    commit (if a git checkout), the machine, its cores, JAX's platform, device count and
    versions, and GD's propagator kernel (`gd_kernel`: on a CPU with a C compiler the C
    loop, otherwise XLA's)."""
    import datetime
    import os
    import platform
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "cores": os.cpu_count(),
        "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
        **versions(),
        "kernel": gd_kernel(),
    }


def measured_line() -> str:
    """`measured_on` as one line."""
    return ", ".join(f"{k} {v}" for k, v in measured_on().items())


def manifest(specs: Sequence[dict[str, Any]], trained: Sequence[ExperimentSpec]) -> dict[str, Any]:
    """manifest.json of a run of `specs` (JSON mappings) that trains the runs of `trained`:
    a resume must match its specs and `settings` (`store.check_manifest`); `spec_hash`
    names them in one string."""
    return {"specs": list(specs), "spec_hash": spec_hash(specs), **recorded(trained)}


def spec_hash(specs: Sequence[dict[str, Any]]) -> str:
    """sha256 of the specs' canonical JSON."""
    text = json.dumps(list(specs), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def differing_fields(
    was: Mapping[str, Any], now: Mapping[str, Any], unordered: Iterable[str] = ()
) -> list[str]:
    """The fields whose values differ between two JSON mappings (a manifest's and this
    run's), compared as JSON values (a tuple equals the list it is written as); the
    fields in `unordered` are compared as sets."""
    unordered = frozenset(unordered)

    def plain(values: Mapping[str, Any], name: str) -> Any:
        value = json.loads(json.dumps(values.get(name)))
        return sorted(value) if name in unordered and isinstance(value, list) else value

    return sorted(k for k in {*was, *now} if plain(was, k) != plain(now, k))


def recorded_and_given(
    was: Mapping[str, Any], now: Mapping[str, Any], field: str, given: str = "given"
) -> str:
    """`field` with its recorded (`was`) and `given` (`now`) values, for a refusal to
    resume: "runs: recorded 200, given 100". A value longer than 40 characters is shown
    from a little before where the two first differ ("..., 512, 1024]" against "..., 512,
    2048]"); a field one side lacks is "not recorded" or "given none".
    """
    texts = [json.dumps(v[field], ensure_ascii=False) if field in v else None for v in (was, now)]
    first, second = (t or "" for t in texts)
    pairs = enumerate(zip(first, second, strict=False))
    differ = next((i for i, (x, y) in pairs if x != y), min(len(first), len(second)))
    start = max(0, differ - 12) if max(len(first), len(second)) > 40 else 0

    def shown(text: str | None, said: str) -> str:
        if text is None:
            return "not recorded" if said == "recorded" else f"{said} none"
        more = "..." if start + 40 < len(text) else ""
        return f"{said} {'...' if start else ''}{text[start : start + 40]}{more}"

    return f"{field}: {shown(texts[0], 'recorded')}, {shown(texts[1], given)}"


def peak_memory() -> dict[str, int | None]:
    """Peak resident memory of this process (bytes) and, where JAX reports it, the peak
    in use on the first device."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    host = rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB
    stats = jax.devices()[0].memory_stats() or {}  # None on CPU
    return {"host_peak_rss_bytes": int(host), "device_peak_bytes": stats.get("peak_bytes_in_use")}
