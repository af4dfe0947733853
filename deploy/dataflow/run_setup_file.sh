#!/usr/bin/env bash
# The --setup_file alternative: no custom container. Beam builds an sdist of this project (through
# deploy/setup.py, which builds the repository root) and installs it on every Dataflow worker at
# start-up, on top of Beam's default SDK image. Slower worker start than the image, same pipeline.
#
#   PROJECT=... REGION=... BUCKET=... INPUT=gs://... OUTPUT=gs://... deploy/dataflow/run_setup_file.sh
set -euo pipefail
: "${PROJECT:?}" "${REGION:?}" "${BUCKET:?}" "${INPUT:?}" "${OUTPUT:?}"
cd "$(dirname "$0")/../.."
blurbeam anonymize \
  --input "$INPUT" --output "$OUTPUT" --skip-existing \
  --runner DataflowRunner \
  --project "$PROJECT" --region "$REGION" \
  --temp_location "gs://$BUCKET/tmp" \
  --setup_file "$PWD/deploy/setup.py" \
  "$@"
