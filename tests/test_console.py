"""What the console shows, checked without Ray: compare.py on run and search folders made by hand (figures
for both, times in seconds), inspect_data's class list."""

from __future__ import annotations

import json

from helpers.entry_points import call_pipeline


def write_search(folder, with_summary: bool):
    folder.mkdir(parents=True)
    (folder / "tune_results.csv").write_text(
        "trial_id,trial_dir,param.optim.lr,best_val_top1,best_epoch,best_checkpoint,epochs_run,images_per_second\n"
        "t1,/x/t1,0.001,0.75,3,/x/t1/c,4,41.2\nt2,/x/t2,0.1,0.25,1,/x/t2/c,1,40.0\n")
    (folder / "evaluation").mkdir()
    (folder / "evaluation" / "metrics.json").write_text(json.dumps({"top1": 0.7}))
    if with_summary:
        (folder / "search.json").write_text(json.dumps({"trials": 2, "best_trial": "t1", "best_epoch": 3,
                                                        "best_val_top1": 0.75, "test_top1": 0.7,
                                                        "images_per_second": 41.2, "wall_seconds": 58.8}))


def test_a_search_gets_wall_time_and_throughput_and_times_print_in_seconds(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({
        "run_name": "demo", "backbone": "tf_efficientnet_lite0", "head": "linear", "image_size": 128, "epochs_run": 6,
        "best_epoch": 6, "best_val_top1": 0.8125, "test_top1": 0.7979, "wall_seconds": 62.0, "images_per_second": 57.25}))
    write_search(tmp_path / "search", with_summary=True)
    write_search(tmp_path / "old_search", with_summary=False)
    code, stdout, stderr = call_pipeline("compare.py", str(run), str(tmp_path / "search"), str(tmp_path / "old_search"),
                                         "--out", str(tmp_path / "c.png"))
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[1].split()[0] == str(run) and lines[1].split()[-4:] == ["0.798", "62.0", "s", "57"]
    assert lines[2].split()[0] == str(tmp_path / "search") and lines[2].split()[-5:] == ["0.750", "0.700", "58.8", "s", "41"]
    assert lines[3].split()[0] == str(tmp_path / "old_search") and lines[3].split()[-4:] == ["0.750", "0.700", "-", "-"]
    assert lines[4] == (f"note: {tmp_path / 'old_search'} has no search.json (a search from before it was written): "
                        "its wall time and images/s are shown as -")
    assert "nan" not in stdout.lower() and "58.800" not in stdout


def test_inspect_lists_the_classes_it_shows():
    from cars_ray.data.inspection import format_summary

    report = {"layout": "folder", "root": "/d", "num_classes": 3, "num_images": 9, "num_labelled": 9, "num_with_boxes": 0,
              "original_splits": {"none": 9}, "per_class": {"Audi TTS Coupe 2012": 4, "BMW M3 Coupe 2012": 3, "Smart fortwo": 2},
              "per_class_stats": {"min": 2, "median": 3.0, "max": 4}, "image_size": None, "notes": [], "problems": [],
              "problem_counts": {}, "image_notes": [], "ignored": [], "duplicates": [],
              "duplicate_counts": {"within a class": 0, "across classes": 0, "across splits": 0}}
    lines = format_summary(report, show_classes=2).splitlines()
    assert lines[1:4] == ["classes     : 3 (the first 2: id, name, images)",
                          "     1  Audi TTS Coupe 2012: 4", "     2  BMW M3 Coupe 2012: 3"]
    assert format_summary(report).splitlines()[1:3] == ["classes     : 3", "per class   : min 2, median 3, max 4"][:1] + [
        "images      : 9 (9 labelled, 0 with boxes; splits {'none': 9})"]


def test_library_warnings_and_foreign_console_handlers_go_to_the_log_not_the_console(tmp_path):
    """matplotlib's UserWarnings, a module-level logging.warning (onnxruntime's quantizer) and a handler put
    on the root by a library's logging.basicConfig: none reaches the quiet console; run.log keeps them."""
    import contextlib
    import io
    import logging
    import warnings

    from cars_ray.runtime import configure_logging
    from helpers.entry_points import restored_logging

    console = io.StringIO()
    try:
        with contextlib.redirect_stderr(console), restored_logging():
            logging.basicConfig()  # as a library does at import: a console handler on the root
            configure_logging(False, str(tmp_path))
            warnings.warn("Data has no positive values, and therefore cannot be log-scaled.", UserWarning)
            logging.warning("Quantized bias of Conv_0 exceeds the range of a int32")
            logging.getLogger("cars_ray").error("a real error still shows")
    finally:
        logging.captureWarnings(False)
    assert console.getvalue().strip().splitlines()[-1].endswith("cars_ray: a real error still shows")
    assert "log-scaled" not in console.getvalue() and "Quantized bias" not in console.getvalue()
    log = (tmp_path / "run.log").read_text()
    assert "log-scaled" in log and "Quantized bias" in log


def test_the_raylets_warnings_go_to_the_log_unless_verbose(tmp_path):
    import contextlib
    import io
    import logging

    import ray._private.worker as ray_worker

    from cars_ray.runtime import route_raylet_messages

    original = ray_worker.print_to_stdstream
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("ray.raylet").addHandler(handler)
    out = io.StringIO()
    message = {"lines": ["WARNING: 10 PYTHON worker processes have been started on node ..."], "pid": "raylet",
               "is_err": False}
    try:
        route_raylet_messages(False)
        with contextlib.redirect_stdout(out):
            ray_worker.print_to_stdstream(message, ignore_prefix=False)
        assert out.getvalue() == ""
        assert [r.getMessage() for r in records] == ["(raylet) WARNING: 10 PYTHON worker processes have been started on node ..."]
        route_raylet_messages(True)
        assert ray_worker.print_to_stdstream is original
    finally:
        ray_worker.print_to_stdstream = original
        logging.getLogger("ray.raylet").removeHandler(handler)


def test_a_search_prints_one_line_per_trial_result():
    from types import SimpleNamespace

    from cars_ray.tune.runner import TrialLines

    lines = []
    callback = TrialLines("val_loss", 6, write=lines.append)
    trial = SimpleNamespace(trial_id="a1b2_00001", path="/runs/t/trial")
    callback.on_trial_result(3, [], trial, {"epoch": 2, "val_loss": 1.23456, "val_top1": 0.5})
    callback.on_trial_result(4, [], trial, {"epoch": 3})
    callback.on_trial_error(5, [], trial)
    assert lines == ["[cars_ray] trial a1b2_00001 epoch 2/6  val_loss 1.2346  val_top1 0.500",
                     "[cars_ray] trial a1b2_00001 epoch 3/6  val_loss -",
                     "[cars_ray] trial a1b2_00001 failed; its error is in tune_results.csv and /runs/t/trial"]
