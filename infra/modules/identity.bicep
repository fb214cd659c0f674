// The one identity the function app runs as. Its bindings (AzureWebJobsStorage, EventHubConnection), the SDK clients
// the app builds itself (metering/identity.py) and its deployment package all authenticate with it, so every grant it
// needs is in roles.bicep and nothing anywhere holds a key.

@description('Name of the user-assigned managed identity.')
param name string

param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
