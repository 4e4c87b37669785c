"""Operation counting: Table 3 of the paper (1-channel 512x512, 5 classes) and the ``flops`` command."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from manet_edge.benchmarks import flops
from manet_edge.commands import flops as flops_command
from manet_edge.models import create_model
from manet_edge.models.mask_attention import MaskPool

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def table3_rows():
    return {r["model"]: r for r in flops.table(list(flops.PAPER_TABLE3))}


@pytest.mark.parametrize("name", list(flops.PAPER_TABLE3))
def test_reproduces_table3(name, table3_rows):
    row = table3_rows[name]
    paper_params, paper_ops = flops.PAPER_TABLE3[name]
    assert round(row["params_m"], 2) == paper_params
    assert abs(row["ops_m"] - paper_ops) / paper_ops < 0.005
    # in fact every row matches to the printed 0.01 M
    assert round(row["ops_m"], 2) == pytest.approx(paper_ops, abs=1e-6)


def test_resnet50_independent_count(table3_rows):
    assert round(table3_rows["resnet50"]["ops_m"], 2) == 21058.83


def test_ma_overhead_is_one_op_per_mask_pool_output():
    """thop counts an AvgPool as 1 op per output and knows nothing of the multiply."""
    with torch.device("meta"):
        model = create_model("resnet50-ma")
    sizes = []
    hooks = [m.register_forward_hook(lambda mod, i, o: sizes.append(o.numel()))
             for m in model.modules() if isinstance(m, MaskPool)]
    ma = flops.count_ops(model, 512)
    for h in hooks:
        h.remove()
    plain = flops.count_model("resnet50")
    assert ma.ops - plain.ops == sum(sizes) == ma.by_kind["mask_attention"]
    assert sum(sizes) == 256**2 + 128**2 + 3 * 128**2 + 4 * 64**2 + 6 * 32**2 + 3 * 16**2


def test_true_convention():
    plain = flops.count_model("resnet34", 512, convention="true")
    thop = flops.count_model("resnet34", 512)
    assert plain.by_kind["conv"] == 2 * thop.by_kind["conv"]  # bias-free convs
    ma = flops.count_model("resnet34-ma", 512, convention="true")
    assert ma.by_kind["mask_attention"] > 0 and ma.ops > plain.ops and ma.params == plain.params


def test_size_and_channels_change_the_count():
    small = flops.count_model("resnet18", 64)
    three = flops.count_model("resnet18", 64, in_channels=3)
    assert three.params - small.params == 64 * 7 * 7 * 2
    assert three.ops > small.ops
    assert flops.count_model("inception_v3-ma", 64).ops > 0  # padded to 75 px


def test_markdown_table():
    text = flops.markdown(flops.table(["resnet18", "resnet34"], 512))
    lines = text.strip().splitlines()
    assert len(lines) == 4 and "| resnet34 | 21.28 | 21.28 | 18766.76 | 18766.76 |" in text


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Stand-in for the root app (keeps ``flops`` a sub-command)."""

    flops_command.register(app)
    return app


def test_cli_json():
    result = CliRunner().invoke(_app(), ["flops", "resnet50-ma", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["model"] == "resnet50-ma" and data["convention"] == "thop" and data["in_channels"] == 1
    assert round(data["params_m"], 2) == 23.51 and round(data["ops_m"], 2) == 21058.98


def test_cli_options_and_errors():
    runner = CliRunner()
    result = runner.invoke(_app(), ["flops", "resnet18", "--size", "64", "--in-channels", "3",
                                    "--num-classes", "2", "--convention", "true"])
    assert result.exit_code == 0, result.output
    assert "resnet18" in result.output and "true" in result.output
    result = runner.invoke(_app(), ["flops", "resnet51"])
    assert result.exit_code != 0
    assert "resnet51" in result.output and "resnet50-ma" in result.output
    result = runner.invoke(_app(), ["flops", "--table", "resnet34", "resnet34-ma"])
    assert result.exit_code == 0 and "18766.99" in result.output
