"""The asv suite stays importable and well-formed (``asv check`` on the current environment)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numopt

ROOT = Path(__file__).resolve().parent.parent


def test_asv_check():
    asv = shutil.which("asv") or str(Path(sys.executable).parent / "asv")
    env = dict(os.environ)
    env["ASV_PYTHONPATH"] = os.pathsep.join([str(Path(numopt.__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    out = subprocess.run([asv, "check", "-E", f"existing:{sys.executable}"], cwd=ROOT / "asv_bench", env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Failed" not in out.stdout
