#!/usr/bin/env bash
# Install blurbeam (which holds the default detector's model) into the running Python from a
# throwaway copy of the source tree, then delete the copy so that nothing importable is left beside
# the installed package (pyproject.toml maps pipelines/, transforms/ and schemas/ into
# blurbeam.* only at install time: a source folder named blurbeam/ in a working directory would
# hide them).
#
#   deploy/dataflow/install_package.sh SRC_DIR
#
# deploy/Dockerfile RUNs it on top of Beam's SDK image; tests/test_deploy_image.py runs the same
# line (parsed out of the Dockerfile) in a virtualenv that stands for that image.
set -euo pipefail
SRC=${1:?usage: install_package.sh SRC_DIR}
BEAM=$(sed -n 's/^ *"apache-beam==\([0-9.]*\)".*/\1/p' "$SRC/pyproject.toml")
: "${BEAM:?pyproject.toml pins no exact apache-beam version}"

# The SDK image already has apache-beam $BEAM: pip keeps it (the pin matches) and adds the rest.
# Cloud storage through fsspec: S3, GCS and Azure Blob; video files through PyAV (the video
# extra). No TensorFlow extra (mtcnn, deblur, edge): the default detector runs on onnxruntime; add
# them here for a worker that needs those features.
python -m pip install --no-cache-dir "$SRC[s3,gcs,azure,video]"
rm -rf "$SRC"

# Checked from / so that no working directory can stand in for the installed package.
cd /
python - "$BEAM" <<'PY'
import sys

import apache_beam

import blurbeam.pipelines.anonymize  # the pipeline imports in the installed package
from blurbeam.detectors import DetectorSpec, create
from blurbeam.detectors.centerface import MODEL_FILE
from blurbeam.pipelines.scaffold import DEFAULT_DETECTOR

assert apache_beam.__version__ == sys.argv[1], (apache_beam.__version__, sys.argv[1])
assert DEFAULT_DETECTOR == "multiscale"
create(DetectorSpec(DEFAULT_DETECTOR))  # loads the packaged model, checks its sha256
from blurbeam.video.media import load_av

av = load_av()  # video files are anonymized, not refused for a missing extra
print(f"apache-beam {apache_beam.__version__}; CenterFace model {MODEL_FILE}; PyAV {av.__version__}")
PY
blurbeam --version
