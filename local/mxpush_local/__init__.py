"""Local mode: the whole mxpush gateway on 127.0.0.1, without AWS or Docker.

The same handlers behind a small HTTP front that builds API Gateway events from the routes in
`template.yaml`; DynamoDB and Step Functions from moto, whose ASL interpreter runs the real
state machine definition and hands its Lambda tasks to the real sender handlers.
"""
