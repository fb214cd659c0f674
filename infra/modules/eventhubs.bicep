// The Event Hubs namespace and the usage hub: ingest publishes to it (partition key = tenant), the aggregator reads it
// through its own consumer group, and Capture copies every message to blob storage, the raw archive that audits,
// disputes and rebuilds rely on. Local (SAS key) authentication is disabled: producers and consumers use Entra.

param namespaceName string
param location string
param tags object
param hubName string
param consumerGroupName string

@description('Partitions bound the aggregator\'s parallelism; on the Standard tier they cannot change after creation.')
@minValue(1)
@maxValue(32)
param partitionCount int

@description('Days the hub keeps events: how long an aggregator outage can last before events are lost.')
@minValue(1)
@maxValue(7)
param messageRetentionInDays int

@description('Throughput units: each admits 1 MB/s or 1,000 messages/s of ingress.')
@minValue(1)
@maxValue(20)
param throughputUnits int

@description('Auto-inflate ceiling; equal to throughputUnits (or 0) turns auto-inflate off.')
@minValue(0)
@maxValue(20)
param maximumThroughputUnits int

param captureEnabled bool

@description('Capture writes a file per partition at least this often, in seconds.')
@minValue(60)
@maxValue(900)
param captureIntervalSeconds int

@description('Storage account and container of the Capture archive.')
param storageAccountName string
param archiveContainerName string

var autoInflate = maximumThroughputUnits > throughputUnits

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource archiveContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = if (captureEnabled) {
  parent: blobService
  name: archiveContainerName
}

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: namespaceName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: throughputUnits
  }
  // Capture writes the archive as the namespace's own identity.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    isAutoInflateEnabled: autoInflate
    maximumThroughputUnits: autoInflate ? maximumThroughputUnits : 0
  }
}

// Capture's grant: write access to the archive container only. It must exist before the hub that captures, so it
// lives here rather than in roles.bicep (which holds the app identity's grants and needs the hub to exist first).
resource archiveWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (captureEnabled) {
  name: guid(archiveContainer.id, namespace.id, 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
  scope: archiveContainer
  properties: {
    // Storage Blob Data Contributor
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: namespace.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource hub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: namespace
  name: hubName
  properties: {
    partitionCount: partitionCount
    messageRetentionInDays: messageRetentionInDays
    captureDescription: captureEnabled
      ? {
          enabled: true
          encoding: 'Avro'
          intervalInSeconds: captureIntervalSeconds
          sizeLimitInBytes: 314572800
          // No file for a window without events: an idle hub writes nothing.
          skipEmptyArchives: true
          destination: {
            name: 'EventHubArchive.AzureBlockBlob'
            identity: {
              type: 'SystemAssigned'
            }
            properties: {
              storageAccountResourceId: storage.id
              blobContainer: archiveContainerName
              archiveNameFormat: '{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}'
            }
          }
        }
      : null
  }
  dependsOn: [
    archiveWriter
  ]
}

resource consumerGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: hub
  name: consumerGroupName
}

output namespaceName string = namespace.name
output hubName string = hub.name
output consumerGroupName string = consumerGroup.name
// The host name alone (name.servicebus.windows.net in the public cloud), as EventHubConnection__fullyQualifiedNamespace
// wants it; taken from the endpoint (https://host:443/) so that other clouds get their own suffix.
output fullyQualifiedNamespace string = replace(replace(namespace.properties.serviceBusEndpoint, 'https://', ''), ':443/', '')
