"""Object detection on SIMULATED road scenes (lamina.datasets.driving: pybullet renders with exact
boxes, not photos) with the example config (examples/driving_detection.yaml): COCO mAP@[.5:.95],
mAP@.5 and AP per class on the held-out test scenes, wall time and parameter counts.

    python benchmarks/detection.py                   # 2,000 scenes at 96x96, the example config
    python benchmarks/detection.py --quick           # smoke test: 200 scenes, 1 epoch
    python benchmarks/detection.py --set training.epochs=20 --set inputs.0.stages=3
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/fashion_mnist.py: a shared machine

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

import lamina  # noqa: E402
from lamina.datasets.driving import driving_scenes  # noqa: E402
from common import lamina_source, machine  # noqa: E402
from fashion_mnist import apply_settings  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "driving_detection.yaml"


def mirrored(frame: pd.DataFrame) -> pd.DataFrame:
    """The scenes flipped left-right with their boxes: lamina refuses flip augmentation for a boxes
    output (it would move objects away from their boxes), so the data is augmented before training."""
    width = frame["image"].iloc[0].shape[1]
    return frame.assign(image=[np.ascontiguousarray(image[:, ::-1]) for image in frame["image"]],
                        boxes=[[[width - x1, y0, width - x0, y1, label] for x0, y0, x1, y1, label in cell]
                               for cell in frame["boxes"]])


SIZE_BANDS = {"under 5 px": (0, 5), "5 to 9 px": (5, 9), "9 px and more": (9, 1e5)}


def by_size(model, test: pd.DataFrame, side: int) -> dict:
    """COCO mAP@[.5:.95] and mAP@.5 of the test scenes for objects of each size band (SIZE_BANDS: the
    square root of the true box's area in pixels; a detection counts in the band of the box it matches,
    unmatched ones by their own size), from pycocotools' area ranges."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    feature = model.outputs_[0]
    labels, kept = feature.labels, feature.config.threshold
    feature.config.threshold = 0.0  # every peak (up to top_k), as mAP is measured
    try:
        found = model.predict(test.drop(columns=["boxes"]))["boxes"]
    finally:
        feature.config.threshold = kept
    images, truth, detections = [], [], []
    for image, (true_cell, predicted) in enumerate(zip(test["boxes"], found)):
        images.append({"id": image, "width": side, "height": side})
        for x0, y0, x1, y1, label in true_cell:
            truth.append({"id": len(truth) + 1, "image_id": image, "category_id": labels.index(str(label)),
                          "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        for found_box in predicted:
            x0, y0, x1, y1 = found_box["box"]
            detections.append({"image_id": image, "category_id": labels.index(found_box["label"]),
                               "score": found_box["score"], "bbox": [x0, y0, x1 - x0, y1 - y0]})
    result = {}
    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO()
        ground.dataset = {"images": images, "annotations": truth,
                          "categories": [{"id": index} for index in range(len(labels))]}
        ground.createIndex()
        for name, (low, high) in SIZE_BANDS.items():
            evaluation = COCOeval(ground, ground.loadRes(detections), "bbox")
            # one area range, labelled 'all': the label summarize() reads its first two figures for
            evaluation.params.areaRng, evaluation.params.areaRngLbl = [[low ** 2, high ** 2]], ["all"]
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            counts = sum(1 for box in truth if low ** 2 <= box["area"] < high ** 2)
            result[name] = (counts, (max(float(evaluation.stats[0]), 0.0), max(float(evaluation.stats[1]), 0.0)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=2000, help="scenes rendered (split ~80/10/10 by the data set)")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="the scenes' seed")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--set", action="append", default=[], help="config override, e.g. training.epochs=20")
    parser.add_argument("--quick", action="store_true", help="200 scenes, 1 epoch: a smoke test")
    parser.add_argument("--mirror", action="store_true", help="add a left-right mirrored copy of every training "
                                                                  "scene (boxes mirrored too) before training")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--save", help="also save the trained model in this folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = apply_settings(yaml.safe_load(CONFIG.read_text()), args.set + (["training.epochs=1"] if args.quick else []))
    frame = driving_scenes(200 if args.quick else args.scenes, args.seed, args.size)
    if args.mirror:
        frame = pd.concat([frame, mirrored(frame[frame["split"] == "train"])], ignore_index=True)
    print(lamina_source())
    print(machine())
    print(f"{len(frame)} simulated scenes at {args.size}x{args.size}: "
          f"{frame['split'].value_counts().to_dict()}; {sum(map(len, frame['boxes']))} boxes")
    start = time.perf_counter()
    records: list[dict] = []

    def progress(record: dict) -> None:
        records.append(record)
        print(json.dumps(record, default=lambda value: round(value, 4) if isinstance(value, float) else str(value)),
              flush=True)

    model = lamina.Model(config).fit(frame, quiet=True, on_epoch=progress)
    seconds = time.perf_counter() - start
    network = model.network_
    head = sum(parameter.numel() for parameter in network.heads.parameters())
    total = sum(parameter.numel() for parameter in network.parameters())
    test = model.metrics_["test"]["boxes"]
    epochs = len(records)
    figures = {"test": test, "seconds": round(seconds, 1), "epochs_run": epochs, "parameters": total,
               "head_parameters": head, "threads": args.threads, "scenes": len(frame), "config": config,
               "test_scenes": int((frame["split"] == "test").sum()), "validation": model.metrics_["validation"]["boxes"]}
    print(f"test mAP@[.5:.95] {test['map']:.3f}  mAP@.5 {test['map_50']:.3f}  ({figures['test_scenes']} scenes)")
    print("AP per class: " + ", ".join(f"{key[3:]} {value:.3f}" for key, value in test.items() if key.startswith("ap_")))
    figures["by_size"] = by_size(model, frame[frame["split"] == "test"], args.size)
    print("mAP@[.5:.95] / mAP@.5 by object size (the square root of its box's area, in pixels): " + ", ".join(
        f"{name} ({counts} boxes) {values[0]:.3f} / {values[1]:.3f}" for name, (counts, values) in figures["by_size"].items()))
    if args.save:
        model.save(args.save)
    print(f"trained in {seconds / 60:.1f} min on {args.threads} threads; {total:,} parameters ({head:,} in the "
          f"boxes head); load average now {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
