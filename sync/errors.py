"""Exception root of the sync package."""


class SyncError(Exception):
    """Root of every error raised by sync/."""


class EnvelopeError(SyncError):
    """A message is malformed, too large, or its signature does not verify."""


class LinkDown(SyncError):
    """The transport is not connected; the caller keeps its data and retries."""


class PublishTimeout(SyncError):
    """The broker did not confirm a publish in time."""
