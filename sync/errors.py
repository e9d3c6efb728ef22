"""Exception root of the sync package."""


class SyncError(Exception):
    """Root of every error raised by sync/."""


class CryptoError(SyncError):
    """A key or ciphertext does not open: wrong key, tampering, or shredded."""


class EnvelopeError(SyncError):
    """A message is malformed, too large, or its signature does not verify."""


class LinkDown(SyncError):
    """The transport is not connected; the caller keeps its data and retries."""


class PublishTimeout(SyncError):
    """The broker did not confirm a publish in time."""


class OutboxFull(SyncError):
    """Accepting more would break a data-class limit or fill the disk; nothing was written."""

    #: For people (the intake page shows it as is).
    message_uk = "Сховище черги на відправлення майже заповнене: запис не прийнято. Дочекайтеся зв'язку з центром і спробуйте ще раз."

    def __init__(self, stream: str, detail: str) -> None:
        super().__init__(f"outbox_full: {detail}")
        self.stream = stream
        self.detail = detail
