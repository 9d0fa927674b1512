"""HashingEmbedder: the deterministic stand-in other packages' unit tests rely on."""

from __future__ import annotations

import numpy as np
import pytest

from curacache.embed.base import Embedder, HashingEmbedder, l2_normalise


async def test_shape_dtype_and_unit_norm() -> None:
    emb = HashingEmbedder(dim=64)
    out = await emb.embed(["hello world", "", "!!!", "the the the"])
    assert out.shape == (4, 64) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    assert (await emb.embed([])).shape == (0, 64)


async def test_deterministic_across_instances() -> None:
    a = await HashingEmbedder().embed(["What is the capital of France?"])
    b = await HashingEmbedder().embed(["What is the capital of France?"])
    assert np.array_equal(a, b)
    assert a.shape == (1, 384)


async def test_similar_texts_are_closer_than_unrelated_ones() -> None:
    emb = HashingEmbedder()
    a, b, c, d = await emb.embed(
        [
            "how do I reset my password",
            "How do I reset my password?",
            "how can I reset my account password",
            "best pizza restaurants in naples",
        ]
    )
    assert a @ b == pytest.approx(1.0)  # case and punctuation do not matter
    assert a @ c > 0.4
    assert a @ c > a @ d + 0.3
    assert abs(float(a @ d)) < 0.3


def test_satisfies_the_protocol_and_validates() -> None:
    assert isinstance(HashingEmbedder(), Embedder)
    with pytest.raises(ValueError):
        HashingEmbedder(dim=0)


async def test_rejects_a_bare_string_and_non_strings() -> None:
    with pytest.raises(TypeError):
        await HashingEmbedder().embed("abc")  # a str is a Sequence[str]: refused at run time
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        await HashingEmbedder().embed(["ok", 3])  # type: ignore[list-item]


def test_l2_normalise_keeps_zero_rows_finite() -> None:
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
