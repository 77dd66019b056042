"""The Section 10 preset at a tiny scale: its grid, its step-size choice and its files."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from gdrelu import memory, section10
from gdrelu.cells import Cell
from gdrelu.cli import main

TINY = section10.Scale(
    dims=(1, 2),
    width=8,
    runs=3,
    step_exponents=(-2, 2),
    epochs_times_d=8,
    heldout=16,
    eval_epochs_times_d=4,
    batch_size=16,
    train_per_dim=32,
    inits=("he",),
    optimizers=("adam",),
    bias_inits=("zero", "kink-neg-unif"),
    distributions=("radial",),
)


def test_grid_covers_the_configurations():
    groups = section10.configurations(section10.SCALES["small"])
    assert len(groups) == (1 + 3) * 2 * 3  # P_ex at d = 1, P_d at d = 1, 2, 4
    assert {g["data"] for g in groups if g["dim"] > 1} == {"radial"}


def test_best_step_size_is_chosen_by_validation_not_test():
    rows = [
        dict(data="radial", dim=1, init="he", optimizer="sgd", bias_init="zero",
             step_size=s, validation_rmse=v, test_rmse=t, test_rmse_se=0.01)
        for s, v, t in ((0.1, 0.5, 0.2), (0.2, 0.4, 0.9))
    ]  # fmt: skip
    (best,) = section10.best_step_sizes(rows)
    assert best["step_size"] == 0.2 and best["relative_test_rmse"] == 1.0


@pytest.mark.slow  # compiles four groups' programs; the grid and the choice: tests above
def test_tiny_preset_writes_table_and_figure(tmp_path, monkeypatch, auto_kernel):
    monkeypatch.setitem(section10.SCALES, "small", TINY)
    out = tmp_path / "s10"
    assert main(["run", "--preset", "section10", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best"]
    assert len(best) == 2 * 2  # (radial d=1, radial d=2) × two bias inits
    for row in best:
        assert np.isfinite(row["test_rmse"]) and row["test_rmse_se"] >= 0
        assert any(row["step_size"] == pytest.approx(1e-2 * 2 ** (k / 2)) for k in (-2, 2))
    assert min(r["relative_test_rmse"] for r in best if r["dim"] == 2) == 1.0
    lines = (out / "section10.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 * 2
    assert (out / "section10.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["deviations"] and summary["settings"]["kernel"] == auto_kernel
    # every group is a stored unit: a resume trains nothing and writes the same table
    table = (out / "section10.csv").read_text()
    assert main(["run", "--preset", "section10", "--resume", str(out), "--quiet"]) == 0
    assert (out / "section10.csv").read_text() == table
    assert main(["run", "--preset", "section10", "--seed", "1", "--resume", str(out)]) == 2


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--widths", "8"], "--widths"),
        (["--runs", "0"], "--runs"),  # values that are false are given all the same
        (["--early-stopping", "off"], "--early-stopping"),
        (["--step-factor", "0"], "--step-factor"),
        (["--distributed"], "--distributed"),  # every process would write the same grid
        (["--num-processes", "4"], "--num-processes"),
    ],
)
def test_preset_refuses_spec_flags(flags, named, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["run", "--preset", "section10", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gdrelu: error: {named}:") and not out.exists(), err


@pytest.mark.slow  # three batch shapes; test_memory covers budgeted blocks
def test_a_group_goes_in_memory_budgeted_batches_and_resumes(tmp_path, monkeypatch):
    """A group of 2 bias inits × 2 step sizes × 3 runs under a budget of blocks of 4 runs
    per device trains in two batches (8 runs, then the 4 left) and gives the rows of one
    batch; stored, it is read back without training. (The group is the tiny preset's at
    d = 1: its one-batch programs are those the preset test compiled.)"""
    from gdrelu import runner

    scale = dataclasses.replace(TINY, dims=(1,))
    (group,) = section10.configurations(scale)
    batches = []
    train = runner._train_batch
    monkeypatch.setattr(
        runner, "_train_batch", lambda work, **kw: batches.append(work) or train(work, **kw)
    )
    whole = section10.run_group(scale, group, memory_budget=1 << 40)
    assert len(batches) == 1
    spec = section10.group_cells(scale, group, 0)[0][1].spec
    per_run, per_block_run = memory.run_bytes(spec, scale.width, Cell(scale.width, 0.0, spec))
    devices = jax.local_device_count()
    one_block = 4 * devices * (memory.COPIES * per_run + per_block_run)
    split = section10.run_group(scale, group, memory_budget=one_block, units=tmp_path)
    assert [sum(idx.size for _, idx in work) for work in batches[1:]] == [4 * devices, 4]
    for got, want in zip(split, whole, strict=True):  # a batch's layout moves the last bits
        assert got.keys() == want.keys()
        for key, value in got.items():
            assert value == (pytest.approx(want[key], rel=1e-12) if isinstance(value, float)
                             else want[key]), key  # fmt: skip
    monkeypatch.setattr(runner, "_train_batch", None)  # a stored group trains nothing
    assert section10.run_group(scale, group, units=tmp_path) == split
