"""The pure parts of the simulator: deterministic text, fault specs, FIFO slots."""

from __future__ import annotations

import asyncio
import json

import pytest

from curacache.llm.sim_model import FaultSpec, FifoSlots, fault_in, generate


def test_generation_is_a_function_of_the_request() -> None:
    body = {"model": "m", "prompt": "hello there", "temperature": 0}
    a, b = generate(body), generate(dict(body))
    assert a == b and a.finish_reason == "stop" and 8 <= len(a.tokens) <= 64
    assert a.text == "".join(a.tokens) and a.text.split() == [t.strip() for t in a.tokens]
    assert generate({**body, "seed": 1}).text != a.text
    assert generate({**body, "model": "n"}).text != a.text
    assert generate({**body, "prompt": "hello there!"}).text != a.text
    assert a.prompt_tokens == 2


def test_max_tokens_and_stop_cut_the_answer() -> None:
    body = {"model": "m", "prompt": "x"}
    full = generate(body)
    cut = generate({**body, "max_tokens": 2})
    assert cut.tokens == full.tokens[:2] and cut.finish_reason == "length"
    stop_word = full.tokens[3]
    stopped = generate({**body, "stop": [stop_word]})
    assert stop_word not in stopped.text and stopped.finish_reason == "stop"


def test_a_request_offering_tools_gets_a_call_of_the_chosen_tool() -> None:
    tools = [{"type": "function", "function": {"name": n}} for n in ("first", "second")]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": tools}
    call = generate(body)
    assert call.tool_call is not None and call.tool_call[1] == "first"
    assert call.finish_reason == "tool_calls" and set(json.loads(call.text)) == {"query"}
    assert call == generate(dict(body))  # deterministic, the call id included
    chosen = generate({**body, "tool_choice": {"type": "function", "function": {"name": "second"}}})
    assert chosen.tool_call is not None and chosen.tool_call[1] == "second"
    assert generate({**body, "tools": tools[::-1]}).tool_call != call.tool_call
    plain = generate({k: v for k, v in body.items() if k != "tools"})
    assert generate({**body, "tool_choice": "none"}) == plain and plain.tool_call is None


def test_chat_prompt_tokens_count_messages() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    }
    assert generate(body).prompt_tokens == 3 + 2


def test_fault_specs() -> None:
    assert FaultSpec.parse("hang") == FaultSpec("hang")
    assert FaultSpec.parse("500") == FaultSpec("500")
    assert FaultSpec.parse("429, times=2, retry-after=0.5") == FaultSpec("429", 2, 0.5)
    with pytest.raises(ValueError):
        FaultSpec.parse("418")
    with pytest.raises(ValueError):
        FaultSpec.parse("429,often=yes")
    assert fault_in({"prompt": "a [[fake-fault:drop,times=1]] b"}, None) == "drop,times=1"
    assert (
        fault_in({"messages": [{"role": "user", "content": "[[fake-fault:503]]"}]}, "hang")
        == "hang"
    )
    assert fault_in({"prompt": "plain"}, None) is None


async def test_slots_are_handed_out_first_come_first_served() -> None:
    slots = FifoSlots(1)
    order: list[int] = []
    await slots.acquire()

    async def worker(i: int) -> None:
        await slots.acquire()
        order.append(i)
        await asyncio.sleep(0)
        slots.release()

    tasks = [asyncio.create_task(worker(i)) for i in range(5)]
    await asyncio.sleep(0)
    assert slots.queued == 5 and not slots.free
    tasks[2].cancel()  # a waiter that gives up keeps nobody else waiting
    slots.release()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == [0, 1, 3, 4] and slots.free
