"""`farm report` from a real stored sweep: real Ray, real engine, real SQLite.

One small sweep is measured once for the module (two models, the three
activations, a processor too small to fit them), plus a second sweep for
``--against``; every test reads the report of that sweep and checks it against
the store's own rows.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import tempfile
import textwrap
from dataclasses import asdict

import numpy as np
import pytest
from farmcli import run_farm as farm
from matplotlib.image import imread

from farm import spec
from farm.errors import SpecError
from farm.report import build, cells, figures, findings, paper, study
from farm.result import EngineResult
from farm.states import JobState, TaskState
from farm.store import Cell as StoredCell
from farm.store import JobRecord, Store, TaskRecord

JOB = """\
version: 1
name: {name}
migrate: false   # every cell from the board it names: a retried task stays put
models:
  - {{name: kws, zoo: kws, variants: {{activation: [relu, sigmoid, tanh]}}}}
  - svhn
targets: [{{boards: {boards}}}]
measure: {{iterations: 30, warmup: 2, layer_iterations: 3}}
"""

INVENTORY = """\
version: 1
boards:
  - name: local
    transport: local
    cache_dir: {cache}
    processors:
      - {{name: cpu, device: cpu, threads: 1, paper: edison-cpu}}
      - {{name: tiny, device: cpu, threads: 1, memory_mb: 1}}
"""


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The store after two real sweeps, the inventory, and the report written from it."""
    root = tmp_path_factory.mktemp("report")
    env = {"FARM_DB": str(root / "farm.db"), "FARM_CACHE": str(root / "cache")}
    inv = root / "inv.yaml"
    inv.write_text(INVENTORY.format(cache=root / "board"))
    jobs = []
    for name, boards in (("before", "[local]"), ("after", "[local]")):
        job = root / f"{name}.yaml"
        job.write_text(JOB.format(name=name, boards=boards))
        proc = farm("submit", str(job), "-i", str(inv), "--quiet", env=env)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        jobs.append(Store(root / "farm.db").job("latest").id)
    out = root / "out"
    proc = farm("report", jobs[1], "--against", jobs[0], "-i", str(inv), "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return {"root": root, "env": env, "inv": inv, "jobs": jobs, "out": out}


@pytest.fixture(scope="module")
def store(bench):
    return Store(bench["root"] / "farm.db")


def results(store: Store, job_id: str) -> list[dict]:
    """The store's cells of a job as plain data, to check the report's text against."""
    return [
        {"id": c.task.id, "model": c.task.model, "board": c.task.board,
         "processor": c.task.processor, "variant": c.task.variant, "state": c.task.state.value,
         "result": c.result.model_dump(mode="json") if c.result else None}
        for c in store.cells(job_id)
    ]  # fmt: skip


def md_table(text: str, title: str) -> list[dict[str, str]]:
    """The rows of the Markdown table whose bold title starts with ``title``."""
    lines = text.split(f"**{title}", 1)[1].splitlines()[2:]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(
            dict(zip(header, [c.strip() for c in line.strip("|").split(" | ")], strict=True))
        )
    return rows


def test_files_hold_every_cell_of_the_store(bench, store):
    job_id = bench["jobs"][1]
    rows = results(store, job_id)
    assert len(rows) == 8  # kws × 3 activations + svhn, on local's cpu and tiny
    out = bench["out"]
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "report.html", "cells.csv", "cells.json"} <= names
    assert {f"{n}.png" for n in figures.SIZES} <= names

    data = json.loads((out / "cells.json").read_text())
    assert data["job"]["id"] == job_id
    by_task = {c["task"]: c for c in data["cells"]}
    assert set(by_task) == {r["id"] for r in rows}
    for row in rows:
        cell = by_task[row["id"]]
        assert (cell["model"], cell["board"], cell["processor"], cell["state"]) == (
            row["model"], row["board"], row["processor"], row["state"]
        )  # fmt: skip
        if row["state"] == "done":
            assert cell["mean_ms"] == row["result"]["latency"]["mean_ms"]
            assert cell["layers"] == [asdict(r) for r in store.layers(row["id"])]
            assert cell["artifact_sha256"] == row["result"]["env"]["model"]["sha256"]
        assert cell["paper_processor"] == ("edison-cpu" if row["processor"] == "cpu" else None)

    csv_lines = (out / "cells.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + len(rows)
    assert csv_lines[0].startswith("task,model,board,processor,variant,state")


def test_tables_show_the_stores_numbers_and_reasons(bench, store):
    text = (bench["out"] / "report.md").read_text()
    rows = {
        (r["model"], r["board"], r["processor"], r["variant"].get("activation")): r
        for r in results(store, bench["jobs"][1])
    }

    table3 = {r["model"]: r for r in md_table(text, "Table 3:")}
    assert set(table3) == {"kws", "svhn"}
    assert set(table3["kws"]) == {"model", "local/cpu", "local/tiny"}
    kws = rows[("kws", "local", "cpu", "relu")]["result"]["latency"]
    assert table3["kws"]["local/cpu"] == f"{kws['mean_ms']:.3f}"
    tiny = rows[("svhn", "local", "tiny", None)]
    assert tiny["state"] == "does-not-fit"
    assert table3["svhn"]["local/tiny"].startswith("- (does not fit: needs ")
    assert table3["svhn"]["local/tiny"].endswith("has 1 MB)")
    table2 = {r["model"]: r for r in md_table(text, "Table 2:")}
    assert table2["kws"]["local/cpu"] == "- (no power monitor on this board)"

    ci = md_table(text, "Detail: 95% confidence intervals")
    kws_ci = next(r for r in ci if r["model"] == "kws" and r["activation"] == "relu"
                  and r["board/processor"] == "local/cpu")  # fmt: skip
    assert kws_ci["95% CI low"] == f"{kws['ci95_low_ms']:.3f}"
    assert kws_ci["n"] == "30"

    table7 = {(r["model"], r["board/processor"]): r for r in md_table(text, "Table 7:")}
    for activation in study.ACTIVATIONS:
        share = rows[("kws", "local", "cpu", activation)]["result"]["layer_pass"]["nonlinear_share"]
        assert table7[("kws", "local/cpu")][activation] == f"{share:.1%}"

    table5 = md_table(text, "Table 5:")  # svhn is the sweep's only CNN
    svhn_layers = store.layers(rows[("svhn", "local", "cpu", None)]["id"])
    assert [r["layer"] for r in table5] == [r.name for r in svhn_layers]
    groups = [r["group"] for r in table5]
    first_fc = next(i for i, r in enumerate(svhn_layers) if r.type == "Linear")
    assert groups == ["feature extraction"] * first_fc + ["classification"] * (
        len(groups) - first_fc
    )
    table6 = md_table(text, "Table 6:")  # and kws its DNN
    assert [r["type"] for r in table6] == [
        r.type for r in store.layers(rows[("kws", "local", "cpu", "relu")]["id"])
    ]

    beside = md_table(text, "Beside the study")
    assert {r["study's processor"] for r in beside} == {"Edison CPU"}
    assert all(r["board/processor"] == "local/cpu" for r in beside)

    against = md_table(text, "Change from")
    kws_change = next(r for r in against if r["model"] == "kws" and r["activation"] == "relu"
                      and r["board/processor"] == "local/cpu")  # fmt: skip
    before = results(store, bench["jobs"][0])
    old = next(r for r in before if r["model"] == "kws" and r["processor"] == "cpu"
               and r["variant"]["activation"] == "relu")["result"]["latency"]["mean_ms"]  # fmt: skip
    change = (kws["mean_ms"] - old) / old
    assert kws_change["time change"].split()[0] == f"{change:+.1%}"

    assert "## Provenance" in text and "2.13" in text  # the torch version from the results' env


def test_figures_are_pngs_of_the_promised_size_with_content(bench):
    for name, (width, height) in figures.SIZES.items():
        path = bench["out"] / f"{name}.png"
        head = path.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", head[16:24]) == (width, height)
        pixels = imread(path)
        assert pixels.shape[:2] == (height, width)
        ink = (pixels[..., :3] < 0.5).any(axis=2).mean()  # share of dark pixels: text, bars
        assert 0.005 < ink < 0.5, f"{name}: {ink:.3%} dark pixels"
        colour = np.abs(pixels[..., 0] - pixels[..., 2]) > 0.3  # the blue/orange bars
        assert colour.mean() > 0.005, f"{name} has no coloured bars"


def test_html_is_self_contained(bench):
    html = (bench["out"] / "report.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", html)
    assert refs, "no figures or navigation found"
    assert all(r.startswith(("data:image/png;base64,", "#")) for r in refs), refs
    for banned in ("<script", "<link", "@import", "url(", "<iframe"):
        assert banned not in html.lower()
    assert html.count("data:image/png;base64,") == len(figures.SIZES)
    assert re.search(r'<td class="num" title="95% CI [^"]+ ms, n=30">', html)
    assert '<tr class="line"><td class="num">' in html  # the study's line in Table 5


def test_html_renders_in_headless_chromium(bench):
    shot = bench["root"] / "page.png"
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", f"--screenshot={shot}",
             "--window-size=1280,2400", (bench["out"] / "report.html").as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    pixels = imread(shot)
    assert pixels.shape[:2] == (2400, 1280)
    assert (pixels[..., :3] < 0.5).any(axis=2).mean() > 0.01  # text was drawn, not a blank page


def test_terminal_report_and_bad_job(bench):
    proc = farm("report", bench["jobs"][1], "-i", str(bench["inv"]), env=bench["env"])
    assert proc.returncode == 0, proc.stderr
    for title in ("Table 1", "Table 3", "Table 5", "Table 7", "Beside the study", "Provenance"):
        assert title in proc.stdout
    bad = farm("report", "no-such-job", env=bench["env"])
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "no-such-job" in bad.stderr


def test_comparison_with_reference_values(bench, store):
    """The comparison logic, fed a reference with known values. These numbers are a test
    double, not the study's: the shipped reference data holds none (see data/paper.json)."""
    sweep = cells.load(store, bench["jobs"][1], spec.load_inventory(bench["inv"]))
    kws = sweep.cell("kws", "local/cpu")
    data = json.loads(json.dumps(paper.reference().data))
    data["tables"]["3"]["values"] = [
        {
            "model": "kws",
            "processor": "edison-cpu",
            "value": 2 * kws.time_ms().mean,
            "where": "test",
        }
    ]
    data["tables"]["7"]["values"] = [
        {"model": "kws", "activation": a, "share": s, "where": "test"}
        for a, s in (("sigmoid", 0.9), ("tanh", 0.5), ("relu", 0.1))
    ]
    ref = paper.Reference(data)
    beside = {(r[0], r[3]): r for r in study.beside(sweep, ref).rows}
    assert beside[("kws", "time (ms)")][-1] == "0.50×"
    assert "not in the reference data" in beside[("kws", "energy (mJ)")][5]
    said = findings.findings(sweep, ref)
    assert any("time (ms), farm / study: kws on local/cpu 0.50×" in f.text for f in said)
    order = next(f for f in said if f.text.startswith("kws on local/cpu: the non-linear"))
    assert order.agrees is not None and "sigmoid > tanh > relu" in order.text


def test_reference_data_says_where_each_value_comes_from_or_why_not():
    ref = paper.reference()
    assert set(ref.data["processors"]) == set(spec.inventory.PaperProcessor.__args__)
    for number in ("2", "3", "4", "5", "6", "7"):
        table = ref.table(number)
        entries = table.get("values", []) + table.get("layers", [])
        assert entries or table["missing"].strip()
        assert all(e.get("where") for e in entries), number
    report = build.assemble(cells.Sweep(JOB_RECORD, []), ref=ref)
    assert [s.title for s in report.sections][:3] == [
        "Summary",
        "Beside the study",
        "Table 1: models",
    ]


def test_inventory_paper_field_is_checked(tmp_path):
    text = textwrap.dedent(
        """\
        version: 1
        boards:
          - name: b
            processors:
              - {name: cpu, paper: pentium-4}
        """
    )
    with pytest.raises(SpecError) as info:
        spec.parse_inventory(text, file="inv.yaml")
    assert "inv.yaml:5" in str(info.value) and "paper" in str(info.value)


def _stored(board: str, state: TaskState, result: dict | None, error: str | None = None):
    task = TaskRecord(
        id=f"j.{board}", job_id="j", index=0, key=board, model="kws", board=board,
        processor="cpu", variant={}, state=state, attempts=1, error=error, created=0.0,
        updated=0.0,
    )  # fmt: skip
    return StoredCell(task, EngineResult.model_validate(result) if result else None)


JOB_RECORD = JobRecord(
    id="j", name="j", source=None, spec={}, boards=[], priority=0, state=JobState.FAILED,
    created=0.0, updated=0.0,
)  # fmt: skip


def test_provenance_and_reasons_from_whatever_a_result_recorded():
    """Results carry different environment keys over farm's versions; the report shows the
    keys that exist and a reason for every missing value, and never fails on a missing key."""
    env = {"torch": "2.13.0", "threads": 2, "engine": "abc123", "governor": "performance",
           "loadavg_before": [0.5, 0.25, 0.125]}  # fmt: skip
    done = _stored(
        "b", TaskState.DONE,
        {"status": "ok", "env": env, "latency": {"n": 5, "mean_ms": 1.5, "median_ms": 1.4}},
    )  # fmt: skip
    failed = _stored("c", TaskState.FAILED, None, "boom\ntraceback")
    sweep = cells.Sweep(JOB_RECORD, [cells.Cell(done), cells.Cell(failed)])
    view = study.provenance(sweep)
    assert "governor" in view.columns and "loadavg_before" in view.columns
    assert "cpu_model" not in view.columns  # no result recorded it
    first, second = (dict(zip(view.columns, row, strict=True)) for row in view.rows)
    assert (first["governor"], first["loadavg_before"], first["engine"]) == (
        "performance", "0.5/0.25/0.125", "abc123"
    )  # fmt: skip
    assert second["governor"] == "-" and second["torch"] == "-"
    table3 = study.metric_table(sweep, "time")
    assert table3.rows == [["kws", "1.500", "- (failed: boom)"]]


def test_energy_and_battery_cells():
    """Tables 2 and 4 and the CI detail from a result with an energy report (as the
    station stores it for a board with a monitor)."""
    energy = {"energy_per_inference_mj": {"net": {"mean": 0.489, "ci95": [0.241, 0.736], "n": 300}},
              "battery": {"hours": 9.71}}  # fmt: skip
    latency = {"n": 300, "mean_ms": 0.3, "median_ms": 0.29}
    metered = _stored("m", TaskState.DONE, {"status": "ok", "latency": latency, "energy": energy})
    plain = _stored("p", TaskState.DONE, {"status": "ok", "latency": latency})
    sweep = cells.Sweep(JOB_RECORD, [cells.Cell(metered), cells.Cell(plain)])
    table2 = study.metric_table(sweep, "energy")
    assert table2.rows == [["kws", "0.489", "- (no power monitor on this board)"]]
    assert table2.tips[(0, 1)] == "95% CI 0.241 to 0.736 mJ, n=300"
    assert study.metric_table(sweep, "battery").rows == [
        ["kws", "9.7", "- (no power monitor on this board)"]
    ]
    detail = [r for r in study.ci_detail(sweep).rows if r[3] == "energy (mJ)"]
    assert detail == [["kws", "m/cpu", "relu", "energy (mJ)", "0.489", "0.241", "0.736", "300"]]
