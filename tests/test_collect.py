"""The collect commands read only their own domain's runs, and say so in one line otherwise."""
import json

import pytest

from surf_mini import audio_eval, image_eval


def write_run(folder, name, **fields):
    (folder / name).mkdir()
    (folder / name / "results.json").write_text(json.dumps(dict(fields, rows=[], stages=[], budget="b")))


def test_collect_keeps_its_own_domain(tmp_path, capsys):
    write_run(tmp_path, "audio", task="speech", mode="sr")
    with pytest.raises(SystemExit) as e:
        image_eval.main(["collect", str(tmp_path)])
    assert "no image runs" in str(e.value) and "audio_eval collect" in str(e.value)
    write_run(tmp_path, "img", dataset="mnist", mode="sr")
    image_eval.main(["collect", str(tmp_path)])                 # the audio run is left out
    assert capsys.readouterr().out.startswith("| method | outputs |")
    with pytest.raises(SystemExit) as e:
        audio_eval.main(["collect", str(tmp_path / "img")])
    assert "no */results.json" in str(e.value)
