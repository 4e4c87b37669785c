"""Environment capture: /proc/cpuinfo and nvidia-smi parsing, machine slugs, the captured keys."""

from __future__ import annotations

from manet_edge.benchmarks import env

X86 = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 9B14
physical id	: 0
core id		: 0
flags		: fpu sse2 avx avx2 fma avx512f avx512_bf16 avx512_vnni

processor	: 1
model name	: AMD EPYC 9B14
physical id	: 0
core id		: 1
flags		: fpu sse2 avx avx2 fma avx512f avx512_bf16 avx512_vnni

processor	: 2
model name	: AMD EPYC 9B14
physical id	: 0
core id		: 1
flags		: fpu sse2 avx avx2 fma avx512f avx512_bf16 avx512_vnni
"""

ARM = """processor	: 0
BogoMIPS	: 62.50
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm
CPU implementer	: 0x41

processor	: 1
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm
"""


def test_parse_cpuinfo_x86_counts_physical_cores():
    info = env.parse_cpuinfo(X86)
    assert info["model"] == "AMD EPYC 9B14"
    assert info["physical_cores"] == 2  # processors 1 and 2 share core id 1 (SMT)
    assert info["isa"] == ["avx2", "avx512_bf16", "avx512_vnni", "avx512f", "fma"]


def test_parse_cpuinfo_arm_without_model_or_core_ids():
    info = env.parse_cpuinfo(ARM)
    assert info["model"] is None and info["physical_cores"] is None and info["isa"] == ["asimd"]


def test_parse_nvidia_smi():
    text = "NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB\nNVIDIA A2, 550.54.15, 15356 MiB\n\n"
    assert env.parse_nvidia_smi(text) == [
        {"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "memory": "81559 MiB"},
        {"name": "NVIDIA A2", "driver": "550.54.15", "memory": "15356 MiB"}]


def test_machine_slug():
    assert env.machine_slug({"cpu": {"model": "AMD EPYC", "usable_cores": 2}}) == "cpu-2core-amd-epyc"
    assert env.machine_slug({"cpu": {"model": "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "logical_cores": 8}}) \
        == "cpu-8core-intel-xeon-gold-6248"
    assert env.machine_slug({"cpu": {}, "gpu": {"gpus": [{"name": "NVIDIA GeForce RTX 4090"}]}}) \
        == "gpu-nvidia-geforce-rtx-4090"
    assert env.machine_slug({"jetson": {"board": "NVIDIA Jetson Orin Nano Developer Kit"}}) == "jetson-orin-nano"


def test_capture_has_what_every_result_needs():
    e = env.capture()
    for key in ("time_utc", "platform", "cpu", "load_average_start", "gpu", "libraries", "machine", "jetson"):
        assert key in e
    assert e["cpu"]["logical_cores"] >= 1 and e["cpu"]["model"]
    assert "numpy" in e["libraries"] and "manet_edge" in e["libraries"]
    e = env.snapshot(e)
    assert "load_average_end" in e and "time_utc_end" in e
