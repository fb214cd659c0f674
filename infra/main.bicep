// The whole metering stack in one resource group: `azd up` provisions it and deploys function_app.py to it.
// One module per concern (modules/); infra/README.md describes each.

targetScope = 'subscription'

@description('Name of the azd environment; the resource group and every resource name derive from it.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Region of every resource. It must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
@minLength(1)
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Where the metering data lives: Azure Table storage, or Cosmos DB for NoSQL (serverless).')
@allowed([
  'table'
  'cosmos'
])
param store string = 'table'

@description('Partitions of the usage hub. They bound how many aggregators run at once; on the Standard tier they cannot change after creation.')
@minValue(1)
@maxValue(32)
param eventHubPartitionCount int = 8

@description('Days the hub keeps events: how long the aggregator can be down without losing any.')
@minValue(1)
@maxValue(7)
param eventHubRetentionDays int = 7

@description('Throughput units of the Event Hubs namespace (each: 1 MB/s or 1,000 messages/s in).')
@minValue(1)
@maxValue(20)
param eventHubThroughputUnits int = 1

@description('Auto-inflate raises throughput units up to this many under load; equal to eventHubThroughputUnits turns it off.')
@minValue(1)
@maxValue(20)
param eventHubMaximumThroughputUnits int = 4

@description('Event Hubs Capture of every message into blob storage: the raw archive audits and rebuilds rely on.')
param captureEnabled bool = true

@description('Capture writes a file per partition at least this often, in seconds.')
@minValue(60)
@maxValue(900)
param captureIntervalSeconds int = 300

@description('Memory of each function app instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Most instances the function app scales out to (Flex Consumption allows 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Redundancy of the storage account that holds the metering tables and the archive.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_LRS'

@description('NCRONTAB (seconds first) of the close-periods timer.')
param closePeriodsSchedule string = '0 */5 * * * *'

@description('NCRONTAB (seconds first) of the webhook deliveries timer (retries, and what a run right after a notification left).')
param deliverWebhooksSchedule string = '*/30 * * * * *'

@description('Receiver every notification is also POSTed to, signed (https); empty: notifications go to the queue only.')
param webhookUrl string = ''

@description('NCRONTAB (seconds first) of the export timer (usage sent to Stripe and the Azure Marketplace).')
param exportSchedule string = '0 */5 * * * *'

@description('Minutes after an hour\'s end, behind what the hub applied, before it is exported.')
@minValue(0)
@maxValue(1440)
param exportSettleMinutes int = 60

@description('Send usage to Stripe Billing meters; the key is the Key Vault secret metering-stripe-api-key.')
param stripeEnabled bool = false

@description('Whether the Stripe account takes decimal meter event values (Stripe enables it on request).')
param stripeDecimals bool = false

@description('Send usage to the Azure Marketplace metering service, as the Marketplace identity.')
param marketplaceEnabled bool = false

@description('Client ID of the Entra app registration the offer\'s technical configuration names (SaaS offers); empty: the Marketplace identity\'s own token (managed application offers).')
param marketplaceAppId string = ''

@description('Principal (object) ID of whoever runs azd (azd sets AZURE_PRINCIPAL_ID): it may write the Key Vault\'s secrets. Empty: no grant.')
param principalId string = ''

@description('Type of that principal.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Key Vault URI of the portal token secret (at least 32 characters), e.g. https://<vault>.vault.azure.net/secrets/metering-portal; empty: no portal. The app\'s identity needs Key Vault Secrets User on it.')
param portalSecretUri string = ''

@description('Key Vault URI of the previous portal secret while one is rotated (its tokens still verify until they expire); empty: none.')
param portalSecretPreviousUri string = ''

@description('Origins that may embed the portal in an iframe (CSP frame-ancestors, space-separated), e.g. https://app.example.com; \'none\' refuses every frame.')
param portalFrameAncestors string = '\'none\''

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

var token = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

// What the app reads and writes, by the names its settings carry: created here (storage, cosmos) and handed to the
// function app's settings, so the two cannot drift apart. The same names are the defaults locally.
var dataNames = {
  usageTable: 'meteringusage'
  conflictsTable: 'meteringconflicts'
  deadLetterTable: 'meteringdeadletters'
  tenantsTable: 'meteringtenants'
  statementsTable: 'meteringstatements'
  lateEventsTable: 'meteringlateevents'
  controlTable: 'meteringcontrol'
  journalTable: 'meteringjournal'
  exportsTable: 'meteringexports'
  notificationsQueue: 'meteringnotifications'
  deadLetterContainer: 'metering-deadletters'
  // Event Hubs Capture's container: the raw archive `metering rebuild` reads.
  archiveContainer: 'usage-archive'
  cosmosDatabase: 'metering'
}
var cosmosContainers = [
  'usage'
  'tenants'
  'statements'
  'lateevents'
  'control'
  'conflicts'
  'deadletters'
  'journal'
  'exports'
]
var hubName = 'usage'
var consumerGroupName = 'aggregator'
var archiveContainerName = dataNames.archiveContainer
var deploymentContainerName = 'app-package'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-metering-${token}'
    location: location
    tags: tags
  }
}

// The identity the Marketplace metering service's tokens are obtained with: of its own, holding no role, so the app
// registration its federated credential lets it sign in as (README, "Selling through the Azure Marketplace") trusts
// nothing that can read the data.
module marketplaceIdentity 'modules/identity.bicep' = {
  name: 'marketplace-identity'
  scope: rg
  params: {
    name: 'id-metering-marketplace-${token}'
    location: location
    tags: tags
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    // At most 24 characters.
    name: 'kv-mtr-${token}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-metering-${token}'
    applicationInsightsName: 'appi-metering-${token}'
    location: location
    tags: tags
    retentionInDays: logRetentionDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stmetering${token}'
    location: location
    tags: tags
    skuName: storageSku
    containerNames: concat(
      [
        deploymentContainerName
        dataNames.deadLetterContainer
      ],
      captureEnabled ? [archiveContainerName] : []
    )
    tableNames: store == 'table'
      ? [
          dataNames.usageTable
          dataNames.conflictsTable
          dataNames.deadLetterTable
          dataNames.tenantsTable
          dataNames.statementsTable
          dataNames.lateEventsTable
          dataNames.controlTable
          dataNames.journalTable
          dataNames.exportsTable
        ]
      : []
    queueNames: [
      dataNames.notificationsQueue
    ]
    archiveContainerName: captureEnabled ? archiveContainerName : ''
  }
}

module eventHubs 'modules/eventhubs.bicep' = {
  name: 'eventhubs'
  scope: rg
  params: {
    namespaceName: 'evhns-metering-${token}'
    location: location
    tags: tags
    hubName: hubName
    consumerGroupName: consumerGroupName
    partitionCount: eventHubPartitionCount
    messageRetentionInDays: eventHubRetentionDays
    throughputUnits: eventHubThroughputUnits
    maximumThroughputUnits: eventHubMaximumThroughputUnits
    captureEnabled: captureEnabled
    captureIntervalSeconds: captureIntervalSeconds
    storageAccountName: storage.outputs.name
    archiveContainerName: archiveContainerName
  }
}

module cosmos 'modules/cosmos.bicep' = if (store == 'cosmos') {
  name: 'cosmos'
  scope: rg
  params: {
    accountName: 'cosmos-metering-${token}'
    location: location
    tags: tags
    databaseName: dataNames.cosmosDatabase
    containerNames: cosmosContainers
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    eventHubNamespaceName: eventHubs.outputs.namespaceName
    hubName: eventHubs.outputs.hubName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    cosmosAccountName: store == 'cosmos' ? cosmos.outputs.name : ''
    cosmosDatabaseName: dataNames.cosmosDatabase
    keyVaultName: keyVault.outputs.name
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  // The app starts using its grants as soon as it runs.
  dependsOn: [
    roles
  ]
  params: {
    name: 'func-metering-${token}'
    planName: 'plan-metering-${token}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    eventHubNamespaceHost: eventHubs.outputs.fullyQualifiedNamespace
    hubName: eventHubs.outputs.hubName
    consumerGroupName: eventHubs.outputs.consumerGroupName
    names: dataNames
    store: store
    cosmosEndpoint: store == 'cosmos' ? cosmos.outputs.endpoint : ''
    closePeriodsSchedule: closePeriodsSchedule
    deliverWebhooksSchedule: deliverWebhooksSchedule
    webhookUrl: webhookUrl
    portalSecretUri: portalSecretUri
    portalSecretPreviousUri: portalSecretPreviousUri
    portalFrameAncestors: portalFrameAncestors
    keyVaultUri: keyVault.outputs.uri
    exportSchedule: exportSchedule
    exportSettleMinutes: exportSettleMinutes
    stripeEnabled: stripeEnabled
    stripeDecimals: stripeDecimals
    marketplaceEnabled: marketplaceEnabled
    marketplaceIdentityId: marketplaceIdentity.outputs.id
    marketplaceIdentityClientId: marketplaceIdentity.outputs.clientId
    marketplaceAppId: marketplaceAppId
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output SERVICE_API_URI string = 'https://${functionApp.outputs.defaultHostName}'
output METERING_API_URL string = 'https://${functionApp.outputs.defaultHostName}/api'
// What to run next: the function key every request needs (x-functions-key header).
output METERING_FUNCTION_KEY_COMMAND string = 'az functionapp keys list --resource-group ${rg.name} --name ${functionApp.outputs.name} --query functionKeys.default --output tsv'
output EVENTHUB_NAMESPACE string = eventHubs.outputs.namespaceName
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
// Read by infra/hooks/postprovision.sh (azd hands hooks the outputs as environment variables).
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
// The Marketplace identity: the app registration's federated credential names it (README, "Selling through the
// Azure Marketplace").
output MARKETPLACE_IDENTITY_CLIENT_ID string = marketplaceIdentity.outputs.clientId
output MARKETPLACE_IDENTITY_PRINCIPAL_ID string = marketplaceIdentity.outputs.principalId
