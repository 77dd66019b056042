"""`gdrelu reproduce` on tiny sizes: the report's files, the paper comparison, resuming."""

import json

import pytest

from gdrelu import reproduce, runner
from gdrelu.reproduce import Sizes


@pytest.fixture
def tiny(monkeypatch):
    """Every experiment at a few runs of one or two small widths."""
    monkeypatch.setitem(reproduce.SIZES, "gd-figure", {"small": Sizes((16,), (0.0, 0.2), 12)})
    monkeypatch.setitem(reproduce.SIZES, "variants", {"small": Sizes((8,), (0.1,), 6)})


def test_the_report_compares_with_the_paper_and_embeds_its_figure(tiny, tmp_path):
    path = reproduce.reproduce(tmp_path, scale="small", only=("gd-figure",))
    text = path.read_text()
    section = json.loads((tmp_path / "gd-figure" / "section.json").read_text())
    (table,) = section["tables"]
    rows = {(r[0], r[1]): r for r in table["rows"]}
    assert rows[16, 0.0][-2] == reproduce.PAPER_CROSSED[16, 0.0]  # the paper's count
    assert rows[16, 0.2][-1] == "-"  # no number of the paper's code for Δ = 0.2
    z = float(rows[16, 0.0][-1])
    crossed, runs = rows[16, 0.0][3], rows[16, 0.0][2]
    want = reproduce.two_proportion_z(crossed, runs, reproduce.PAPER_CROSSED[16, 0.0], 400)
    assert z == pytest.approx(want, abs=0.005)  # printed with two decimals
    assert "largest |z|" in text and "![" in text and "gd-figure/gd-figure.png" in text
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page


def test_a_finished_experiment_is_not_run_again_and_a_killed_one_resumes(
    tiny, tmp_path, monkeypatch
):
    reproduce.reproduce(tmp_path, scale="small", only=("sgd",))
    trained = []
    original = runner._trained_widths

    def counting(*args, **kwargs):
        for item in original(*args, **kwargs):
            trained.append(item[0])
            yield item

    monkeypatch.setattr(runner, "_trained_widths", counting)
    first = (tmp_path / "report.md").read_text()
    reproduce.reproduce(tmp_path, scale="small", only=("sgd",))
    assert trained == [] and (tmp_path / "report.md").read_text() == first
    (tmp_path / "sgd" / "section.json").unlink()  # killed after its units were stored
    reproduce.reproduce(tmp_path, scale="small", only=("sgd",))
    assert trained == []  # read back from the units, not trained again
    section = json.loads((tmp_path / "sgd" / "section.json").read_text())
    assert section["settings"]["early_stopping"] and section["settings"]["sampler"] == "multinomial"


def test_unknown_experiments_and_scales_are_refused(tmp_path):
    with pytest.raises(ValueError, match="only"):
        reproduce.reproduce(tmp_path, only=("figure-9",))
    with pytest.raises(ValueError, match="scale"):
        reproduce.reproduce(tmp_path, scale="huge")


def test_the_command_runs_resumes_and_refuses_in_one_line(tiny, tmp_path, capsys):
    from gdrelu.cli import main

    out = tmp_path / "repro"
    assert main(["reproduce", "--only", "figure-9", "--out", str(out), "--quiet"]) == 2
    assert "--only: figure-9" in capsys.readouterr().err and not out.exists()
    # sgd, as the test above: the same compiled programs (reproduce runs every variant
    # protocol alike; tests/test_protocols.py tests the swapped one's rules)
    assert main(["reproduce", "--only", "sgd", "--out", str(out), "--quiet"]) == 0
    assert (out / "report.html").exists() and (out / "sgd" / "section.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["specs"] == [{"reproduce": ["sgd"], "scale": "small"}]
    before = (out / "report.md").read_text()
    assert main(["reproduce", "--resume", str(out), "--quiet"]) == 0  # scale, only: recorded
    assert (out / "report.md").read_text() == before
    assert main(["reproduce", "--resume", str(out), "--scale", "paper", "--quiet"]) == 2
