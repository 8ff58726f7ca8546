"""The store package's one root error."""


class StoreError(Exception):
    """The store cannot be opened, read or written; the message is one line a user can act on."""
