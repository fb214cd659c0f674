"""infra/hooks/postprovision.sh, run as azd runs it after every provisioning, with the Azure CLI (which cannot run
here) replaced by a script that keeps a vault's secrets in a folder and answers as `az` does: the webhook signing
secret is generated the first time only, in the format the app checks at start, and never replaced afterwards."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from metering.settings import check_webhook_secret

HOOK = Path(__file__).resolve().parents[2] / "infra" / "hooks" / "postprovision.sh"

# `az keyvault secret show|set` and `az functionapp restart`, as far as the hook uses them; every call is logged.
FAKE_AZ = r"""#!/bin/sh
echo "$*" >> "$VAULT_DIR/calls"
case "$1 $2 $3" in
"keyvault secret show")
    shift 3
    while [ $# -gt 0 ]; do case "$1" in --name) name="$2"; shift ;; esac; shift; done
    if [ -f "$VAULT_DIR/$name" ]; then echo "$name"; exit 0; fi
    echo "ERROR: (SecretNotFound) A secret with (name/id) $name was not found in this key vault." >&2
    exit 1 ;;
"keyvault secret set")
    shift 3
    while [ $# -gt 0 ]; do
        case "$1" in --name) name="$2"; shift ;; --value) value="$2"; shift ;; esac; shift
    done
    printf '%s' "$value" > "$VAULT_DIR/$name" ;;
*) ;;  # functionapp restart: logged above
esac
"""


def run_hook(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    az = bin_dir / "az"
    az.write_text(FAKE_AZ, encoding="utf-8")
    az.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "VAULT_DIR": str(tmp_path),
        "AZURE_KEY_VAULT_NAME": "kv-mtr-test",
        "AZURE_FUNCTION_APP_NAME": "func-metering-test",
        "AZURE_RESOURCE_GROUP": "rg-metering-test",
    }
    return subprocess.run(["sh", str(HOOK)], env=env, capture_output=True, text=True, timeout=30, check=False)


def test_the_webhook_secret_is_generated_once_and_kept_on_every_later_provisioning(tmp_path):
    first = run_hook(tmp_path)
    assert first.returncode == 0, first.stderr
    secret = (tmp_path / "metering-webhook-secret").read_text(encoding="utf-8")
    assert len(check_webhook_secret(secret)) == 32  # whsec_ + base64 of 32 random bytes, as the app requires
    # Generated, so the app is restarted to read it now.
    assert "functionapp restart --resource-group rg-metering-test --name func-metering-test" in (
        tmp_path / "calls"
    ).read_text(encoding="utf-8")
    for _ in range(2):
        again = run_hook(tmp_path)
        assert again.returncode == 0, again.stderr
        assert "left as it is" in again.stdout
    assert (tmp_path / "metering-webhook-secret").read_text(encoding="utf-8") == secret
    calls = (tmp_path / "calls").read_text(encoding="utf-8").splitlines()
    assert sum(call.startswith("keyvault secret set") for call in calls) == 1
    assert sum(call.startswith("functionapp restart") for call in calls) == 1


def test_the_hook_needs_the_stacks_vault(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "AZURE_KEY_VAULT_NAME"}
    result = subprocess.run(["sh", str(HOOK)], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0
    assert "AZURE_KEY_VAULT_NAME" in result.stderr
