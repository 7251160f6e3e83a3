"""No silent wrong answers: every bad input to ``make_dataset`` gets its exit status and one
line saying what is wrong and what to do, before any model is loaded where it can be; the files
of an existing dataset never change. The command runs in-process (``main(argv)``), by subprocess
only for Ctrl-C."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from a2m_utils import make_dataset, registry
from a2m_utils.dataset import sample_id
from a2m_utils.make_dataset import main
from a2m_utils.prompts import Prompt
from a2m_utils.toy.pipeline import TOY_DEFAULT
from a2m_utils.toy.world import toy_prompts

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n", "4", "--steps", "2", "--batch-size", "2", "--threads", "1"]
LONG = "a photo of " + ", ".join(["a red circle"] * 10)


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def contents(root: Path) -> dict[str, bytes]:
    return {k: v for k, (v, _) in tree(root).items()}


def fails(argv, capsys, code=2) -> list[str]:
    """Run the command expecting exit status ``code``; the lines of its message, from its first."""
    with pytest.raises(SystemExit) as err:
        main([str(a) for a in argv])
    lines = capsys.readouterr().err.splitlines()
    assert err.value.code == code, lines
    start = next(i for i, line in enumerate(lines) if line.startswith(("error:", "interrupted:")))
    return lines[start:]


def succeeds(argv, capsys) -> str:
    main([str(a) for a in argv])
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A finished 4-sample dataset made by the command, and a snapshot of its files."""
    root = tmp_path_factory.mktemp("existing") / "data"
    main(["--out", str(root), *TINY])
    return root, tree(root)


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: the checks must come first."""
    def load_pipeline(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")
    monkeypatch.setattr(registry, "load_pipeline", load_pipeline)


@pytest.fixture
def captions(tmp_path):
    def write(*texts):
        path = tmp_path / f"captions{len(list(tmp_path.glob('captions*')))}.json"
        path.write_text(json.dumps({"annotations": [{"caption": t} for t in texts]}))
        return path
    return write


@pytest.fixture
def mixed_prompts(monkeypatch):
    """A prompt set holding two good toy captions, a plural the toy tokenizer lacks and a caption whose
    last class word lies past its 24 tokens."""
    good = toy_prompts(2)
    bad = [Prompt("two circles", ("circle",), 100), Prompt(LONG, ("circle",), 101)]
    monkeypatch.setitem(registry.PROMPT_SETS, "test-mixed", ("toy", lambda **_: [*good, *bad]))


def test_counts(tmp_path, capsys, no_model):
    out = tmp_path / "d"
    assert fails(["--out", out, "--n", "0"], capsys)[0] == "error: --n must be at least 1, got 0"
    assert fails(["--out", out, "--n", "-5"], capsys)[0] == "error: --n must be at least 1, got -5"
    assert fails(["--out", out], capsys)[0].startswith("error: --n is required with --prompts toy")
    assert fails(["--out", out, "--n", "4", "--batch-size", "0"], capsys)[0] == \
        "error: --batch-size must be at least 1, got 0"
    assert fails(["--out", out, "--n", "4", "--steps", "4", "--capture", "2:9"], capsys)[0].startswith(
        "error: --capture 2:9: steps are numbered 0 .. 3 for 4 steps")
    assert fails(["--out", out, "--n", "4", "--capture", "x"], capsys)[0].startswith(
        "error: --capture takes 'all', a step index")
    assert fails(["--out", out, "--n", "4", "--scheduler", "Fast"], capsys)[0].startswith(
        "error: --scheduler 'Fast' is not a diffusers scheduler class")
    assert fails(["--out", out, "--n", "4", "--model", "models/no-such-model"], capsys)[0].startswith(
        "error: --model models/no-such-model: no such folder")
    assert fails(["--out", out, "--n", "4", "--shard", "2/2"], capsys)[0] == \
        "error: --shard 2/2: need 0 <= i < n (shards are numbered from 0)"
    assert not out.exists()


def test_n_0_does_not_claim_the_folder(tmp_path, capsys):
    out = tmp_path / "d"
    fails(["--out", out, "--n", "0"], capsys)
    line = succeeds(["--out", out, *TINY], capsys)
    assert line.startswith("4 samples generated, 0 already complete, 0 skipped;") and "4 samples indexed" in line


def test_class_word_the_tokenizer_does_not_know(tmp_path, capsys, captions, no_model):
    """VOC captions with the default toy model: "dog" and "sofa" would be [UNK]."""
    voc = ["--out", tmp_path / "d", "--prompts", "voc-coco", "--coco-json", captions("a dog on a sofa", "two cats")]
    line = fails(voc, capsys)[0]
    assert line.startswith("error: prompt 'a dog on a sofa': the tokenizer does not know the class words 'dog', "
                           "'sofa' (they become [UNK], whose attention is no class's)")
    assert "(2 of 2 prompts cannot be labelled: 2 with a class word the tokenizer does not know); rerun with " \
           "--skip-unknown" in line
    assert fails([*voc, "--skip-unknown"], capsys)[0].startswith(
        "error: no usable prompt: all 2 prompts of --prompts voc-coco are skipped (2 with a class word the "
        "tokenizer does not know), e.g. prompt 'a dog on a sofa'")
    assert not (tmp_path / "d").exists()


def test_plural_and_truncated_class_words_are_an_error_or_counted(tmp_path, capsys, mixed_prompts, monkeypatch):
    argv = ["--out", tmp_path / "d", "--prompts", "test-mixed", *TINY]
    with monkeypatch.context() as m:
        m.setattr(registry, "load_pipeline", lambda *a, **k: pytest.fail("model loaded"))
        assert fails(argv, capsys)[0].startswith(
            "error: prompt 'two circles': the tokenizer does not know the class word 'circles' (it becomes [UNK]")
    line = succeeds([*argv, "--skip-unknown"], capsys)
    assert line.startswith("2 samples generated, 0 already complete, 2 prompts skipped (1 with a class word the "
                           "tokenizer does not know, 1 with a class word past the token limit); ")
    assert "images/s; in " in line and "2 samples indexed" in line
    metas = [json.loads(p.read_text()) for p in sorted((tmp_path / "d" / "meta").glob("*.json"))]
    assert [m["prompt"] for m in metas] == [p.text for p in toy_prompts(2)]


def test_captions_naming_no_class(tmp_path, capsys, captions, no_model):
    line = fails(["--out", tmp_path / "d", "--prompts", "voc-coco", "--coco-json", captions("a sunny beach")],
                 capsys)[0]
    assert line.startswith("error: --prompts voc-coco gives no prompt: no caption of ")
    assert line.endswith("names a class of the 'voc' vocabulary; nothing to generate")
    assert fails(["--out", tmp_path / "d", "--prompts", "voc-coco"], capsys)[0].startswith(
        "error: --prompts voc-coco needs --coco-json FILE")
    assert fails(["--out", tmp_path / "d", "--prompts", "voc-coco", "--coco-json", tmp_path / "none.json"],
                 capsys)[0].startswith("error: --prompts voc-coco: no COCO captions file at")
    assert not (tmp_path / "d").exists()


def test_shards_merge_into_a_new_folder(tmp_path, capsys, dataset):
    shards = [tmp_path / "s0", tmp_path / "s1"]
    for i, folder in enumerate(shards):
        line = succeeds(["--out", folder, "--shard", f"{i}/2", *TINY], capsys)
        assert line.startswith("2 samples generated") and (
            f"shard {i}/2: when all 2 shards are done, merge them: python -m a2m_utils.make_dataset --out "
            f"MERGED_FOLDER --merge {folder} OTHER_SHARD_FOLDERS...") in line
    new = tmp_path / "merged"
    assert succeeds(["--out", new, "--merge", *shards], capsys) == f"4 samples indexed in {new}"
    assert contents(new) == contents(dataset[0])  # byte-identical to the one-process run
    assert fails(["--out", tmp_path / "m2", "--merge", shards[0], tmp_path / "s9"], capsys)[0] == \
        f"error: shard folder {tmp_path / 's9'} does not exist; give the folders that the --shard i/n runs wrote"
    assert fails(["--out", tmp_path / "m2", "--merge", tmp_path], capsys)[0].startswith(
        f"error: shard folder {tmp_path} holds no dataset (no dataset.json)")
    assert fails(["--out", tmp_path / "m2", "--merge", shards[0]], capsys, code=1)[0].startswith(
        "error: 2 of 4 samples are missing or incomplete")
    assert not (tmp_path / "m2" / "manifest.jsonl").exists()


def test_output_folder_that_cannot_be_written(tmp_path, capsys, no_model):
    if os.geteuid() == 0:  # root writes anywhere chmod forbids; sysfs refuses even root
        read_only = Path("/sys")
        if not read_only.is_dir() or os.access(read_only, os.W_OK) and _can_write(read_only):
            pytest.skip("no read-only folder for root here")
    else:
        read_only = tmp_path / "ro"
        read_only.mkdir()
        read_only.chmod(0o555)
    assert fails(["--out", read_only, "--n", "4"], capsys)[0].startswith(
        f"error: cannot write in the output folder {read_only}: ")
    assert fails(["--out", read_only / "new", "--n", "4"], capsys)[0].startswith(
        f"error: cannot create the output folder {read_only / 'new'}: ")
    (tmp_path / "file").write_text("x")
    assert fails(["--out", tmp_path / "file", "--n", "4"], capsys)[0] == \
        f"error: --out {tmp_path / 'file'} is a file, not a folder; give a folder (new or holding this dataset)"


def _can_write(folder: Path) -> bool:
    try:
        (folder / ".a2m-probe").write_bytes(b"")
    except OSError:
        return False
    (folder / ".a2m-probe").unlink()
    return True


def test_folder_with_other_settings(capsys, dataset, no_model):
    root, _ = dataset
    line = fails(["--out", root, *TINY[:-2], "--steps", "3"], capsys)[0]
    assert line == (f"error: {root} holds a dataset made with other settings or prompts (settings.num_steps: "
                    "stored 2, requested 3); choose another --out, or rerun the command that made it")
    assert fails(["--out", root, "--n", "8", *TINY[2:]], capsys)[0].startswith(
        f"error: {root} holds a dataset made with other settings or prompts (other prompts; num_samples: stored 4, "
        "requested 8)")


def test_the_same_model_by_a_relative_and_an_absolute_path(capsys, dataset, monkeypatch):
    root, before = dataset
    monkeypatch.chdir(REPO)
    for model in ("models/toy-t2i", str(TOY_DEFAULT)):
        line = succeeds(["--out", root, "--model", model, *TINY], capsys)
        assert line.startswith("0 samples generated, 4 already complete, 0 skipped")
    assert contents(root) == {k: v for k, (v, _) in before.items()}


def test_every_corrupt_file_is_listed(tmp_path, capsys, dataset):
    root = tmp_path / "d"
    shutil.copytree(dataset[0], root)
    image, label = root / "JPEGImages" / f"{sample_id(1)}.jpg", root / "SegmentationClass" / f"{sample_id(3)}.png"
    image.write_bytes(image.read_bytes()[:50])
    label.unlink()
    lines = fails(["--out", root, *TINY], capsys, code=1)
    assert lines[0] == f"error: 2 files of {root} are missing or corrupt (hash differs from its meta file):"
    assert lines[1:3] == [f"  {image}", f"  {label}"]
    assert lines[3] == "rerun with --repair (DatasetWriter(..., repair=True)) to regenerate those samples"
    line = succeeds(["--out", root, *TINY, "--repair"], capsys)
    assert line.startswith("4 samples generated, 0 already complete")  # both batches redone
    assert contents(root) == contents(dataset[0])


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys, no_model):
    with pytest.raises(make_dataset.InputError, match="--n must be at least 1"):
        main(["--out", str(tmp_path / "d"), "--n", "0", "--debug"])
    assert capsys.readouterr().err == ""


def test_no_file_of_an_existing_dataset_changes(tmp_path, capsys, captions, dataset, mixed_prompts, monkeypatch):
    root, before = dataset[0], tree(dataset[0])
    monkeypatch.chdir(REPO)
    bad = [
        (["--n", "0"], 2), (["--n", "-5"], 2), ([], 2), (["--n", "8", *TINY[2:]], 2),
        ([*TINY, "--steps", "3"], 2), ([*TINY, "--shard", "3/2"], 2), ([*TINY, "--capture", "7"], 2),
        ([*TINY, "--model", "models/nowhere"], 2), ([*TINY, "--scheduler", "Nope"], 2),
        (["--prompts", "voc-coco", "--coco-json", captions("a sunny beach")], 2),
        (["--prompts", "voc-coco", "--coco-json", captions("a dog on a sofa")], 2),
        (["--prompts", "voc-coco", "--coco-json", captions("a dog on a sofa"), "--skip-unknown"], 2),
        (["--prompts", "test-mixed", *TINY], 2),
        (["--prompts", "test-mixed", *TINY, "--skip-unknown"], 2),  # other prompts than the folder's
        ([*TINY, "--model", "models/toy-t2i-stage3"], 2),  # another model: found once it is loaded
        (["--merge", tmp_path / "missing-shard"], 2),
    ]
    for args, code in bad:
        fails(["--out", root, *args], capsys, code=code)
    assert tree(root) == before


def test_ctrl_c_says_how_far_it_got_and_exits_130(tmp_path, capsys):
    out, n = tmp_path / "d", 600  # seconds of work: the run is still going when the signal arrives, even on a busy machine
    cmd = [sys.executable, "-m", "a2m_utils.make_dataset", "--out", str(out), "--n", str(n), "--steps", "3",
           "--batch-size", "2", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # Ctrl-C's default handling, as from a terminal, also when the tests run with SIGINT ignored (nohup, &)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 180
    while len(list((out / "meta").glob("*.json"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    done = len(list((out / "meta").glob("*.json")))
    assert 2 <= done < n
    lines = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert lines == [f"interrupted: {done} of {n} samples are complete in {out}; rerun the same command to resume"]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    line = succeeds(["--out", out, *cmd[5:]], capsys)  # rerunning resumes
    assert line.startswith((f"{n - done} samples generated", f"{n - done + 1} samples generated"))
    assert f"{n} samples indexed" in line
