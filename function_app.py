"""The Azure Functions app (Python v2 programming model).

Only declarations and wiring live here: each function parses its trigger input, calls one function of
`metering/`, and turns the result into a response. The functions themselves arrive with the function-app
work; until then the app loads its configuration so a misconfigured deployment fails at start.
"""

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
