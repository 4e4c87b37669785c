"""Today's bundled pipeline (fp32 ONNX Runtime, bundled models, bundled samples) against the committed
golden outputs in tests/golden/bundled/: a library upgrade (numpy, onnxruntime, scikit-image, pillow)
or a change to pre/post-processing that moves a probability or a mask is caught here.

The golden belongs to one pair of model files. When the bundled models change, the golden must be
regenerated in the same commit (scripts/make_golden.sh); until then this test fails, naming that
command (a golden that skipped itself would protect nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from manet_edge.assets import model_paths, samples_dir
from manet_edge.compare import (RunConfig, Tolerances, environment_changes, read_golden_manifest, run_compare,
                                sha256_file, summary_text)

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "bundled"
REGENERATE = "scripts/make_golden.sh"
ATOL = 1e-5
MIN_MASK_IOU = 0.999


def test_golden_belongs_to_the_bundled_models():
    manifest = read_golden_manifest(GOLDEN)
    seg, cls = model_paths(None)
    now = {"segmenter": sha256_file(seg), "classifier": sha256_file(cls)}
    was = {role: manifest["run"]["models"][role]["sha256"] for role in now}
    changed = [f"{role} {was[role][:12]} -> {now[role][:12]}" for role in now if was[role] != now[role]]
    if changed:
        pytest.fail(f"the bundled models are not the ones {GOLDEN.relative_to(REPO)} was made with "
                    f"({'; '.join(changed)}): regenerate the golden with: {REGENERATE} "
                    "(and commit it with the new models)", pytrace=False)


def test_bundled_pipeline_matches_the_golden():
    test_golden_belongs_to_the_bundled_models()
    comparison = run_compare(samples_dir(), a=RunConfig(backend="onnxruntime", precision="fp32"), golden=GOLDEN,
                             out=None, tolerances=Tolerances(max_flips=0, atol=ATOL, min_mask_iou=MIN_MASK_IOU),
                             streams=1, log=lambda _s: None)
    assert comparison is not None
    assert len(comparison.files) == read_golden_manifest(GOLDEN)["files"]
    if not comparison.passed:
        libs = [str(c) for c in environment_changes(comparison.run_a, comparison.run_b) if c.kind == "library"]
        hint = f" (library versions changed: {', '.join(libs)})" if libs else ""
        pytest.fail(f"the bundled pipeline no longer reproduces {GOLDEN.relative_to(REPO)}{hint}:\n"
                    + summary_text(comparison), pytrace=False)
