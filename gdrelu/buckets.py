"""Which widths share a compiled program: every network of a batch is padded to its
bucket width with inert neurons (`model.padded`), and batches of one bucket width and run
count share their programs (docs/design.md, "Buckets")."""

from __future__ import annotations

from gdrelu.batched import DRAW_BATCH, DRAW_NEURONS
from gdrelu.spec import ExperimentSpec

# With "auto" buckets, the widths up to this share one program on the propagator, whose
# GD step costs O(1) in the width: padding them costs less than a compile per width.
SHARED_BUCKET = 128


def width_buckets(spec: ExperimentSpec) -> list[tuple[int, tuple[int, ...]]]:
    """The batches of a spec: (bucket width, the widths trained together), in order of
    first width.

    `buckets`: "pow2" pads each width to the next power of two (at most 2× the work, one
    program per octave), "one" pads every width to the largest (one program), "none"
    gives every width its own program. "auto" is "pow2", except that on the propagator
    path without general blocks (`ExperimentSpec.mixed_layout`, whose runs train at O(n·m)
    a step) the widths up to `SHARED_BUCKET` share one program: each is trained alone, padded
    to the next power of two of the largest of them (a run's steps cost O(1) in the width
    there; only its once-per-chunk work and its redos grow with the padding). Each width
    alone in its batch keeps the widest one's results bit for bit those of a run without
    the narrower ones (a batch's size and padding move the last bits).
    """
    if spec.buckets == "none":
        return [(w, (w,)) for w in spec.widths]
    if spec.buckets == "one":
        return [(max(spec.widths), spec.widths)]
    shared = [w for w in spec.widths if w <= SHARED_BUCKET]
    if spec.buckets == "auto" and shared and spec.path == "propagator" and not spec.mixed_layout:
        floor = _next_power_of_two(max(shared))
        return [(max(floor, _next_power_of_two(w)), (w,)) for w in spec.widths]
    groups: dict[int, list[int]] = {}
    for w in spec.widths:
        groups.setdefault(_next_power_of_two(w), []).append(w)
    return [(bucket, tuple(ws)) for bucket, ws in groups.items()]


def _next_power_of_two(width: int) -> int:
    return 1 << (width - 1).bit_length()


# The programs that run once per batch pad no network beyond this width to a wider one:
# the widest at which they still take `DRAW_BATCH` runs a call, so that a narrow width's
# calls (and their last bits) do not depend on the spec's other widths.
SHARED_LIMIT = DRAW_NEURONS // DRAW_BATCH


def shared_width(spec: ExperimentSpec, width: int) -> int:
    """The width that programs run once per batch (the initial networks, the paper's step
    size, the final classification) pad networks of `width` (one of the spec's) to: the
    widest bucket up to `SHARED_LIMIT` for every bucket up to it, one program for them
    all; a wider bucket's own width, so that a narrow width is never padded to a huge one."""
    buckets = width_buckets(spec)
    own = [bucket for bucket, widths in buckets if width in widths]
    if not own:
        raise ValueError(f"width: {width} is not one of the spec's widths {spec.widths}")
    if own[0] > SHARED_LIMIT:
        return own[0]
    return max(bucket for bucket, _ in buckets if bucket <= SHARED_LIMIT)
