#!/usr/bin/env bash
# Set up (if needed) and run the bundled demo: both bundled models on the sample images,
# with both runtimes, printing the predictions and writing annotated images to demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ER=.venv/bin/edge-runtime
$ER models
for backend in onnx tflite; do
    echo "== efficientnet_lite0 ($backend)"
    $ER -q infer models/efficientnet_lite0 tests/data/*.jpg --backend "$backend" --top-k 3
    echo "== ssdlite_mobilenet_v2_person ($backend)"
    $ER -q infer models/ssdlite_mobilenet_v2_person tests/data/*.jpg --backend "$backend" --annotate demo-output
done
echo "annotated images: demo-output/"
