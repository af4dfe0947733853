#!/usr/bin/env bash
# Deploy the nightly CronJob (kustomization.yaml here) with what differs per deployment, set in
# a kustomize overlay written to a temporary directory:
#
#   IMAGE=REGION-docker.pkg.dev/PROJECT/REPO/blurbeam:0.1.0 \   # as deploy/dataflow/build.sh prints
#   INPUT=s3://datasets/raw OUTPUT=s3://datasets/anonymized \
#   AWS_ROLE_ARN=arn:aws:iam::123456789012:role/blurbeam \     # or GCP_SERVICE_ACCOUNT=...
#   [MAX_ERROR_RATE=0.01] [NAMESPACE=privacy] deploy/k8s/deploy.sh [--render]
#
# --render prints the manifests instead of applying them. IMAGE needs a tag or a digest.
set -euo pipefail

die() {
  echo "deploy/k8s/deploy.sh: error: $*" >&2
  exit 2
}

here=$(cd "$(dirname "$0")" && pwd)
render=false
case "${1:-}" in
  --render) render=true ;;
  "") ;;
  *) die "unknown argument $1 (only --render)" ;;
esac
: "${IMAGE:?set IMAGE to the reference deploy/dataflow/build.sh printed}"
: "${INPUT:?set INPUT, the storage URL of the images}"
: "${OUTPUT:?set OUTPUT, the storage URL of the anonymized images and audit}"
MAX_ERROR_RATE=${MAX_ERROR_RATE:-0.01}
[[ -n "${AWS_ROLE_ARN:-}${GCP_SERVICE_ACCOUNT:-}" ]] ||
  die "set AWS_ROLE_ARN (EKS IRSA) or GCP_SERVICE_ACCOUNT (GKE Workload Identity)"
[[ "$MAX_ERROR_RATE" =~ ^(0|1|0?\.[0-9]+)$ ]] || die "MAX_ERROR_RATE=$MAX_ERROR_RATE is not in [0, 1]"
for url in "$INPUT" "$OUTPUT"; do
  [[ "$url" =~ ^(s3|gs|az|abfs|abfss)://[^/]+ ]] ||
    die "$url: INPUT and OUTPUT must be object storage URLs (s3://, gs://, az://, abfs://)"
done

# name[:tag][@digest]; a ':' after the last '/' starts the tag
if [[ "$IMAGE" == *@* ]]; then
  image_entry="newName: ${IMAGE%%@*}
    digest: ${IMAGE#*@}"
elif [[ "${IMAGE##*/}" == *:* ]]; then
  image_entry="newName: ${IMAGE%:*}
    newTag: ${IMAGE##*:}"
else
  die "IMAGE=$IMAGE has no tag or digest"
fi

annotations=""
[[ -z "${AWS_ROLE_ARN:-}" ]] || annotations+="
          eks.amazonaws.com/role-arn: \"$AWS_ROLE_ARN\""
[[ -z "${GCP_SERVICE_ACCOUNT:-}" ]] || annotations+="
          iam.gke.io/gcp-service-account: \"$GCP_SERVICE_ACCOUNT\""

overlay=$(mktemp -d)
trap 'rm -rf "$overlay"' EXIT
# kustomize takes a base only below the overlay's root: a copy of this directory
mkdir "$overlay/base"
cp "$here/kustomization.yaml" "$here/serviceaccount.yaml" "$here/cronjob.yaml" "$overlay/base/"
cat >"$overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - base
${NAMESPACE:+namespace: $NAMESPACE}
images:
  - name: set-by-deploy-sh/blurbeam
    $image_entry
configMapGenerator:
  - name: blurbeam-nightly
    literals:
      - "INPUT=$INPUT"
      - "OUTPUT=$OUTPUT"
      - "MAX_ERROR_RATE=$MAX_ERROR_RATE"
patches:
  - target:
      kind: ServiceAccount
      name: blurbeam
    patch: |-
      apiVersion: v1
      kind: ServiceAccount
      metadata:
        name: blurbeam
        annotations:$annotations
EOF
if $render; then
  kubectl kustomize "$overlay"
else
  kubectl kustomize "$overlay" | kubectl apply -f -
fi
