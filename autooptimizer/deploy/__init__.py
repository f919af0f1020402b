"""Deployment artifacts that live beside the code: the Helm chart in deploy/helm/ and the tools that check it."""
