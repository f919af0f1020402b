"""The autonomous loop: cycles, the A/B judge, GitOps deploys, rollback, journal and scheduler."""
