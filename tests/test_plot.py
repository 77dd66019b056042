"""The figures draw what the summary says: each cell's interval, at its width."""

import numpy as np

from gdrelu.plot import comparison_figure, failure_probability_figure


def _cell(width, delta, p, low, high):
    return {"width": width, "delta": delta, "p_stuck": p, "ci95": [low, high],
            "stuck_rule": "final", "optimizer": "sgd"}  # fmt: skip


def test_each_cell_has_its_interval_even_alone():
    """One width gave a point without its interval (a band over one x has no area)."""
    cells = [_cell(16, 0.0, 0.75, 0.51, 0.91), _cell(16, 0.1, 0.5, 0.3, 0.7)]
    fig = failure_probability_figure(cells)
    (ax,) = fig.axes
    spans = []
    for container in ax.containers:
        (segments,) = container.lines[2]
        spans += [tuple(seg[:, 1]) for seg in segments.get_segments()]
    np.testing.assert_allclose(sorted(spans), [(0.3, 0.7), (0.51, 0.91)])
    assert ax.get_ylabel() == "P(stuck)"


def test_a_comparison_figure_says_when_its_intervals_are_nominal():
    """Its bars span each pair's interval, and a --target-halfwidth comparison's title says
    the intervals are nominal, as the printed lines and summary.json do."""
    pair = {"a": "gd", "b": "adam", "width": 16, "delta": 0.1, "difference": 0.2,
            "ci95": [0.05, 0.4]}  # fmt: skip
    for nominal in (False, True):
        fig = comparison_figure([{**pair, "ci95_nominal": True} if nominal else pair])
        (segments,) = fig.axes[0].containers[0].lines[2]
        np.testing.assert_allclose(segments.get_segments()[0][:, 1], (0.05, 0.4))
        assert ("nominal: --target-halfwidth" in fig._suptitle.get_text()) == nominal
