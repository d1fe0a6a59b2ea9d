"""What a user sees in TensorBoard: a real TensorBoard server on 127.0.0.1, started on the folder of two recipe runs,
answers through its HTTP data interface (the one its web page calls) with the runs' scalars, image grids and
HParams rows, so two runs can be compared in the dashboard.

The server is bounded in time: every request has a timeout, the whole wait for the first load has a generous
deadline (a slow machine is not a failure), and the process is stopped in a ``finally``. A server that exits, or does
not list both runs by the deadline, fails the test with what it did (its status, what it listed, its log); only a
machine without TensorBoard, or one that cannot start a process, skips it.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Ten iterations: the recipe logs training scalars every 10.
QUICK = ["--epochs", "1", "--iterations-per-epoch", "10", "--batch-size", "20", "--init-examples", "40", "--no-progress"]
START_DEADLINE_S, REQUEST_TIMEOUT_S = 120.0, 10.0

# Two recipe runs and a server: about half a minute at best.
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _recipe(output_dir: Path, *flags: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, str(ROOT / "recipes" / "digits_ssl.py"), *QUICK, "--output-dir",
                             str(output_dir), *flags], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


class Server:
    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, **query: str) -> bytes:
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
            return response.read()

    def json(self, path: str, body=None, **query: str):
        if body is None:
            return json.loads(self.get(path, **query))
        request = urllib.request.Request(self.base + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("tensorboard")
    logdir = tmp_path_factory.mktemp("tensorboard_runs")
    _recipe(logdir / "seed1")
    _recipe(logdir / "seed2", "--seed", "2")
    port = _free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
               "--port", str(port), "--load_fast", "false", "--reload_interval", "1"]
    log = (logdir / "server.log").open("w")
    try:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    except OSError as error:
        pytest.skip(f"TensorBoard could not be started: {error}")
    try:
        client = Server(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + START_DEADLINE_S
        runs, last = [], "no answer yet"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log.flush()
                pytest.fail(f"TensorBoard exited with status {process.returncode} before listing both runs (last "
                            f"answer: {last}); its log ends with: {(logdir / 'server.log').read_text()[-1000:]}")
            try:
                runs = client.json("/data/runs")
                last = f"runs {runs}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as error:
                runs, last = [], f"{type(error).__name__}: {error}"
            if len(runs) == 2:
                break
            time.sleep(0.5)
        else:
            log.flush()
            pytest.fail(f"TensorBoard on 127.0.0.1:{port} did not list both runs within {START_DEADLINE_S:.0f} s "
                        f"(still running; last answer: {last}); its log ends with: "
                        f"{(logdir / 'server.log').read_text()[-1000:]}")
        client.logdir = logdir
        yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_the_server_lists_both_runs_with_their_scalars_and_image_grids(server):
    assert sorted(server.json("/data/runs")) == ["seed1/tensorboard", "seed2/tensorboard"]
    scalars = server.json("/data/plugin/scalars/tags")
    for run in ("seed1/tensorboard", "seed2/tensorboard"):
        expected = {"training/loss_labeled", "test/error_averaged", "test/error_live", "final/test_error",
                    "final/baseline_test_error", "final/iterations", "final/wall_time_s"}
        assert expected <= set(scalars[run]), expected - set(scalars[run])
    # the baseline's error as a scalar, at the run's last iteration, read through the server
    (point,) = server.json("/data/plugin/scalars/scalars", run="seed1/tensorboard", tag="final/baseline_test_error")
    wall_time, step, value = point
    recorded = json.loads((server.logdir / "seed1" / "summary.json").read_text())["metrics"]
    assert step == 10 and value == pytest.approx(recorded["baseline_test_error"], rel=1e-6)  # float32 in the event
    images = server.json("/data/plugin/images/tags")
    assert "generated" in images["seed1/tensorboard"]
    (entry,) = server.json("/data/plugin/images/images", run="seed1/tensorboard", tag="generated", sample="0")[-1:]
    png = server.get("/data/plugin/images/individualImage?" + entry["query"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_hparams_dashboard_compares_the_two_runs(server):
    experiment = server.json("/data/plugin/hparams/experiment", body={"experimentName": ""})
    hparams = {info["name"]: info for info in experiment["hparamInfos"]}
    for name in ("experiment", "seed", "seed_data", "labels_per_class", "labels", "lr", "epochs"):
        assert name in hparams, name
    metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert {"final/test_error", "final/baseline_test_error", "final/iterations", "final/wall_time_s"} <= metrics

    groups = server.json("/data/plugin/hparams/session_groups", body={
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                  "STATUS_RUNNING"],
        "colParams": [], "startIndex": 0, "sliceSize": 10,
    })["sessionGroups"]
    rows = {group["sessions"][0]["name"]: group for group in groups}
    assert sorted(rows) == ["seed1/tensorboard", "seed2/tensorboard"]
    assert {name: row["hparams"]["seed"] for name, row in rows.items()} == {"seed1/tensorboard": 1,
                                                                           "seed2/tensorboard": 2}
    assert all(row["hparams"]["experiment"] == "digits_ssl" for row in rows.values())
    for name, row in rows.items():
        values = {m["name"]["tag"]: m["value"] for m in row["metricValues"]}
        recorded = json.loads((server.logdir / name.split("/")[0] / "summary.json").read_text())["metrics"]
        assert values["final/test_error"] == pytest.approx(recorded["test_error"], rel=1e-6)
        assert values["final/iterations"] == 10
