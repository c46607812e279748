"""`farm report` from a real stored sweep: real Ray, real engine, real SQLite.

One small sweep is measured once for the module (two models, the three
activations, a processor too small to fit them), plus a second sweep for
``--against``; every test reads the report of that sweep and checks it against
the store's own rows.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
import struct
import subprocess
import tempfile
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from farmcli import run_farm as farm
from matplotlib.image import imread

from farm import spec
from farm.errors import SpecError
from farm.report import build, cells, compare, figures, markdown, paper, study, vocabulary
from farm.result import EngineResult
from farm.states import JobState, TaskState
from farm.store import Cell as StoredCell
from farm.store import JobRecord, Store, TaskRecord

DATA = Path(__file__).parent / "data"
PAPER_IDS = {"tegra-cpu": "tegra-k1-cpu", "tegra-gpu": "tegra-k1-gpu",
             "snapdragon-cpu": "snapdragon-800-cpu", "snapdragon-dsp": "snapdragon-800-dsp",
             "edison-cpu": "edison-cpu"}  # the transcription's processor names: the inventory's  # fmt: skip

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
    assert {"report.md", "report.html", "cells.csv", "cells.json", "layers.csv"} <= names
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
    with (out / "cells.csv").open() as f:
        table = list(csv.DictReader(f))
    for col in ("zoo", "options", "params", "input_shape", "warnings", "busy", "median_ci95_lo_ms"):
        assert col in table[0], col
    svhn = next(r for r in table if r["model"] == "svhn" and r["processor"] == "cpu")
    assert (svhn["zoo"], svhn["params"], svhn["input_shape"]) == ("svhn", "313546", "1×3×32×32")
    for r in table:
        stored = by_task[r["task"]]
        assert r["warnings"] == ("; ".join(stored["warnings"]) if stored["warnings"] else "")

    with (out / "layers.csv").open() as f:
        layer_rows = list(csv.DictReader(f))
    for row in rows:
        stored_layers = store.layers(row["id"])
        mine = [r for r in layer_rows if r["task"] == row["id"]]
        assert [int(r["number"]) for r in mine] == [x.index + 1 for x in stored_layers]
        assert [r["name"] for r in mine] == [x.name for x in stored_layers]
        assert mine == [] or mine[0]["number"] == "1"  # numbered from 1, as the study does


def test_tables_show_the_stores_numbers_and_reasons(bench, store):
    text = (bench["out"] / "report.md").read_text()
    rows = {
        (r["model"], r["board"], r["processor"], r["variant"].get("activation")): r
        for r in results(store, bench["jobs"][1])
    }

    table3 = {(r["model"], r["board/processor"]): r for r in md_table(text, "Table 3:")}
    assert {m for m, _ in table3} == {"kws", "svhn"}
    kws = rows[("kws", "local", "cpu", "relu")]["result"]["latency"]
    headline = table3[("kws", "local/cpu")]["median [95% CI]"]
    assert headline.split(" ⚠")[0] == (
        f"{kws['median_ms']:.3f} [{kws['median_ci95_low_ms']:.3f}, {kws['median_ci95_high_ms']:.3f}]"
    )
    assert table3[("kws", "local/cpu")]["mean"] == f"{kws['mean_ms']:.3f}"
    assert table3[("kws", "local/cpu")]["study's model"] == "Deep KWS"
    assert table3[("kws", "local/cpu")]["stands for"] == "Edison CPU"
    tiny = rows[("svhn", "local", "tiny", None)]
    assert tiny["state"] == "does-not-fit"
    cell = table3[("svhn", "local/tiny")]["median [95% CI]"]
    assert cell.startswith("- (does not fit: needs ") and "has 1 MB)" in cell
    table2 = {(r["model"], r["board/processor"]): r for r in md_table(text, "Table 2:")}
    assert table2[("kws", "local/cpu")]["mean [95% CI]"].startswith(
        "- (no power monitor on this board)"
    )

    ci = md_table(text, "Detail: 95% confidence intervals")
    kws_ci = next(r for r in ci if r["model"] == "kws" and r["activation"] == "relu"
                  and r["board/processor"] == "local/cpu")  # fmt: skip
    assert kws_ci["95% CI low"] == f"{kws['median_ci95_low_ms']:.3f}"
    assert kws_ci["mean"] == f"{kws['mean_ms']:.3f}"
    assert kws_ci["n"] == "30"

    table7 = {(r["model"], r["board/processor"]): r for r in md_table(text, "Table 7:")}
    for activation in study.ACTIVATIONS:
        task = rows[("kws", "local", "cpu", activation)]["id"]
        layers = [asdict(r) for r in store.layers(task)]
        share = vocabulary.activation_share(layers)
        acts = [r for r in layers if r["type"] in vocabulary.MODULES["non-linear"]]
        assert share == pytest.approx(
            sum(r["time_ms"] for r in acts) / sum(r["time_ms"] for r in layers[:-1])
        )  # the activation layers only, over the layers (the graph row apart)
        assert table7[("kws", "local/cpu")][activation].split(" ⚠")[0] == f"{share:.1%}"
    study7 = {a: table7[("kws", "local/cpu")][f"study: {a}"] for a in study.ACTIVATIONS}
    assert study7 == {"sigmoid": "6.3%", "tanh": "0.4%", "relu": "0.2%"}  # the study's Table 7

    table5 = md_table(text, "Table 5:")  # svhn is the sweep's only CNN
    svhn_layers = store.layers(rows[("svhn", "local", "cpu", None)]["id"])
    named = [r for r in table5 if r["#"] != "-"]
    assert [r["layer"] for r in named] == [r.name for r in svhn_layers[:-1]]
    assert [r["#"] for r in named] == [str(i) for i in range(1, len(named) + 1)]
    assert table5[-1]["layer"] == "(graph)" and table5[-1]["group"] == "-"
    groups = [r["group"] for r in named]
    first_fc = next(i for i, r in enumerate(svhn_layers) if r.type == "Linear")
    assert groups == ["feature extraction"] * first_fc + ["classification"] * (
        len(groups) - first_fc
    )
    assert all(r["study #"] == "" for r in table5)  # the study's Table 5 is AlexNet's
    table6 = md_table(text, "Table 6:")  # and kws its DNN
    kws_layers = store.layers(rows[("kws", "local", "cpu", "relu")]["id"])
    assert [r["PyTorch type"] for r in table6 if r["#"] != "-"] == [r.type for r in kws_layers[:-1]]
    assert {r["group"] for r in table6} <= {"classification", "-"}
    assert "A DNN has no feature extraction" in text and "feature extraction: 0.0%" not in text

    against = md_table(text, "Change from")
    kws_change = next(r for r in against if r["model"] == "kws" and r["activation"] == "relu"
                      and r["board/processor"] == "local/cpu")  # fmt: skip
    before = results(store, bench["jobs"][0])
    old = next(r for r in before if r["model"] == "kws" and r["processor"] == "cpu"
               and r["variant"]["activation"] == "relu")["result"]["latency"]["median_ms"]  # fmt: skip
    change = (kws["median_ms"] - old) / old
    assert kws_change["time change"].split()[0] == f"{change:+.1%}"
    # the note renders as text, not as broken emphasis (`** B's mean ...*`)
    assert "\n† B's value lies outside A's 95% confidence interval." in text
    assert not [line for line in text.splitlines() if line.startswith(("** ", "*†", "*\\*"))]

    assert "## Provenance" in text and "2.13" in text  # the torch version from the results' env
    assert not re.search(r"\d\.\d+e\+\d", text)  # freq_mhz and friends as plain numbers


def test_the_studys_columns_hold_the_shared_values(bench, store):
    """Every study column of Tables 3 and 7 holds the value of the study's tables as
    transcribed from the paper (tests/data/lane2015-tables.json), and its ratio."""
    shared = json.loads((DATA / "lane2015-tables.json").read_text())
    text = (bench["out"] / "report.md").read_text()
    table3 = {(r["model"], r["board/processor"]): r for r in md_table(text, "Table 3:")}
    ref = paper.reference()
    sweep = cells.load(store, bench["jobs"][1], spec.load_inventory(bench["inv"]))
    for model in ("kws", "svhn"):
        row = table3[(model, "local/cpu")]
        median = sweep.cell(model, "local/cpu").time_ms().value
        for column, value in zip(
            shared["table3_time_ms"]["columns"],
            shared["table3_time_ms"]["rows"][model],
            strict=True,
        ):
            label = ref.processor_label(PAPER_IDS[column])
            got = row[f"study: {label}"]
            if value is None:
                assert got.startswith("- (does not run there")
            else:
                assert got == f"{value:,.1f} ({median / value:.2g}×)"
    finding = next(line for line in text.splitlines() if "Table 3 (time): on local/cpu" in line)
    assert "Deep KWS < SVHN" in finding and "Edison CPU" in finding


def test_reference_data_is_the_papers_tables():
    """data/paper.json holds exactly the transcription of the paper's tables, each value
    with the table, row and column it was read from; its provenance is the paper's text."""
    shared = json.loads((DATA / "lane2015-tables.json").read_text())
    ref = paper.reference()
    assert "search" not in json.dumps(ref.provenance).lower()
    assert "paper's text" in ref.provenance["source"]
    for number, key in (("2", "table2_energy_mj"), ("3", "table3_time_ms"),
                        ("4", "table4_battery_hours")):  # fmt: skip
        table = shared[key]
        for model, values in table["rows"].items():
            for column, value in zip(table["columns"], values, strict=True):
                got, where = ref.value(number, model, PAPER_IDS[column])
                assert got == value, (number, model, column)
                if value is not None:
                    assert where.startswith(f"Table {number}, row ") and "column" in where
    for number, key, model in (("5", "table5_alexnet_layers", "alexnet"),
                               ("6", "table6_deepear_emotion_layers", "deepear-emotion")):  # fmt: skip
        rows = ref.layers(number, model)
        assert [(r["layer"], r["type"], r["params"], r["percent"]) for r in rows] == [
            tuple(r) for r in shared[key]["rows"]
        ]
        assert all(r["where"].startswith(f"Table {number}, row {r['layer']}") for r in rows)
    for model, values in shared["table7_nonlinear_share_percent"]["rows"].items():
        key = "deepear-emotion" if model == "deepear" else model
        for activation, value in zip(study.ACTIVATIONS, values, strict=True):
            share, where = ref.activation_share(key, activation)
            assert share == pytest.approx(value / 100) and where.startswith("Table 7, row ")
    for model, (kind, size, _) in shared["table1_models"]["rows"].items():
        row = ref.row("1", model)
        assert (row["type"], row["parameters"]) == (kind, size)
    report = build.assemble(cells.Sweep(JOB_RECORD, []), ref=ref)  # an empty sweep renders
    assert [s.title for s in report.sections][:3] == ["Summary", "Beside the study",
                                                      "Table 1: models"]  # fmt: skip
    # the limits Figure 5 draws: Section 2's words
    assert [ref.limit_mb(p)[0] for p in ("snapdragon-800-dsp", "edison-cpu",
            "snapdragon-800-cpu", "tegra-k1-cpu")] == [8, 1024, 1024, 1.7 * 1024]  # fmt: skip


def test_vocabulary_reproduces_the_studys_own_split():
    """Fed the study's own Table 5 rows, the vocabulary draws the study's line: 94.5% of
    the time in feature extraction, 5.5% in classification, and 2.3M of 60.9M parameters,
    3.7% as the study prints it (it truncates; 2,334,080 / 60,965,224 is 3.83%)."""
    ref = paper.reference()
    rows = vocabulary.study_rows(ref.layers("5", "alexnet"))
    assert [vocabulary.study_type(r) for r in rows] == [
        r["type"] for r in ref.layers("5", "alexnet")
    ]
    groups = vocabulary.group(rows)
    assert groups == ["feature extraction"] * 15 + ["classification"] * 8  # the line: 15 | 16
    split = vocabulary.split(rows)
    assert f"{split['feature extraction'][0]:.1%}" == "94.5%"
    assert f"{split['classification'][0]:.1%}" == "5.5%"
    fe_params = sum(
        r["params"] for r, g in zip(rows, groups, strict=True) if g == "feature extraction"
    )
    total = sum(r["params"] for r in rows)
    assert (fe_params, total) == (2_334_080, 60_965_224)
    assert split["feature extraction"][1] == pytest.approx(fe_params / total)
    millions = vocabulary.truncated(fe_params / 1e6), vocabulary.truncated(total / 1e6)
    assert millions == (2.3, 60.9)
    assert vocabulary.truncated(100 * millions[0] / millions[1]) == 3.7
    # Table 6, a DNN: no feature extraction, every layer classifies
    dnn = vocabulary.study_rows(ref.layers("6", "deepear-emotion"))
    assert set(vocabulary.group(dnn)) == {"classification"}
    assert "feature extraction" not in vocabulary.split(dnn)


def test_vocabulary_maps_modules_and_operation_kinds():
    st = vocabulary.study_type
    assert st({"type": "Conv2d"}) == "convolution" and st({"type": "Linear"}) == "feed-forward"
    assert st({"type": "LocalResponseNorm"}) == "normalization"  # not non-linear (Table 7)
    assert st({"type": "Softmax"}) == "softmax" and st({"type": "ReLU"}) == "non-linear"
    assert st({"type": "MaxPool2d"}) == "pooling" and st({"type": "Dropout"}) == "dropout"
    assert st({"type": "Flatten"}) is None
    # a user's model's exported-graph rows: the kind of operation, the owner's type
    assert st({"type": "MyBlock", "kind": "conv"}) == "convolution"
    assert st({"type": "MyBlock", "kind": "linear"}) == "feed-forward"
    assert st({"type": "MyBlock", "kind": "nonlinear"}) == "non-linear"
    assert st({"type": "Softmax", "kind": "nonlinear"}) == "softmax"
    assert st({"type": "MyBlock", "kind": "norm"}) == "normalization"
    assert st({"type": "MyAttention", "kind": "attention"}) is None
    assert set(vocabulary.KINDS) == {"nonlinear", "attention", "linear", "matmul", "conv",
                                     "norm", "pooling", "dropout", "layout", "reduction",
                                     "elementwise", "other", "graph"}  # fmt: skip
    graph = {"name": "(graph)", "type": "Graph", "time_ms": 5.0, "params": 0}
    rows = [{"name": "fc", "type": "Linear", "time_ms": 1.0, "params": 10},
            {"name": "act", "type": "Tanh", "time_ms": 1.0, "params": 0}, graph]  # fmt: skip
    assert vocabulary.group(rows) == ["classification", "classification", None]
    assert vocabulary.activation_share(rows) == 0.5  # the graph row is no layer


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
    assert re.search(r'<td class="num[^"]*" title="95% CI [^"]+ ms, n=30">', html)
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
    for title in ("Table 1", "Table 3", "Table 5", "Table 7", "Beside the study", "Provenance",
                  "Deep KWS", "agrees"):  # fmt: skip
        assert title in proc.stdout
    bad = farm("report", "no-such-job", env=bench["env"])
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "no-such-job" in bad.stderr


def test_a_stored_warning_is_shown_beside_its_cell_everywhere(bench, tmp_path):
    """A warning set on a stored result appears in report.md (a footnote), report.html (a
    badge), cells.csv and cells.json (a column), and `farm results` marks the busy cell."""
    db = tmp_path / "farm.db"
    shutil.copy(bench["root"] / "farm.db", db)
    job = bench["jobs"][1]
    said = ["board busy: load 8.2 on 2 CPUs", "a stored warning for the test"]
    with sqlite3.connect(db) as con:
        task = con.execute(
            "SELECT t.id FROM tasks t JOIN results r ON r.task_id = t.id WHERE t.job_id = ? "
            "AND t.model = 'svhn' AND t.processor = 'cpu'", (job,)
        ).fetchone()[0]  # fmt: skip
        data = json.loads(con.execute("SELECT data FROM results WHERE task_id = ?",
                                      (task,)).fetchone()[0])  # fmt: skip
        con.execute("UPDATE results SET data = ? WHERE task_id = ?",
                    (json.dumps({**data, "warnings": said}), task))  # fmt: skip
    env = {**bench["env"], "FARM_DB": str(db)}
    out = tmp_path / "out"
    proc = farm("report", job, "-i", str(bench["inv"]), "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout

    text = (out / "report.md").read_text()
    table3 = {(r["model"], r["board/processor"]): r for r in md_table(text, "Table 3:")}
    mark = table3[("svhn", "local/cpu")]["median [95% CI]"].split(" ⚠")[1]
    assert mark.endswith(" busy")  # the busy board, marked in the table itself
    assert re.search(r"⚠ \d+ of 8 cells were measured on a busy board \(load", text)
    mark = mark.removesuffix(" busy")
    block = text.split("**Table 3:", 1)[1].split("**Table 4:", 1)[0]
    for n, w in zip(mark.split(","), said, strict=True):
        assert f"⚠{n}: {w}" in block
    html = (out / "report.html").read_text()
    assert re.search(r'<span class="badge busy" title="board busy: load 8.2 on 2 CPUs; a stored '
                     r'warning for the test">busy ⚠[\d,]+</span>', html)  # fmt: skip
    with (out / "cells.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["task"] == task)
    assert row["warnings"] == "; ".join(said) and row["busy"] == "True"
    cell = next(c for c in json.loads((out / "cells.json").read_text())["cells"]
                if c["task"] == task)  # fmt: skip
    assert cell["warnings"] == said

    shown = farm("results", job, env={**env, "COLUMNS": "250"})
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if "svhn" in x and "local/cpu" in x)
    assert "busy" in line
    assert "board busy: load 8.2 on 2 CPUs" in shown.stdout


def _latency(median: float) -> dict:
    return {"n": 30, "mean_ms": median * 1.1, "median_ms": median,
            "median_ci95_low_ms": median * 0.9, "median_ci95_high_ms": median * 1.1}  # fmt: skip


def test_against_pairs_cells_by_model_and_effective_options():
    """kws run with `activation: relu` pairs with kws run with no variant (ReLU is the
    default); the change is of medians, marked where B lies outside A's CI."""
    env = {"model": {"zoo": "kws", "activation": "relu", "options": {}}}
    named = _stored("b", TaskState.DONE, {"status": "ok", "env": env, "latency": _latency(2.0)},
                    variant={"activation": "relu"})  # fmt: skip
    plain = _stored("b", TaskState.DONE, {"status": "ok", "env": env, "latency": _latency(1.0)})
    a = cells.Sweep(JOB_RECORD, [cells.Cell(named)])
    b = cells.Sweep(JOB_RECORD, [cells.Cell(plain)])
    view = compare.against(a, b)
    assert len(view.rows) == 1
    row = dict(zip(view.columns, view.rows[0], strict=True))
    assert (row["median time A (ms)"], row["median time B (ms)"]) == ("2.000", "1.000")
    assert row["time change"] == "+100.0% †"
    text = "\n".join(markdown.view(view))
    assert "† B's value lies outside A's 95% confidence interval." in text
    assert text.count("**") == 2  # the title's bold only


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


def _stored(board: str, state: TaskState, result: dict | None, error: str | None = None,
            variant: dict | None = None):  # fmt: skip
    task = TaskRecord(
        id=f"j.{board}", job_id="j", index=0, key=board, model="kws", board=board,
        processor="cpu", variant=variant or {}, state=state, attempts=1, error=error,
        created=0.0, updated=0.0,
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
           "loadavg_before": [0.5, 0.25, 0.125], "freq_mhz": 2596.134}  # fmt: skip
    done = _stored(
        "b", TaskState.DONE,
        {"status": "ok", "env": env, "latency": {"n": 5, "mean_ms": 1.5, "median_ms": 1.4}},
    )  # fmt: skip
    failed = _stored("c", TaskState.FAILED, None, "boom\ntraceback")
    exported = _stored(
        "d", TaskState.DONE,
        {"status": "ok", "env": {**env, "model": {"sha256": "e" * 64}},
         "artifact": {"sha256": "0123456789ab" + "f" * 52, "runtime": "onnxruntime"}},
        variant={"runtime": "onnxruntime"},
    )  # fmt: skip
    shas = study.provenance(cells.Sweep(JOB_RECORD, [cells.Cell(exported)]))
    # the artifact the runtime ran (the ONNX file), not the eager weights it came from
    assert shas.rows[0][shas.columns.index("artifact sha256")] == "0123456789ab"
    sweep = cells.Sweep(JOB_RECORD, [cells.Cell(done), cells.Cell(failed)])
    view = study.provenance(sweep)
    assert "governor" in view.columns and "loadavg_before" in view.columns
    assert "cpu_model" not in view.columns  # no result recorded it
    first, second = (dict(zip(view.columns, row, strict=True)) for row in view.rows)
    assert (first["governor"], first["loadavg_before"], first["engine"]) == (
        "performance", "0.5/0.25/0.125", "abc123"
    )  # fmt: skip
    assert first["freq_mhz"] == "2596.134"  # a plain number, not 2.6e+03
    assert second["governor"] == "-" and second["torch"] == "-"
    table3 = study.metric_table(sweep, "time", paper.reference())
    assert [r[2:6] for r in table3.rows] == [["b/cpu", "-", "1.400", "1.500"],
                                             ["c/cpu", "-", "- (failed: boom)", "-"]]  # fmt: skip


def test_energy_and_battery_cells():
    """Tables 2 and 4 and the CI detail from a result with an energy report (as the
    station stores it for a board with a monitor)."""
    energy = {"energy_per_inference_mj": {"net": {"mean": 0.489, "ci95": [0.241, 0.736], "n": 300}},
              "battery": {"hours": 9.71}}  # fmt: skip
    latency = {"n": 300, "mean_ms": 0.3, "median_ms": 0.29}
    metered = _stored("m", TaskState.DONE, {"status": "ok", "latency": latency, "energy": energy})
    plain = _stored("p", TaskState.DONE, {"status": "ok", "latency": latency})
    sweep = cells.Sweep(JOB_RECORD, [cells.Cell(metered), cells.Cell(plain)])
    ref = paper.reference()
    table2 = study.metric_table(sweep, "energy", ref)
    assert [r[4] for r in table2.rows] == ["0.489 [0.241, 0.736]",
                                           "- (no power monitor on this board)"]  # fmt: skip
    assert table2.tips[(0, 4)] == "95% CI 0.241 to 0.736 mJ, n=300"
    assert table2.rows[0][5] == "2.2 (0.22×)"  # the study's Deep KWS on the Tegra CPU: 2.2 mJ
    assert [r[4] for r in study.metric_table(sweep, "battery", ref).rows] == [
        "9.7", "- (no power monitor on this board)"
    ]  # fmt: skip
    detail = [r for r in study.ci_detail(sweep).rows if r[3] == "mean energy (mJ)"]
    assert detail == [["kws", "m/cpu", "relu", "mean energy (mJ)", "0.489", "0.241", "0.736",
                       "0.489", "300"]]  # fmt: skip


def test_figures_show_the_studys_models_and_limits(bench, store):
    """Figure 4 is SVHN (4a) and Deep KWS (4b) as shares of time; Figure 5 draws the limit
    of the study's processor a board stands for and decides "does not fit" against it."""
    sweep = cells.load(store, bench["jobs"][1], spec.load_inventory(bench["inv"]))
    fig = figures.figure4(sweep)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("(a) svhn (CNN)") and titles[1].startswith("(b) kws (DNN)")
    bars = [p.get_width() for p in fig.axes[1].patches]
    assert sum(bars) == pytest.approx(100.0)  # shares of the layers' time, in percent

    ref = paper.reference()
    on_edison = sweep.cell("svhn", "local/cpu")  # local/cpu stands for the Edison CPU
    assert figures.limit(on_edison, ref) == (1024.0, "the study's Edison CPU: 1 GB")
    tiny = sweep.cell("svhn", "local/tiny")  # stands for none: its own 1 MB
    assert figures.limit(tiny, ref) == (1.0, "this board's: 1 MB")
    assert figures.fits(tiny, 1.0) is False and figures.fits(on_edison, 1024.0) is True
    env = {"model": {"zoo": "alexnet"}}
    alexnet = _stored("d", TaskState.DONE, {"status": "ok", "env": env, "latency": _latency(9.0),
                                            "memory": {"required_mb": 233.0}})  # fmt: skip
    on_dsp = cells.Cell(alexnet, paper="snapdragon-800-dsp")
    cap, label = figures.limit(on_dsp, ref)
    assert (cap, label) == (8.0, "the study's Snapdragon DSP: 8 MB")
    assert figures.fits(on_dsp, cap) is False  # 233 MB: over the line the panel draws
