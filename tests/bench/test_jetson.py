"""Jetson parsers on recorded tool output (no Jetson needed): tegrastats, nvpmodel, jetson_clocks, jtop."""

from __future__ import annotations

import pytest

from manet_edge.benchmarks import jetson
from manet_edge.benchmarks.jetson import (
    PowerSample,
    clocks_locked,
    energy_mj_per_image,
    parse_jetson_clocks,
    parse_jtop_power,
    parse_nvpmodel,
    parse_tegrastats_line,
    summarize_power,
)

# Jetson Nano, L4T 32.x: milliwatts without a unit, board input on POM_5V_IN
NANO = ("RAM 1476/3956MB (lfb 226x4MB) SWAP 0/1978MB (cached 0MB) CPU [9%@1479,6%@1479,5%@1479,4%@1479] "
        "EMC_FREQ 0% GR3D_FREQ 0% PLL@28C CPU@30.5C PMIC@100C GPU@29C AO@37.5C thermal@29.75C "
        "POM_5V_IN 2606/2650 POM_5V_GPU 0/0 POM_5V_CPU 493/501")
# Xavier NX, L4T 32.x
XAVIER_NX = ("RAM 2936/7772MB (lfb 2x4MB) SWAP 0/3886MB (cached 0MB) CPU [5%@1190,2%@1190,off,off,off,off] "
             "EMC_FREQ 0% GR3D_FREQ 0% AO@37C GPU@37.5C PMIC@50C AUX@36.5C CPU@38C thermal@37.2C "
             "VDD_IN 4952/4952 VDD_CPU_GPU_CV 763/763 VDD_SOC 1450/1450")
# Orin Nano, L4T 36.x: with timestamp and mW units
ORIN_NANO = ("11-26-2026 10:02:11 RAM 2318/7620MB (lfb 3x4MB) SWAP 0/3810MB (cached 0MB) "
             "CPU [2%@1510,1%@1510,0%@1510,0%@1510,0%@729,0%@729] GR3D_FREQ 0% cpu@47.5C soc2@45.8C "
             "soc0@46.5C gpu@46.9C tj@47.5C soc1@46.1C VDD_IN 5033mW/5033mW VDD_CPU_GPU_CV 599mW/599mW "
             "VDD_SOC 1476mW/1476mW")
# AGX Orin, L4T 36.x: no whole-board rail, the module rails are summed
AGX_ORIN = ("10-05-2026 21:03:35 RAM 5137/62841MB (lfb 2x4MB) SWAP 0/31420MB (cached 0MB) "
            "CPU [1%@729,25%@729,1%@729,1%@729] GR3D_FREQ 0% cpu@52.875C soc2@48.656C soc0@49.062C "
            "tj@52.875C soc1@49.031C VDD_GPU_SOC 3178mW/3178mW VDD_CPU_CV 794mW/794mW VIN_SYS_5V0 4543mW/4543mW")


@pytest.mark.parametrize("line, total, source, rails", [
    (NANO, 2606, "POM_5V_IN", {"POM_5V_IN": 2606, "POM_5V_GPU": 0, "POM_5V_CPU": 493}),
    (XAVIER_NX, 4952, "VDD_IN", {"VDD_IN": 4952, "VDD_CPU_GPU_CV": 763, "VDD_SOC": 1450}),
    (ORIN_NANO, 5033, "VDD_IN", {"VDD_IN": 5033, "VDD_CPU_GPU_CV": 599, "VDD_SOC": 1476}),
    (AGX_ORIN, 3178 + 794 + 4543, "sum of rails", {"VDD_GPU_SOC": 3178, "VDD_CPU_CV": 794, "VIN_SYS_5V0": 4543}),
])
def test_tegrastats_rails(line, total, source, rails):
    s = parse_tegrastats_line(line, t=1.5)
    assert s.rails == rails  # RAM/SWAP/EMC/temperatures are not rails
    assert s.total_mw == total and s.total_source == source and s.t == 1.5


def test_tegrastats_line_without_power():
    s = parse_tegrastats_line("RAM 1476/3956MB (lfb 226x4MB) CPU [9%@1479] EMC_FREQ 0% GR3D_FREQ 0%")
    assert s.rails == {} and s.total_mw is None and s.total_source is None


def test_summarize_power_and_energy():
    samples = [parse_tegrastats_line(ORIN_NANO), PowerSample({"VDD_IN": 7033, "VDD_SOC": 1524}, 7033, "VDD_IN"),
               PowerSample({}, None, None)]
    s = summarize_power(samples)
    assert s["mean_mw"] == pytest.approx(6033.0) and s["max_mw"] == 7033 and s["samples"] == 2
    assert s["rails_mean_mw"]["VDD_SOC"] == pytest.approx(1500.0)
    assert s["total_source"] == "VDD_IN"
    assert summarize_power([PowerSample({}, None, None)]) is None
    # 6 W for 2 s over 100 images = 120 mJ per image
    assert energy_mj_per_image(6000.0, 2.0, 100) == pytest.approx(120.0)
    with pytest.raises(ValueError):
        energy_mj_per_image(6000.0, 2.0, 0)


def test_parse_jtop_power():
    power = {"rail": {"VDD_GPU_SOC": {"volt": 5000, "curr": 600, "power": 3000, "avg": 2900},
                      "VDD_CPU_CV": {"power": 800, "avg": 790}},
             "tot": {"power": 7100, "avg": 7000, "name": "VDD_IN"}}
    s = parse_jtop_power(power, t=2.0)
    assert s.total_mw == 7100 and s.total_source == "jtop tot" and s.rails == {"VDD_GPU_SOC": 3000, "VDD_CPU_CV": 800}
    no_tot = parse_jtop_power({"rail": {"A": {"power": 10}, "B": {"power": 5}}})
    assert no_tot.total_mw == 15 and no_tot.total_source == "sum of rails"
    assert parse_jtop_power({}).total_mw is None


def test_parse_nvpmodel():
    assert parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"mode": "MAXN", "id": 0}
    verbose = ("NVPM VERB: Config file: /etc/nvpmodel.conf\nNVPM VERB: parsing done for /etc/nvpmodel.conf\n"
               "NV Fan Mode:quiet\nNVPM VERB: Current mode: NV Power Mode: MODE_15W_6CORE\n2\n")
    assert parse_nvpmodel(verbose) == {"mode": "MODE_15W_6CORE", "id": 2}
    assert parse_nvpmodel("command not found") == {"mode": None, "id": None}


SHOW_LOCKED = """SOC family:tegra210  Machine:NVIDIA Jetson Nano Developer Kit
Online CPUs: 0-3
cpu0: Online=1 Governor=schedutil MinFreq=1479000 MaxFreq=1479000 CurrentFreq=1479000 IdleStates: WFI=0 c7=0
cpu1: Online=1 Governor=schedutil MinFreq=1479000 MaxFreq=1479000 CurrentFreq=1479000 IdleStates: WFI=0 c7=0
cpu2: Online=0 Governor=schedutil MinFreq=102000 MaxFreq=1479000 CurrentFreq=102000 IdleStates: WFI=0 c7=0
GPU MinFreq=921600000 MaxFreq=921600000 CurrentFreq=921600000
EMC MinFreq=204000000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=1
Fan: PWM=255
NV Power Mode: MAXN
"""
SHOW_DYNAMIC = SHOW_LOCKED.replace("cpu1: Online=1 Governor=schedutil MinFreq=1479000",
                                   "cpu1: Online=1 Governor=schedutil MinFreq=102000").replace(
    "GPU MinFreq=921600000", "GPU MinFreq=76800000")


def test_jetson_clocks_show_locked_and_not():
    show = parse_jetson_clocks(SHOW_LOCKED)
    assert set(show["cpus"]) == {"cpu0", "cpu1", "cpu2"} and show["cpus"]["cpu2"]["online"] is False
    assert show["gpu"] == {"min": 921600000, "max": 921600000, "current": 921600000}
    assert show["emc"]["current"] == 1600000000
    assert clocks_locked(show) is True  # the offline cpu2 does not count
    assert clocks_locked(parse_jetson_clocks(SHOW_DYNAMIC)) is False
    assert clocks_locked(parse_jetson_clocks("")) is None


def test_jetson_state_warns_when_clocks_are_not_locked(monkeypatch):
    outputs = {"nvpmodel": "NV Power Mode: 15W\n1\n", "jetson_clocks": SHOW_DYNAMIC}
    monkeypatch.setattr(jetson, "_run", lambda cmd, timeout=10.0: outputs.get(cmd[0]))
    monkeypatch.setattr(jetson, "board_model", lambda root=None: "NVIDIA Jetson Orin Nano Developer Kit")
    state = jetson.jetson_state()
    assert state["nvpmodel"] == {"mode": "15W", "id": 1} and state["clocks_locked"] is False
    assert any("not locked" in w and "jetson_clocks" in w for w in state["warnings"])
    outputs["jetson_clocks"] = None
    assert jetson.jetson_state()["clocks_locked"] is None


def test_is_jetson_and_probe_off_jetson(tmp_path):
    assert jetson.is_jetson(tmp_path) is False
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    assert jetson.is_jetson(tmp_path) is True
    assert jetson.board_model(tmp_path) == "NVIDIA Jetson AGX Orin Developer Kit"
    if not jetson.is_jetson():
        probe = jetson.power_probe()
        assert probe.sampler is None and "not a Jetson" in probe.reason


def test_sampler_window_filters_by_time():
    s = jetson.TegrastatsSampler()
    s.samples = [PowerSample({}, 1000, "VDD_IN", t) for t in (0.5, 1.0, 1.5, 2.5)]
    assert [x.t for x in s.window(1.0, 2.0)] == [1.0, 1.5]
