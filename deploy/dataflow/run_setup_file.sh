#!/usr/bin/env bash
# The --setup_file alternative: no custom container. Beam builds an sdist of this project (through
# deploy/setup.py, which builds the repository root) and installs it on every Dataflow worker at
# start-up, on top of Beam's default SDK image. Slower worker start than the image, same pipeline.
#
#   PROJECT=... REGION=... BUCKET=... INPUT=gs://... OUTPUT=gs://... \
#     deploy/dataflow/run_setup_file.sh --detector yunet [more blurbeam anonymize flags]
#
# Workers install the sdist with its core dependencies, which run the default detector (its model
# is part of the package) but not the TensorFlow extras: this route refuses the mtcnn detector
# and the learned method, which would fail on every worker.
set -euo pipefail
: "${PROJECT:?}" "${REGION:?}" "${BUCKET:?}" "${INPUT:?}" "${OUTPUT:?}"
detector=multiscale
method=gaussian
prev=
for arg in "$@"; do
  if [ "$prev" = --detector ]; then detector=$arg; fi
  if [ "$prev" = --method ]; then method=$arg; fi
  case "$arg" in
    --detector=*) detector=${arg#*=} ;;
    --method=*) method=${arg#*=} ;;
  esac
  prev=$arg
done
needs_tf=
if [ "$detector" = mtcnn ]; then needs_tf="the mtcnn detector"; fi
if [ "$method" = learned ]; then needs_tf="the learned method"; fi
if [ -n "$needs_tf" ]; then
  echo "run_setup_file.sh: error: $needs_tf needs a TensorFlow extra, which --setup_file does" \
    "not install on workers; use the default detector or an image built with the extra" >&2
  exit 2
fi
cd "$(dirname "$0")/../.."
blurbeam anonymize \
  --input "$INPUT" --output "$OUTPUT" --skip-existing \
  --runner DataflowRunner \
  --project "$PROJECT" --region "$REGION" \
  --temp_location "gs://$BUCKET/tmp" \
  --setup_file "$PWD/deploy/setup.py" \
  "$@"
