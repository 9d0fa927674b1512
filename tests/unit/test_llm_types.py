"""Value types, config and the error tree of curacache.llm."""

from __future__ import annotations

import grpc
import pytest

from curacache.llm import (
    BackendConfig,
    BackendError,
    BackendOverloaded,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    GenerationRequest,
    Message,
    UnknownModel,
)
from curacache.server.status import ERROR_SOURCE_KEY, status_for


def test_request_needs_exactly_one_of_messages_and_prompt() -> None:
    with pytest.raises(ValueError):
        GenerationRequest(model="m")
    with pytest.raises(ValueError):
        GenerationRequest(model="m", prompt="p", messages=(Message("user", "q"),))
    with pytest.raises(ValueError, match="stream"):
        GenerationRequest(model="m", prompt="p", params={"stream": True})
    chat = GenerationRequest(model="m", messages=[Message("user", "q")])  # type: ignore[arg-type]
    assert chat.is_chat and chat.messages == (Message("user", "q"),)


def test_request_params_are_a_read_only_copy() -> None:
    params = {"temperature": 0.0}
    request = GenerationRequest(model="m", prompt="p", params=params)
    params["temperature"] = 1.0
    assert request.params["temperature"] == 0.0
    with pytest.raises(TypeError):
        request.params["seed"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    "base_url,api_base",
    [
        ("http://h:8000", "http://h:8000/v1"),
        ("http://h:8000/", "http://h:8000/v1"),
        ("http://h:8000/v1/", "http://h:8000/v1"),
    ],
)
def test_base_url_may_be_the_root_or_the_openai_base(base_url: str, api_base: str) -> None:
    assert BackendConfig(name="b", base_url=base_url).api_base == api_base


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        BackendConfig(name="b", base_url="h:8000")
    with pytest.raises(ValueError):
        BackendConfig(name="b", base_url="http://h", max_concurrency=0)
    assert BackendConfig(name="b", base_url="http://h", models=["m"]).models == ("m",)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error,code",
    [
        (BackendUnavailable("down"), grpc.StatusCode.UNAVAILABLE),
        (BackendOverloaded("busy", retry_after=2.5), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (BackendTimeout("slow"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (BackendRejected("too long", status=400, backend="b"), grpc.StatusCode.INVALID_ARGUMENT),
        (UnknownModel("m"), grpc.StatusCode.NOT_FOUND),
    ],
)
def test_backend_errors_map_to_real_status_codes(
    error: BackendError, code: grpc.StatusCode
) -> None:
    assert isinstance(error, BackendError)
    got, _, trailers = status_for(error)
    assert got == code
    assert (
        ERROR_SOURCE_KEY,
        "backend",
    ) in trailers  # a gateway tells backend from service failures
    if isinstance(error, BackendOverloaded):
        assert trailers == (("retry-after", "3"), (ERROR_SOURCE_KEY, "backend"))


def test_rejected_keeps_the_backends_message() -> None:
    error = BackendRejected("prompt is longer than the context", status=400, backend="gpu1")
    assert error.backend_message == "prompt is longer than the context" and "gpu1" in str(error)
