"""The layer pass of a user's model follows its graph: every operation, billed to who did it.

Two models a new user would bring as ``module:`` factories: a small residual CNN whose
ReLUs are ``torch.relu`` and whose blocks add a skip connection, and a two-layer
``nn.TransformerEncoder`` (its attention uses ``out_proj``'s weight without calling
``out_proj``). Each goes through the zoo's exporter and the engine as a board would run
it; the rows are checked for who did the work, and against a hook-free reference:
``torch.profiler`` on the plain exported module, whose top-level ATen events come one per
graph operation, in graph order, so each event's time goes to the module on its node's
stack. Timings are loose (the machine may be loaded); the structure is not.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from farm import zoo
from farm.engine import artifact
from farm.engine.request import parse_request
from farm.engine.runner import ModelCache, run_task
from farm.spec.job import ModelRef

USER_MODELS = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.Sequential(Block(16), Block(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.blocks(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet():
    return ResNet()


def encoder():
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
"""


@pytest.fixture(scope="module")
def user_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both models exported by the zoo from a user package, as ``.farm`` artifacts."""
    root = tmp_path_factory.mktemp("user")
    package = f"farm_graph_models_{uuid.uuid4().hex[:8]}"
    (root / f"{package}.py").write_text(textwrap.dedent(USER_MODELS))
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root))
        refs = {
            "resnet": ModelRef(
                name="resnet", module=f"{package}:resnet", input_shape=[1, 3, 32, 32]
            ),
            "encoder": ModelRef(
                name="encoder", module=f"{package}:encoder", input_shape=[1, 16, 64]
            ),
        }
        return {name: zoo.export(ref, cache_dir=root / "cache").path for name, ref in refs.items()}


def measure(path: Path) -> dict:
    request = {"artifact": str(path), "iterations": 10, "warmup": 2,
               "layer_iterations": 60, "threads": 1}  # fmt: skip
    result = run_task(parse_request(request), ModelCache(capacity=0))
    assert result["status"] == "ok", result["error"]
    assert result["layer_pass"]["attribution"] == "graph nodes"
    assert result["layer_pass"]["model_form"] == result["model_form"] == "exported"
    return result


def reference_shares(path: Path, forwards: int = 30) -> dict[str, float]:
    """Each module's share of the operations' time, from torch.profiler (no ticks, no hooks)."""
    loaded = artifact.load(path)
    module, x = loaded.module, loaded.example_input()
    work = [n for n in module.graph.nodes if n.op == "call_function"]
    with torch.inference_mode():
        for _ in range(3):
            module(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(forwards):
                module(x)
    top = [e for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::")]
    assert len(top) == forwards * len(work)
    by_module: dict[str, float] = {}
    for k, node in enumerate(work):
        assert top[k].name.split("::")[1] == str(node.target).split(".")[1]
        took = sorted(top[k + i * len(work)].cpu_time_total for i in range(forwards))
        path_, _ = list(node.meta["nn_module_stack"].values())[-1]
        by_module[path_] = by_module.get(path_, 0.0) + took[forwards // 2]
    total = sum(by_module.values())
    return {m: t / total for m, t in by_module.items()}


def module_shares(rows: list[dict]) -> dict[str, float]:
    """Each module's share of the operations' time (the graph's entry/exit left out)."""
    work = [r for r in rows if r["kind"] != "graph"]
    total = sum(r["time_ms"] for r in work)
    shares: dict[str, float] = {}
    for r in work:
        shares[r["module"]] = shares.get(r["module"], 0.0) + r["time_ms"] / total
    return shares


def ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0] * len(values)
    for rank, i in enumerate(order):
        out[i] = rank
    return out


def agree_with_reference(rows: list[dict], reference: dict[str, float]) -> None:
    """Same modules, ranked alike (Spearman's rho), the busy ones busy by both."""
    ours = module_shares(rows)
    assert set(ours) == set(reference)
    names = sorted(reference)
    a, b = ranks([ours[m] for m in names]), ranks([reference[m] for m in names])
    n = len(names)
    rho = 1 - 6 * sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) / (n * (n * n - 1))
    assert rho > 0.5, (rho, ours, reference)
    # the modules that did most of the work by the reference did most of it by ours too
    busy, held = [], 0.0
    for m in sorted(reference, key=reference.__getitem__, reverse=True):
        if held < 0.8:
            busy.append(m)
            held += reference[m]
    assert sum(ours[m] for m in busy) > 0.5, (busy, ours, reference)


def test_rows_add_up_and_the_graph_keeps_its_own_row(user_models):
    r = measure(user_models["resnet"])
    rows, lp = r["layers"], r["layer_pass"]
    assert rows[-1]["name"] == "(graph)" and rows[-1]["kind"] == "graph"
    assert [row["index"] for row in rows] == list(range(len(rows)))
    assert lp["layer_sum_ms"] == pytest.approx(sum(row["time_ms"] for row in rows))
    assert sum(row["share"] for row in rows) == pytest.approx(1.0)
    assert lp["layer_sum_vs_whole"] == pytest.approx(lp["layer_sum_ms"] / lp["whole_unhooked_ms"])
    assert lp["layer_sum_outside_5pct"] == (abs(lp["layer_sum_vs_whole"] - 1) > 0.05)
    # every weight is read by exactly one row, so the parameters add up to the model's
    assert sum(row["params"] for row in rows) == artifact.load(user_models["resnet"]).meta["params"]
    # markers: one begin/end pair per run of a row's operations, named like the rows
    m = r["markers"]
    assert m["layer_names"] == [row["name"] for row in rows[:-1]]
    begins = [i for i, k in enumerate(m["kind"]) if k == 4]
    assert {m["layer"][i] for i in begins} == set(range(len(rows) - 1))


def test_functional_relus_and_the_skip_count_where_they_ran(user_models):
    r = measure(user_models["resnet"])
    rows = r["layers"]
    kinds = {(row["module"], row["kind"]) for row in rows}
    # torch.relu in each block's forward and in the root's: non-linear work of that module
    for module in ("", "blocks.0", "blocks.1"):
        assert (module, "nonlinear") in kinds
    assert ("blocks.0", "elementwise") in kinds and ("blocks.1", "elementwise") in kinds
    relus = [row for row in rows if row["kind"] == "nonlinear"]
    assert all(row["nonlinear"] for row in relus)
    assert not any(row["nonlinear"] for row in rows if row["kind"] != "nonlinear")
    assert r["layer_pass"]["nonlinear_share"] > 0
    assert r["layer_pass"]["nonlinear_share"] == pytest.approx(
        sum(row["time_ms"] for row in relus) / r["layer_pass"]["layer_sum_ms"]
    )
    by_name = {row["name"]: row for row in rows}
    assert by_name["blocks.0 [nonlinear]"]["type"] == "Block"
    assert by_name["blocks.0.conv1"]["type"] == "Conv2d"
    assert by_name["blocks.0.conv1"]["kind"] == "conv"
    assert by_name["blocks.0.conv1"]["params"] == 16 * 16 * 9 + 16
    conv = sum(row["time_ms"] for row in rows if row["kind"] == "conv")
    assert conv > sum(row["time_ms"] for row in relus)
    agree_with_reference(rows, reference_shares(user_models["resnet"]))


def test_attention_is_billed_to_the_attention(user_models):
    r = measure(user_models["encoder"])
    rows = r["layers"]
    for i in (0, 1):
        attn = [row for row in rows if row["module"] == f"layers.{i}.self_attn"]
        assert {row["kind"] for row in attn} >= {"attention", "linear"}
        assert all(row["type"] == "MultiheadAttention" for row in attn)
        attention = next(row for row in attn if row["kind"] == "attention")
        assert attention["name"] == f"layers.{i}.self_attn [attention]"
        # the projections' weights, out_proj's included, are the attention module's
        assert sum(row["params"] for row in attn) == 4 * 64 * 64 + 4 * 64
        # dropout is an identity at inference: it takes (near) nothing of the attention's work
        for drop in ("dropout1", "dropout", "dropout2"):
            (row,) = [row for row in rows if row["module"] == f"layers.{i}.{drop}"]
            assert row["kind"] == "dropout"
            assert row["time_ms"] < 0.25 * sum(a["time_ms"] for a in attn)
    # a module that never ran an operation of its own has no row at all
    assert not any(row["module"] and row["module"].endswith("out_proj") for row in rows)
    assert "Module" not in {row["type"] for row in rows}
    assert {row["type"] for row in rows} >= {"MultiheadAttention", "Linear", "LayerNorm"}
    agree_with_reference(rows, reference_shares(user_models["encoder"]))
