#!/usr/bin/env bash
# Run the Flex Template once (the nightly schedulers in deploy/k8s and deploy/airflow do the same).
#
#   PROJECT=... REGION=... BUCKET=... INPUT=gs://data/images OUTPUT=gs://data/anonymized \
#     deploy/dataflow/run.sh [extra parameters, e.g. method=pixelate]
#
# Workers run the same image as the launcher (main.py's default sdk_container_image, baked in by
# build.sh; a parameter sdk_container_image=... overrides it); already anonymized images
# are skipped (skip_existing=true), so a nightly run only processes what is new or changed.
# Dataflow starts one SDK process per vCPU, so each gets one inference thread (worker_threads=1).
set -euo pipefail
: "${PROJECT:?}" "${REGION:?}" "${BUCKET:?}" "${INPUT:?}" "${OUTPUT:?}"
cd "$(dirname "$0")/../.."
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
TEMPLATE=${TEMPLATE:-gs://$BUCKET/templates/blurbeam-anonymize-$VERSION.json}
PARAMS="input=$INPUT,output=$OUTPUT,skip_existing=true,worker_threads=1"
for extra in "$@"; do PARAMS="$PARAMS,$extra"; done

gcloud dataflow flex-template run "blurbeam-$(date -u +%Y%m%d-%H%M%S)" \
  --project "$PROJECT" \
  --region "$REGION" \
  --template-file-gcs-location "$TEMPLATE" \
  --temp-location "gs://$BUCKET/tmp" \
  --staging-location "gs://$BUCKET/staging" \
  --parameters "$PARAMS"
