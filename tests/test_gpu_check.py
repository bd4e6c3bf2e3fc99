"""bench/gpu_check.py's CPU dry run (issue 25): the prepared GPU check runs end to end on tiny
networks and writes its table, so the first lent GPU runs a command that is known to work."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))


def test_gpu_check_dry_run_writes_its_table(tmp_path):
    import gpu_check
    report = gpu_check.main(["--device", "cpu", "--tiny", "--repeats", "1", "--out", str(tmp_path)])
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| NCSN (images) |" in table and "| MB-TFLocoformer (audio) |" in table
    assert "| sup-flow |" in table and "| sup-reg |" in table
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["headline"]["s/step"] > 0 and len(saved["compile"]) == 2
    flow = next(r for r in report["flow_vs_reg"] if r["mode"] == "sup-flow")
    assert "PSNR (25 steps)" in flow                       # the second sampler's column


def test_a_cut_gpu_check_still_returns_the_parts_it_finished(tmp_path, monkeypatch):
    """The table is written after every part: a run that dies in part 3 keeps parts 1-2."""
    import gpu_check

    def killed(*a, **k):
        raise KeyboardInterrupt                             # as a run stopped at its limit
    monkeypatch.setattr(gpu_check, "headline_budget", killed)
    try:
        gpu_check.main(["--device", "cpu", "--tiny", "--repeats", "1", "--out", str(tmp_path)])
    except KeyboardInterrupt:
        pass
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| NCSN (images) |" in table and "Headline" not in table
    assert "compile" in json.loads((tmp_path / "gpu_check.json").read_text())
