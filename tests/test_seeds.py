"""``--seeds``: the seed list, the table's statistics, the helpers' argument checks, and the multi-seed run folder
(record, lock, refusals, resume, signals, failures), with a stand-in recipe that starts in milliseconds and, at the
end, the digits recipe itself."""
import argparse
import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ignite_igan.experiments import cli
from ignite_igan.experiments.cli import MAX_SEED
from ignite_igan.experiments.runs import Run, RunFolderError, _FolderLock
from ignite_igan.experiments.seeds import (
    SeedsFailed, check_seed_flags, default_jobs, format_seeds, parse_seeds, report_lines, run_seeds, seed_folder,
    seed_table, seeds_command, summarize, without_flags,
)
from ignite_igan.validation import ArgumentTypeError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, seeds", [
    ("1-3,7", [1, 2, 3, 7]),
    (" 2 , 4-5", [2, 4, 5]),
    ("0", [0]),
    (f"{MAX_SEED - 1}-{MAX_SEED}", [MAX_SEED - 1, MAX_SEED]),
])
def test_seeds_and_ranges_are_read_in_order(text, seeds):
    assert parse_seeds(text) == seeds
    assert parse_seeds(format_seeds(seeds)) == seeds


@pytest.mark.parametrize("text", ["", "3-1", "1,1", "1-3,2", "-1", "1-2-3", "x", "1.5", f"{MAX_SEED + 1}",
                                  f"0-{2**32}"])
def test_anything_else_is_refused_naming_the_form(text):
    # f"0-{2**32}": refused before a list of four billion seeds is built.
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected seeds such as 1-10 or 1,3,5-7 \(integers in "
                                                         rf"\[0, {MAX_SEED}\], each once\), got '"):
        parse_seeds(text)


def test_per_seed_flags_are_dropped_from_the_command():
    argv = ["--epochs", "5", "--seeds=1-3", "--jobs", "2", "--seed", "4", "--lr", "0.1"]
    assert without_flags(argv, ("--seeds", "--jobs", "--seed")) == ["--epochs", "5", "--lr", "0.1"]


def test_format_seeds_writes_runs_of_seeds_as_ranges():
    assert format_seeds([1, 2, 3, 5, 8, 9, 10, 12]) == "1-3,5,8-10,12"
    assert format_seeds([np.int64(4)]) == "4"
    assert format_seeds([]) == ""  # a message's empty list of seeds (check_int_list's allow_empty)


# ------------------------------------------------------------------------------------------------------------------
# The table's statistics, against NumPy
# ------------------------------------------------------------------------------------------------------------------
def _summaries(errors, counts, baselines=None):
    return {seed: {"metrics": {"test_error": e, "test_error_count": c, "test_examples": 1000,
                               **({} if baselines is None else {"baseline_test_error": baselines[i]})}}
            for i, (seed, e, c) in enumerate(zip(sorted(errors), errors.values(), counts))}


@pytest.mark.parametrize("n", [2, 3, 7])
def test_the_table_is_the_mean_and_the_sample_std_over_every_seed(n):
    rng = np.random.default_rng(n)
    seeds = sorted(rng.choice(1000, size=n, replace=False).tolist())
    errors = dict(zip(seeds, rng.uniform(0.05, 0.3, size=n).tolist()))
    counts = rng.integers(10, 300, size=n).tolist()
    baselines = rng.uniform(0.2, 0.5, size=n).tolist()
    table = seed_table("demo", _summaries(errors, counts, baselines), paper=None, jobs=2, wall_seconds=3.0,
                       command=["python", "demo.py"])
    for key, values in (("test_error", list(errors.values())), ("test_error_count", counts),
                        ("baseline_test_error", baselines)):
        assert table[key]["count"] == n and table[key]["seeds"] == seeds
        assert table[key]["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        assert table[key]["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert sorted(table["per_seed"]) == seeds
    lines = report_lines(table)
    assert f"{100 * np.mean(list(errors.values())):.2f} ± {100 * np.std(list(errors.values()), ddof=1):.2f} %" in \
        lines[n + 1]


def test_one_seed_has_no_spread_and_a_statistic_missing_for_a_seed_is_left_out():
    one = seed_table("demo", _summaries({3: 0.25}, [250]), paper=None, jobs=1, wall_seconds=0.0, command=["x"])
    assert one["test_error"] == {"seeds": [3], "count": 1, "mean": 0.25, "std": 0.0}
    runs = _summaries({1: 0.2, 2: 0.3}, [20, 30], baselines=[0.4, 0.5])
    del runs[2]["metrics"]["baseline_test_error"]
    table = seed_table("demo", runs, paper=None, jobs=1, wall_seconds=0.0, command=["x"])
    assert "baseline_test_error" not in table and table["test_error"]["count"] == 2
    assert summarize({np.int64(2): np.float32(0.5), 1: 0.25})["seeds"] == [1, 2]


# ------------------------------------------------------------------------------------------------------------------
# The helpers' arguments
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, kind, message", [
    (lambda t: run_seeds("python train.py", [1], t, jobs=1), ArgumentTypeError, "command must be a sequence of str"),
    (lambda t: run_seeds(["python"], [], t, jobs=1), ValueError, "seeds must have at least one entry"),
    (lambda t: run_seeds(["python"], [1, 2, 1], t, jobs=1), ValueError, "seeds must hold each entry once"),
    (lambda t: run_seeds(["python"], "1-3", t, jobs=1), ArgumentTypeError, "seeds must be a sequence of ints"),
    (lambda t: run_seeds(["python"], [1.5], t, jobs=1), ArgumentTypeError, r"seeds\[0\] must be an int"),
    (lambda t: run_seeds(["python"], [-1], t, jobs=1), ValueError, r"seeds\[0\] must be in \[0, "),
    (lambda t: run_seeds(["python"], [1], t, jobs="2"), ArgumentTypeError, "jobs must be an int"),
    (lambda t: run_seeds(["python"], [1], t, jobs=1, resume="yes"), ArgumentTypeError, "resume must be a bool"),
    (lambda t: run_seeds(["python"], [1], 5, jobs=1), ArgumentTypeError, "output_dir must be a path"),
    (lambda t: seed_folder(t, "3"), ArgumentTypeError, "seed must be an int"),
    (lambda t: summarize({}), ValueError, "values must be a mapping of seed to a finite number with at least one"),
    (lambda t: summarize([0.1, 0.2]), ArgumentTypeError, "values must be a mapping"),
    (lambda t: summarize({1: "0.1"}), ArgumentTypeError, r"values\[1\] must be a real number"),
    (lambda t: summarize({1: float("nan")}), ValueError, r"values\[1\] must be a finite number"),
    (lambda t: seed_table("demo", {1: {}}, paper=None, jobs=1, wall_seconds=0, command=["x"]), ArgumentTypeError,
     r"summaries\[1\]\['metrics'\] must be the run's metrics"),
    (lambda t: seed_table("demo", {}, paper=None, jobs=1, wall_seconds=0, command=["x"]), ValueError,
     "summaries must be a mapping of seed to its summary.json with at least one entry"),
    (lambda t: seed_table("demo", _summaries({1: 0.1}, [1]), paper=None, jobs=1, wall_seconds=0, command="x"),
     ArgumentTypeError, "command must be a sequence of strings"),
    (lambda t: seed_table(3, _summaries({1: 0.1}, [1]), paper=None, jobs=1, wall_seconds=0, command=["x"]),
     ArgumentTypeError, "experiment must be a string"),
    (lambda t: report_lines({"per_seed": {}}), ValueError, "table must be a table of seed_table"),
    (lambda t: report_lines("table"), ArgumentTypeError, "table must be a table of seed_table"),
    (lambda t: default_jobs(0, None, False), ValueError, "seeds must be >= 1"),
    (lambda t: default_jobs(2, "1", False), ArgumentTypeError, "threads must be an int or None"),
    (lambda t: without_flags("--seeds 1", ["--seeds"]), ArgumentTypeError, "argv must be a sequence of strings"),
    (lambda t: parse_seeds(3), ArgumentTypeError, "text must be a string"),
])
def test_the_helpers_refuse_wrong_arguments_naming_them(tmp_path, call, kind, message):
    with pytest.raises(kind, match=message):
        call(tmp_path)
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def test_numpy_integers_are_integers(tmp_path):
    assert seed_folder(tmp_path, np.int64(3)) == tmp_path / "seed3"
    assert default_jobs(np.int32(1), np.int64(1), np.bool_(False)) == 1
    table = seed_table("demo", {np.int64(1): _summaries({1: 0.1}, [1])[1]}, paper=None, jobs=np.int64(1),
                       wall_seconds=np.float32(1.0), command=["x"])
    assert table["seeds"] == [1] and type(table["jobs"]) is int


# ------------------------------------------------------------------------------------------------------------------
# The seeds' processes, with a stand-in recipe
# ------------------------------------------------------------------------------------------------------------------
# A recipe's behaviour around its folder, in milliseconds: it records each call's arguments, writes a single run's
# record and summary (test error seed / 100), and misbehaves for the seeds named by its flags.
FAKE = textwrap.dedent("""
    import argparse, json, os, signal, sys, time
    from pathlib import Path
    p = argparse.ArgumentParser()
    for flag in ("--seed", "--seed-data", "--epochs"):
        p.add_argument(flag, type=int, default=1)
    p.add_argument("--output-dir", type=Path)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--extend", action="store_true")
    p.add_argument("--lr", default="0.1")
    for flag in ("--fail-seeds", "--kill-seeds", "--no-summary-seeds", "--warn-seeds", "--sleep-seeds"):
        p.add_argument(flag, type=lambda text: [int(s) for s in text.split(",")], default=[])
    a, _ = p.parse_known_args()
    a.output_dir.mkdir(parents=True, exist_ok=True)
    with open(a.output_dir / "calls.jsonl", "a") as calls:
        calls.write(json.dumps(sys.argv[1:]) + "\\n")
    print("epoch 1/1  iteration 2  loss 0.5", flush=True)
    if a.seed in a.warn_seeds:
        print(f"x.py:1: UserWarning: skipped unusable checkpoint(s) in '{a.output_dir}/checkpoints': "
              "checkpoint_2.pt: checksum mismatch. Resuming from checkpoint_1.pt instead", file=sys.stderr)
    if a.seed in a.sleep_seeds:
        (a.output_dir / "pid").write_text(str(os.getpid()))
        time.sleep(120)
    if a.seed in a.kill_seeds:
        os.kill(os.getpid(), signal.SIGKILL)
    if a.seed in a.fail_seeds:
        sys.exit(f"Traceback (most recent call last):\\nValueError: boom in seed {a.seed}")
    record = {"experiment": "fake", "config": {"seed": a.seed, "lr": a.lr}, "epochs": a.epochs, "status": "complete"}
    (a.output_dir / "run.json").write_text(json.dumps(record))
    if a.seed not in a.no_summary_seeds:
        (a.output_dir / "summary.json").write_text(json.dumps({"metrics": {
            "test_error": a.seed / 100, "test_error_count": a.seed, "test_examples": 100}}))
""")


@pytest.fixture
def fake(tmp_path):
    path = tmp_path / "fake_recipe.py"
    path.write_text(FAKE)
    return [sys.executable, str(path)]


def _calls(folder, seed):
    path = seed_folder(folder, seed) / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_resume_resumes_the_seeds_that_started_and_starts_the_others(tmp_path, fake):
    out = tmp_path / "out"
    run_seeds([*fake, "--epochs", "2"], [1], out, jobs=1)
    summaries = run_seeds([*fake, "--epochs", "2"], [1, 2], out, jobs=2, resume=True, stream=io.StringIO())
    assert _calls(out, 1)[-1] == ["--epochs", "2", "--seed", "1", "--seed-data", "1", "--output-dir",
                                  str(out / "seed1"), "--resume"]
    # Seed 2 never started: a fresh run (a --resume there would find no run to resume).
    assert _calls(out, 2) == [["--epochs", "2", "--seed", "2", "--seed-data", "2", "--output-dir", str(out / "seed2")]]
    assert {seed: s["metrics"]["test_error"] for seed, s in summaries.items()} == {1: 0.01, 2: 0.02}
    # More epochs than a seed's record: that seed resumes with --extend (a seed refuses a longer run without it).
    run_seeds([*fake, "--epochs", "3"], [1, 2], out, jobs=1, resume=True, stream=io.StringIO())
    assert _calls(out, 1)[-1][-2:] == ["--resume", "--extend"]


def test_a_failed_seed_is_reported_with_the_end_of_its_log_and_the_others_finish(tmp_path, fake):
    stream = io.StringIO()
    with pytest.raises(SeedsFailed) as failed:
        run_seeds([*fake, "--fail-seeds", "2", "--kill-seeds", "3", "--no-summary-seeds", "4"], [1, 2, 3, 4],
                  tmp_path, jobs=2, stream=stream)
    message = str(failed.value)
    assert message.startswith("3 of 4 seed(s) failed")
    assert "seed 2: exit status 1" in message and "ValueError: boom in seed 2" in message
    assert "seed 3: killed by signal SIGKILL" in message
    assert f"seed 4: ended without a summary ({tmp_path / 'seed4' / 'summary.json'})" in message
    assert sorted(failed.value.failed) == [2, 3, 4]
    assert "seed 1: done" in stream.getvalue() and "    ValueError: boom in seed 2" in stream.getvalue()
    assert (tmp_path / "seed1" / "summary.json").is_file()


def test_a_checkpoint_fallback_inside_a_seed_is_printed_by_the_parent(tmp_path, fake):
    stream = io.StringIO()
    run_seeds([*fake, "--warn-seeds", "2"], [1, 2], tmp_path, jobs=1, stream=stream)
    lines = [line for line in stream.getvalue().splitlines() if "warning" in line]
    assert len(lines) == 1 and lines[0].startswith("seed 2: warning in its log: skipped unusable checkpoint(s)")
    assert "Resuming from checkpoint_1.pt" in lines[0]


def test_a_folder_in_use_by_another_multi_seed_run_is_refused_at_once(tmp_path, fake):
    lock = _FolderLock(tmp_path)
    lock.acquire()
    try:
        with pytest.raises(RunFolderError, match=f"is in use by process {os.getpid()}"):
            run_seeds(fake, [1], tmp_path, jobs=1)
    finally:
        lock.release()
    assert not (tmp_path / "seed1").exists()


# ------------------------------------------------------------------------------------------------------------------
# The multi-seed run folder through seeds_command
# ------------------------------------------------------------------------------------------------------------------
def _parser():
    parser = cli.recipe_parser("fake: a stand-in recipe", epochs=1, labels_per_class=10, data_dir=None)
    parser.add_argument("--lr", default="0.1")
    for flag in ("--fail-seeds", "--kill-seeds", "--no-summary-seeds", "--warn-seeds", "--sleep-seeds"):
        parser.add_argument(flag, default=None)
    parser.add_argument("--seeds", type=parse_seeds, default=None)
    parser.add_argument("--jobs", type=cli.positive_int, default=None)
    return parser


def _command(fake, argv, capsys=None, checkpoint_bytes=None):
    """``seeds_command`` as a recipe's main calls it: (exit status, stdout, stderr)."""
    parser = _parser()
    argv = [str(a) for a in argv]
    try:
        args = cli.parse_args(parser, argv)
        check_seed_flags(parser, args, argv)
        if args.seeds is not None:
            seeds_command(parser, args, fake, argv, experiment="fake", paper=None, checkpoint_bytes=checkpoint_bytes)
        code = 0
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return code, out, err


def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_resume_of_a_complete_multi_seed_run_touches_no_file(tmp_path, fake, capsys):
    out = tmp_path / "out"
    code, first, _ = _command(fake, ["--seeds", "1-2", "--output-dir", out], capsys)
    assert code == 0 and json.loads((out / "run.json").read_text())["status"] == "complete"
    before = _snapshot(out)
    time.sleep(0.05)  # a rewritten file would get a later mtime
    code, again, _ = _command(fake, ["--seeds", "1-2", "--resume", "--jobs", "1", "--output-dir", out], capsys)
    assert code == 0 and "is complete (seeds 1-2, 1 epochs" in again and "nothing to do" in again
    assert _snapshot(out) == before
    assert again.splitlines()[-4:] == first.splitlines()[-4:]  # the same table, printed again


def test_resume_runs_only_the_seeds_that_are_not_complete_and_rebuilds_the_table(tmp_path, fake, capsys):
    out = tmp_path / "out"
    code, _, err = _command(fake, ["--seeds", "1-3", "--fail-seeds", "3", "--output-dir", out], capsys)
    assert code == 1 and "boom in seed 3" in err and "resume with: python " in err and "--resume" in err
    assert not (out / "seeds.json").exists() and json.loads((out / "run.json").read_text())["status"] == "training"
    (out / "seed3" / "run.json").write_text(json.dumps({"experiment": "fake", "config": {}, "epochs": 1,
                                                        "status": "training"}))
    code, text, _ = _command(fake, ["--seeds", "1-3", "--fail-seeds", "3", "--resume", "--output-dir", out], capsys)
    assert code == 1  # the cause is not fixed (a changed --fail-seeds would be refused: it is part of the config)
    assert [len(_calls(out, seed)) for seed in (1, 2, 3)] == [1, 1, 2]  # complete seeds are not started again


def test_a_changed_seed_list_is_refused_or_extended_with_extend(tmp_path, fake, capsys):
    out = tmp_path / "out"
    assert _command(fake, ["--seeds", "1-2", "--output-dir", out], capsys)[0] == 0
    table = (out / "seeds.json").read_bytes()
    code, _, err = _command(fake, ["--seeds", "1", "--resume", "--output-dir", out], capsys)
    assert code == 2 and "has seeds 1-2" in err and "resume with --seeds 1-2" in err
    code, _, err = _command(fake, ["--seeds", "1-3", "--resume", "--output-dir", out], capsys)
    assert code == 2 and "adds seed(s) 3" in err and "pass --extend" in err
    assert (out / "seeds.json").read_bytes() == table and not (out / "seed3").exists()
    code, text, _ = _command(fake, ["--seeds", "1-3", "--resume", "--extend", "--output-dir", out], capsys)
    assert code == 0 and [len(_calls(out, seed)) for seed in (1, 2, 3)] == [1, 1, 1]
    rebuilt = json.loads((out / "seeds.json").read_text())
    assert rebuilt["seeds"] == [1, 2, 3] and rebuilt["test_error"]["mean"] == pytest.approx(0.02)
    assert json.loads((out / "run.json").read_text())["seeds"] == [1, 2, 3]


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "1-2", "--lr", "0.5", "--resume"], r"--lr: '0.1' in the run, '0.5' now"),
    (["--seeds", "1-2", "--epochs", "2", "--resume"], "add --extend"),
    (["--seeds", "1-2"], "already holds a multi-seed run .*Continue it with --seeds 1-2 --resume"),
])
def test_a_multi_seed_run_is_refused_another_configuration(tmp_path, fake, capsys, argv, message):
    out = tmp_path / "out"
    assert _command(fake, ["--seeds", "1-2", "--output-dir", out], capsys)[0] == 0
    before = _snapshot(out)
    code, _, err = _command(fake, [*argv, "--output-dir", out], capsys)
    assert code == 2 and re.search(message, err), err
    assert _snapshot(out) == before


def test_seeds_into_a_single_runs_folder_is_refused(tmp_path, fake, capsys):
    tmp_path = tmp_path / "single"
    tmp_path.mkdir()
    (tmp_path / "run.json").write_text(json.dumps({"experiment": "fake", "config": {}, "epochs": 3,
                                                   "status": "complete"}))
    for resume in ([], ["--resume"]):
        code, _, err = _command(fake, ["--seeds", "1-2", *resume, "--output-dir", tmp_path], capsys)
        assert code == 2 and "holds a single 'fake' run (complete, 3 epochs), not a multi-seed run" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


@pytest.mark.parametrize("resume", [False, True])
def test_a_single_run_into_a_multi_seed_folder_is_refused_saying_how_to_resume(tmp_path, resume):
    record = {"kind": "multi-seed", "experiment": "fake", "seeds": [1, 2, 3, 5], "config": {}, "epochs": 1,
              "status": "complete"}
    (tmp_path / "run.json").write_text(json.dumps(record))
    args = argparse.Namespace(output_dir=tmp_path, seed=1, device="cpu", threads=None, epochs=1, resume=resume,
                              extend=False, no_progress=True)
    expected = "--seeds 1-3,5 --resume" + (" .one seed k alone: --seed k --seed-data k --resume" if resume else
                                           ", or choose another --output-dir")
    with pytest.raises(RunFolderError, match=f"holds a multi-seed run .--seeds 1-3,5., not a single run: .*{expected}"):
        Run(args, "fake").start()


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "1-2", "--seed", "4"], "--seed: --seeds sets each seed's --seed and --seed-data"),
    (["--seeds", "1-2", "--seed-data", "4"], "--seed-data: --seeds sets each seed's"),
    (["--seeds", "1-2", "--seed-d", "4"], "--seed-data: --seeds sets each seed's"),  # argparse's abbreviation
    (["--jobs", "2"], "--jobs: sets how many seeds run at a time, so it goes with --seeds"),
])
def test_flags_that_seeds_overrides_or_ignores_are_refused(tmp_path, fake, capsys, argv, message):
    code, _, err = _command(fake, [*argv, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_a_seed_in_the_config_file_is_refused_with_seeds(tmp_path, fake, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"seed": 3}))
    code, _, err = _command(fake, ["--seeds", "1-2", "--config", tmp_path / "config.json", "--output-dir",
                                   tmp_path / "out"], capsys)
    assert code == 2 and "--config: key 'seed': --seeds sets each seed's" in err


def test_an_output_dir_that_is_a_file_or_under_one_is_a_message(tmp_path, fake, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = _command(fake, ["--seeds", "1", "--output-dir", tmp_path / "file"], capsys)
    assert code == 2 and "is a file, not a folder" in err and "Traceback" not in err
    code, _, err = _command(fake, ["--seeds", "1", "--output-dir", tmp_path / "file" / "sub"], capsys)
    assert code == 2 and "is not writable (Not a directory)" in err
    code, _, err = _command(fake, ["--seeds", "1", "--resume", "--output-dir", tmp_path / "file"], capsys)
    assert code == 2 and "is a file, not a folder" in err  # not "holds no multi-seed run to resume"


def test_the_disk_estimate_refuses_more_seeds_than_the_disk_holds(tmp_path, fake, capsys):
    argv = ["--seeds", "1-3", "--fail-seeds", "1,2,3", "--output-dir", tmp_path]
    code, _, err = _command(fake, argv, capsys, checkpoint_bytes=2**50)
    assert code == 2 and "3 seed(s) start here, each keeping two checkpoints of about 1073741824.0 MiB" in err
    assert "run fewer seeds (--seeds)" in err and not (tmp_path / "seed1").exists()
    # A checkpoint that a seed has written gives the size (here 3 MiB, which fits): the estimate is not used.
    assert _command(fake, argv, capsys)[0] == 1
    (tmp_path / "seed1" / "checkpoints").mkdir(parents=True)
    (tmp_path / "seed1" / "checkpoints" / "checkpoint_1.pt").write_bytes(b"x" * 3 * 2**20)
    code, _, err = _command(fake, [*argv, "--resume"], capsys, checkpoint_bytes=2**50)
    assert code == 1 and "boom in seed 2" in err and "start here" not in err


# ------------------------------------------------------------------------------------------------------------------
# Signals to the parent
# ------------------------------------------------------------------------------------------------------------------
PARENT = textwrap.dedent("""
    import signal, sys
    # Ctrl-C as a terminal delivers it: a process started in the background of a non-interactive shell (a CI
    # script's `cmd &`) inherits SIGINT ignored, and Python then leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {tests!r})
    from test_seeds import _command
    code = _command({fake!r}, sys.argv[1:])[0]
    sys.exit(code)
""")


@pytest.mark.slow  # the parent imports torch: ~15 s on a busy 2-core machine
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_parent_stops_every_seed_and_says_how_to_resume(tmp_path, fake, number):
    out = tmp_path / "out"
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(tests=str(Path(__file__).parent), fake=fake))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    parent = subprocess.Popen([sys.executable, str(script), "--seeds", "1-3", "--jobs", "2", "--sleep-seeds", "1,2,3",
                               "--output-dir", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env)
    pids = [seed_folder(out, seed) / "pid" for seed in (1, 2)]
    try:
        while not all(p.is_file() and p.read_text() for p in pids) and parent.poll() is None:
            time.sleep(0.1)
        parent.send_signal(number)
        stdout, stderr = parent.communicate(timeout=120)
        assert parent.returncode == 128 + number, stderr
        assert f"stopped by {signal.Signals(number).name}: every seed's process has been stopped" in stderr
        assert "Resume with: python " in stderr and stderr.rstrip().endswith("--resume")
        assert "Traceback" not in stderr
        for path in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(int(path.read_text()), 0)
        assert not (out / "seed3").exists()  # the third seed never started
    finally:  # where the test fails: no seed left sleeping
        parent.kill()
        for path in pids:
            try:
                os.kill(int(path.read_text()), signal.SIGKILL)
            except (ProcessLookupError, OSError, ValueError):
                pass


# ------------------------------------------------------------------------------------------------------------------
# The recipe's command
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("semi_supervised_recipe", ROOT / "recipes" / "semi_supervised.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "2"], "--jobs: sets how many seeds run at a time, so it goes with --seeds"),
    (["--seeds", "1-2", "--seed", "3"], "--seed: --seeds sets each seed's --seed and --seed-data"),
    (["--seeds", "1-2", "--seed-data", "3"], "--seed-data: --seeds sets each seed's --seed and --seed-data"),
])
def test_the_recipe_refuses_flags_that_seeds_overrides_or_ignores(tmp_path, capsys, recipe, argv, message):
    with pytest.raises(SystemExit) as exit:
        recipe.main("digits_ssl", [*argv, "--output-dir", str(tmp_path / "out")])
    assert exit.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_recipe_estimates_a_checkpoint_from_its_networks(recipe):
    # digits_ssl's checkpoint_1.pt measured 1,569,548 bytes; the estimate counts the tensors alone.
    assert 1.3e6 < recipe.checkpoint_bytes(recipe.SETTINGS["digits_ssl"]) < 1.6e6


@pytest.mark.slow
def test_the_digits_recipe_multi_seed_folder_is_a_run_folder(tmp_path):
    from tests.test_recipes_ssl import run_recipe

    common = ["--epochs", "1", "--iterations-per-epoch", "2", "--no-baseline", "--no-progress"]
    out = tmp_path / "many"
    run_recipe("digits_ssl", *common, "--seeds", "1-2", "--output-dir", out)
    record = json.loads((out / "run.json").read_text())
    assert (record["kind"], record["seeds"], record["status"], record["epochs"]) == ("multi-seed", [1, 2],
                                                                                     "complete", 1)
    before = _snapshot(out)
    again = run_recipe("digits_ssl", *common, "--seeds", "1-2", "--resume", "--output-dir", out)
    assert "nothing to do" in again.stdout and _snapshot(out) == before
    single = run_recipe("digits_ssl", *common, "--resume", "--output-dir", out, check=False)
    assert single.returncode == 2 and "resume it as a whole with --seeds 1-2 --resume" in single.stderr
    fewer = run_recipe("digits_ssl", *common, "--seeds", "1", "--resume", "--output-dir", out, check=False)
    assert fewer.returncode == 2 and "resume with --seeds 1-2" in fewer.stderr
    inside = run_recipe("digits_ssl", *common, "--seeds", "1-2", "--output-dir", out / "seed1", check=False)
    assert inside.returncode == 2 and "holds a single 'digits_ssl' run (complete, 1 epochs)" in inside.stderr
    assert _snapshot(out) == before


def test_a_multi_seed_folder_of_an_earlier_version_resumes_without_the_flags_it_lacked(tmp_path, fake, capsys):
    # An earlier version wrote no top record, and its seeds' records lack the flags added since (here --allow-tf32,
    # which then ran as False): resuming with that value is the same run; another value is refused, saying why.
    out = tmp_path / "out"
    assert _command(fake, ["--seeds", "1-2", "--fail-seeds", "2", "--output-dir", out], capsys)[0] == 1
    config = json.loads((out / "run.json").read_text())["config"]
    (out / "run.json").unlink()
    old = {key: value for key, value in config.items() if key != "allow_tf32"}
    for seed in (1, 2):
        (out / f"seed{seed}" / "run.json").write_text(json.dumps(
            {"experiment": "fake", "config": dict(old, seed=seed, seed_data=seed), "epochs": 1,
             "status": "complete" if seed == 1 else "training"}))
    code, _, err = _command(fake, ["--seeds", "1-2", "--fail-seeds", "2", "--allow-tf32", "--resume",
                                   "--output-dir", out], capsys)
    assert code == 2 and "--allow-tf32: not recorded (the run was started by an earlier version, before this " \
                         "flag, which ran as False), True now" in err, err
    code, _, err = _command(fake, ["--seeds", "1-2", "--fail-seeds", "2", "--resume", "--output-dir", out], capsys)
    assert "flags differ" not in err and "boom in seed 2" in err, err  # resumed: seed 2 ran (and failed again)
    assert len(_calls(out, 2)) == 2


def test_the_table_and_the_report_hold_the_live_discriminators_error_beside_the_average():
    runs = _summaries({1: 0.20, 2: 0.30, 3: 0.28}, [20, 30, 28])
    for seed, live in zip((1, 2, 3), (0.15, 0.26, 0.21)):
        runs[seed]["metrics"]["test_error_live"] = live
    table = seed_table("demo", runs, paper=None, jobs=1, wall_seconds=0.0, command=["x"])
    assert table["test_error_live"]["mean"] == pytest.approx(np.mean([0.15, 0.26, 0.21]), rel=1e-12)
    assert table["test_error_live"]["std"] == pytest.approx(np.std([0.15, 0.26, 0.21], ddof=1), rel=1e-12)
    lines = report_lines(table)
    assert "live 26.00 %" in lines[2]  # seed 2's line
    live_mean = f"{100 * np.mean([0.15, 0.26, 0.21]):.2f} ± {100 * np.std([0.15, 0.26, 0.21], ddof=1):.2f} %"
    assert any(line.startswith("  live") and live_mean in line for line in lines), lines
