"""The README's journal example runs as printed, so the first thing a newcomer copies works."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_journal_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README lost its journal example"
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "0 0"  # base and last offset of the first append
    assert lines[-1] == "live: b'hello'"
    assert (tmp_path / "strata-data" / "journal" / "catalog").is_dir()


def test_readme_tiering_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "the README lost its tiering example"
    script = tmp_path / "tiering.py"
    script.write_text(blocks[1])
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "['object', 'object', 'object', 'memory']"
    assert lines[1] == "[b'click 0', b'click 1', b'click 2']"
    assert lines[2] == "[b'click 0', b'click 1', b'click 2']"
    exports = tmp_path / "strata-objects" / "exports"
    assert [p.name for p in exports.iterdir()] == ["clicks.parquet"]
