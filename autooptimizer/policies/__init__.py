"""The safety core: Cedar policy decision point, tool catalogue, approvals, kill switch and audit trail."""
