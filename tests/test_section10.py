"""The Section 10 preset at a tiny scale: its grid, its step-size choice and its files."""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest
from conftest import least_budget

from gdrelu import memory, section10, store
from gdrelu.cells import Cell, CellResult
from gdrelu.cli import main
from gdrelu.model import Params
from gdrelu.outcome import SimulationResult

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
    """Per bias init the step size of least validation RMSE is kept, whatever its test
    RMSE; `relative` divides by the least chosen test RMSE at the same (data, d) only.
    zero: 0.2 (validation 0.4 < 0.5) with test 0.9; kink-neg-unif: 0.1 (0.3 < 0.35) with
    test 0.45; so relative = 0.9 / 0.45 = 2 and 1. The d = 2 row's smaller test RMSE
    (0.1) is another (data, d): it must not be the d = 1 floor."""
    rows = [
        dict(data="radial", dim=d, init="he", optimizer="sgd", bias_init=b,
             step_size=s, validation_rmse=v, test_rmse=t, test_rmse_se=0.01)
        for d, b, s, v, t in (
            (1, "zero", 0.1, 0.5, 0.2), (1, "zero", 0.2, 0.4, 0.9),
            (1, "kink-neg-unif", 0.1, 0.3, 0.45), (1, "kink-neg-unif", 0.2, 0.35, 0.3),
            (2, "zero", 0.1, 0.2, 0.1),
        )
    ]  # fmt: skip
    best = {(r["dim"], r["bias_init"]): r for r in section10.best_step_sizes(rows)}
    assert best.keys() == {(1, "zero"), (1, "kink-neg-unif"), (2, "zero")}
    chosen = {key: (r["step_size"], r["test_rmse"]) for key, r in best.items()}
    assert chosen == {(1, "zero"): (0.2, 0.9), (1, "kink-neg-unif"): (0.1, 0.45),
                      (2, "zero"): (0.1, 0.1)}  # fmt: skip
    assert best[1, "zero"]["relative_test_rmse"] == pytest.approx(2.0, rel=1e-15)
    assert best[1, "kink-neg-unif"]["relative_test_rmse"] == 1.0
    assert best[2, "zero"]["relative_test_rmse"] == 1.0


def test_each_optimizer_keeps_its_own_step_size_and_relative_spans_the_data_and_d():
    """docs/theory.md ("Section 10"): the step size is chosen per configuration, a
    (parameterization, optimizer, bias init) at a (distribution, d), so SGD's and Adam's
    rows never compete; `relative` divides by the best chosen test RMSE over every
    configuration at the same (distribution, d), whatever its optimizer, and only there.
    radial d = 1: SGD keeps 0.1 (test 0.3), Adam 0.2 (test 0.6, though its validation RMSE
    0.2 is below SGD's 0.5), relative 0.6 / 0.3 = 2; P_ex at d = 1 (test 0.1) is another
    distribution. The table prints each chosen row's step size, test RMSE ± its standard
    error and relative."""
    rows = [
        dict(data=data, dim=1, init="he", optimizer=opt, bias_init="zero", step_size=s,
             validation_rmse=v, test_rmse=t, test_rmse_se=se)
        for data, opt, s, v, t, se in (
            ("radial", "sgd", 0.1, 0.5, 0.3, 0.01), ("radial", "sgd", 0.2, 0.7, 0.25, 0.01),
            ("radial", "adam", 0.1, 0.25, 0.2, 0.04), ("radial", "adam", 0.2, 0.2, 0.6, 0.02),
            ("p-ex", "sgd", 0.1, 0.1, 0.1, 0.03),
        )
    ]  # fmt: skip
    best = section10.best_step_sizes(rows)
    chosen = {(r["data"], r["optimizer"]): (r["step_size"], r["relative_test_rmse"]) for r in best}
    assert chosen == {("radial", "sgd"): (0.1, 1.0), ("radial", "adam"): (0.2, 2.0),
                      ("p-ex", "sgd"): (0.1, 1.0)}  # fmt: skip
    lines = section10.format_table(best).splitlines()
    assert len(lines) == 2 + 3
    assert set(lines[2:]) == {
        "| radial | 1 | he | sgd | zero | 0.1 | 0.3000 ± 0.0100 | 1.000 |",
        "| radial | 1 | he | adam | zero | 0.2 | 0.6000 ± 0.0200 | 2.000 |",
        "| p-ex | 1 | he | sgd | zero | 0.1 | 0.1000 ± 0.0300 | 1.000 |",
    }


def test_a_tie_in_validation_keeps_the_smaller_step_size():
    """Two step sizes of one configuration with the same validation RMSE: the earlier row,
    in the grid's order of increasing step size, is kept."""
    rows = [
        dict(data="radial", dim=1, init="he", optimizer="sgd", bias_init="zero", step_size=s,
             validation_rmse=0.5, test_rmse=t, test_rmse_se=0.01)
        for s, t in ((0.1, 0.3), (0.2, 0.2))
    ]  # fmt: skip
    (best,) = section10.best_step_sizes(rows)
    assert best["step_size"] == 0.1 and best["test_rmse"] == 0.3


def _losses_cell(validation_loss, test_loss, step=0.01):
    """A cell result whose runs have these best-validation and test losses (the rest 0),
    of bias init zero and this step size."""
    runs = len(validation_loss)
    spec = section10._spec(TINY, {"data": "radial", "dim": 1, "init": "he",
                                  "optimizer": "adam"}, "zero", step, 0)  # fmt: skip
    zeros = np.zeros(runs)
    fields = {f: zeros for f in SimulationResult._fields if f != "params"}
    fields.update(
        best_validation_loss=np.asarray(validation_loss, float),
        test_loss_at_best=np.asarray(test_loss, float),
    )
    params = Params(*(np.zeros((runs, 4)),) * 3, zeros)
    result = SimulationResult(params=params, **fields)
    return CellResult(Cell(TINY.width, 0.0, spec), zeros + 0.01, result)


GROUP = {"data": "radial", "dim": 1, "init": "he", "optimizer": "adam"}


def test_a_row_is_the_mean_rmse_and_its_standard_error_over_runs():
    """Losses are ½ mean r² (weights 1/m), so a run's RMSE is sqrt(2 loss): validation
    losses (0.5, 2, 4.5, 0.125) are RMSEs (1, 2, 3, 0.5), mean 1.625; test losses
    (0.08, 0.18, 0.32, 0.5) are RMSEs (0.4, 0.6, 0.8, 1), mean 0.7, deviations ±0.1, ±0.3,
    sample sd sqrt(0.2/3) and standard error sqrt(0.2/3)/sqrt(4) = sqrt(1/60)."""
    cell = _losses_cell([0.5, 2.0, 4.5, 0.125], [0.08, 0.18, 0.32, 0.5])
    row = section10._row(TINY, GROUP, ("zero", 0, 0.01), cell)
    assert {k: row[k] for k in GROUP} == GROUP
    assert (row["bias_init"], row["step_exponent"], row["step_size"]) == ("zero", 0, 0.01)
    assert row["runs"] == 4 and row["diverged"] == 0  # the runs of the result, not the scale's
    for other in (("zero", -2, 0.005), ("unif", 0, 0.01)):  # another cell's label
        with pytest.raises(ValueError, match=r"holds the results of \('zero', 0.01\)"):
            section10._row(TINY, GROUP, other, cell)
    assert row["validation_rmse"] == pytest.approx(1.625, rel=1e-14)
    assert row["test_rmse"] == pytest.approx(0.7, rel=1e-14)
    assert row["test_rmse_se"] == pytest.approx(math.sqrt(1 / 60), rel=1e-14)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_diverged_run_scores_infinite_rmse(bad):
    """A run whose losses are not finite (diverged) has RMSE inf: it is counted in
    `diverged`, the mean RMSEs are inf and so is the standard error, and such a step size
    is never chosen over a finite one."""
    cell = _losses_cell([0.5, bad, 2.0], [0.08, bad, 0.18], step=0.02)
    row = section10._row(TINY, GROUP, ("zero", 2, 0.02), cell)
    assert row["diverged"] == 1
    assert row["validation_rmse"] == math.inf and row["test_rmse"] == math.inf
    assert row["test_rmse_se"] == math.inf
    finite = section10._row(TINY, GROUP, ("zero", -2, 0.005), _losses_cell([8.0], [8.0], 0.005))
    assert finite["validation_rmse"] == 4.0 and finite["diverged"] == 0
    assert finite["test_rmse_se"] == math.inf  # one run: no standard error
    (best,) = section10.best_step_sizes([row, finite])
    assert best["step_size"] == 0.005 and best["relative_test_rmse"] == 1.0


def test_diverged_counts_the_runs_without_a_finite_validation_loss():
    """docs/outputs.md: `diverged` counts the runs with no finite validation loss; a run
    whose validation loss is finite but whose test loss at that check is not counts in the
    test RMSE (inf), not in `diverged`."""
    row = section10._row(TINY, GROUP, ("zero", 0, 0.01), _losses_cell([0.5, 2.0], [0.08, math.inf]))
    assert row["diverged"] == 0 and row["validation_rmse"] == 1.5
    assert row["test_rmse"] == math.inf and row["test_rmse_se"] == math.inf


def test_the_paper_scale_grid():
    """`--scale full` (`gdrelu reproduce --scale paper`) is the paper's grid, each value
    read from the paper (docs/theory.md, "Section 10"; PAPER.md in the project notes)."""
    from gdrelu.reproduce import SECTION10_SCALE

    assert SECTION10_SCALE["paper"] == "full"
    full = section10.SCALES["full"]
    # "radial P_d for d = 1, 2, 4, …, 64"; "distributions P_ex (1-D: ...) and radial P_d"
    assert full.dims == (1, 2, 4, 8, 16, 32, 64)
    assert full.distributions == ("p-ex", "radial")
    # "n_train = 256d, n_valid = n_test = 1024, width 512, batch 256, 8192/d epochs, 100 runs"
    assert (full.train_per_dim, full.heldout, full.width) == (256, 1024, 512)
    assert (full.batch_size, full.epochs_times_d, full.runs) == (256, 8192, 100)
    # "parameterizations He and NTK; optimizers SGD, SGD + momentum 0.9, Adam"
    assert full.inits == ("he", "ntk") and full.optimizers == ("sgd", "momentum", "adam")
    # "layer-1 bias inits: zero; ... unif ... unif-pos ... unif-neg; PyTorch's ...;
    # kink-neg-unif ...; kink-neg-point"
    assert set(full.bias_inits) == {
        "zero", "unif", "unif-pos", "unif-neg", "pytorch", "kink-neg-unif", "kink-neg-point"
    }  # fmt: skip
    # "Step sizes: a grid base·√2^k, k = -12…10"
    assert full.step_exponents == tuple(range(-12, 11))
    # "base 8e-3 (He, SGD), 0.8 (NTK, SGD), 1e-2 (He, Adam), 8e-2 (NTK, Adam)"; momentum
    # takes SGD's (a stated deviation: the paper gives none)
    paper_base = {("he", "sgd"): 8e-3, ("ntk", "sgd"): 0.8, ("he", "adam"): 1e-2,
                  ("ntk", "adam"): 8e-2}  # fmt: skip
    for (init, optimizer), base in paper_base.items():
        assert section10.BASE_STEP[init, optimizer] == base
    for init in full.inits:
        assert section10.BASE_STEP[init, "momentum"] == paper_base[init, "sgd"]
    groups = section10.configurations(full)
    assert len(groups) == (1 + 7) * 2 * 3  # P_ex at d = 1 only, P_d at seven d
    for group in (g for g in groups if g["dim"] in (1, 64)):  # the ends of the d range
        labelled = section10.group_cells(full, group, seed=0)
        assert len(labelled) == 7 * 23
        base = section10.BASE_STEP[group["init"], group["optimizer"]]  # checked above
        for (_, k, step), cell in labelled:
            assert step == pytest.approx(base * 2 ** (k / 2), rel=1e-14)
            spec, d = cell.spec, group["dim"]
            assert (spec.num_train, spec.num_heldout) == (256 * d, 1024)
            assert (spec.widths, spec.runs, spec.batch_size) == ((512,), 100, 256)
            assert spec.sampler == "epoch" and spec.data == group["data"]
            assert (spec.optimizer, spec.init, spec.input_dim) == (
                group["optimizer"], group["init"], d
            )  # fmt: skip
            # 8192/d epochs of 256d / 256 = d steps: 8192 steps at every d, validated
            # every 64/d epochs = 64 steps (the stated deviation from every epoch)
            assert (spec.check_every, spec.max_checks) == (64, 8192 // 64)


def test_each_scale_states_its_own_deviations():
    """summary.json said "the 'small' scale uses a narrower network" and named momentum's
    step sizes at every scale, tiny (no momentum) and full (the paper's sizes) included."""
    full, tiny = (section10.deviations(n, section10.SCALES[n]) for n in ("full", "tiny"))
    assert len(full) == 2 and "momentum uses the SGD base step size" in full[1]
    assert not any("momentum uses" in d for d in tiny)
    assert tiny[-1].startswith("the 'tiny' scale is cut down to fit a laptop from 'full'")
    for cut in (
        "dims (1, 2) (full: (1, 2, 4, 8, 16, 32, 64))",
        "width 32 (full: 512)",
        "step_exponents (-2, 2) (full: (-12, ..., 10))",
        "inits ('he',) (full: ",
    ):
        assert cut in tiny[-1], tiny[-1]  # fmt: skip


@pytest.mark.slow  # compiles four groups' programs; the grid and the choice: tests above
def test_tiny_preset_writes_table_and_figure(tmp_path, monkeypatch):
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
    # held-out points: every group trains on the general path, off the propagator's kernels
    assert summary["settings"] == {"kernels": "none"}
    # this grid's own cuts, no momentum here (the deviations were one text for all grids)
    said = " ".join(summary["deviations"])
    assert "the 'small' scale is cut down" in said and "optimizers ('adam',)" in said
    assert "width 8 (full: 512)" in said and "momentum uses" not in said
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
        (["--config", "grid.toml"], "--config"),  # the grid sets every field itself
        (["--protocol", "sgd"], "--protocol"),
        (["--optimizer", "adam"], "--optimizer"),  # the grid trains every optimizer
        (["--data", "rbf"], "--data"),
    ],
)
def test_preset_refuses_spec_flags(flags, named, tmp_path, capsys, monkeypatch):
    def trained(*args, **kwargs):  # a flag let through fails here, not after a grid's run
        raise AssertionError(f"{named} was not refused")

    monkeypatch.setattr(section10, "run_group", trained)
    out = tmp_path / "never"
    assert main(["run", "--preset", "section10", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gdrelu: error: {named}:") and not out.exists(), err


def _stop_in_the_first_group(monkeypatch):
    """Stub `section10.run_group` with Ctrl-C as a group starts: the (scale, seed) each
    group was asked for."""
    asked = []

    def stop(scale, group, *, seed, **kwargs):
        asked.append((scale, seed))
        raise KeyboardInterrupt

    monkeypatch.setattr(section10, "run_group", stop)
    return asked


def _started_grid(argv, monkeypatch):
    """`gdrelu run --preset section10 ARGV`, stopped by Ctrl-C in its first group (no
    training, no memory estimate, the backends as they are, XLA's kernel: no C build):
    its exit code and the (scale, seed) the group was asked for."""
    from gdrelu.cli import backends, options
    from gdrelu.engine.placement import KERNEL_VARIABLE

    asked = _stop_in_the_first_group(monkeypatch)
    monkeypatch.setattr(options, "check_fits", lambda specs, budget, **kw: budget)
    monkeypatch.setattr(backends, "prepare", lambda **kwargs: None)
    monkeypatch.setenv(KERNEL_VARIABLE, "xla")
    return main(["run", "--preset", "section10", *argv, "--quiet"]), asked


def test_the_preset_takes_its_seed_and_scale_else_small_and_0(tmp_path, monkeypatch):
    """--seed and --scale are the preset's own flags (not refused as the spec's); without
    them the grid is the small one at seed 0 (the help's default), and a resume takes the
    manifest's (a --seed 0 that differs from it is refused, not dropped as false)."""
    fresh, small = tmp_path / "fresh", section10.SCALES["small"]
    assert _started_grid(["--out", str(fresh)], monkeypatch) == (130, [(small, 0)])
    recorded = json.loads((fresh / "manifest.json").read_text())["specs"][0]
    assert (recorded["scale"], recorded["seed"]) == ("small", 0)
    tiny = section10.SCALES["tiny"]
    seeded = tmp_path / "seeded"
    argv = ["--scale", "tiny", "--seed", "3", "--out", str(seeded)]
    assert _started_grid(argv, monkeypatch) == (130, [(tiny, 3)])
    assert _started_grid(["--resume", str(seeded)], monkeypatch) == (130, [(tiny, 3)])
    assert _started_grid(["--seed", "0", "--resume", str(seeded)], monkeypatch) == (2, [])
    # a --scale given with --resume is the flag's, refused where the manifest differs
    assert _started_grid(["--scale", "small", "--resume", str(seeded)], monkeypatch) == (2, [])


def test_a_grid_is_resumed_only_by_run_and_at_a_known_scale(tmp_path, monkeypatch, capsys):
    """`gdrelu compare --resume` of a grid is refused naming the command, and a manifest
    with a scale this version lacks in one line (it was a KeyError), both exit 2."""
    out = tmp_path / "grid"
    assert _started_grid(["--out", str(out)], monkeypatch)[0] == 130
    capsys.readouterr()
    assert main(["compare", "--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gdrelu: error: gdrelu compare: not with the section10 preset"), err
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["specs"][0]["scale"] = "huge"
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gdrelu: error: --resume: {out} records an unknown scale 'huge'", err


def test_a_group_says_whether_it_trained_or_was_read_back(tmp_path, monkeypatch):
    """Training stubbed: a trained group reports its checks, then its cells' results; read
    back from its unit it reports no check (the preset's bar used to time one, of about 0
    s, and price the groups left from it), and the same results, as read back."""
    from conftest import finished_cell

    from gdrelu.outcome import Status

    scale = dataclasses.replace(TINY, dims=(1,))
    (group,) = section10.configurations(scale)

    def train(work, *, on_check, on_batches, **kwargs):
        on_batches([[cell for cell, _ in work]])
        on_check((scale.width,), 7, np.zeros(3, np.int8))
        return [finished_cell(cell, [Status.UNFINISHED] * idx.size) for cell, idx in work]

    monkeypatch.setattr(section10, "train_cells", train)
    checks, ends, planned = [], [], []
    callbacks = dict(
        on_check=lambda k, status: checks.append(k),
        on_done=lambda results, stored: ends.append((len(results), stored)),
        on_batches=planned.append,
    )
    trained = section10.run_group(scale, group, units=tmp_path, **callbacks)
    read_back = section10.run_group(scale, group, units=tmp_path, **callbacks)
    cells = len(section10.group_cells(scale, group, 0))
    assert checks == [7] and ends == [(cells, False), (cells, True)]
    assert [len(batch) for (batch,) in planned] == [cells]  # the trained group's, once
    assert read_back == trained


@pytest.mark.slow  # three batch shapes; test_memory covers budgeted blocks
def test_a_group_goes_in_memory_budgeted_batches_and_resumes(tmp_path, monkeypatch):
    """A group of 2 bias inits × 2 step sizes × 3 runs under a budget of blocks of 4 runs
    per device trains in two batches (8 runs, then the 4 left) and gives the rows of one
    batch; stored, it is read back without training; killed in its second batch, a resume
    reads the first batch's part and trains the second. (The group is the tiny preset's at
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
    cells = [cell for _, cell in section10.group_cells(scale, group, 0)]
    held = sum(memory.results_bytes(cell.spec) for cell in cells)  # the group's results
    one_block = 4 * devices * (memory.COPIES * per_run + per_block_run) + held
    split = section10.run_group(scale, group, memory_budget=one_block, units=tmp_path)
    assert [sum(idx.size for _, idx in work) for work in batches[1:]] == [4 * devices, 4]
    for got, want in zip(split, whole, strict=True):  # a batch's layout moves the last bits
        assert got.keys() == want.keys()
        for key, value in got.items():
            assert value == (pytest.approx(want[key], rel=1e-12) if isinstance(value, float)
                             else want[key]), key  # fmt: skip
    monkeypatch.setattr(runner, "_train_batch", None)  # a stored group trains nothing
    assert section10.run_group(scale, group, units=tmp_path) == split

    class Killed(Exception):
        pass

    def killed_in_the_second(work, **kw):  # after the first batch, stored as a part
        batches.append(work)
        if len(batches) == 2:
            raise Killed
        return train(work, **kw)

    batches.clear()
    monkeypatch.setattr(runner, "_train_batch", killed_in_the_second)
    with pytest.raises(Killed):
        section10.run_group(scale, group, memory_budget=one_block, units=tmp_path / "killed")
    batches.append(None)  # resumed: its batches train
    resumed = section10.run_group(scale, group, memory_budget=one_block, units=tmp_path / "killed")
    assert [sum(idx.size for _, idx in work) for work in batches[3:]] == [4]  # the second
    assert resumed == split
    assert not (tmp_path / "killed" / store.UNITS / store.PARTS).exists()


@pytest.mark.parametrize(
    ("scale", "advice"), [("tiny", "raise"), ("small", "lower --scale, or raise")]
)
def test_a_budget_below_one_run_says_what_can_change(scale, advice, tmp_path, capsys):
    """At the smallest scale there is none to lower to: the refusal names the budget alone
    (it said "lower --scale" there too); nothing is written."""
    out = tmp_path / "grid"
    argv = ["run", "--preset", "section10", "--scale", scale, "--memory-budget", "1e-6"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"GB; {advice} --memory-budget\n") and not out.exists(), err


def test_the_grid_needs_the_budget_of_one_group_at_a_time(tmp_path, monkeypatch):
    """The preset and `gdrelu reproduce --only section10` train the groups one after the
    other, each storing its results before the next starts: a budget that fits the
    neediest group alone is accepted (not refused for the results of every group held
    at once). Training stubbed: nothing runs."""
    from gdrelu import reproduce

    firsts = section10.group_specs(section10.SCALES["tiny"])
    kept = sum(memory.results_bytes(spec) for spec in firsts[:-1])
    size = section10.group_size(section10.SCALES["tiny"])  # a group's cells, held together
    budget = max(least_budget(spec, size) for spec in firsts) + 100  # the GB flag's rounding
    assert kept > 100  # with the other groups' results held, it would not fit
    gigabytes = repr(budget / 1e9)
    _stop_in_the_first_group(monkeypatch)
    preset = ["run", "--preset", "section10", "--scale", "tiny", "--quiet"]
    out = tmp_path / "grid"
    assert main([*preset, "--memory-budget", gigabytes, "--out", str(out)]) == 130
    monkeypatch.setattr(reproduce, "reproduce", lambda out, **kwargs: out / "report.md")
    command = ["reproduce", "--only", "section10", "--quiet", "--out", str(tmp_path / "r")]
    assert main([*command, "--memory-budget", gigabytes]) == 0


def test_a_groups_results_are_budgeted_with_its_training(monkeypatch):
    """A group keeps the final networks of all its configurations until it ends (161
    cells of 100 runs at full scale, 4.35 GB at d = 64), and none of it was budgeted:
    the preset checked one cell's results, and the group's batches got the whole budget.
    Now the check counts every cell of a group, and `run_group` gives its batches the
    budget less the group's results. Shapes only, and training stubbed."""
    from gdrelu.cli import options

    scale = section10.SCALES["full"]
    size = section10.group_size(scale)
    assert size == len(scale.bias_inits) * len(scale.step_exponents) == 161
    first = section10.group_specs(scale)[-1]  # d = 64
    assert first.dim == 64 and size * memory.results_bytes(first) > 4.3e9
    options.check_fits([first], 3e9, together=False, lower="--scale")  # one cell's: fits
    with pytest.raises(memory.BudgetError) as err:
        options.check_fits([first], 3e9, together=False, lower="--scale", cells=size)
    assert str(err.value).startswith("--memory-budget: the final networks of 100 runs per "
                                     "cell, widths up to 512 in each of 161 cells kept "
                                     "together, need about 4.35 GB")  # fmt: skip
    budgets = []
    monkeypatch.setattr(
        section10, "train_cells", lambda work, **kw: budgets.append(kw["budget"]) or 1 / 0
    )
    group = section10.configurations(section10.SCALES["tiny"])[0]
    tiny = section10.SCALES["tiny"]
    with pytest.raises(ZeroDivisionError):
        section10.run_group(tiny, group, memory_budget=10**9)
    cells = [cell for _, cell in section10.group_cells(tiny, group, 0)]
    assert budgets == [10**9 - sum(memory.results_bytes(c.spec) for c in cells)]
