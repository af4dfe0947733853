#!/usr/bin/env bash
# Build the worker/launcher image, push it, and write the Flex Template spec to GCS.
#
#   PROJECT=my-project REGION=europe-west1 REPO=blurbeam BUCKET=my-bucket deploy/dataflow/build.sh
#
# Needs docker and gcloud (authenticated, `gcloud auth configure-docker REGION-docker.pkg.dev`).
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${REPO:?set REPO (Artifact Registry)}" "${BUCKET:?set BUCKET}"
cd "$(dirname "$0")/../.."
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE=${IMAGE:-$REGION-docker.pkg.dev/$PROJECT/$REPO/blurbeam:$VERSION}
TEMPLATE=${TEMPLATE:-gs://$BUCKET/templates/blurbeam-anonymize-$VERSION.json}

# metadata.json must describe the options of the code going into the image
python deploy/dataflow/make_metadata.py --check
# BLURBEAM_IMAGE: the image's own reference, the template's default worker image
docker build -f deploy/Dockerfile --build-arg BLURBEAM_IMAGE="$IMAGE" -t "$IMAGE" .
docker push "$IMAGE"
gcloud dataflow flex-template build "$TEMPLATE" \
  --project "$PROJECT" \
  --image "$IMAGE" \
  --sdk-language PYTHON \
  --metadata-file deploy/dataflow/metadata.json
echo "template: $TEMPLATE"
echo "image:    $IMAGE"
