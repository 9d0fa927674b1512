"""The store's small exception tree; the server maps these to gRPC status codes."""


class StoreError(Exception):
    """Base of every error a DocumentStore raises on purpose."""


class StoreUnavailable(StoreError):
    """The backing database cannot be reached or refused the operation (retryable)."""


class CollectionExists(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} already exists")
        self.name = name


class CollectionMissing(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} does not exist")
        self.name = name


class OwnedByAnother(StoreError):
    """A write conditioned on the owner found a record owned by someone else (nothing written)."""

    def __init__(self, collection: str, record_id: str) -> None:
        super().__init__(f"record {record_id!r} of {collection!r} is owned by another tenant")
        self.collection = collection
        self.record_id = record_id


class ChangedMeanwhile(StoreError):
    """A write conditioned on a record's current state found it changed (nothing written)."""

    def __init__(self, collection: str, record_id: str) -> None:
        super().__init__(f"record {record_id!r} of {collection!r} changed meanwhile")
        self.collection = collection
        self.record_id = record_id
