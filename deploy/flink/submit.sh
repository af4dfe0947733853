#!/usr/bin/env bash
# Submit blurbeam to the Flink cluster of docker-compose.yaml and check the result: runs
# `blurbeam anonymize` in the compose file's launcher service (the blurbeam image, on the job
# server's network, with $BLURBEAM_DATA at the same path as on the host), then `blurbeam report`
# on the output, which exits non-zero when an input has no audit record.
#
#   export BLURBEAM_DATA=$(realpath data)
#   deploy/flink/submit.sh --input "$BLURBEAM_DATA/images" --output "$BLURBEAM_DATA/anonymized" \
#     [--skip-existing ...]
#
# --input and --output must be under $BLURBEAM_DATA (the only host directory the containers see)
# or object storage URLs (s3://, gs://, az://, abfs://); anything else is refused before anything
# runs. Exit code: anonymize's when it fails, else the report's; 2 on bad arguments.
# PARALLELISM (default 4) is task managers x slots; SDK_WORKERS (default 2, the slots of one task
# manager) is how many SDK processes each worker pool starts; WORKER_THREADS (default 1) is
# --worker-threads, the CPU threads each of them gives the detector.
set -euo pipefail

die() {
  echo "deploy/flink/submit.sh: error: $*" >&2
  exit 2
}

here=$(cd "$(dirname "$0")" && pwd)
[[ -n "${BLURBEAM_DATA:-}" ]] ||
  die "set BLURBEAM_DATA to the absolute host directory docker-compose.yaml mounts"
data=$(realpath -e -- "$BLURBEAM_DATA" 2>/dev/null) || die "BLURBEAM_DATA=$BLURBEAM_DATA does not exist"
[[ "$data" == "${BLURBEAM_DATA%/}" || "$data/" == "$BLURBEAM_DATA" ]] ||
  die "BLURBEAM_DATA=$BLURBEAM_DATA must be absolute and canonical (it is $data): export BLURBEAM_DATA=$data"

# An --input/--output value as the containers will see it: an object storage URL unchanged, a
# local path made canonical and required to lie under $data.
resolve() {
  local flag=$1 value=$2 canon
  case "$value" in
    s3://* | gs://* | az://* | abfs://* | abfss://*)
      printf '%s' "$value"
      return
      ;;
    *://*) die "$flag $value: only s3://, gs://, az:// and abfs:// URLs reach every SDK worker" ;;
    /*) ;;
    *) die "$flag $value: give an absolute path under BLURBEAM_DATA=$data" ;;
  esac
  canon=$(realpath -m -- "$value")
  [[ "$canon" == "$data" || "$canon" == "$data"/* ]] ||
    die "$flag $value is not under BLURBEAM_DATA=$data, the only host directory the containers see"
  printf '%s' "$canon"
}

args=()
output=""
while (($#)); do
  arg=$1
  shift
  case "$arg" in
    --input | --output)
      (($#)) || die "$arg needs a value"
      value=$(resolve "$arg" "$1")
      shift
      ;;
    --input=* | --output=*)
      value=$(resolve "${arg%%=*}" "${arg#*=}")
      arg=${arg%%=*}
      ;;
    *)
      args+=("$arg")
      continue
      ;;
  esac
  [[ "$arg" == --output ]] && output=$value
  args+=("$arg" "$value")
done
[[ -n "$output" ]] || die "--output is required"

compose=(docker compose -f "$here/docker-compose.yaml" run --rm launcher)
status=0
"${compose[@]}" anonymize \
  --runner PortableRunner \
  --job_endpoint localhost:8099 \
  --environment_type EXTERNAL \
  --environment_config localhost:50000 \
  --parallelism "${PARALLELISM:-4}" \
  --sdk_worker_parallelism "${SDK_WORKERS:-2}" \
  --worker-threads "${WORKER_THREADS:-1}" \
  --progress off \
  "${args[@]}" || status=$?
"${compose[@]}" report --output "$output" --verify || {
  rc=$?
  ((status)) || status=$rc
}
exit "$status"
