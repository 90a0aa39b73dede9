"""What a killed save leaves behind is cleared by the next save, and nothing else is."""

from __future__ import annotations

import os
import subprocess

from wavy_pipeline.core.atomic import _host, sweep_dead_temps


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_only_leftovers_of_dead_writers_on_this_host_are_removed(tmp_path):
    host, dead, alive = _host(), dead_pid(), os.getpid()
    names = {
        "dead": f".x.tmp-{host}.{dead}.0123abcd",
        "alive": f".x.tmp-{host}.{alive}.0123abcd",  # a save in progress
        "elsewhere": f".x.tmp-otherhost.{dead}.0123abcd",  # a shared file system
        "other dataset": f".y.tmp-{host}.{dead}.0123abcd",
        "unknown format": ".x.tmp-1234abcd",
        "old copy": f".x.old-{host}.{dead}.0123abcd",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "part.bin").write_bytes(b"partial")
    # `x` itself is missing: the `.old` copy of an interrupted replace is the only copy
    removed = sweep_dead_temps(tmp_path, "x")
    assert [p.name for p in removed] == [names["dead"]]
    assert (tmp_path / names["old copy"]).exists()

    (tmp_path / "x").write_text("complete")
    assert [p.name for p in sweep_dead_temps(tmp_path, "x")] == [names["old copy"]]
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"x"} | {
        names[k] for k in ("alive", "elsewhere", "other dataset", "unknown format")
    }
