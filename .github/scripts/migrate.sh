#!/usr/bin/env bash
# Run the database migrations (`alembic upgrade head`) as a one-off ECS Fargate task from the
# service's own image, wait for it, and fail unless it exited 0.
#
#   .github/scripts/migrate.sh STACK_NAME IMAGE_URI
#
# STACK_NAME is a deployed `ProductAnalyzer-<Env>-<region>` stack; its outputs name the cluster,
# the task definition and its container (ContainerName; without it, the container whose image comes
# from IMAGE_URI's repository), the private subnets and the task security group. IMAGE_URI is the image
# about to be deployed (`<RepositoryUri>:<commit>`).
#
# Run it BEFORE `cdk deploy`, so that the schema is migrated before the service runs new code:
# when the stack's task definition still runs an older image, a new revision of the same family
# is registered with IMAGE_URI (everything else copied: roles, secrets, environment, logging) and
# the task runs from it; `cdk deploy` then registers its own revision for the service. When the
# stack does not exist yet (the first deploy), nothing is run and `migrated=false` is written to
# $GITHUB_OUTPUT: run this again after `cdk deploy`, when the task definition already has the image.
#
# Needs the AWS CLI v2 and jq. Environment: AWS_REGION; MIGRATE_TIMEOUT_S (default 900) and
# MIGRATE_POLL_S (default 10) bound the wait. Exit status: 0 migrated or nothing to do, 1 failed.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 STACK_NAME IMAGE_URI" >&2
  exit 2
fi
stack=$1
image=$2
repository=${image%:*}  # <account>.dkr.ecr.<region>.amazonaws.com/product-analyzer
timeout_s=${MIGRATE_TIMEOUT_S:-900}
poll_s=${MIGRATE_POLL_S:-10}
output_file=${GITHUB_OUTPUT:-/dev/null}

fail() {
  echo "::error title=migrations::$*" >&2
  exit 1
}

# The stack's outputs, or nothing when it has never been created.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
errors=$work/describe-stacks.err
if ! stacks=$(aws cloudformation describe-stacks --stack-name "$stack" --output json 2>"$errors"); then
  if grep -q "does not exist" "$errors"; then
    echo "Stack $stack does not exist yet (first deploy): migrations run after cdk deploy creates it."
    echo "migrated=false" >>"$output_file"
    exit 0
  fi
  cat "$errors" >&2
  fail "cannot describe stack $stack"
fi
status=$(jq -r '.Stacks[0].StackStatus' <<<"$stacks")
if [[ $status == ROLLBACK_COMPLETE || $status == REVIEW_IN_PROGRESS ]]; then
  echo "Stack $stack was never created successfully ($status): migrations run after cdk deploy."
  echo "migrated=false" >>"$output_file"
  exit 0
fi

output() {  # output NAME [optional]
  local value
  value=$(jq -r --arg key "$1" '.Stacks[0].Outputs // [] | map(select(.OutputKey == $key))[0].OutputValue // empty' <<<"$stacks")
  [[ -n $value || ${2:-} == optional ]] || fail "stack $stack ($status) has no output $1"
  printf '%s' "$value"
}
cluster=$(output ClusterName)
task_definition=$(output TaskDefinitionArn)
subnets=$(output PrivateSubnetIds)  # comma-separated
security_group=$(output TaskSecurityGroupId)
container=$(output ContainerName optional)

definition=$(aws ecs describe-task-definition --task-definition "$task_definition" --query taskDefinition --output json)
if [[ -z $container ]]; then  # the container that runs an image of our repository
  container=$(jq -r --arg repo "$repository" \
    '[.containerDefinitions[] | select(.image | startswith($repo + ":") or startswith($repo + "@"))][0].name // empty' \
    <<<"$definition")
  [[ -n $container ]] || fail "no container of $task_definition runs an image of $repository"
fi
current=$(jq -r --arg name "$container" '.containerDefinitions[] | select(.name == $name) | .image' <<<"$definition")
[[ -n $current ]] || fail "$task_definition has no container named $container"

if [[ $current != "$image" ]]; then
  echo "The stack's task definition runs $current; registering a revision that runs $image."
  # describe-task-definition returns read-only fields that register-task-definition refuses.
  request=$(jq --arg name "$container" --arg image "$image" '
      del(.taskDefinitionArn, .revision, .status, .requiresAttributes, .compatibilities,
          .registeredAt, .registeredBy, .deregisteredAt)
      | .containerDefinitions |= map(if .name == $name then .image = $image else . end)' \
    <<<"$definition")
  printf '%s' "$request" >"$work/task-definition.json"
  task_definition=$(aws ecs register-task-definition --cli-input-json "file://$work/task-definition.json" \
    --query taskDefinition.taskDefinitionArn --output text)
fi

network=$(jq -nc --arg subnets "$subnets" --arg sg "$security_group" \
  '{awsvpcConfiguration: {subnets: ($subnets | split(",")), securityGroups: [$sg], assignPublicIp: "DISABLED"}}')
overrides=$(jq -nc --arg name "$container" '{containerOverrides: [{name: $name, command: ["alembic", "upgrade", "head"]}]}')

echo "Running alembic upgrade head on $cluster from $task_definition (container $container)."
started=$(aws ecs run-task --cluster "$cluster" --task-definition "$task_definition" --launch-type FARGATE \
  --network-configuration "$network" --overrides "$overrides" --started-by github-actions-migrate \
  --count 1 --output json)
task=$(jq -r '.tasks[0].taskArn // empty' <<<"$started")
[[ -n $task ]] || fail "ECS did not start the migration task: $(jq -c '.failures' <<<"$started")"
echo "Started $task."

deadline=$((SECONDS + timeout_s))
while :; do
  described=$(aws ecs describe-tasks --cluster "$cluster" --tasks "$task" --output json)
  last_status=$(jq -r '.tasks[0].lastStatus' <<<"$described")
  [[ $last_status == STOPPED ]] && break
  if ((SECONDS >= deadline)); then
    aws ecs stop-task --cluster "$cluster" --task "$task" --reason "migration timed out" >/dev/null || true
    fail "the migration task was still $last_status after ${timeout_s} s; stopped it"
  fi
  sleep "$poll_s"
done

exit_code=$(jq -r --arg name "$container" '.tasks[0].containers[] | select(.name == $name) | .exitCode // empty' <<<"$described")
if [[ $exit_code != 0 ]]; then
  reason=$(jq -r --arg name "$container" \
    '[.tasks[0].stoppedReason, (.tasks[0].containers[] | select(.name == $name) | .reason)] | map(select(.)) | join("; ")' \
    <<<"$described")
  # The container's last log lines, when it logs to CloudWatch (awslogs), help more than a status.
  group=$(jq -r --arg name "$container" '.containerDefinitions[] | select(.name == $name)
      | .logConfiguration.options["awslogs-group"] // empty' <<<"$definition")
  prefix=$(jq -r --arg name "$container" '.containerDefinitions[] | select(.name == $name)
      | .logConfiguration.options["awslogs-stream-prefix"] // empty' <<<"$definition")
  if [[ -n $group && -n $prefix ]]; then
    echo "Last log lines of $task:" >&2
    aws logs get-log-events --log-group-name "$group" --log-stream-name "$prefix/$container/${task##*/}" \
      --limit 50 --query 'events[].message' --output text >&2 || true
  fi
  fail "the migration task exited with ${exit_code:-no exit code}${reason:+ ($reason)}"
fi
echo "Migrations applied."
echo "migrated=true" >>"$output_file"
