"""Issue 36: nothing silent, nothing overwritten, no traceback. separate.py and the training
scripts under bad input: each case answers one line, a non-zero exit status, and writes or
overwrites nothing; where cheap, the same call with the permission asked for (``--overwrite``,
``--i-trust-this-file``, a good value) shows the check is what stops it."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

import separate
import train_audio
import train_image
from surf_mini import audio_eval, image_eval
from surf_mini import checkpoints as C
from tests.test_checkpoints import AUDIO_CKPT, IMAGE_CKPT, ROOT, one_line_exit, write_evil
from tests.test_separate import outputs, speech


def write_mix(path, seconds=0.5):
    """A short two-speaker mixture at the shipped model's 8 kHz: a separation takes ~0.1 s."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, speech(8000, seconds), 8000)
    return str(path)


def error_line(capsys, call, code=1):
    """``call()`` exits with ``code`` and says one line, starting "error:" (from the SystemExit
    or on stderr); returns it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        call()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if isinstance(e.value.code, str):                       # raise SystemExit("error: ...")
        msg, got = e.value.code, 1
    else:                                                   # printed, then SystemExit(code)
        msg, got = err.strip(), e.value.code
    assert got == code, (got, msg)
    assert "\n" not in msg and msg.startswith("error:"), msg
    return msg


def parse_error(capsys, parse, argv):
    """``parse(argv)`` stops at ``parser.error``: exit status 2 and one error line (after
    argparse's usage line); returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        parse(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("usage:") and ": error: " in lines[-1], err
    return lines[-1]


# --------------------------------------------------------------------------------------
# separate.py: outputs
# --------------------------------------------------------------------------------------

def test_existing_outputs_are_refused_until_overwrite(tmp_path, capsys):
    """An unrelated file named like an output stops the run before any work; --overwrite
    (the negative control: the check is what kept it) replaces it."""
    mix = write_mix(tmp_path / "mix.wav")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mix_s1.wav").write_text("my notes, not audio")
    msg = error_line(capsys, lambda: separate.main([mix, "--out-dir", str(out), "--threads", "1"]))
    assert "mix_s1.wav already exists" in msg and "--overwrite" in msg
    assert outputs(out) == ["mix_s1.wav"] and (out / "mix_s1.wav").read_text() == "my notes, not audio"
    written = separate.main([mix, "--out-dir", str(out), "--overwrite", "--threads", "1"])
    assert [os.path.basename(p) for p in written] == ["mix_s1.wav", "mix_s2.wav"]
    assert sf.read(out / "mix_s1.wav")[0].shape == (4000,)                 # audio now
    # a second run beside the input (no --out-dir) is refused the same way
    separate.main([mix, "--threads", "1"])
    before = sf.read(tmp_path / "mix_s1.wav")[0]
    msg = error_line(capsys, lambda: separate.main([mix, "--seed", "1", "--threads", "1"]))
    assert "mix_s1.wav already exists (and 1 more)" in msg
    assert np.array_equal(sf.read(tmp_path / "mix_s1.wav")[0], before)


def test_overwrite_leaves_no_stale_output_of_an_earlier_run(tmp_path):
    """A rerun that writes fewer outputs (--num-sources 1 here; a dropped silent output the
    same) removes the earlier _s2, _s3 instead of leaving them beside the new _s1."""
    mix = write_mix(tmp_path / "mix.wav")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("mix_s1.wav", "mix_s2.wav", "mix_s3.wav", "mix_dnsmos.json", "other_s1.wav"):
        (out / name).write_text("earlier")
    separate.main([mix, "--out-dir", str(out), "--num-sources", "1", "--overwrite", "--threads", "1"])
    assert outputs(out) == ["mix_s1.wav", "other_s1.wav"]                 # another input's: kept
    assert sf.read(out / "mix_s1.wav")[0].shape == (4000,)


def test_two_inputs_with_the_same_output_names_are_refused(tmp_path, capsys):
    a, b = write_mix(tmp_path / "a" / "mix.wav"), write_mix(tmp_path / "b" / "mix.wav")
    ogg = str(tmp_path / "b" / "mix.ogg")
    sf.write(ogg, speech(8000, 0.5), 8000)
    out = tmp_path / "out"
    msg = error_line(capsys, lambda: separate.main([a, b, "--out-dir", str(out), "--threads", "1"]))
    assert "would both write mix_sN.wav" in msg
    assert not out.exists() or outputs(out) == []
    msg = error_line(capsys, lambda: separate.main([b, ogg, "--threads", "1"]))   # beside the inputs
    assert f"{b} and {ogg} would both write" in msg
    assert outputs(tmp_path / "b") == ["mix.ogg", "mix.wav"]
    # each on its own folder is fine: it is the shared name that is refused
    assert len(separate.main([a, b, "--threads", "1"])) == 4


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_output_name_taken_by_a_folder_leaves_no_output(tmp_path, capsys, overwrite):
    """Before issue 36: exit 1, but mix_s1.wav was already in place."""
    mix = write_mix(tmp_path / "mix.wav")
    out = tmp_path / "out"
    (out / "mix_s2.wav").mkdir(parents=True)
    msg = error_line(capsys, lambda: separate.main([mix, "--out-dir", str(out), "--threads", "1",
                                                    *overwrite]))
    assert outputs(out) == ["mix_s2.wav"]                                 # no mix_s1.wav
    assert "mix_s2.wav" in msg and "not a file" in msg


def test_a_failed_rename_leaves_none_of_the_new_outputs_and_every_earlier_one(tmp_path, capsys,
                                                                               monkeypatch):
    """The outputs of one input are renamed together: the second rename failing takes the first
    back out and puts the earlier outputs (being overwritten) back as they were."""
    mix = write_mix(tmp_path / "mix.wav")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("mix_s1.wav", "mix_s2.wav"):
        (out / name).write_text(f"earlier {name}")
    real = os.replace

    def fail_on_s2(src, dst):
        if str(dst).endswith("mix_s2.wav") and ".tmp" in str(src):
            raise OSError(28, "No space left on device")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", fail_on_s2)
    msg = error_line(capsys, lambda: separate.main([mix, "--out-dir", str(out), "--overwrite",
                                                    "--threads", "1"]))
    assert "cannot write the outputs (No space left on device)" in msg
    assert outputs(out) == ["mix_s1.wav", "mix_s2.wav"]                   # no temporary, no backup
    assert [(out / n).read_text() for n in ("mix_s1.wav", "mix_s2.wav")] == \
        ["earlier mix_s1.wav", "earlier mix_s2.wav"]


def test_sigterm_removes_the_temporary_files(tmp_path):
    """SIGTERM mid-separation: exit status 128 + 15, one line, no hidden .tmp<pid>.wav left
    (before issue 36: killed by the signal, two 12 MB temporaries left behind)."""
    long_mix = tmp_path / "long.wav"
    sf.write(long_mix, np.random.default_rng(0).standard_normal(8000 * 240) * 0.1, 8000)  # 4 min: ~20 s of work
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "separate.py"), str(long_mix), "--out-dir",
                          str(out), "--threads", "1"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out.exists() and [f for f in os.listdir(out) if ".tmp" in f]):    # separating now
        assert p.poll() is None and time.time() - t0 < 60, "separate.py never started writing"
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 128 + signal.SIGTERM, (p.returncode, err)
    assert len(err.strip().splitlines()) == 1 and "stopped by SIGTERM" in err, err
    assert os.listdir(out) == []


# --------------------------------------------------------------------------------------
# Numbers: non-finite checkpoints and non-finite outputs
# --------------------------------------------------------------------------------------

def spoiled(src, dst, how):
    """``src`` saved as ``dst`` with one EMA tensor NaN or Inf, or a NaN ``input_level``."""
    ckpt = torch.load(src, weights_only=True)
    if how == "input_level":
        ckpt["input_level"] = float("nan")
    else:
        name = next(k for k, v in ckpt["ema"].items() if v.is_floating_point())
        ckpt["ema"][name] = torch.full_like(ckpt["ema"][name], float(how))
    torch.save(ckpt, dst)
    return str(dst)


@pytest.mark.parametrize("how", ["nan", "inf", "input_level"])
def test_a_non_finite_checkpoint_is_refused_by_separate(tmp_path, capsys, how):
    """Before issue 36: exit 0 with nothing written ("silent outputs"), or with --keep-silent
    all-NaN wav files."""
    mix = write_mix(tmp_path / "mix.wav")
    bad = spoiled(AUDIO_CKPT, tmp_path / "bad.pt", how)
    for keep in ([], ["--keep-silent"]):
        msg = error_line(capsys, lambda: separate.main([mix, "--checkpoint", bad, "--out-dir",
                                                        str(tmp_path / "out"), "--threads", "1", *keep]))
        assert ("input_level nan" if how == "input_level" else "NaN or infinite 'ema' weights") in msg
        assert not (tmp_path / "out").exists() or outputs(tmp_path / "out") == []
    assert len(separate.main([mix, "--out-dir", str(tmp_path / "good"), "--keep-silent",
                              "--threads", "1"])) == 2                     # the unspoiled one works


def test_a_non_finite_checkpoint_is_refused_by_every_reader(tmp_path):
    """The check is in checkpoints.load_network, so the evaluation commands (a traceback before)
    and every other reader refuse the same way."""
    bad_image = spoiled(IMAGE_CKPT, tmp_path / "image.pt", "nan")
    bad_audio = spoiled(AUDIO_CKPT, tmp_path / "audio.pt", "inf")
    assert "NaN or infinite 'ema' weights" in one_line_exit(
        image_eval.main, ["evaluate", bad_image, "--eval-size", "2", "--threads", "1"])
    assert "NaN or infinite 'ema' weights" in one_line_exit(
        audio_eval.main, ["evaluate", bad_audio, "--eval-size", "2", "--eval-seconds", "0.5", "--threads", "1"])
    ckpt = C.read_checkpoint(bad_audio, C.AUDIO_KIND, "audio")
    assert "NaN or infinite" in one_line_exit(C.audio_network, ckpt, "ema", bad_audio)
    assert C.audio_network(C.read_checkpoint(AUDIO_CKPT, C.AUDIO_KIND, "audio")) is not None


def test_a_separation_that_is_not_finite_writes_nothing(tmp_path, capsys):
    """Finite weights can still overflow: the shipped model with its weights scaled by 1e30
    outputs Inf/NaN. Before issue 36 that was "silent" (exit 0, nothing), or NaN files."""
    mix = write_mix(tmp_path / "mix.wav")
    ckpt = torch.load(AUDIO_CKPT, weights_only=True)
    ckpt["ema"] = {k: v * 1e30 if v.is_floating_point() and v.dim() > 1 else v for k, v in ckpt["ema"].items()}
    torch.save(ckpt, tmp_path / "huge.pt")
    for keep in ([], ["--keep-silent"]):
        msg = error_line(capsys, lambda: separate.main([mix, "--checkpoint", str(tmp_path / "huge.pt"),
                                                        "--out-dir", str(tmp_path / "out"), "--threads", "1",
                                                        *keep]))
        assert "the model's output is NaN or infinite; nothing written" in msg
        assert outputs(tmp_path / "out") == []                            # no temporary either


def test_separate_threads_must_be_positive(capsys):
    line = parse_error(capsys, separate.parse_args, ["x.wav", "--threads", "-1"])
    assert "--threads must be at least 1" in line


# --------------------------------------------------------------------------------------
# The training scripts' options, checked at parse time
# --------------------------------------------------------------------------------------

BAD_OPTIONS = [
    (["--lr", "nan"], "--lr must be a finite positive number"),
    (["--lr", "-1"], "--lr must be a finite positive number"),
    (["--lr", "inf"], "--lr must be a finite positive number"),
    (["--threads", "-1"], "--threads must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--ckpt-every", "0"], "--ckpt-every must be at least 1"),
    (["--minutes", "nan"], "--minutes must be a finite positive number"),
    (["--minutes", "inf"], "--minutes must be a finite positive number"),
    (["--warmup", "-5"], "--warmup must be at least 0"),
    (["--ema", "nan"], "--ema must be a number in [0, 1]"),
]


@pytest.mark.parametrize("script", [train_image, train_audio], ids=["train_image", "train_audio"])
@pytest.mark.parametrize("argv,expect", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_training_options_stop_at_parse_time(tmp_path, capsys, script, argv, expect):
    line = parse_error(capsys, script.parse_args, ["--net", "cpu", "--out", str(tmp_path / "run"), *argv])
    assert expect in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("script", [train_image, train_audio], ids=["train_image", "train_audio"])
def test_out_and_resume_are_checked_at_parse_time(tmp_path, capsys, script):
    run = ["--net", "cpu", "--threads", "1"]
    (tmp_path / "file").write_text("not a folder")
    line = parse_error(capsys, script.parse_args, [*run, "--out", str(tmp_path / "file")])
    assert "is an existing file, not a folder" in line
    assert (tmp_path / "file").read_text() == "not a folder"
    (tmp_path / "empty").mkdir()
    for folder in ("empty", "missing"):             # --resume on nothing: was a silent fresh start
        line = parse_error(capsys, script.parse_args, [*run, "--out", str(tmp_path / folder), "--resume"])
        assert "holds no stage checkpoint (*.pt) to resume; drop --resume" in line
    # the negative controls: a folder with a stage checkpoint resumes, good values parse
    (tmp_path / "empty" / "sr.pt").write_bytes(b"")
    args = script.parse_args([*run, "--out", str(tmp_path / "empty"), "--resume", "--warmup", "0",
                              "--lr", "1e-3", "--ckpt-every", "1", "--minutes", "0.5", "--ema", "1"])
    assert args.resume and args.warmup == 0 and args.threads == 1


def test_eval_size_is_bounded_by_the_test_split(capsys):
    """Before issue 36 --eval-size 100000000 trained, then ran the machine out of memory."""
    for dataset in ("mnist", "cifar10"):
        line = parse_error(capsys, train_image.parse_args, ["--dataset", dataset, "--net", "cpu",
                                                            "--eval-size", "100000000"])
        assert "--eval-size must be between 1 and 10000" in line
    assert train_image.parse_args(["--net", "cpu", "--eval-size", "10000"]).eval_size == 10000


# --------------------------------------------------------------------------------------
# checkpoints convert: the one unsafe read is asked for by name
# --------------------------------------------------------------------------------------

def test_convert_needs_the_trust_flag(tmp_path):
    marker = tmp_path / "ran"
    evil = write_evil(tmp_path / "evil.pt", marker)
    new = tmp_path / "new.pt"
    msg = one_line_exit(C.main, ["convert", evil, str(new)])
    assert "--i-trust-this-file" in msg and "runs any code the file holds" in msg
    assert not marker.exists() and not new.exists()
    # the reader's refusal points to convert only for files one trusts
    msg = one_line_exit(C.read_checkpoint, evil)
    assert "only if you trust it" in msg and "--i-trust-this-file" in msg
    # negative control: with the flag, convert does run the file's code (the refusal is what
    # kept the marker away)
    C.main(["convert", "--i-trust-this-file", evil, str(new)])
    assert marker.exists() and C.read_checkpoint(str(new))["kind"] == "surf_mini.ncsn"
