"""The cloud stack, checked without a Bicep compiler or Azure: infra/ parses, its app settings match what the app
reads (metering/settings.py), what function_app.py binds to, and local.settings.example.json; no key reaches a
setting; every role is a documented built-in role on the narrowest scope; the Flex Consumption rules hold."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from tree_sitter import Node

from metering.core.meters import load_catalog
from metering.devhost.host import discover
from metering.settings import Settings
from tests.bicep import BicepFile, Declared, NotLiteral, literal, named, prop, properties, text

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

# Read by the app but meaningful only on a developer's machine: Azure leaves them unset.
LOCAL_ONLY = {
    # The Storage queue standing in for Event Hubs when no hub is configured (the dev host); Azure has the hub.
    "METERING_LOCAL_QUEUE",
    # How many partitions (queues and feeds) that stand-in has; in Azure the hub's partitions are declared in Bicep.
    "METERING_LOCAL_PARTITIONS",
    # The local Cosmos server's key: in Azure the Cosmos store connects with the app's identity (keys are disabled).
    "COSMOS_KEY",
    # Commits without a transactional batch, for the local Cosmos server only (refused for any non-loopback endpoint).
    "COSMOS_NON_ATOMIC_LOCAL",
    # The billing targets' API bases: tests point them at local servers; in Azure the services' own.
    "METERING_STRIPE_API_BASE",
    "METERING_MARKETPLACE_API_BASE",
}

# Secrets the platform reads from Key Vault with the app's identity (a Key Vault reference is the setting's value),
# with a valid stand-in for what the reference resolves to.
KEY_VAULT_REFERENCES = {
    "METERING_WEBHOOK_SECRET": "whsec_" + "A" * 32,
    "METERING_STRIPE_API_KEY": "sk_live_x",
    "METERING_PORTAL_SECRET": "p" * 32,
    "METERING_PORTAL_SECRET_PREVIOUS": "q" * 32,
}
# The secret each reference names, in the stack's own vault (keyvault.bicep). The portal's are secrets the operator
# names by URI (they exist only once the portal is wanted, the previous one only during a rotation).
KEY_VAULT_SECRETS = {
    "METERING_WEBHOOK_SECRET": "metering-webhook-secret",
    "METERING_STRIPE_API_KEY": "metering-stripe-api-key",
}
KEY_VAULT_REFERENCE = re.compile(r"^'@Microsoft\.KeyVault\(SecretUri=\$\{\w+\}\)'$")

# Read by the Functions host, not by the app, and only on one side.
AZURE_HOST_ONLY = {
    # Where the host sends telemetry, and the Entra token it needs for that; locally there is no Application Insights.
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    # The host does not run the webhook deliveries timer of an app without a receiver, nor the export timer of an
    # app without a billing target (locally they run, idle).
    "AzureWebJobs.deliver_webhooks.Disabled",
    "AzureWebJobs.export_usage.Disabled",
}
LOCAL_HOST_ONLY = {
    # Core Tools needs it to start the Python worker; on Flex Consumption the runtime comes from functionAppConfig.
    "FUNCTIONS_WORKER_RUNTIME",
}

# Settings the Flex Consumption plan does not take: its deprecations in the Azure Functions app settings reference
# (functionAppConfig replaces them, or the plan has no use for them), and the time zone settings it does not support.
FLEX_FORBIDDEN = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTOVERVNET",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_DNS_SERVER",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
    "WEBSITE_VNET_ROUTE_ALL",
    "WEBSITE_TIME_ZONE",
    "TZ",
}

# Built-in role definition IDs as Azure documents them (Azure built-in roles; Cosmos DB's data-plane built-in roles).
DOCUMENTED_ROLES = {
    "2b629674-e913-4c01-ae53-ef4638d8f975": "Azure Event Hubs Data Sender",
    "a638d3c7-ab3a-418d-83e6-5f17a39d4fde": "Azure Event Hubs Data Receiver",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "00000000-0000-0000-0000-000000000002": "Cosmos DB Built-in Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
}

# Each grant the stack makes: the role, and the type of resource it is scoped to (the narrowest that works).
EXPECTED_GRANTS = {
    ("Azure Event Hubs Data Sender", "Microsoft.EventHub/namespaces/eventhubs"),
    ("Azure Event Hubs Data Receiver", "Microsoft.EventHub/namespaces/eventhubs"),
    ("Storage Blob Data Owner", "Microsoft.Storage/storageAccounts"),
    ("Storage Table Data Contributor", "Microsoft.Storage/storageAccounts"),
    ("Storage Queue Data Contributor", "Microsoft.Storage/storageAccounts"),
    ("Monitoring Metrics Publisher", "Microsoft.Insights/components"),
    ("Cosmos DB Built-in Data Contributor", "Microsoft.DocumentDB/databaseAccounts"),
    # Event Hubs Capture, as the namespace's identity, on the archive container alone.
    ("Storage Blob Data Contributor", "Microsoft.Storage/storageAccounts/blobServices/containers"),
    # The app reads the secrets its settings reference; whoever runs azd writes them (the postprovision hook).
    ("Key Vault Secrets User", "Microsoft.KeyVault/vaults"),
    ("Key Vault Secrets Officer", "Microsoft.KeyVault/vaults"),
}

# What each kind of connection needs besides __credential and __clientId to be identity-based.
ENDPOINTS = {
    "storage": {"blobServiceUri", "queueServiceUri", "tableServiceUri"},
    "eventHub": {"fullyQualifiedNamespace"},
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@cache
def bicep(name: str) -> BicepFile:
    return BicepFile(INFRA / name)


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def main() -> BicepFile:
    return bicep("main.bicep")


def function_app() -> BicepFile:
    return bicep("modules/functionapp.bicep")


def one(declared: list[Declared]) -> Declared:
    assert len(declared) == 1, [d.symbol for d in declared]
    return declared[0]


def app_settings() -> dict[str, Node]:
    """The function app's settings in Azure: every key any deployment can have (both sides of each condition)."""
    site = one(function_app().of_type("Microsoft.Web/sites"))
    loop = prop(site.body, "properties", "siteConfig", "appSettings")
    assert loop.type == "for_statement", "appSettings is built from one object"
    variable, source, body = named(loop)
    assert text(source) == "items(appSettings)"
    assert {key: text(value) for key, value in properties(body).items()} == {
        "name": f"{text(variable)}.key",
        "value": f"{text(variable)}.value",
    }
    return function_app().object_keys(function_app().variables["appSettings"])


def deployed_values() -> dict[str, Any]:
    """The app settings' values where the templates know them: literals, and the data names main.bicep hands the
    function app (`names.X`); None where only the deployment knows (endpoints, the identity's client ID)."""
    names = literal(main().variables["dataNames"])
    assert text(prop(main().modules["functionApp"].body, "params", "names")) == "dataNames"
    values: dict[str, Any] = {}
    for setting, value in app_settings().items():
        if text(value).startswith("names."):
            values[setting] = names[text(value).removeprefix("names.")]
            continue
        try:
            values[setting] = literal(value)
        except NotLiteral:
            values[setting] = None
    return values


def local_settings() -> dict[str, str]:
    return json.loads((ROOT / "local.settings.example.json").read_text(encoding="utf-8"))["Values"]


def settings_read() -> set[str]:
    """Every setting the app reads: the aliases of the settings model, so a setting added later is checked too."""
    aliases = {field.validation_alias for field in Settings.model_fields.values()}
    assert all(isinstance(alias, str) for alias in aliases)
    return {str(alias) for alias in aliases}


def connection_of(name: str) -> str:
    """Settings of one connection share a prefix: `X` (a connection string) or `X__property` (identity-based)."""
    return name.split("__", maxsplit=1)[0]


def bindings() -> list[dict[str, Any]]:
    return [binding for f in discover("function_app") for binding in json.loads(f.get_function_json())["bindings"]]


def binding_connections() -> dict[str, str]:
    """Connection name -> kind, for the host's storage and every binding of function_app.py."""
    kinds = {"eventHubTrigger": "eventHub", "eventHub": "eventHub"}
    found = {"AzureWebJobsStorage": "storage"}
    for binding in bindings():
        if "connection" in binding:
            found[binding["connection"]] = kinds[binding["type"]]
    return found


def binding_expressions() -> set[str]:
    """Settings named in %...% in the bindings (hub name, consumer group, timer schedule)."""
    strings = [value for binding in bindings() for value in binding.values() if isinstance(value, str)]
    return {name for value in strings for name in re.findall(r"%([^%]+)%", value)}


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path: Path):
    assert BicepFile(path).errors == []


def test_main_composes_every_module_from_local_files():
    targets = {module.target for module in main().modules.values()}
    assert all(not target.startswith("br") and (INFRA / target).is_file() for target in targets), targets
    assert {INFRA / target for target in targets} == set(bicep_files()) - {INFRA / "main.bicep"}


def test_bicep_sets_every_setting_the_app_reads():
    read = settings_read()
    connection_strings = {name for name in read if any(other.startswith(f"{name}__") for other in read)}
    assert connection_strings == {"AzureWebJobsStorage", "EventHubConnection"}
    assert (read - connection_strings - LOCAL_ONLY) - app_settings().keys() == set()
    # Azure gets the identity-based form of a connection, never the connection string (it would carry a key).
    assert connection_strings & app_settings().keys() == set()


def test_every_connection_is_identity_based_in_azure():
    settings = app_settings()
    for connection, kind in binding_connections().items():
        for endpoint in ENDPOINTS[kind]:
            assert f"{connection}__{endpoint}" in settings, (connection, endpoint)
        assert literal(settings[f"{connection}__credential"]) == "managedidentity"
        assert text(settings[f"{connection}__clientId"]) == "identityClientId"
    # Any other identity-based connection (the Cosmos store's) uses the same identity.
    for name, value in settings.items():
        if name.endswith("__credential"):
            assert literal(value) == "managedidentity", name
        if name.endswith("__clientId"):
            assert text(value) == "identityClientId", name


def test_binding_expressions_are_set_in_azure_and_locally():
    expressions = binding_expressions()
    assert expressions == {
        "EVENTHUB_NAME",
        "EVENTHUB_CONSUMER_GROUP",
        "CLOSE_PERIODS_SCHEDULE",
        "DELIVER_WEBHOOKS_SCHEDULE",
        "EXPORT_SCHEDULE",
    }
    assert expressions - app_settings().keys() == set()
    assert expressions - local_settings().keys() == set()


def test_local_example_has_the_same_settings_by_connection():
    local = local_settings()
    # Locally a connection is a connection string (Azurite, or empty for the local transport): it stands for the
    # identity settings Azure has.
    assert [name for name in local if "__" in name] == []
    assert local["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    azure = {connection_of(name) for name in app_settings()} - AZURE_HOST_ONLY
    assert azure - {*local} == set(), "in Bicep, not in local.settings.example.json"
    assert {*local} - LOCAL_ONLY - LOCAL_HOST_ONLY - azure == set(), "in local.settings.example.json, not in Bicep"


def test_no_setting_is_read_that_neither_defines():
    defined = {*app_settings(), *local_settings()}
    assert settings_read() - defined == set()
    assert binding_expressions() - defined == set()


def test_nothing_is_set_that_nothing_reads():
    read = settings_read() | binding_expressions() | AZURE_HOST_ONLY | LOCAL_HOST_ONLY
    # A connection the app reads by its properties (`COSMOS__accountEndpoint`) is listed locally by its prefix.
    connections_read = {connection_of(name) for name in settings_read() if "__" in name}

    def unread(names: set[str]) -> set[str]:
        return {
            name
            for name in names
            if name not in read
            and connection_of(name) not in binding_connections()
            and connection_of(name) not in connections_read
        }

    in_bicep, in_local = unread(set(app_settings())), unread(set(local_settings()))
    assert not in_bicep, f"set in Bicep, read by nothing: {sorted(in_bicep)}"
    assert not in_local, f"set in local.settings.example.json, read by nothing: {sorted(in_local)}"


def test_flex_consumption_settings_are_not_app_settings():
    assert FLEX_FORBIDDEN & app_settings().keys() == set()


def test_literal_setting_values_are_valid_for_the_app(monkeypatch: pytest.MonkeyPatch):
    for name in settings_read():
        monkeypatch.delenv(name, raising=False)
    deployed = {name: _placeholder(name) if value is None else value for name, value in deployed_values().items()}
    deployed |= {name: value for name, value in KEY_VAULT_REFERENCES.items() if name in deployed}
    # The store is a deployment parameter (table or cosmos): both values must make valid settings.
    stores = [{**deployed, "METERING_STORE": kind} for kind in ("table", "cosmos")]
    for values in (*stores, local_settings()):
        settings = Settings.model_validate(values)
        assert load_catalog(settings.meters_file).meters, "the empty catalog setting means the packaged catalog"


def _placeholder(setting: str) -> str:
    """A value the deployment knows, of the type the setting takes (an endpoint, a client ID, a flag, a number)."""
    field = next((f for f in Settings.model_fields.values() if f.validation_alias == setting), None)
    annotation = str(field.annotation) if field is not None else "str"
    if "bool" in annotation:
        return "true"
    if "int" in annotation or "float" in annotation:
        return "1"
    return "https://known.at.deployment.example/"


def test_data_names_are_the_same_in_azure_and_locally_and_all_declared():
    storage = prop(main().modules["storage"].body, "params")
    declared = {kind: main().strings(prop(storage, f"{kind}Names")) for kind in ("table", "queue", "container")}
    local = local_settings()
    by_name = {s: v for s, v in deployed_values().items() if text(app_settings()[s]).startswith("names.")}
    assert {setting: local[setting] for setting in by_name} == by_name
    for setting, name in by_name.items():
        kind = setting.rsplit("_", 1)[-1].lower()
        if kind in declared:
            assert name in declared[kind], f"{setting}={name} is not created by the storage module"
    assert {setting.rsplit("_", 1)[-1] for setting in by_name} == {"TABLE", "QUEUE", "CONTAINER", "DATABASE"}


def test_storage_refuses_keys_and_public_blobs():
    account = prop(one(bicep("modules/storage.bicep").of_type("Microsoft.Storage/storageAccounts")).body, "properties")
    assert literal(prop(account, "allowSharedKeyAccess")) is False
    assert literal(prop(account, "allowBlobPublicAccess")) is False
    assert literal(prop(account, "minimumTlsVersion")) == "TLS1_2"
    assert literal(prop(account, "supportsHttpsTrafficOnly")) is True


def test_event_hubs_standard_without_local_auth_with_capture_and_consumer_group():
    hubs = bicep("modules/eventhubs.bicep")
    namespace = one(hubs.of_type("Microsoft.EventHub/namespaces"))
    assert literal(prop(namespace.body, "sku", "name")) == "Standard"
    assert literal(prop(namespace.body, "properties", "disableLocalAuth")) is True
    assert literal(prop(namespace.body, "properties", "minimumTlsVersion")) == "1.2"
    hub = one(hubs.of_type("Microsoft.EventHub/namespaces/eventhubs"))
    assert text(prop(hub.body, "properties", "partitionCount")) in hubs.params
    assert literal(main().params["eventHubPartitionCount"]) == 8
    assert literal(main().params["captureEnabled"]) is True
    capture = prop(hub.body, "properties", "captureDescription")
    assert capture.type == "ternary_expression"
    assert text(capture.child_by_field_name("condition")) == "captureEnabled"
    on = capture.child_by_field_name("consequence")
    assert on is not None
    assert literal(prop(on, "enabled")) is True
    assert literal(prop(on, "destination", "name")) == "EventHubArchive.AzureBlockBlob"
    assert literal(prop(on, "destination", "identity", "type")) == "SystemAssigned"
    group = one(hubs.of_type("Microsoft.EventHub/namespaces/eventhubs/consumergroups"))
    assert text(prop(group.body, "parent")) == hub.symbol
    assert literal(main().variables["hubName"]) == local_settings()["EVENTHUB_NAME"]
    assert literal(main().variables["consumerGroupName"]) == local_settings()["EVENTHUB_CONSUMER_GROUP"]


def test_cosmos_is_serverless_keyless_and_declares_its_containers():
    cosmos = bicep("modules/cosmos.bicep")
    account = prop(one(cosmos.of_type("Microsoft.DocumentDB/databaseAccounts")).body, "properties")
    assert literal(prop(account, "disableLocalAuth")) is True
    assert {"name": "EnableServerless"} in literal(prop(account, "capabilities"))
    container = prop(one(cosmos.of_type("Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers")).body)
    assert literal(prop(container, "properties", "resource", "partitionKey", "paths")) == ["/pk"]
    assert literal(prop(container, "properties", "resource", "defaultTtl")) == -1
    assert main().modules["cosmos"].conditional
    assert literal(main().variables["cosmosContainers"]) == [
        "usage",
        "tenants",
        "statements",
        "lateevents",
        "control",
        "conflicts",
        "deadletters",
        "journal",
        "exports",
    ]


def test_application_insights_takes_entra_authenticated_telemetry_only():
    component = one(bicep("modules/monitoring.bicep").of_type("Microsoft.Insights/components"))
    assert literal(prop(component.body, "properties", "DisableLocalAuth")) is True
    assert text(prop(component.body, "properties", "WorkspaceResourceId")) == "workspace.id"
    authentication = app_settings()["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert text(authentication) == "'ClientId=${identityClientId};Authorization=AAD'"


def test_function_app_runs_on_flex_consumption():
    app = function_app()
    plan = one(app.of_type("Microsoft.Web/serverfarms"))
    assert literal(prop(plan.body, "sku")) == {"tier": "FlexConsumption", "name": "FC1"}
    assert literal(prop(plan.body, "properties", "reserved")) is True
    site = one(app.of_type("Microsoft.Web/sites"))
    assert literal(prop(site.body, "kind")) == "functionapp,linux"
    assert literal(prop(site.body, "properties", "httpsOnly")) is True
    config = prop(site.body, "properties", "functionAppConfig")
    assert literal(prop(config, "runtime")) == {"name": "python", "version": "3.11"}
    assert literal(prop(config, "deployment", "storage", "type")) == "blobContainer"
    assert literal(prop(config, "deployment", "storage", "authentication", "type")) == "UserAssignedIdentity"
    for setting in ("instanceMemoryMB", "maximumInstanceCount"):
        assert text(prop(config, "scaleAndConcurrency", setting)) in app.params
        assert setting in main().params
    policies = app.of_type("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {literal(prop(p.body, "name")): literal(prop(p.body, "properties", "allow")) for p in policies} == {
        "ftp": False,
        "scm": False,
    }


def test_the_webhook_timer_runs_only_with_a_receiver_and_the_export_timer_only_with_a_target():
    functions = {f.get_function_name() for f in discover("function_app")}
    disabled = {name for name in app_settings() if name.startswith("AzureWebJobs.") and name.endswith(".Disabled")}
    assert disabled == {"AzureWebJobs.deliver_webhooks.Disabled", "AzureWebJobs.export_usage.Disabled"}
    assert {name.split(".")[1] for name in disabled} <= functions
    value = app_settings()["AzureWebJobs.deliver_webhooks.Disabled"]
    assert text(value) == "empty(webhookUrl) ? 'true' : 'false'"
    value = app_settings()["AzureWebJobs.export_usage.Disabled"]
    assert text(value) == "(stripeEnabled || marketplaceEnabled) ? 'false' : 'true'"


def test_secrets_live_in_one_vault_the_stack_declares_and_the_app_reads_with_its_identity():
    vault = one(bicep("modules/keyvault.bicep").of_type("Microsoft.KeyVault/vaults"))
    assert literal(prop(vault.body, "properties", "enableRbacAuthorization")) is True
    assert literal(prop(vault.body, "properties", "enableSoftDelete")) is True
    assert text(prop(main().modules["functionApp"].body, "params", "keyVaultUri")) == "keyVault.outputs.uri"
    assert "webhookSecretUri" not in main().params, "an operator-owned vault: the stack declares its own"
    variables = function_app().variables
    for setting, secret in KEY_VAULT_SECRETS.items():
        uri = text(app_settings()[setting]).split("${")[1].split("}")[0]
        assert text(variables[uri]) == f"'${{keyVaultUri}}secrets/{secret}'", setting
        assert secret in (INFRA / "modules/keyvault.bicep").read_text(encoding="utf-8")


def test_the_webhook_secret_is_generated_once_by_an_azd_hook():
    project = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    hook = project["hooks"]["postprovision"]["posix"]
    assert hook["shell"] == "sh"
    script = (ROOT / hook["run"]).read_text(encoding="utf-8")
    # It creates the secret only where reading it says it does not exist: never on a later `azd up`.
    show, create = script.index("az keyvault secret show"), script.index("az keyvault secret set")
    assert show < script.index("SecretNotFound") < create
    assert script[show:create].count("exit 0") == 1
    assert "metering-webhook-secret" in script
    assert "openssl rand -base64 32" in script  # 32 bytes: within the 24 to 64 the app checks at start
    assert "AZURE_KEY_VAULT_NAME" in main().outputs


def test_the_marketplace_identity_holds_no_role_and_is_the_one_its_settings_name():
    assert text(prop(main().modules["marketplaceIdentity"].body, "params", "name")).startswith("'id-metering-market")
    roles = text(prop(main().modules["roles"].body))
    assert "marketplaceIdentity" not in roles
    site = one(function_app().of_type("Microsoft.Web/sites"))
    assert "'${marketplaceIdentityId}': {}" in text(prop(site.body, "identity", "userAssignedIdentities"))
    assert text(app_settings()["METERING_MARKETPLACE_IDENTITY_CLIENT_ID"]) == "marketplaceIdentityClientId"
    passed = text(prop(main().modules["functionApp"].body, "params", "marketplaceIdentityClientId"))
    assert passed == "marketplaceIdentity.outputs.clientId"


def test_no_key_reaches_a_setting_or_an_output():
    for path in bicep_files():
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"\blist\w*\(", source, re.IGNORECASE), f"{path.name} reads keys with a list*() call"
    for name, value in app_settings().items():
        if name in KEY_VAULT_REFERENCES:
            # A reference to a secret, resolved by the platform with the app's identity: never the secret itself.
            assert KEY_VAULT_REFERENCE.match(text(value)), (name, text(value))
            site = one(function_app().of_type("Microsoft.Web/sites"))
            assert text(prop(site.body, "properties", "keyVaultReferenceIdentity")) == "identityId"
            continue
        words = r"key|secret|password|sas\b|sharedaccess"
        assert not re.search(words, text(value), re.IGNORECASE), name
        if "ConnectionString" in text(value):
            assert name == "APPLICATIONINSIGHTS_CONNECTION_STRING", f"{name} takes a connection string"
    for path in bicep_files():
        for name, value in BicepFile(path).outputs.items():
            assert not re.search(r"secret|password", name, re.IGNORECASE), name
            assert not re.search(r"connectionstring|primarykey|secondarykey", text(value), re.IGNORECASE), name


def test_roles_are_the_documented_built_in_roles_on_the_narrowest_scope():
    grants = set()
    for path in bicep_files():
        stack = BicepFile(path)
        assignments = [
            *stack.of_type("Microsoft.Authorization/roleAssignments"),
            *stack.of_type("Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"),
        ]
        for assignment in assignments:
            role = _role_of(assignment.body)
            scope = text(prop(assignment.body, "scope" if "scope" in properties(assignment.body) else "parent"))
            grants.add((role, stack.resources[scope].type))
    assert grants == EXPECTED_GRANTS


def _role_of(body: Node) -> str:
    """The documented name of the role an assignment grants; the comment above its ID must say the same."""
    comment = ""
    for child in prop(body, "properties").named_children:
        if child.type == "comment":
            comment = text(child).removeprefix("//").strip()
        elif text(named(child)[0]) == "roleDefinitionId":
            guids = GUID.findall(text(named(child)[1]))
            assert len(guids) == 1, text(child)
            assert guids[0] in DOCUMENTED_ROLES, f"{guids[0]} is not a documented built-in role"
            assert comment == DOCUMENTED_ROLES[guids[0]], f"{guids[0]} is {DOCUMENTED_ROLES[guids[0]]}, not {comment!r}"
            return DOCUMENTED_ROLES[guids[0]]
        else:
            comment = ""
    raise AssertionError(f"no roleDefinitionId in {text(body)[:80]}")


def test_host_json_extension_bundle_fits_flex_consumption():
    bundle = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))["extensionBundle"]
    assert bundle["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    # Flex Consumption needs version 4 of the bundle or later: the range's lower bound must be at least 4.
    match = re.fullmatch(r"\[(\d+)(?:\.[\d*]+)*,\s*(\d+)(?:\.\d+)*\)", bundle["version"])
    assert match, bundle["version"]
    assert int(match[1]) >= 4
    assert int(match[2]) > int(match[1])


def test_azd_deploys_this_folder_to_the_tagged_function_app():
    project = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert project["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    # The portal's vendored assets are copied into the package before azd packages it.
    hooks = {"prepackage": {"shell": "sh", "run": "bin/web-assets"}}
    assert project["services"] == {"api": {"project": ".", "language": "python", "host": "function", "hooks": hooks}}
    site = one(function_app().of_type("Microsoft.Web/sites"))
    assert "'azd-service-name': 'api'" in text(prop(site.body, "tags"))
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert set(parameters) <= set(main().params)
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    ignored = (ROOT / ".funcignore").read_text(encoding="utf-8").split()
    assert {".venv/", "node_modules/", "tests/", "infra/"} <= set(ignored)
    # Git ignores the vendored assets; the deployment must not.
    patterns = [line for line in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines() if line[:1] != "#"]
    vendored = ("metering", "static", "vendor", "*.js", "*.css", "*.txt")
    assert not any(pattern.lstrip("/").startswith(vendored) for pattern in patterns)


def test_outputs_say_where_the_api_is_and_how_to_get_its_key():
    outputs = main().outputs
    assert {"AZURE_FUNCTION_APP_NAME", "METERING_API_URL", "METERING_FUNCTION_KEY_COMMAND"} <= outputs.keys()
    assert text(outputs["METERING_API_URL"]).endswith("/api'")
    assert "az functionapp keys list" in text(outputs["METERING_FUNCTION_KEY_COMMAND"])
