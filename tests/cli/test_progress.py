"""Progress bars in logs: when stderr is not a terminal, train's tqdm bars redraw once a minute."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_train_bars_redraw_rarely_into_a_log():
    code = ("import manet_edge.commands.train as t; t._progress_for_logs(); from tqdm import tqdm; "
            "bar = tqdm(range(3), disable=False); print(bar.mininterval); bar.close()")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.strip()) == 60.0
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**env, "PYTHONPATH": str(REPO), "TQDM_MININTERVAL": "5"})
    assert float(proc.stdout.strip()) == 5.0  # the user's choice wins
