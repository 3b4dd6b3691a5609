#!/usr/bin/env bash
# Creates the Cloud Scheduler job that launches the Flex
# Template every night for the last 7 full days (start_date=today-7, end_date=yesterday: the
# driver resolves them in UTC at launch). To change it: gcloud scheduler jobs delete, then
# run this again. See docs/GCP.md.
#
#   PROJECT=my-project REGION=europe-west1 BUCKET=my-bucket \
#   GA_TABLE=my-project.123456.ga_sessions_* \
#   IMAGE=europe-west1-docker.pkg.dev/my-project/ga-wals/ga-wals:latest \
#   SERVICE_ACCOUNT=ga-wals@my-project.iam.gserviceaccount.com \
#   schedule/create_scheduler_job.sh
set -euo pipefail

: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${BUCKET:?set BUCKET}"
: "${GA_TABLE:?set GA_TABLE (project.dataset.ga_sessions_*)}" "${IMAGE:?set IMAGE}"
: "${SERVICE_ACCOUNT:?set SERVICE_ACCOUNT (runs the job; needs Dataflow Admin + Service Account User)}"
JOB_NAME="${JOB_NAME:-ga-wals-nightly}"
SCHEDULE="${SCHEDULE:-0 3 * * *}"

here="$(cd "$(dirname "$0")" && pwd)"
body="$(mktemp)"
trap 'rm -f "$body"' EXIT
sed -e "s|\${BUCKET}|${BUCKET}|g" -e "s|\${GA_TABLE}|${GA_TABLE}|g" \
    -e "s|\${IMAGE}|${IMAGE}|g" -e "s|\${SERVICE_ACCOUNT}|${SERVICE_ACCOUNT}|g" \
    "$here/launch_body.json" > "$body"

gcloud scheduler jobs create http "$JOB_NAME" \
  --project="$PROJECT" \
  --location="$REGION" \
  --schedule="$SCHEDULE" \
  --time-zone="Etc/UTC" \
  --uri="https://dataflow.googleapis.com/v1b3/projects/${PROJECT}/locations/${REGION}/flexTemplates:launch" \
  --http-method=POST \
  --headers="Content-Type=application/json" \
  --oauth-service-account-email="$SERVICE_ACCOUNT" \
  --oauth-token-scope="https://www.googleapis.com/auth/cloud-platform" \
  --message-body-from-file="$body" \
  --attempt-deadline=180s \
  --max-retry-attempts=2
