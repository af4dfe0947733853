#!/usr/bin/env bash
# Submit blurbeam to the Flink cluster of docker-compose.yaml through Beam's job server: the same
# PortableRunner path that tests/test_runners.py runs against Beam's own Python job service.
#
#   deploy/flink/submit.sh --input /data/images --output /data/anonymized [--skip-existing ...]
set -euo pipefail
JOB_ENDPOINT=${JOB_ENDPOINT:-localhost:8099}
exec blurbeam anonymize \
  --runner PortableRunner \
  --job_endpoint "$JOB_ENDPOINT" \
  --environment_type EXTERNAL \
  --environment_config localhost:50000 \
  --parallelism 2 \
  "$@"
