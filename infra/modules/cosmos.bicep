// Cosmos DB for NoSQL, for deployments that choose store = 'cosmos': a serverless account (billed per request unit
// used, nothing when idle), the metering database and its containers. Keys are disabled, so the app reaches it only
// with its identity (the data-plane role is in roles.bicep) and that role cannot create databases or containers:
// they are all declared here.

param accountName string
param location string
param tags object
param databaseName string

@description('Containers to create; every one is partitioned by /pk.')
param containerNames array

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: accountName
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    capabilities: [
      {
        name: 'EnableServerless'
      }
    ]
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource containers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [
  for containerName in containerNames: {
    parent: database
    name: containerName
    properties: {
      resource: {
        id: containerName
        partitionKey: {
          paths: [
            '/pk'
          ]
          kind: 'Hash'
          version: 2
        }
        // TTL on, with no default expiry: an item lives until it sets its own `ttl` (dedupe markers do, when their
        // retention ends).
        defaultTtl: -1
      }
    }
  }
]

output name string = account.name
output endpoint string = account.properties.documentEndpoint
