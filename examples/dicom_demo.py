"""Writes a small CSV of DICOM scans for examples/medical_dicom.yaml: a `path` column of .dcm files,
a `label` column (the scan's modality from its header: CT or MR) and a `split` column.

A pipeline demo, not a medical benchmark: the files are the test scans pydicom ships, only five
distinct images (three CT slices, two MR), one MR slice saved in seven encodings and these copies
spread over train, validation and test, so the metrics of a model trained on them mean nothing. No
labelled medical image set ships offline; with real scans, use the same CSV layout.

    python examples/dicom_demo.py runs/dicom_demo/scans.csv
    lamina train --config examples/medical_dicom.yaml --data runs/dicom_demo/scans.csv --output runs/dicom_demo/model
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pandas as pd

# single-frame grey CT and MR scans among pydicom's own test files (shipped in the package, so
# nothing is downloaded); the J2K and RLE files need pydicom's optional decoders (Pillow has J2K)
NAMES = ("CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm",
         "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
         "MR_small_padded.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "examples_overlay.dcm")


def scans() -> pd.DataFrame:
    """path, label (modality) and split of every listed file this pydicom can find and decode."""
    try:
        import pydicom
        from pydicom.data import get_testdata_file
    except ImportError:
        raise SystemExit("this demo needs pydicom: pip install 'lamina[medical]'") from None
    rows = []
    for name in NAMES:
        path = get_testdata_file(name, download=False)  # None when this pydicom version lacks the file
        if path is None:
            continue
        with warnings.catch_warnings():  # some test files are deliberately a little malformed
            warnings.simplefilter("ignore")
            try:
                scan = pydicom.dcmread(path)
                scan.pixel_array  # decoded here, so that a file this machine cannot decode is left out
            except (RuntimeError, NotImplementedError, ValueError, OSError) as error:
                print(f"left out {name}: {str(error).splitlines()[0]}")
                continue
        rows.append({"path": str(Path(path).resolve()), "label": str(scan.Modality)})
    frame = pd.DataFrame(rows, columns=["path", "label"])
    # per modality: the first file is for test, the second for validation, the rest for training
    order = frame.groupby("label").cumcount()
    frame["split"] = order.map({0: "test", 1: "validation"}).fillna("train")
    return frame


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default="runs/dicom_demo/scans.csv", help="the CSV to write")
    output = Path(parser.parse_args(argv).output)
    frame = scans()
    output.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(output, index=False)
    counts = frame.groupby(["label", "split"]).size().unstack(fill_value=0)
    print(f"wrote {len(frame)} scans to {output}\n{counts.to_string()}")


if __name__ == "__main__":
    main()
