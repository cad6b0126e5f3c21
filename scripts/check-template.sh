#!/usr/bin/env bash
# Checks template.yaml and the pipeline example: cfn-lint, sam validate
# (the transform and --lint), the cfn-guard rules in deploy/guard (the
# template passes them, and each of a set of broken copies fails the rule
# it breaks), and actionlint on .github/workflows.
# Needs scripts/tools.sh sam ops.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$root/.tools/venv/bin:$root/.tools/cargo/bin:$PATH" SAM_CLI_TELEMETRY=0
step() { printf '\n==> %s\n' "$*"; }

step "cfn-lint template.yaml"
cfn-lint template.yaml

step "sam validate (the SAM transform) and sam validate --lint"
AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" sam validate --template-file template.yaml
sam validate --lint --template-file template.yaml

step "cfn-guard validate (deploy/guard)"
cfn-guard validate --data template.yaml --rules deploy/guard --show-summary all

step "cfn-guard: each broken copy of the template fails its rule"
broken="$(mktemp -d)"
trap 'rm -rf "$broken"' EXIT
python3 - "$broken" <<'PY'
import sys, pathlib
out = pathlib.Path(sys.argv[1])
t = pathlib.Path("template.yaml").read_text()
cases = {
    "log_groups_have_retention": ("      LogGroupName: !Sub /mcp-oauth-gateway/${AWS::StackName}/mcp-proxy\n      RetentionInDays: !Ref LogRetentionDays\n",
                                  "      LogGroupName: !Sub /mcp-oauth-gateway/${AWS::StackName}/mcp-proxy\n"),
    "functions_least_privilege": ("              Action: secretsmanager:GetSecretValue\n",
                                  "              Action: \"secretsmanager:*\"\n"),
    "table_encrypted_and_recoverable": ("        SSEEnabled: true\n", "        SSEEnabled: false\n"),
    "queues_encrypted": ("      SqsManagedSseEnabled: true\n", ""),
    "api_throttled": ("      DefaultRouteSettings:\n        ThrottlingRateLimit: !Ref ApiThrottlingRateLimit\n        ThrottlingBurstLimit: !Ref ApiThrottlingBurstLimit\n", ""),
    "every_function_has_a_log_group": ("      LoggingConfig:\n        LogGroup: !Ref TokenRefreshLogGroup\n", ""),
    "function_urls_check_tokens": ("          INBOUND_AUTH_MODE: jwt\n", "          INBOUND_AUTH_MODE: apigw\n"),
    "audit_trail_kept": ("  AuditLogGroup:\n    Type: AWS::Logs::LogGroup\n    DeletionPolicy: Retain\n", "  AuditLogGroup:\n    Type: AWS::Logs::LogGroup\n    DeletionPolicy: Delete\n"),
}
for rule, (old, new) in cases.items():
    assert t.count(old) >= 1, f"{rule}: the text to break is not in template.yaml"
    (out / f"{rule}.yaml").write_text(t.replace(old, new, 1))
# The function URL's concurrency limit made optional.
(out / "function_urls_check_tokens-concurrency.yaml").write_text(t.replace(
    "      ReservedConcurrentExecutions: !Ref McpStreamReservedConcurrency\n",
    "      ReservedConcurrentExecutions: !If [HasPublicBaseUrl, !Ref McpStreamReservedConcurrency, !Ref AWS::NoValue]\n", 1))
# Every statement's resource written as "*".
star = t.replace("              Resource: !GetAtt Table.Arn\n", "              Resource: \"*\"\n", 1)
(out / "functions_least_privilege-resource.yaml").write_text(star)
PY
for f in "$broken"/*.yaml; do
  rule="$(basename "$f" .yaml)"; rule="${rule%-resource}"; rule="${rule%-concurrency}"
  if out="$(cfn-guard validate --data "$f" --rules deploy/guard --show-summary fail 2>&1)"; then
    echo "cfn-guard passed a template that breaks $rule" >&2; exit 1
  fi
  grep -q "$rule *FAIL" <<<"$out" || { echo "$out" >&2; echo "cfn-guard failed $(basename "$f") but not on $rule" >&2; exit 1; }
  echo "refused as expected: $(basename "$f") ($rule)"
done

step "actionlint .github/workflows"
actionlint .github/workflows/*.yml
echo "actionlint: no findings"
# And it does find a broken workflow (an undefined context property).
sed 's/\${{ vars.AWS_ROLE_ARN }}/${{ github.no_such_property }}/' .github/workflows/deploy.yml >"$broken/deploy.yml"
if actionlint "$broken/deploy.yml" >/dev/null 2>&1; then
  echo "actionlint passed a broken workflow" >&2; exit 1
fi
echo "refused as expected: a workflow naming an undefined context property"
