"""GD on a 1-D network whose activation pattern is fixed: O(n) work per step, not O(n·m).

While every kink stays inside (-min|x_j|, min|x_j|), neuron i is active (slope 1) on the
side s_i = sign a_i of the origin (a_i may change sign on the way; s_i follows it) and has
slope α on the other side, so on side s the network is the line c + A_s x + B_s with

    A_s = Σ_i g_s(i) w_i a_i,  B_s = Σ_i g_s(i) w_i b_i,  g_s(i) = 1 if s_i = s else α,

and the gradient of L needs only the per-side data moments (Σp, Σpx, Σpx², Σpy, Σpxy):

    R0_s = Σ_{j∈s} p_j r_j = (c + B_s) Σp + A_s Σpx - Σpy,
    R1_s = Σ_{j∈s} p_j r_j x_j = (c + B_s) Σpx + A_s Σpx² - Σpxy,
    ∂L/∂a_i = w_i G1_i, ∂L/∂b_i = w_i G0_i, ∂L/∂w_i = a_i G1_i + b_i G0_i, ∂L/∂c = R0_+ + R0_-,

with G1_i = Σ_s g_s(i) R1_s and G0_i = Σ_s g_s(i) R0_s. A step is exactly the GD step of
`engine.gd_step` as long as no kink reaches the data; the engine checks that afterwards.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gdrelu.data import WeightedData, side_masks
from gdrelu.model import Params


class SideMoments(NamedTuple):
    """Per-side data moments, each of shape (2,) in order (+, -)."""

    p: jax.Array
    px: jax.Array
    pxx: jax.Array
    py: jax.Array
    pxy: jax.Array


def side_moments(data: WeightedData) -> SideMoments:
    """(Σp, Σpx, Σpx², Σpy, Σpxy) on each side of the origin, for one run."""
    pw = side_masks(data.x) * data.weights
    x, y = data.x, data.y
    return SideMoments(pw.sum(-1), pw @ x, pw @ (x * x), pw @ y, pw @ (x * y))


def point_moments(data: WeightedData) -> SideMoments:
    """The side moments of each point alone with weight 1 (point j's share of
    `side_moments` is weights_j times these), for one run: (m, 2) each."""
    masks = side_masks(data.x).T  # (m, 2)
    x, y = data.x[:, None], data.y[:, None]
    return SideMoments(masks, masks * x, masks * (x * x), masks * y, masks * (x * y))


def residual_moments(level, slope, moments: SideMoments) -> tuple[jax.Array, jax.Array]:
    """(R0_s, R1_s) = (Σ_{j∈s} p_j r_j, Σ_{j∈s} p_j r_j x_j) for the lines level + slope·x."""
    r0 = level * moments.p + slope * moments.px - moments.py
    r1 = level * moments.px + slope * moments.pxx - moments.pxy
    return r0, r1


def fixed_pattern_gradient(params: Params, moments: SideMoments, alpha) -> Params:
    """∇L of one 1-D run whose kinks all lie inside (-min|x_j|, min|x_j|), from the
    per-side moments of its data (or minibatch): O(n), equal to `model.loss_gradient`."""
    a, b, w, c = params
    plus = a > 0  # a_i may change sign while its kink stays inside: sides move
    g_plus = jnp.where(plus, 1.0, alpha)
    g_minus = jnp.where(plus, alpha, 1.0)
    wa, wb = w * a, w * b
    slope = jnp.stack([jnp.sum(g_plus * wa), jnp.sum(g_minus * wa)])
    level = c + jnp.stack([jnp.sum(g_plus * wb), jnp.sum(g_minus * wb)])
    r0, r1 = residual_moments(level, slope, moments)
    g1 = g_plus * r1[0] + g_minus * r1[1]
    g0 = g_plus * r0[0] + g_minus * r0[1]
    return Params(w * g1, w * g0, a * g1 + b * g0, r0[0] + r0[1])
