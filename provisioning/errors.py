"""Exception root of the provisioning package."""


class ProvisioningError(Exception):
    """Root of every error raised by provisioning/; the message is for the operator."""
