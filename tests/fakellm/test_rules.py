"""The deterministic rules behind the server: prompt cache, reply vocabulary, JSON values."""

from __future__ import annotations

import pytest
import tiktoken

from tollmeter.fakellm._cache import PrefixCache
from tollmeter.fakellm._text import VOCABULARY, Seed, json_instance, words


def test_openai_cache_steps_and_models_are_separate():
    cache = PrefixCache()
    prompt = list(range(1300))
    assert cache.openai("gpt-4o", prompt).read == 0
    assert cache.openai("gpt-4o", prompt).read == 1280
    assert cache.openai("gpt-4.1", prompt).read == 0
    longer = [*prompt, *range(5000, 5400)]
    assert cache.openai("gpt-4o", longer).read == 1280
    assert cache.openai("gpt-4o", longer).read == 1664
    diverging = [*prompt[:1100], *range(9000, 9300)]
    assert cache.openai("gpt-4o", diverging).read == 1024
    assert cache.openai("gpt-4o", prompt[:1023]).read == 0


def test_anthropic_breakpoints_read_the_longest_known_prefix():
    cache = PrefixCache()
    tokens = list(range(3000))
    first = cache.anthropic("claude", tokens, [(1500, "5m")])
    assert (first.read, first.written) == (0, 1500)
    second = cache.anthropic("claude", tokens, [(1500, "5m"), (2500, "5m")])
    assert (second.read, second.written) == (1500, 1000)
    third = cache.anthropic("claude", tokens, [(1500, "5m"), (2500, "5m")])
    assert (third.read, third.written) == (2500, 0)
    assert cache.anthropic("claude", tokens, [(100, "5m"), (1000, "5m")]).written == 0


def test_anthropic_writes_take_the_ttl_of_their_breakpoint():
    cache = PrefixCache()
    tokens = list(range(4000))
    result = cache.anthropic("claude", tokens, [(1200, "1h"), (3000, "5m")])
    assert (result.read, result.written, result.written_1h) == (0, 3000, 1200)
    again = cache.anthropic("claude", tokens, [(1200, "1h"), (3000, "5m"), (3900, "5m")])
    assert (again.read, again.written, again.written_1h) == (3000, 900, 0)


def test_cache_is_bounded():
    cache = PrefixCache(max_entries=3)
    prompts = [[n] * 1024 for n in range(5)]
    for prompt in prompts:
        cache.openai("m", prompt)
    assert cache.openai("m", prompts[0]).read == 0
    assert cache.openai("m", prompts[4]).read == 1024


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base", "p50k_base"])
def test_every_reply_word_is_one_token(encoding):
    enc = tiktoken.get_encoding(encoding)
    for word in VOCABULARY:
        assert len(enc.encode(f" {word}")) == 1
        assert len(enc.encode(word.capitalize())) == 1
    text = "".join(words(Seed("any"), 500))
    assert len(enc.encode(text)) == 500


def test_json_instances_follow_the_schema():
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "size": {"type": "integer"},
            "ratio": {"type": "number"},
            "ok": {"type": "boolean"},
            "kind": {"enum": ["a", "b"]},
            "fixed": {"const": 7},
            "maybe": {"type": ["null", "string"]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "child": {"$ref": "#/$defs/Child"},
            "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        },
        "$defs": {"Child": {"type": "object", "properties": {"id": {"type": "integer"}}}},
    }
    value = json_instance(schema, Seed("x"))
    assert isinstance(value["name"], str)
    assert isinstance(value["size"], int)
    assert isinstance(value["ratio"], float)
    assert isinstance(value["ok"], bool)
    assert value["kind"] in ("a", "b")
    assert value["fixed"] == 7
    assert isinstance(value["maybe"], str)
    assert len(value["tags"]) == 2
    assert isinstance(value["child"]["id"], int)
    assert isinstance(value["either"], int)
    assert json_instance(schema, Seed("x")) == value


def test_recursive_schemas_terminate():
    schema = {"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object", "properties": {}}}}
    schema["$defs"]["Node"]["properties"]["next"] = {"$ref": "#/$defs/Node"}
    value = json_instance(schema, Seed("loop"))
    depth = 0
    while value:
        value = value["next"]
        depth += 1
    assert depth <= 8
