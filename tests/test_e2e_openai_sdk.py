"""End to end: the official openai SDK → the gateway → a fake upstream, all real servers."""

from __future__ import annotations

import asyncio

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from aigateway import __version__
from tests.conftest import KEY, OTHER_KEY, PROVIDER_SECRET, GatewayFactory
from tests.fakes import Reply, chunk_events, completion, error_body

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


def client(gw, key: str = KEY) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gw.url, api_key=key, max_retries=0, timeout=10)


async def test_chat_completion(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with client(gw) as c:
        raw = await c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    resp = raw.parse()
    assert resp.choices[0].message.content == "Hello!"
    assert resp.usage is not None and resp.usage.total_tokens == 12
    assert raw.headers["x-aigateway-provider"] == "up"
    assert raw.headers["x-aigateway-model"] == "gpt-4o-2024-08-06"
    assert raw.headers["x-aigateway-attempts"] == "1"
    assert float(raw.headers["x-aigateway-overhead-ms"]) >= 0
    assert len(raw.headers["x-request-id"]) == 32
    # What went upstream: the target's model, our credentials, the caller's fields.
    seen = gw.upstream.seen[0]
    assert seen.path == "/v1/chat/completions"
    assert seen.body["model"] == "gpt-4o"
    assert seen.body["messages"] == MESSAGES
    assert seen.headers["Authorization"] == f"Bearer {PROVIDER_SECRET}"
    assert KEY not in str(seen.headers)
    assert seen.all("User-Agent") == [f"aigateway/{__version__}"]


async def test_a_providers_headers_replace_the_user_agent(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        edit=lambda text: text.replace(
            "timeouts: {connect_s: 2, read_s: 2}",
            "headers: {user-agent: my-app/2}, timeouts: {connect_s: 2, read_s: 2}",
            1,
        )
    )
    async with client(gw) as c:
        await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert gw.upstream.seen[0].all("User-Agent") == ["my-app/2"]


async def test_unknown_fields_pass_through(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with client(gw) as c:
        await c.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            temperature=0.2,
            seed=7,
            extra_body={"vendor_option": {"x": 1}},
        )
    body = gw.upstream.seen[0].body
    assert body["temperature"] == 0.2
    assert body["seed"] == 7
    assert body["vendor_option"] == {"x": 1}


async def test_request_id_is_taken_from_the_client_when_well_formed(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    async with client(gw) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-request-id": "trace-42.a:b"}
        )
        assert raw.headers["x-request-id"] == "trace-42.a:b"
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-request-id": "bad id!"}
        )
        assert raw.headers["x-request-id"] != "bad id!"


async def test_stream_arrives_incrementally_and_ends_with_done(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    gate = asyncio.Event()
    gw.upstream.script.append(Reply(events=chunk_events(), gate=gate))
    pieces: list[str] = []
    async with client(gw) as c:
        stream = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        async with stream:
            # The upstream holds the rest of its stream until we have seen the first chunk:
            # a gateway that buffered would never deliver it (the wait_for would time out).
            first = await asyncio.wait_for(stream.__anext__(), 5)
            assert first.choices[0].delta.role == "assistant"
            gate.set()
            async for chunk in stream:
                assert chunk.choices, "the usage chunk the caller did not ask for is stripped"
                if chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == "Hello!"
    # Usage was asked for upstream on the caller's behalf.
    assert gw.upstream.seen[0].body["stream_options"] == {"include_usage": True}
    assert '"prompt_tokens": 10' in gw.log.getvalue()


async def test_stream_with_usage_requested(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with client(gw) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 13


async def test_raw_sse_framing(make_gateway: GatewayFactory) -> None:
    import aiohttp

    gw = await make_gateway()
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.url + "/chat/completions",
            json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
            headers={"Authorization": f"Bearer {KEY}"},
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = (await resp.read()).decode()
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert text.count("[DONE]") == 1


async def test_models_list_shows_only_what_the_key_may_use(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with client(gw) as c:
        ids = sorted([m.id async for m in c.models.list()])
        assert ids == ["gpt-4o", "mock", "text-embedding-3-small", "with-backup"]
        model = await c.models.retrieve("gpt-4o")
        assert model.id == "gpt-4o" and model.object == "model"
        with pytest.raises(openai.NotFoundError):
            await c.models.retrieve("secret")
    async with client(gw, OTHER_KEY) as c:
        ids = sorted([m.id async for m in c.models.list()])
    assert ids == ["gpt-4o", "mock", "secret", "text-embedding-3-small", "with-backup"]


async def test_embeddings_default_base64_and_float(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with client(gw) as c:
        resp = await c.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        assert len(resp.data) == 2
        assert resp.data[0].embedding == [0.5, -0.25, 0.125]
        assert gw.upstream.seen[0].body["encoding_format"] == "base64"  # the SDK's default
        resp = await c.embeddings.create(
            model="text-embedding-3-small", input="a", encoding_format="float"
        )
        assert resp.data[0].embedding == [0.5, -0.25, 0.125]
        assert resp.usage.prompt_tokens == 4


@pytest.mark.parametrize("vector", [["x", 1.0], [None], [[0.5]], [1e39]])
async def test_an_embedding_that_is_not_numbers_is_a_502(
    make_gateway: GatewayFactory, vector: list[object]
) -> None:
    # the SDK asks for base64; a provider's answer in numbers is packed by the gateway,
    # and one that cannot be packed is the provider's fault, not a 500
    gw = await make_gateway()
    data = [{"object": "embedding", "index": 0, "embedding": vector}]
    gw.upstream.script.append(Reply(body={"object": "list", "data": data, "model": "m"}))
    async with client(gw) as c:
        with pytest.raises(openai.InternalServerError) as caught:
            await c.embeddings.create(model="text-embedding-3-small", input="a")
    assert caught.value.status_code == 502
    assert "not a list of numbers" in caught.value.message


async def test_mock_provider_through_the_sdk(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with client(gw) as c:
        resp = await c.chat.completions.create(model="mock", messages=MESSAGES)
        text = resp.choices[0].message.content
        assert text == "This is a mock response from aigateway. You said: Say hello"
        stream = await c.chat.completions.create(model="mock", messages=MESSAGES, stream=True)
        streamed = "".join([ch.choices[0].delta.content or "" async for ch in stream])
        assert streamed == text
        emb = await c.embeddings.create(model="mock", input="hello")
        assert len(emb.data[0].embedding) == 16
        as_floats = await c.embeddings.create(model="mock", input="hello", encoding_format="float")
        # base64 carries float32: equal to the float list up to float32 precision
        assert emb.data[0].embedding == pytest.approx(as_floats.data[0].embedding, abs=1e-6)
        with pytest.raises(openai.RateLimitError):
            await c.chat.completions.create(
                model="mock", messages=[{"role": "user", "content": "[mock:status=429]"}]
            )
    assert gw.upstream.calls == 0


# --- errors, as the SDK sees them ----------------------------------------------------------


@pytest.mark.parametrize("key", ["", "nope", "aig-expired-key-123456", "aig-disabled-key-123456"])
async def test_bad_keys_get_authentication_error(make_gateway: GatewayFactory, key: str) -> None:
    gw = await make_gateway()
    async with client(gw, key or "x") as c:
        with pytest.raises(openai.AuthenticationError) as info:
            await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert gw.upstream.calls == 0


async def test_all_bad_key_cases_look_identical(make_gateway: GatewayFactory) -> None:
    import aiohttp

    gw = await make_gateway()
    bodies = set()
    async with aiohttp.ClientSession() as s:
        for headers in [
            {},
            {"Authorization": "Bearer"},
            {"Authorization": "Basic abc"},
            {"Authorization": "Bearer nope"},
            {"x-api-key": "nope"},
            {"Authorization": "Bearer aig-expired-key-123456"},
            {"Authorization": "Bearer aig-disabled-key-123456"},
            {"Authorization": "Bearer " + "k" * 4_000},
        ]:
            async with s.post(
                gw.url + "/chat/completions",
                headers=headers,
                json={"model": "gpt-4o", "messages": MESSAGES},
            ) as resp:
                assert resp.status == 401
                bodies.add(await resp.read())
    assert len(bodies) == 1


async def test_x_api_key_header_is_accepted(make_gateway: GatewayFactory) -> None:
    import aiohttp

    gw = await make_gateway()
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.url + "/chat/completions",
            headers={"x-api-key": KEY},
            json={"model": "gpt-4o", "messages": MESSAGES},
        ) as resp,
    ):
        assert resp.status == 200


async def test_model_errors(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with client(gw) as c:
        with pytest.raises(openai.NotFoundError) as nf:
            await c.chat.completions.create(model="no-such-model", messages=MESSAGES)
        assert nf.value.code == "model_not_found"
        with pytest.raises(openai.PermissionDeniedError) as pd:
            await c.chat.completions.create(model="secret", messages=MESSAGES)
        assert pd.value.code == "model_not_allowed"
    assert gw.upstream.calls == 0


async def test_schema_error_is_bad_request(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with client(gw) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "robot", "content": "x"}],  # type: ignore[misc,list-item]
            )
    assert info.value.param == "messages[0].role"


@pytest.mark.parametrize(
    ("reply", "exc_type", "status"),
    [
        (
            Reply(429, error_body("slow down", "rate_limit_error"), {"retry-after": "3"}),
            openai.RateLimitError,
            429,
        ),
        (
            Reply(400, error_body("bad temperature", param_free := "invalid_request_error")),
            openai.BadRequestError,
            400,
        ),
        (Reply(422, error_body("unprocessable")), openai.UnprocessableEntityError, 422),
        (Reply(500, error_body("boom", "server_error")), openai.InternalServerError, 502),
        (Reply(503, {"unexpected": "shape"}), openai.InternalServerError, 502),
        (
            Reply(401, error_body(f"Incorrect API key provided: {PROVIDER_SECRET}")),
            openai.InternalServerError,
            502,
        ),
    ],
)
async def test_upstream_errors_map_to_sdk_exceptions(
    make_gateway: GatewayFactory, reply: Reply, exc_type: type[Exception], status: int
) -> None:
    gw = await make_gateway()
    gw.upstream.script.append(reply)
    async with client(gw) as c:
        with pytest.raises(exc_type) as info:
            await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    err = info.value
    assert isinstance(err, openai.APIStatusError)
    assert err.status_code == status
    assert PROVIDER_SECRET not in str(err.body) and "SECRET" not in str(err.response.headers)
    assert PROVIDER_SECRET not in gw.log.getvalue()
    if status == 429:
        assert err.response.headers["retry-after"] == "3"


async def test_upstream_timeout_is_504(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    gw.upstream.script.append(Reply(body={}, delay=3))  # read_s is 2 in the test config
    async with client(gw) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.status_code == 504
    assert info.value.code == "upstream_timeout"


async def test_unreachable_upstream_is_502(make_gateway: GatewayFactory, dead_port: int) -> None:
    from tests.conftest import gateway_yaml

    gw = await make_gateway(yaml_text=gateway_yaml(f"http://127.0.0.1:{dead_port}/v1"))
    async with client(gw) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.status_code == 502
    assert info.value.code == "upstream_connect_error"


# --- fallback ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        Reply(503, error_body("overloaded", "server_error")),
        Reply(429, error_body("slow down", "rate_limit_error")),
        Reply(401, error_body("bad key")),
        Reply(drop="before"),
    ],
)
async def test_fallback_to_the_next_target(make_gateway: GatewayFactory, failure: Reply) -> None:
    gw = await make_gateway()
    gw.upstream.script.append(failure)
    async with client(gw) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="with-backup", messages=MESSAGES
        )
    assert raw.parse().choices[0].message.content == "Hello!"
    assert raw.headers["x-aigateway-provider"] == "backup"
    assert raw.headers["x-aigateway-attempts"] == "2"
    assert [s.body["model"] for s in gw.upstream.seen] == ["primary-model", "backup-model"]


async def test_no_fallback_for_the_callers_own_mistake(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    gw.upstream.script.append(Reply(400, error_body("bad param")))
    async with client(gw) as c:
        with pytest.raises(openai.BadRequestError):
            await c.chat.completions.create(model="with-backup", messages=MESSAGES)
    assert gw.upstream.calls == 1


async def test_all_targets_failing_says_do_not_retry(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    gw.upstream.script += [Reply(503, error_body("a")), Reply(503, error_body("b"))]
    async with client(gw) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.chat.completions.create(model="with-backup", messages=MESSAGES)
    assert info.value.response.headers["x-should-retry"] == "false"
    assert info.value.response.headers["x-aigateway-attempts"] == "2"
    assert gw.upstream.calls == 2


async def test_stream_falls_back_before_the_first_byte(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    gw.upstream.script.append(Reply(events=[b"not json"]))  # broken before any chunk
    async with client(gw) as c:
        stream = await c.chat.completions.create(
            model="with-backup", messages=MESSAGES, stream=True
        )
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream])
    assert text == "Hello!"
    assert gw.upstream.calls == 2


async def test_stream_broken_after_first_byte_ends_with_error_and_no_done(
    make_gateway: GatewayFactory,
) -> None:
    import aiohttp

    gw = await make_gateway()
    gw.upstream.script.append(Reply(events=chunk_events(), drop="mid"))
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.url + "/chat/completions",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "with-backup", "messages": MESSAGES, "stream": True},
        ) as resp,
    ):
        text = (await resp.read()).decode()
    assert "[DONE]" not in text
    assert '"error"' in text.split("\n\n")[-2]
    assert gw.upstream.calls == 1  # no retry once bytes reached the caller
    async with client(gw) as c:
        gw.upstream.script.append(Reply(events=chunk_events(), drop="mid"))
        stream = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass


async def test_completion_body_is_forwarded_unchanged(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    body = completion(text="exact", prompt=5, completion=1)
    body["choices"][0]["message"]["annotations"] = []
    gw.upstream.script.append(Reply(body=body))
    async with client(gw) as c:
        raw = await c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.http_response.json() == body
