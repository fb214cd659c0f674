#!/bin/sh
# azd runs this after every `azd provision` (and `azd up`), with the stack's outputs in the environment.
#
# The webhook signing secret is generated here the first time only: once it exists it is left as it is, because
# every receiver verifies with it. (Rotate it by hand: store a new version, then give receivers the new one.)
# The Stripe key is never generated: the operator sets it (README, "Sending usage to Stripe").
set -eu

vault="${AZURE_KEY_VAULT_NAME:?run by azd after provisioning: AZURE_KEY_VAULT_NAME is the stack's Key Vault}"
name="metering-webhook-secret"

# The Key Vault Secrets Officer grant of whoever runs azd can take a few minutes to reach the vault after the first
# provisioning: a denied read is tried again; only a missing secret is created.
attempt=0
while :; do
    if found=$(az keyvault secret show --vault-name "$vault" --name "$name" --query name --output tsv 2>&1); then
        echo "postprovision: $name exists in $vault; left as it is"
        exit 0
    fi
    case "$found" in
    *SecretNotFound* | *"was not found"*) break ;;
    esac
    attempt=$((attempt + 1))
    if [ "$attempt" -ge 20 ]; then
        echo "postprovision: cannot read $vault: $found" >&2
        exit 1
    fi
    sleep 15
done

# 32 random bytes, base64: the Standard Webhooks format the app checks at start (whsec_ + 24 to 64 bytes).
secret="whsec_$(openssl rand -base64 32)"
az keyvault secret set --vault-name "$vault" --name "$name" --value "$secret" --output none
echo "postprovision: generated $name in $vault (read it with: az keyvault secret show --vault-name $vault --name $name --query value -o tsv)"

# Key Vault references resolve when the app starts: restart it, so it reads the new secret now.
if [ -n "${AZURE_FUNCTION_APP_NAME:-}" ] && [ -n "${AZURE_RESOURCE_GROUP:-}" ]; then
    az functionapp restart --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" --output none
fi
