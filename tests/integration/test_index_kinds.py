"""Every index kind is served through the API; build and search params pass through the SDK."""

from __future__ import annotations

import numpy as np
import pytest

from curacache.client import Client, InvalidArgumentError
from tests.oracle import exact_top_k

DIM = 16


@pytest.mark.parametrize("storage", ["sqlite"])
def test_hnsw_kind_with_params(client: Client, storage: str) -> None:
    info = client.create_collection("h", DIM, index="hnsw", M=8)
    assert info.index == "hnsw" and info.index_params == {"M": 8.0, "ef_construction": 200.0}
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((400, DIM)).astype(np.float32)
    ids = [f"v{i}" for i in range(400)]
    client.upsert("h", ids[:300], vectors[:300], owner="a", tenants=["b"])
    client.upsert("h", ids[300:], vectors[300:], owner="b")
    for q in rng.standard_normal((5, DIM)).astype(np.float32):
        hits = client.search("h", q, "a", k=10, ef=400)  # ef ≥ n: exact
        assert [h.id for h in hits] == [
            i for i, _ in exact_top_k(vectors[:300], ids[:300], q, 10, "cosine")
        ]
        assert {h.id for h in client.search("h", q, "b", k=400, ef=400)} == set(ids)
    with pytest.raises(InvalidArgumentError, match=r"params\.ef"):
        client.search("h", vectors[0], "a", ef=0)
    with pytest.raises(InvalidArgumentError, match=r"index\.params\.M"):
        client.create_collection("h2", DIM, index="hnsw", M=1)
