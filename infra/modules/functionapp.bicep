// The function app on the Flex Consumption plan (FC1, Linux): scales to zero when idle and out per function under
// load. On Flex the runtime, the deployment package and scaling come from functionAppConfig, so the app settings hold
// only what the host and the app read: identity-based connections (no connection strings, no keys) and the metering
// settings of metering/settings.py. tests/unit/test_infra.py checks these against the settings model, function_app.py
// and local.settings.example.json.

param name string
param planName string
param location string
param tags object

@description('Resource ID and client ID of the user-assigned identity the app runs as.')
param identityId string
param identityClientId string

param storageAccountName string

@description('Blob container the deployment package is uploaded to.')
param deploymentContainerName string

param applicationInsightsName string

@description('Host name of the Event Hubs namespace, and the hub and consumer group of the aggregator.')
param eventHubNamespaceHost string
param hubName string
param consumerGroupName string

@description('Names of the tables, queue, blob container and Cosmos database the app uses (main.bicep).')
param names object

@allowed([
  'table'
  'cosmos'
])
param store string

@description('Cosmos DB endpoint; empty with the table store.')
param cosmosEndpoint string

@description('NCRONTAB (seconds first) of the close-periods timer.')
param closePeriodsSchedule string

@description('NCRONTAB (seconds first) of the webhook deliveries timer.')
param deliverWebhooksSchedule string

@description('Receiver every notification is POSTed to (https); empty: no webhooks.')
param webhookUrl string

@description('URI of the stack\'s Key Vault: the secrets the settings reference (keyvault.bicep).')
param keyVaultUri string

@description('NCRONTAB (seconds first) of the export timer, and the settle delay in minutes.')
param exportSchedule string
param exportSettleMinutes int

@description('Send usage to Stripe (its key in the vault), and whether the account takes decimal values.')
param stripeEnabled bool
param stripeDecimals bool

@description('Send usage to the Azure Marketplace, with the Marketplace identity (and the offer\'s app registration).')
param marketplaceEnabled bool
param marketplaceIdentityId string
param marketplaceIdentityClientId string
param marketplaceAppId string

@description('Key Vault URI of the portal token secret (HS256 key, at least 32 characters); empty: no portal.')
param portalSecretUri string

@description('Key Vault URI of the portal secret before a rotation (its tokens still verify); empty: none.')
param portalSecretPreviousUri string

@description('CSP frame-ancestors of the portal page: the origins that may embed it (space-separated), or \'none\'.')
param portalFrameAncestors string

@description('Memory of each instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Most instances the app scales out to (Flex allows 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// The host's own storage connection (keys, timer leases, Event Hubs checkpoints) and the app's tables, queue and blobs.
var storageSettings = {
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
}

// The connection of the aggregator's trigger (function_app.py) and of ingest's publisher.
var eventHubSettings = {
  EventHubConnection__fullyQualifiedNamespace: eventHubNamespaceHost
  EventHubConnection__credential: 'managedidentity'
  EventHubConnection__clientId: identityClientId
  EVENTHUB_NAME: hubName
  EVENTHUB_CONSUMER_GROUP: consumerGroupName
}

// The connection string only locates the component: with local authentication off, ingestion also needs the token
// the authentication string asks for.
var monitoringSettings = {
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

var meteringSettings = {
  CLOSE_PERIODS_SCHEDULE: closePeriodsSchedule
  METERING_STORE: store
  // Empty: the catalogs packaged with the app.
  METERING_METERS_FILE: ''
  METERING_PLANS_FILE: ''
  METERING_USAGE_TABLE: names.usageTable
  METERING_CONFLICTS_TABLE: names.conflictsTable
  METERING_DEADLETTER_TABLE: names.deadLetterTable
  METERING_TENANTS_TABLE: names.tenantsTable
  METERING_STATEMENTS_TABLE: names.statementsTable
  METERING_LATE_EVENTS_TABLE: names.lateEventsTable
  METERING_CONTROL_TABLE: names.controlTable
  METERING_JOURNAL_TABLE: names.journalTable
  METERING_EXPORTS_TABLE: names.exportsTable
  METERING_NOTIFICATIONS_QUEUE: names.notificationsQueue
  METERING_DEADLETTER_CONTAINER: names.deadLetterContainer
  // Written by Event Hubs Capture, not by the app; read by `metering rebuild` run with these settings.
  METERING_ARCHIVE_CONTAINER: names.archiveContainer
  METERING_MAX_EVENT_AGE_DAYS: '35'
  METERING_MAX_FUTURE_MINUTES: '5'
  METERING_GRACE_HOURS: '24'
  METERING_DEDUPE_RETENTION_DAYS: '35'
  METERING_LATE_EVENT_POLICY: 'review'
  METERING_ALERT_THRESHOLDS: '80,100'
  DELIVER_WEBHOOKS_SCHEDULE: deliverWebhooksSchedule
  METERING_WEBHOOK_TIMEOUT_SECONDS: '10'
}

// Secrets are Key Vault references: the platform resolves them with the app's identity (keyVaultReferenceIdentity
// below), so their values are never in a template, a deployment or the site's configuration.
var webhookSecretUri = '${keyVaultUri}secrets/metering-webhook-secret'
var stripeKeySecretUri = '${keyVaultUri}secrets/metering-stripe-api-key'

// With a receiver, its URL and the signing secret.
var webhookSettings = empty(webhookUrl)
  ? {}
  : {
      METERING_WEBHOOK_URL: webhookUrl
      METERING_WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${webhookSecretUri})'
    }

// The tenant portal: its token secrets are Key Vault references, as the webhook secret's (no secret, no portal).
var portalSettings = union(
  { METERING_PORTAL_FRAME_ANCESTORS: portalFrameAncestors },
  empty(portalSecretUri) ? {} : { METERING_PORTAL_SECRET: '@Microsoft.KeyVault(SecretUri=${portalSecretUri})' },
  empty(portalSecretPreviousUri)
    ? {}
    : { METERING_PORTAL_SECRET_PREVIOUS: '@Microsoft.KeyVault(SecretUri=${portalSecretPreviousUri})' }
)

// Billing exports (Stripe's API base and the Marketplace's are their defaults in Azure).
var exportSettings = {
  EXPORT_SCHEDULE: exportSchedule
  EXPORT_SETTLE_MINUTES: string(exportSettleMinutes)
  METERING_EXPORT_TIMEOUT_SECONDS: '10'
  METERING_STRIPE_DECIMALS: stripeDecimals ? 'true' : 'false'
  METERING_MARKETPLACE_ENABLED: marketplaceEnabled ? 'true' : 'false'
  METERING_MARKETPLACE_IDENTITY_CLIENT_ID: marketplaceIdentityClientId
  METERING_MARKETPLACE_APP_ID: marketplaceAppId
  METERING_MARKETPLACE_TENANT_ID: subscription().tenantId
}

var stripeSettings = stripeEnabled
  ? {
      METERING_STRIPE_API_KEY: '@Microsoft.KeyVault(SecretUri=${stripeKeySecretUri})'
    }
  : {}

// Without a receiver the deliveries timer has nothing to do, nor the export timer without a target: the host does
// not run them (each run would wake an instance, and cost its lease writes).
var hostSettings = {
  'AzureWebJobs.deliver_webhooks.Disabled': empty(webhookUrl) ? 'true' : 'false'
  'AzureWebJobs.export_usage.Disabled': (stripeEnabled || marketplaceEnabled) ? 'false' : 'true'
}

var cosmosSettings = store == 'cosmos'
  ? {
      COSMOS__accountEndpoint: cosmosEndpoint
      COSMOS__credential: 'managedidentity'
      COSMOS__clientId: identityClientId
      COSMOS_DATABASE: names.cosmosDatabase
    }
  : {}

var appSettings = union(
  storageSettings,
  eventHubSettings,
  monitoringSettings,
  meteringSettings,
  cosmosSettings,
  webhookSettings,
  portalSettings,
  exportSettings,
  stripeSettings,
  hostSettings
)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    // Linux
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd deploys the `api` service of azure.yaml to the app with this tag.
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
      // Only for the Marketplace metering service's tokens (connections.py); it holds no role.
      '${marketplaceIdentityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: [
        for setting in items(appSettings): {
          name: setting.key
          value: setting.value
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Deployments authenticate with Entra (azd does); publishing with a user name and password stays off.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
