"""The fault battery: bad inputs and dangerous outputs for every pipeline, as a table.

Each row: the command, the bad input, the exit code and the words expected. Every row also checks
that no input file changed (a digest of the input trees before and after) and that no partial
output was left behind. The pipelines run through their real entry point (``run_main``) in this
process; the paths are checked before Ray starts, so no row starts Ray.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.data import make_image, write_class_folders, write_names_csv, write_tiny_checkpoint
from helpers.entry_points import call_pipeline, tree_hash

DEMO = "configs/demo.yaml"
TINY = ["model.backbone=test_efficientnet", "model.weights=none", "data.image_size=32", "train.epochs=1"]
TINY_WITH = ["model.backbone=test_efficientnet", "data.image_size=32", "train.epochs=1", "data.batch_size=4"]  # weights given by the case


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """Generated inputs, plus existing files and folders that outputs must not clobber."""
    base = tmp_path_factory.mktemp("faults")
    root = write_class_folders(base / "folder", 4, (48, 40))
    boxed = base / "boxed"
    for index in range(4):
        make_image(boxed / f"{index}.jpg", (80, 60), seed=index)
    write_names_csv(boxed / "names.csv")
    (boxed / "m.csv").write_text("path,label,x1,y1,x2,y2\n" + "".join(f"{i}.jpg,{i % 4 + 1},5,5,60,50\n" for i in range(4)))
    (boxed / "boxes.csv").write_text("path,x1,y1,x2,y2\n0.jpg,5,5,60,50\n1.jpg,,,,\n")  # predict.py --manifest
    (boxed / "bad_boxes.csv").write_text("path,x1,y1,x2,y2\n0.jpg,5,5,x,50\n1.jpg,,,,\n2.jpg,5,5,60\n")
    checkpoint = write_tiny_checkpoint(base / "ckpt")
    no_model = write_tiny_checkpoint(base / "ckpt_no_model")
    (no_model / "model.pt").unlink()
    bad_model = write_tiny_checkpoint(base / "ckpt_bad_model")
    (bad_model / "model.pt").write_bytes(b"not weights")
    unreadable = base / "unreadable"
    for name in ("Alpha", "Beta"):
        (unreadable / name).mkdir(parents=True)
        (unreadable / name / "a.jpg").write_bytes(b"not a jpeg")
    other = base / "other_classes"  # four classes, not the checkpoint's four
    for name in ("Audi TTS Coupe 2012", "BMW M3 Coupe 2012", "Fiat 500 Convertible 2012", "Smart fortwo 2012"):
        make_image(other / name / "a.jpg", (40, 30))
    (base / "other_split.csv").write_text("path,class_id,split\n" + "".join(
        f"{name}/a.jpg,{i + 1},val\n" for i, name in enumerate(sorted(p.name for p in other.iterdir()))))
    existing_file = base / "existing.txt"
    existing_file.write_text("a user's file\n")
    existing_dir = base / "existing_dir"
    (existing_dir / "notes.txt").parent.mkdir()
    (existing_dir / "notes.txt").write_text("a user's notes\n")
    earlier_run = base / "earlier_run"  # what an earlier train.py / tune.py / evaluate.py left
    earlier_run.mkdir()
    for name in ("config.yaml", "metrics.csv", "tune_results.csv", "metrics.json"):
        (earlier_run / name).write_text("earlier\n")
    (earlier_run / "best").mkdir()
    (earlier_run / "best" / "model.pt").write_bytes(b"earlier weights")
    import torch

    pickled_module = base / "module.pth"  # code, not weights: weights-only loading refuses it
    torch.save(torch.nn.Linear(2, 2), pickled_module)
    not_weights = base / "notes.pth"
    not_weights.write_text("not weights\n")
    earlier_export = base / "earlier.onnx"
    earlier_export.write_bytes(b"an earlier export")
    return {"root": str(root), "csv": str(boxed / "m.csv"), "csv_dir": str(boxed), "ckpt": str(checkpoint),
            "boxes": str(boxed / "boxes.csv"), "bad_boxes": str(boxed / "bad_boxes.csv"),
            "no_model": str(no_model), "other": str(other),
            "other_split": str(base / "other_split.csv"), "unreadable": str(unreadable), "file": str(existing_file),
            "dir": str(existing_dir), "run": str(earlier_run), "onnx": str(earlier_export), "new": str(base / "new"),
            "module_pth": str(pickled_module), "bad_model": str(bad_model), "notes_pth": str(not_weights)}


# (case id, script, arguments, exit code, words expected in the last stderr line, output that must not appear)
CASES = [
    ("train-on-nothing", "train.py", ["--config", DEMO, "data.root_dir={root}", "data.batch_size=4096", *TINY,
                                       "--output-dir", "{new}/t1"], 2, "data.batch_size 4096 is larger than the", "{new}/t1"),
    ("crop-over-its-csv-dataset", "crop.py", ["--root-dir", "{csv}", "--output-dir", "{csv_dir}", "--overwrite"], 2,
     "contains the input", None),
    ("crop-over-its-csv-dataset-no-flag", "crop.py", ["--root-dir", "{csv}", "--output-dir", "{csv_dir}"], 2,
     "contains the input", None),
    ("crop-over-its-folder-dataset", "crop.py", ["--root-dir", "{root}", "--output-dir", "{root}"], 2, "is the input", None),
    ("crop-inside-its-dataset", "crop.py", ["--root-dir", "{root}", "--output-dir", "{root}/crops"], 2,
     "lies inside the input", "{root}/crops"),
    ("split-over-its-manifest", "split.py", ["--root-dir", "{csv}", "--out", "{csv}"], 2, "is the input", None),
    ("split-over-the-datasets-names", "split.py", ["--root-dir", "{root}", "--out", "{root}/names.csv", "--overwrite"], 2,
     "would replace a file of the input", None),
    ("split-over-an-image", "split.py", ["--root-dir", "{root}", "--out", "{root}/Zeta Coupe 2012/0_000.jpg", "--overwrite"],
     2, "would replace a file of the input", None),
    ("predict-over-an-input-image", "predict.py", ["--checkpoint", "{ckpt}", "--input", "{root}", "--overwrite",
                                                   "--output", "{root}/Zeta Coupe 2012/0_000.jpg"], 2,
     "would replace a file of the input", None),
    ("predict-output-is-a-folder", "predict.py", ["--checkpoint", "{ckpt}", "--input", "{root}", "--output", "{dir}"], 2,
     "is a folder; it must name a file", None),
    ("crop-output-is-a-file", "crop.py", ["--root-dir", "{root}", "--output-dir", "{file}"], 2,
     "is an existing file; it must name a folder", None),
    ("train-output-is-a-file", "train.py", ["--config", DEMO, "data.root_dir={root}", *TINY, "--output-dir", "{file}"], 2,
     "is an existing file; it must name a folder", None),
    ("split-out-is-a-folder", "split.py", ["--root-dir", "{root}", "--out", "{dir}"], 2, "is a folder; it must name a file", None),
    ("export-out-is-a-folder", "export.py", ["--checkpoint", "{ckpt}", "--out", "{dir}"], 2, "is a folder; it must name a file", None),
    ("crop-margin-nan", "crop.py", ["--root-dir", "{csv}", "--output-dir", "{new}/c1", "--margin", "nan"], 2,
     "--margin must be a finite number >= 0, got nan", "{new}/c1"),
    ("crop-margin-inf", "crop.py", ["--root-dir", "{csv}", "--output-dir", "{new}/c2", "--margin", "inf"], 2,
     "--margin must be a finite number >= 0, got inf", "{new}/c2"),
    ("predict-checkpoint-without-weights", "predict.py", ["--checkpoint", "{no_model}", "--input", "{root}",
                                                          "--output", "{new}/p.csv"], 2, "has no model.pt", "{new}/p.csv"),
    ("export-checkpoint-without-weights", "export.py", ["--checkpoint", "{no_model}", "--out", "{new}/m.onnx"], 2,
     "has no model.pt", "{new}/m.onnx"),
    ("train-over-an-earlier-run", "train.py", ["--config", DEMO, "data.root_dir={root}", *TINY, "--output-dir", "{run}"], 2,
     "already holds an earlier output (config.yaml, metrics.csv, best); continue it with --resume or replace it with --overwrite",
     None),
    ("tune-over-an-earlier-search", "tune.py", ["--config", "configs/tune_demo.yaml", "data.root_dir={root}", *TINY,
                                                "--output-dir", "{run}"], 2, "continue it with --resume or replace it with --overwrite", None),
    ("resume-and-overwrite", "train.py", ["--config", DEMO, "data.root_dir={root}", *TINY, "--output-dir", "{run}",
                                          "--resume", "--overwrite"], 2, "--resume and --overwrite exclude each other", None),
    ("resume-nothing", "train.py", ["--config", DEMO, "data.root_dir={root}", *TINY, "--output-dir", "{new}/t2", "--resume"],
     2, "holds no earlier output to continue", "{new}/t2"),
    ("crop-into-a-users-folder", "crop.py", ["--root-dir", "{root}", "--output-dir", "{dir}"], 2,
     "is not empty and holds no earlier crop", None),
    ("predict-over-an-existing-file", "predict.py", ["--checkpoint", "{ckpt}", "--input", "{root}", "--output", "{file}"], 2,
     "replace it with --overwrite", None),
    ("export-int8-checked-on-other-classes", "export.py", ["--checkpoint", "{ckpt}", "--out", "{new}/q.onnx", "--int8",
                                                           "--root-dir", "{other}", "--split-file", "{other_split}"], 2,
     "class 1 is 'Zeta Coupe 2012' in the checkpoint but 'Audi TTS Coupe 2012' in", "{new}/q.onnx"),
    ("export-int8-checked-on-fewer-classes", "export.py", ["--checkpoint", "{ckpt}", "--out", "{new}/q2.onnx", "--int8",
                                                           "--root-dir", "{unreadable}", "--split-file", "{other_split}"], 2,
     "the checkpoint has 4 classes but", "{new}/q2.onnx"),
    ("evaluate-demo-with-other-classes", "evaluate.py", ["--checkpoint", "{ckpt}", "--root-dir", "demo", "--output-dir",
                                                         "{new}/ev-demo"], 2, "the checkpoint has 4 classes but demo has 10", "{new}/ev-demo"),
    ("export-int8-checked-on-the-demo", "export.py", ["--checkpoint", "{ckpt}", "--out", "{new}/q3.onnx", "--int8",
                                                      "--root-dir", "demo", "--split-file", "{other_split}"], 2,
     "the checkpoint has 4 classes but demo has 10", "{new}/q3.onnx"),
    ("export-over-an-earlier-export", "export.py", ["--checkpoint", "{ckpt}", "--out", "{onnx}"], 2,
     "replace it with --overwrite", None),
    ("evaluate-over-an-earlier-evaluation", "evaluate.py", ["--checkpoint", "{ckpt}", "--root-dir", "{root}",
                                                            "--output-dir", "{run}"], 2, "replace it with --overwrite", None),
    ("config-nan", "train.py", ["--config", DEMO, "data.root_dir={root}", "optim.lr=nan", "--output-dir", "{new}/t3"], 2,
     "optim.lr must be a finite number, got nan", "{new}/t3"),
    ("config-negative-margin", "train.py", ["--config", DEMO, "data.root_dir={root}", "data.box_margin=-0.1",
                                            "--output-dir", "{new}/t4"], 2, "data.box_margin is -0.1", "{new}/t4"),
    ("config-unknown-data-pipeline", "train.py", ["--config", DEMO, "data.root_dir={root}", "data.pipeline=stream",
                                                  "--output-dir", "{new}/t5"], 2,
     "data.pipeline is 'stream'; expected one of auto, cached, streaming", "{new}/t5"),
    ("config-unknown-stream-source", "train.py", ["--config", DEMO, "data.root_dir={root}", "data.stream_source=cache",
                                                  "--output-dir", "{new}/t10"], 2,
     "data.stream_source is 'cache'; expected one of decode, disk", "{new}/t10"),
    ("config-zero-steps-per-epoch", "train.py", ["--config", DEMO, "data.root_dir={root}", "train.max_steps_per_epoch=0",
                                                 "--output-dir", "{new}/t6"], 2, "train.max_steps_per_epoch is 0", "{new}/t6"),
    ("evaluate-checkpoint-unreadable-weights", "evaluate.py", ["--checkpoint", "{bad_model}", "--root-dir", "{root}",
                                                               "--output-dir", "{new}/e1"], 2,
     "model.pt is not a readable PyTorch weights file", "{new}/e1"),
    ("predict-checkpoint-unreadable-weights", "predict.py", ["--checkpoint", "{bad_model}", "--input", "{root}",
                                                             "--output", "{new}/p2.csv"], 2,
     "model.pt is not a readable PyTorch weights file", "{new}/p2.csv"),
    ("config-box-frame", "train.py", ["--config", DEMO, "data.root_dir={root}", "data.box_frame=sideways",
                                      "--output-dir", "{new}/t7"], 2,
     "data.box_frame is 'sideways'; expected one of stored, upright", "{new}/t7"),
    ("config-use-boxes-not-a-bool", "train.py", ["--config", DEMO, "data.root_dir={root}", "data.use_boxes=maybe",
                                                 "--output-dir", "{new}/t11"], 2,
     "data.use_boxes must be true or false, got 'maybe'", "{new}/t11"),
    # A box manifest (predict.py --manifest): a bad row stops the run before any work, counted and named.
    ("predict-bad-box-manifest", "predict.py", ["--checkpoint", "{ckpt}", "--manifest", "{bad_boxes}",
                                                "--output", "{new}/p3.csv"], 2,
     "2 bad row(s) in the box manifest: {bad_boxes}:2: x2 is 'x', not a number; the other bad line(s): 4", "{new}/p3.csv"),
    ("predict-over-its-box-manifest", "predict.py", ["--checkpoint", "{ckpt}", "--manifest", "{boxes}", "--overwrite",
                                                     "--output", "{boxes}"], 2, "is the input", None),
    ("predict-input-and-manifest", "predict.py", ["--checkpoint", "{ckpt}", "--manifest", "{boxes}", "--input", "{root}",
                                                  "--output", "{new}/p4.csv"], 2,
     "argument --input: not allowed with argument --manifest", "{new}/p4.csv"),
    # A bad model.weights fails on the driver, before Ray starts, naming the file.
    ("train-weights-pickled-module", "train.py", ["--config", DEMO, "data.root_dir={root}", *TINY_WITH,
                                                  "model.weights={module_pth}", "--output-dir", "{new}/t8"], 2,
     "module.pth holds Python objects other than tensors (torch.nn.modules.linear.Linear", "{new}/t8"),
    ("tune-weights-not-a-weights-file", "tune.py", ["--config", "configs/tune_demo.yaml", "data.root_dir={root}", *TINY_WITH,
                                                    "model.weights={notes_pth}", "--output-dir", "{new}/t9"], 2,
     "notes.pth cannot be read", "{new}/t9"),
]


@pytest.mark.parametrize("case, script, arguments, code, words, output", CASES, ids=[c[0] for c in CASES])
def test_fault(world, case, script, arguments, code, words, output):
    inputs = [world[key] for key in ("root", "csv_dir", "ckpt", "no_model", "file", "dir", "run", "onnx", "other",
                                     "module_pth", "notes_pth", "bad_model")]
    before = tree_hash(*inputs)
    exit_code, _, stderr = call_pipeline(script, *[argument.format(**world) for argument in arguments])
    assert exit_code == code, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert words.format(**world) in last and "Traceback" not in stderr, stderr[-2000:]
    assert tree_hash(*inputs) == before, "an input file changed"
    if output:
        assert not Path(output.format(**world)).exists(), "a partial output was left behind"


def test_inspect_fails_when_no_image_is_readable(world, ray_local, tmp_path):
    """Exit 1 with one sentence; the report with the counts is still written (that is its job)."""
    code, _, stderr = call_pipeline("inspect_data.py", "--root-dir", world["unreadable"], "--output-dir", str(tmp_path / "i"))
    assert code == 1, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("error: the data cannot be trained on: no image of")
    assert (tmp_path / "i" / "inspect.json").exists()


def test_split_warns_about_classes_too_small_for_validation(tmp_path):
    root = tmp_path / "small"
    write_class_folders(root, 10, (32, 24))
    for extra in list((root / "Beta SUV 2007").iterdir())[1:]:
        extra.unlink()  # one image left in that class
    code, stdout, stderr = call_pipeline("split.py", "--root-dir", str(root), "--out", str(tmp_path / "s.csv"))
    assert code == 0, stderr
    warnings = [line for line in stdout.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: 1 class(es) get no validation rows, too few images: Beta SUV 2007 (1 images)",
                        "warning: 1 class(es) get no test rows, too few images: Beta SUV 2007 (1 images)"]
    again, _, stderr = call_pipeline("split.py", "--root-dir", str(root), "--out", str(tmp_path / "s.csv"))
    assert again == 2 and "replace it with --overwrite" in stderr
    assert call_pipeline("split.py", "--root-dir", str(root), "--out", str(tmp_path / "s.csv"), "--overwrite")[0] == 0


def test_split_file_beside_the_images_as_the_readme_cluster_command_writes_it(tmp_path):
    """README: `split.py --root-dir /data/crops --out /data/crops/split.csv`; then again with --overwrite."""
    root = write_class_folders(tmp_path / "crops", 10, (32, 24))
    images = sorted(p for p in root.rglob("*.jpg"))
    before = tree_hash(root)
    code, stdout, stderr = call_pipeline("split.py", "--root-dir", str(root), "--out", str(root / "split.csv"))
    assert code == 0, stderr
    assert stdout.strip().splitlines()[-1] == f"wrote {root / 'split.csv'}: train 28, val 4, test 8"
    assert (root / "split.csv").read_text().count("\n") == len(images) + 1
    code, _, stderr = call_pipeline("split.py", "--root-dir", str(root), "--out", str(root / "split.csv"), "--overwrite")
    assert code == 0, stderr
    (root / "split.csv").unlink()
    assert tree_hash(root) == before, "an input file changed"


def test_export_names_a_gain_as_a_gain():
    from helpers.entry_points import load_pipeline

    points_changed = load_pipeline("export.py").points_changed
    assert points_changed(0.38) == "0.38 points lost"
    assert points_changed(0.0) == "0.00 points lost"
    assert points_changed(-2.5) == "2.50 points gained"


def test_demo_names_the_packaged_sample_for_every_root_dir(tmp_path):
    """`--root-dir demo` is the sample shipped in the package, as `data.root_dir: demo` is in configs."""
    from cars_ray.data.layouts import read_dataset, resolve_root
    from cars_ray.evaluate.batch_predict import expand_inputs

    sample = resolve_root("demo")
    assert sample.endswith("cars_ray/data/demo/images") and read_dataset("demo").root == sample
    assert len(expand_inputs(["demo"])) == 396
    code, stdout, stderr = call_pipeline("split.py", "--root-dir", "demo", "--out", str(tmp_path / "s.csv"))
    assert code == 0, stderr
    assert stdout.strip().splitlines()[-1].endswith("s.csv: train 277, val 40, test 79")


LONG_TMPDIR = "/tmp/" + "t" * 115  # 120 characters: Ray's socket paths below it pass 107 bytes


@pytest.mark.parametrize("env, address, words", [
    ({"TMPDIR": LONG_TMPDIR}, None, "is too long for its socket paths (188 bytes, the limit is 107); set RAY_TMPDIR"),
    ({"RAY_ADDRESS": "http://127.0.0.1:8265"}, None,
     "RAY_ADDRESS=http://127.0.0.1:8265 is the dashboard's HTTP address, which `ray job submit` takes; a pipeline "
     "joins a Ray cluster itself: unset RAY_ADDRESS to start a local Ray, or give auto"),
    ({"RAY_ADDRESS": "grpc://127.0.0.1:6379"}, None, "is an address with the scheme grpc://, which Ray does not join"),
    ({}, "http://127.0.0.1:8265", "--address=http://127.0.0.1:8265 is the dashboard's HTTP address"),
    ({}, "headnode", "--address=headnode is not a Ray address; give auto, HOST:PORT"),
    ({}, "127.0.0.1:{port}", "nothing answers at 127.0.0.1:{port}"),
    ({}, "ray://127.0.0.1:{port}", "nothing answers at 127.0.0.1:{port}"),
], ids=["long-tmpdir", "dashboard-address", "wrong-scheme", "dashboard-address-flag", "no-port", "nothing-listening",
        "ray-client-nothing-listening"])
@pytest.mark.parametrize("script", ["crop.py", "predict.py"])
def test_ray_start_faults_are_one_sentence_before_any_output(world, monkeypatch, env, address, words, script):
    """Ray that cannot start or be reached: exit 2, one sentence saying what to change, no output folder or
    file made (the check runs before it, and before Ray's own start-up, whether or not Ray runs here)."""
    import ray

    from helpers.data import free_port

    port = str(free_port())
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a pipeline's own process
    output = Path(world["new"]) / f"ray-{script}-{len(words)}"
    arguments = (["--root-dir", world["root"], "--output-dir", str(output)] if script == "crop.py" else
                 ["--checkpoint", world["ckpt"], "--input", world["root"], "--output", str(output)])
    if address:
        arguments += ["--address", address.format(port=port)]
    code, _, stderr = call_pipeline(script, *arguments)
    assert code == 2, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and words.format(port=port) in last and "Traceback" not in stderr, stderr[-2000:]
    assert not output.exists(), "an output was left behind"


def test_ray_start_check_accepts_what_ray_takes(monkeypatch):
    """No address (a local Ray under a short temp folder), local, auto and a listening HOST:PORT pass."""
    import socket

    from cars_ray.runtime import check_ray_start

    monkeypatch.setenv("RAY_TMPDIR", "/tmp")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        for address in (None, "local", "auto", f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
            check_ray_start(address)


def test_a_ray_that_fails_while_starting_is_one_sentence(world, tmp_path):
    """What check_ray_start cannot foresee: ray.init itself fails (Ray raises a bare Exception when its node
    times out during start-up on an overloaded machine): exit 2 and one sentence, never a traceback. A real
    process: the pipeline sends Ray's native output to its log, and its own sentence to the terminal."""
    import subprocess
    import sys

    driver = (
        "import runpy, sys, ray\n"
        "def timed_out(*_, **__):\n"
        "    raise Exception('The current node timed out during startup. This could happen because some of the '\n"
        "                    'raylet failed to startup or the GCS has become overloaded.')\n"
        "ray.init = timed_out\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", driver, "pipelines/crop.py", "--root-dir", world["root"],
                           "--output-dir", str(tmp_path / "rt")], cwd=Path(__file__).resolve().parents[1],
                          env={**env, "RAY_TMPDIR": "/tmp"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: could not start a local Ray (Exception: The current node timed out during startup."), proc.stderr[-2000:]


def test_a_local_ray_knows_its_own_address_whatever_starts_later(ray_local):
    """Ray Train's PlacementGroupCleaner asks the state API whether the controller lives, and the state API
    finds "its" cluster from RAY_ADDRESS, else the newest Ray on the machine: a local start pins RAY_ADDRESS
    in its own processes (so a Ray started later cannot be mistaken for it) and leaves the caller's
    environment as it was."""
    import os

    @ray_local.remote(num_cpus=0)
    def address_seen_by_a_worker():
        return os.environ.get("RAY_ADDRESS")

    gcs_port = ray_local.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    seen = ray_local.get(address_seen_by_a_worker.remote())
    assert seen == f"127.0.0.1:{gcs_port}"  # the tests' head listens on loopback
    assert "RAY_GCS_SERVER_PORT" not in os.environ and os.environ.get("RAY_ADDRESS") != seen
