"""Inspect a dataset: counts per class, image sizes and every problem, checked in parallel on Ray."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cars_ray.data.blocks import dataset_from_frame
from cars_ray.data.files import content_hash, duplicate_groups
from cars_ray.data.images import EXIF_NOTE, ORIENTATION, box_on_upright, box_problem, frame_size, open_rgb
from cars_ray.data.manifest import Manifest
from cars_ray.data.split import unmatched_split_paths
from cars_ray.errors import ImageError
from cars_ray.plots import sample_grid

ROWS_PER_BLOCK = 128


def check_batch(batch: pd.DataFrame, box_frame: str = "stored") -> pd.DataFrame:
    """Decode each image fully (so truncation shows), check its box against its size in ``box_frame``
    (stored pixels, or upright after EXIF orientation: the frame crop.py reads it in), hash its bytes.

    Columns: path, width, height (-1 when unreadable), reason (a problem, or ""), note (a remark on
    a readable image, such as an EXIF block ignored, or ""), sha256 (hex of the file's bytes, "" when
    the file cannot be read).
    """
    widths, heights, reasons, notes, hashes = [], [], [], [], []
    for row in batch.to_dict("records"):
        try:
            hashes.append(content_hash(row["path"]))
        except OSError:
            hashes.append("")
        try:
            image = open_rgb(row["path"])
        except ImageError as err:
            widths.append(-1), heights.append(-1), reasons.append(str(err)), notes.append("")
            continue
        widths.append(image.width), heights.append(image.height), notes.append(image.info.get(EXIF_NOTE, ""))
        box = (row["x1"], row["y1"], row["x2"], row["y2"])
        orientation = image.info.get(ORIENTATION, 1) if box_frame == "stored" else 1  # as the decode applied it
        size = frame_size(box_frame, orientation, image.width, image.height)
        problem = None if math.isnan(box[0]) else box_problem(box, *size)
        if problem and problem.startswith("box outside"):
            problem += f" in the {box_frame} frame" + (f" (EXIF orientation {orientation})" if orientation != 1 else "")
        reasons.append(problem or "")
    return pd.DataFrame({"path": batch["path"].to_numpy(), "width": widths, "height": heights, "reason": reasons,
                         "note": notes, "sha256": hashes})


def find_duplicates(manifest: Manifest, checked: pd.DataFrame, split: pd.DataFrame | None = None) -> list[dict]:
    """Groups of exact copies (identical bytes) among the manifest's images, each with its kinds.

    Each group: ``paths`` (sorted), ``sha256``, ``classes`` (class names, "" for unlabelled),
    ``splits`` (from ``split``, a ``path,class_id,split`` table, when given; "" for a path it lacks)
    and ``kinds``: "within a class" (two files of one class), "across classes" (files labelled differently),
    "across splits" (one or more; "unlabelled" when no file of the group has a class).
    """
    hashes = dict(zip(checked.path, checked.sha256))
    table = manifest.table
    groups = duplicate_groups(table.path, [hashes.get(p, "") for p in table.path])
    classes_of: dict[str, set[int]] = {}  # a path listed with several boxes may carry several classes
    for path, class_index in zip(table.path, table.class_index):
        classes_of.setdefault(path, set()).add(int(class_index))
    rel_of = dict(zip(table.path, table.rel_path))
    split_of = dict(zip(split.path, split.split)) if split is not None else {}
    name = lambda index: manifest.class_names[index] if index >= 0 else ""  # noqa: E731
    found = []
    for group in groups:
        classes = [" / ".join(name(i) for i in sorted(classes_of[p])) for p in group]
        splits = [split_of.get(rel_of[p], "") for p in group] if split is not None else []
        labelled = [classes_of[p] - {-1} for p in group]
        kinds = []
        if any(len([c for c in labelled if index in c]) > 1 for index in set().union(*labelled)):
            kinds.append("within a class")
        if len({frozenset(c) for c in labelled if c}) > 1:
            kinds.append("across classes")
        if len({s for s in splits if s}) > 1:
            kinds.append("across splits")
        found.append({"paths": group, "sha256": hashes[group[0]], "classes": classes, "splits": splits,
                      "kinds": kinds or ["unlabelled"]})
    return found


def inspect_manifest(manifest: Manifest, split: pd.DataFrame | None = None, box_frame: str = "stored") -> dict:
    """The inspection report as a JSON-ready dict; boxes are checked in ``box_frame``; ``split`` (a read
    split file) adds its splits to the exact duplicates found, so copies of one image in two splits show."""
    table = manifest.table
    columns = ["path", "x1", "y1", "x2", "y2"]
    checked = (dataset_from_frame(table[columns], ROWS_PER_BLOCK)
               .map_batches(check_batch, batch_format="pandas", batch_size=None, fn_kwargs={"box_frame": box_frame})
               .to_pandas()
               if len(table) else pd.DataFrame(columns=["path", "width", "height", "reason", "note", "sha256"]))
    problems = [{"path": p, "reason": r, "source": "image"} for p, r in zip(checked.path, checked.reason) if r]
    problems += manifest.problems
    duplicates = find_duplicates(manifest, checked, split)
    readable = checked[checked.width > 0]
    per_class = manifest.class_counts()
    counts = np.array(list(per_class.values())) if per_class else np.zeros(1)
    splits = table.orig_split.value_counts().to_dict()
    return {
        "root": manifest.root,
        "layout": manifest.layout,
        "num_classes": manifest.num_classes,
        "num_images": int(len(table)),
        "num_labelled": int((table.class_index >= 0).sum()),
        "num_with_boxes": int(manifest.has_boxes().sum()),
        "box_frame": box_frame,
        "original_splits": {k or "none": int(v) for k, v in splits.items()},
        "per_class": per_class,
        "per_class_stats": {"min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max())},
        "image_size": _size_stats(readable),
        "problems": problems,
        "problem_counts": pd.Series([p["reason"].split(":")[0] for p in problems], dtype=str).value_counts().to_dict(),
        "notes": manifest.notes,
        "image_notes": [{"path": p, "note": n} for p, n in zip(checked.path, checked.note) if n],
        "ignored": manifest.ignored,
        "duplicates": duplicates,
        # Rows of the split file whose path is no image of this dataset: counted and named, never passed over.
        "split_rows_naming_no_image": [] if split is None else unmatched_split_paths(split, table.rel_path),
        "duplicate_counts": {kind: sum(kind in g["kinds"] for g in duplicates)
                             for kind in ("within a class", "across classes", "across splits")},
        "num_readable": int(len(readable)),
        "classes_without_readable_images": _classes_without_readable(manifest, set(readable.path)),
    }


def _classes_without_readable(manifest: Manifest, readable_paths: set[str]) -> list[str]:
    table = manifest.table
    readable = table[table.path.isin(readable_paths) & (table.class_index >= 0)].class_index.value_counts()
    return [name for index, name in enumerate(manifest.class_names) if readable.get(index, 0) == 0]


def unusable_reasons(report: dict, shown: int = 10) -> list[str]:
    """Why the inspected data cannot be trained on (no readable image, or a class without one); empty if usable."""
    if report["num_readable"] == 0:
        return [f"no image of {report['root']} is readable ({report['num_images']} listed)"]
    empty = report["classes_without_readable_images"]
    if empty:
        more = f" and {len(empty) - shown} more" if len(empty) > shown else ""
        return [f"{len(empty)} class(es) have no readable image: {', '.join(empty[:shown])}{more}"]
    return []


def _size_stats(readable: pd.DataFrame) -> dict:
    if readable.empty:
        return {}
    stats = {}
    for column in ("width", "height"):
        values = readable[column].to_numpy()
        stats[column] = {"min": int(values.min()), "median": float(np.median(values)), "max": int(values.max())}
    return stats


def format_summary(report: dict, max_problems: int = 20, show_classes: int = 0) -> str:
    """A human-readable summary of an inspection report, listing the first ``show_classes`` classes
    (class id, name, labelled images) after the class count."""
    stats, size = report["per_class_stats"], report["image_size"]
    shown = list(report["per_class"].items())[:max(show_classes, 0)]
    lines = [
        f"layout      : {report['layout']} ({report['root']})",
        f"classes     : {report['num_classes']}" + (f" (the first {len(shown)}: id, name, images)" if shown else ""),
        *[f"  {index:>4}  {name}: {count}" for index, (name, count) in enumerate(shown, start=1)],
        f"images      : {report['num_images']} ({report['num_labelled']} labelled, "
        f"{report['num_with_boxes']} with boxes; splits {report['original_splits']})",
        f"per class   : min {stats['min']}, median {stats['median']:g}, max {stats['max']}",
    ]
    if size:
        lines.append(f"image width : min {size['width']['min']}, median {size['width']['median']:g}, max {size['width']['max']}")
        lines.append(f"image height: min {size['height']['min']}, median {size['height']['median']:g}, max {size['height']['max']}")
    lines += [f"note        : {note}" for note in report["notes"]]
    lines += [f"note        : {item['path']}: {item['note']}" for item in report["image_notes"][:max_problems]]
    ignored = report["ignored"]
    lines.append(f"ignored     : {len(ignored)} folder entr(ies) (junk, hidden, not UTF-8, other extensions)")
    lines += [f"  - {item['path']}: {item['reason']}" for item in ignored[:max_problems]]
    if len(ignored) > max_problems:
        lines.append(f"  ... and {len(ignored) - max_problems} more (all listed in inspect.json)")
    duplicates, kinds = report["duplicates"], report["duplicate_counts"]
    lines.append(f"duplicates  : {len(duplicates)} group(s) of exact copies ({sum(len(g['paths']) for g in duplicates)} "
                 f"files; {kinds['within a class']} within a class, {kinds['across classes']} across classes, "
                 f"{kinds['across splits']} across splits)")
    for group in duplicates[:max_problems]:
        where = [f"{p} [{c or 'unlabelled'}{', ' + s if s else ''}]"
                 for p, c, s in zip(group["paths"], group["classes"], group["splits"] or [""] * len(group["paths"]))]
        lines.append(f"  - {' = '.join(where)} ({', '.join(group['kinds'])})")
    if len(duplicates) > max_problems:
        lines.append(f"  ... and {len(duplicates) - max_problems} more (all listed in inspect.json)")
    unmatched = report.get("split_rows_naming_no_image", [])
    if unmatched:
        lines.append(f"split file  : {len(unmatched)} row(s) name no image of this dataset")
        lines += [f"  - {path}" for path in unmatched[:max_problems]]
        if len(unmatched) > max_problems:
            lines.append(f"  ... and {len(unmatched) - max_problems} more (all listed in inspect.json)")
    problems = report["problems"]
    lines.append(f"problems    : {len(problems)} {report['problem_counts'] if problems else ''}".rstrip())
    lines += [f"  - {p['path']}: {p['reason']} [{p.get('source', '')}]" for p in problems[:max_problems]]
    if len(problems) > max_problems:
        lines.append(f"  ... and {len(problems) - max_problems} more (all listed in inspect.json)")
    return "\n".join(lines)


def samples_figure(manifest, num_classes: int, box_frame: str = "stored"):
    """First readable image of each of the first ``num_classes`` classes, cropped to its box."""
    images, titles = [], []
    table = manifest.table
    for index in range(min(num_classes, manifest.num_classes)):
        for row in table[table.class_index == index].head(5).itertuples():
            try:
                has_box = not np.isnan(row.x1)
                image = open_rgb(row.path)
                if has_box:
                    orientation = image.info.get(ORIENTATION, 1) if box_frame == "stored" else 1
                    image = image.crop(box_on_upright((row.x1, row.y1, row.x2, row.y2), box_frame, orientation,
                                                      image.width, image.height)[0])
            except ImageError:
                continue
            image.thumbnail((256, 256))
            images.append(np.asarray(image))
            titles.append(f"{index + 1}: {manifest.class_names[index]}")
            break
    return sample_grid(images, titles, f"{manifest.layout} layout: one image per class "
                                       f"(first {len(images)} of {manifest.num_classes} classes)")
