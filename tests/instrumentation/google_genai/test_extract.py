"""The pure mapping from ``google.genai.types`` objects and request arguments to telemetry,
for the shapes the fake server does not produce (tool-use prompts, Vertex AI statistics)."""

from __future__ import annotations

import pytest
from google.genai import types

from tollmeter.instrumentation._telemetry import Usage
from tollmeter.instrumentation.google_genai import extract


def test_every_part_of_gemini_usage_lands_in_its_bucket() -> None:
    metadata = types.GenerateContentResponseUsageMetadata(
        prompt_token_count=1000,
        cached_content_token_count=600,
        tool_use_prompt_token_count=40,
        candidates_token_count=70,
        thoughts_token_count=30,
        total_token_count=1140,
    )
    usage = extract.usage_from_metadata(metadata)
    assert usage == Usage(
        input_tokens=1040,
        output_tokens=100,
        cache_read_input_tokens=600,
        reasoning_output_tokens=30,
    )
    # Nothing is lost or counted twice: the buckets add up to Gemini's own total.
    assert usage.input_tokens + usage.output_tokens == metadata.total_token_count


def test_a_response_without_usage_yields_none() -> None:
    assert extract.usage_from_metadata(None) is None
    assert extract.generate_outcome(types.GenerateContentResponse()).usage is None


def test_vertex_embedding_statistics_are_the_input() -> None:
    response = types.EmbedContentResponse(
        embeddings=[
            types.ContentEmbedding(
                values=[0.1], statistics=types.ContentEmbeddingStatistics(token_count=5.0)
            ),
            types.ContentEmbedding(
                values=[0.2], statistics=types.ContentEmbeddingStatistics(token_count=7.0)
            ),
        ]
    )
    assert extract.embed_outcome(response).usage == Usage(input_tokens=12)
    partial = types.EmbedContentResponse(
        embeddings=[*(response.embeddings or []), types.ContentEmbedding(values=[0.3])]
    )
    # One embedding without a count: the sum would be short, so the input is estimated.
    assert extract.embed_outcome(partial).usage is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("gemini-2.5-flash", "gemini-2.5-flash"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("projects/p/locations/l/publishers/google/models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("tunedModels/my-model-42", "tunedModels/my-model-42"),
        ("", None),
    ],
)
def test_model_is_named_by_its_id(given: str, expected: str | None) -> None:
    assert extract.model_id(given) == expected


def test_input_estimate_reads_every_shape_of_contents() -> None:
    text = "the quick brown fox"
    shapes = [
        text,
        [text],
        types.Part(text=text),
        types.Content(role="user", parts=[types.Part(text=text)]),
        [{"role": "user", "parts": [{"text": text}]}],
    ]
    counts = {
        extract.contents_input_estimate({"contents": s}, "gemini-2.0-flash")() for s in shapes
    }
    assert counts == {4}
    image = types.Part(inline_data=types.Blob(data=b"\x89PNG", mime_type="image/png"))
    with_image = extract.contents_input_estimate({"contents": [text, image]}, "gemini-2.0-flash")
    assert with_image() > 4
    config = types.GenerateContentConfig(system_instruction="Be brief.")
    with_system = extract.contents_input_estimate(
        {"contents": text, "config": config}, "gemini-2.0-flash"
    )
    assert with_system() > 4
