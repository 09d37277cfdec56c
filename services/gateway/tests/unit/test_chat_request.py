import orjson
import pytest

from leaky_common.errors import InvalidRequest, PayloadTooLarge
from lt_gateway.domain.requests import ParsedRequest, load_body, parse_chat


def parse_chat_request(raw: bytes, max_bytes: int) -> ParsedRequest:
    return parse_chat(load_body(raw, max_bytes))


def parse(body: object, max_bytes: int = 10_000) -> ParsedRequest:
    return parse_chat_request(orjson.dumps(body), max_bytes)


def prompt_digest(model: str, messages: list[dict[str, str]]) -> bytes:
    return parse({"model": model, "messages": messages}).digest


def test_minimal_request_is_accepted_and_passes_unknown_fields_through() -> None:
    chat = parse({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2})
    assert chat.model == "mock-gpt"
    assert chat.stream is False
    assert chat.max_output_tokens is None
    assert chat.body["temperature"] == 0.2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"content": "no role"}]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user"}], "max_tokens": "10"}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user"}], "stream": "yes"}, "stream"),
        ({"model": "m", "messages": [{"role": "user"}], "n": 0}, "n"),
        ({"model": "m", "messages": [{"role": "user"}], "n": 129}, "n"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0]",
        ),
        ({"model": "m", "messages": [{"role": "user"}], "modalities": ["text", "audio"]}, "modalities"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
        ),
        ({"model": "m", "messages": [{"role": "user"}], "tools": {}}, "tools"),
        ({"model": "m", "messages": [{"role": "user"}], "best_of": 2}, "best_of"),
        ({"model": "m", "messages": [{"role": "user", "content": 3}]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "user"}], "temperature": 3}, "temperature"),
        ({"model": "m", "messages": [{"role": "user"}], "stream_options": 1}, "stream_options"),
    ],
)
def test_invalid_requests_name_the_parameter(body: object, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse(body)
    assert err.value.param == param
    assert err.value.status == 400


def test_non_json_and_non_object_bodies_are_400() -> None:
    with pytest.raises(InvalidRequest):
        parse_chat_request(b"{not json", 100)
    with pytest.raises(InvalidRequest):
        parse_chat_request(b"[1, 2]", 100)


def test_oversized_body_is_413() -> None:
    with pytest.raises(PayloadTooLarge) as err:
        parse({"model": "m", "messages": [{"role": "user", "content": "x" * 200}]}, max_bytes=100)
    assert err.value.status == 413


def test_max_completion_tokens_takes_precedence_and_stream_usage_flag() -> None:
    chat = parse(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 7,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert chat.max_output_tokens == 7
    assert chat.max_tokens_field == "max_completion_tokens"
    assert chat.include_usage is True


def test_prompt_digest_is_stable_and_text_free() -> None:
    messages = [{"role": "user", "content": "secret prompt text"}]
    a = prompt_digest("m", messages)
    assert a == prompt_digest("m", [dict(messages[0])])
    assert a != prompt_digest("m", [{"role": "user", "content": "other"}])
    assert b"secret" not in a
