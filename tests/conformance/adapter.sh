#!/usr/bin/env bash
# The conformance suite's client: maps each scenario (MCP_CONFORMANCE_SCENARIO,
# context JSON in MCP_CONFORMANCE_CONTEXT, the server URL as the last argument)
# onto mcpgram's generic terminal commands and options. No scenario name
# appears in mcpgram itself: whatever a scenario needs is in the engine the bot
# uses, reached through the same options an admin has.
#
#   MCPGRAM_BIN   the mcpgram binary
set -euo pipefail

url="${*: -1}"
bin="${MCPGRAM_BIN:?set MCPGRAM_BIN to the mcpgram binary}"
scenario="${MCP_CONFORMANCE_SCENARIO:-}"
context="${MCP_CONFORMANCE_CONTEXT:-}"

# A vault of its own per run, and no config file: the server is named by URL.
MCPGRAM_VAULT_DIR="$(mktemp -d)"
export MCPGRAM_VAULT_DIR
trap 'rm -rf "$MCPGRAM_VAULT_DIR"' EXIT
export MCPGRAM_CONFIG=/nonexistent/mcpgram.toml
export RUST_LOG="${RUST_LOG:-warn}"

ctx() { # a field of the context JSON
  [ -n "$context" ] || return 0
  printf '%s' "$context" | python3 -c 'import json,sys; v=json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$1"
}

auth=(--login --open-with-http --client-metadata-url https://conformance-test.local/client-metadata.json)
case "$scenario" in
  auth/pre-registration)
    export MCPGRAM_CLIENT_SECRET="$(ctx client_secret)"
    auth+=(--client-id "$(ctx client_id)")
    ;;
  auth/client-credentials-basic)
    export MCPGRAM_CLIENT_SECRET="$(ctx client_secret)"
    auth=(--client-credentials --client-id "$(ctx client_id)")
    ;;
  auth/client-credentials-jwt)
    key="$MCPGRAM_VAULT_DIR/client-key.pem"
    ctx private_key_pem > "$key"
    alg="$(ctx signing_algorithm)"
    auth=(--client-credentials --client-id "$(ctx client_id)" --private-key-file "$key" --signing-algorithm "${alg:-ES256}")
    ;;
  auth/cross-app-access-complete-flow|auth/enterprise-managed-authorization)
    export MCPGRAM_CLIENT_SECRET="$(ctx client_secret)"
    MCPGRAM_ID_TOKEN="$(ctx idp_id_token)"
    export MCPGRAM_ID_TOKEN
    auth=(--client-id "$(ctx client_id)" --idp-issuer "$(ctx idp_issuer)"
          --idp-token-endpoint "$(ctx idp_token_endpoint)" --idp-client-id "$(ctx idp_client_id)")
    ;;
esac

case "$scenario" in
  initialize|json-schema-ref-no-deref)
    "$bin" tools "$url" ;;
  tools_call)
    "$bin" call "$url" add_numbers '{"a": 2, "b": 3}' ;;
  sep-2322-client-request-state)
    for tool in test_mrtr_echo_state test_mrtr_no_state test_mrtr_unrelated test_mrtr_no_result_type; do
      "$bin" call "$url" "$tool" '{}' --elicitation accept-defaults
    done ;;
  http-custom-headers)
    # The context lists the calls to make, arguments included.
    printf '%s' "$context" | python3 -c '
import json, sys
for call in json.load(sys.stdin)["toolCalls"]:
    print(call["name"]); print(json.dumps(call["arguments"]))' |
    while IFS= read -r tool && IFS= read -r arguments; do
      "$bin" call "$url" "$tool" "$arguments"
    done ;;
  http-invalid-tool-headers)
    "$bin" tools "$url"
    "$bin" call "$url" valid_tool '{"region": "us-west1"}'
    # A tool whose header annotations are invalid must be refused, not called.
    if "$bin" call "$url" invalid_empty_header '{"value": "x"}'; then exit 1; fi ;;
  json-schema-2020-12-preservation)
    schema="$("$bin" tools "$url" --json | python3 -c '
import json, sys
tool = next(t for t in json.load(sys.stdin) if t["name"] == "json_schema_2020_12_tool")
print(json.dumps({"schema": tool["inputSchema"]}))')"
    "$bin" call "$url" json_schema_echo "$schema" ;;
  sse-retry)
    "$bin" call "$url" test_reconnection '{}' ;;
  elicitation-sep1034-client-defaults)
    "$bin" call "$url" test_client_elicitation_defaults '{}' --elicitation accept-defaults ;;
  auth/client-credentials-*|auth/cross-app-access-*|auth/enterprise-managed-*)
    "$bin" tools "$url" "${auth[@]}" ;;
  auth/*)
    "$bin" tools "$url" "${auth[@]}"
    "$bin" call "$url" test-tool '{}' "${auth[@]}" ;;
  *)
    "$bin" tools "$url" "${auth[@]}" ;;
esac
