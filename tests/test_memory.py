"""The memory budget: a width whose single run cannot fit is refused before anything runs,
and blocks shrink with the width so that the others fit."""

import pytest

from gdrelu import ExperimentSpec, memory
from gdrelu.runner import run_experiment

WIDE = ExperimentSpec(widths=(8, 4096), deltas=(0.0,), runs=2, check_every=10, max_checks=2)


def one_run_bytes(spec: ExperimentSpec, width: int) -> int:
    per_run, per_block_run = memory.run_bytes(spec, width, spec.cells()[0])
    devices = memory.jax.local_device_count()
    return memory.batch_bytes(per_run, per_block_run, 1, 1, devices, spec.path == "fixed_pattern")


def test_a_width_whose_run_cannot_fit_is_refused_before_anything_compiles(monkeypatch):
    from gdrelu import runner

    need = one_run_bytes(WIDE, 4096)
    assert one_run_bytes(WIDE, 8) < need // 100
    memory.check_fits(WIDE, need)  # exactly enough
    monkeypatch.setattr(runner, "_train_batch", None)  # nothing may train
    with pytest.raises(memory.BudgetError) as refused:
        run_experiment(WIDE, memory_budget=need - 1)
    message = str(refused.value)
    assert "width 4096" in message and "memory budget" in message
    assert f"{need / 1e9:.3g} GB" in message and f"{(need - 1) / 1e9:.3g} GB" in message
    assert isinstance(refused.value, ValueError)
