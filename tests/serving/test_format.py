"""The aggregation format, pinned byte for byte to the reference (../shared/aft-paper.md)."""

from serving.format import (
    AGGREGATION_TEMPLATE,
    AggregationFormat,
    aggregation_system,
    aggregator_messages,
    proposer_messages,
    split_system,
)

# Copied from the paper notes / reference code, independently of serving/format.py.
REFERENCE_TEMPLATE = "You are a helpful aggregator.\nYou have been provided with a set of responses from various open-source models to the latest user query. Your task is to synthesize these responses into a single, high-quality response. It is crucial to critically evaluate the information provided in these responses, recognizing that some of it may be biased or incorrect. Your response should not simply replicate the given answers but should offer a refined, accurate, and comprehensive reply to the instruction. Ensure your response is well-structured, coherent, and adheres to the highest standards of accuracy and reliability.\n    \n    Responses from models:"  # noqa: E501


def test_template_is_the_reference_bytes() -> None:
    assert AGGREGATION_TEMPLATE == REFERENCE_TEMPLATE
    assert AGGREGATION_TEMPLATE.encode().count(b"\n    \n    Responses from models:") == 1


def test_aggregator_system_numbers_proposals_after_one_newline() -> None:
    assert aggregation_system(["alpha", "beta\nmore"]) == REFERENCE_TEMPLATE + "\n1. alpha\n2. beta\nmore"


def test_proposer_call_is_newline_system_then_conversation() -> None:
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "and?"}]
    assert proposer_messages(conversation) == [{"role": "system", "content": "\n"}, *conversation]


def test_aggregator_call_keeps_whole_history() -> None:
    conversation = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                    {"role": "user", "content": "q2"}]
    messages = aggregator_messages(conversation, ["p1", "p2"])
    assert messages[0] == {"role": "system", "content": REFERENCE_TEMPLATE + "\n1. p1\n2. p2"}
    assert messages[1:] == conversation


def test_client_system_prompt_is_folded_into_one_system_message() -> None:
    conversation = [{"role": "system", "content": "Answer in French."},
                    {"role": "developer", "content": "Be brief."},
                    {"role": "user", "content": "q"}]
    proposer = proposer_messages(conversation)
    aggregator = aggregator_messages(conversation, ["p"])
    for messages in (proposer, aggregator):
        assert [m["role"] for m in messages] == ["system", "user"]
    assert proposer[0]["content"] == "Answer in French.\n\nBe brief."
    assert aggregator[0]["content"] == "Answer in French.\n\nBe brief.\n\n" + REFERENCE_TEMPLATE + "\n1. p"


def test_split_system_only_takes_leading_system_messages() -> None:
    conversation = [{"role": "user", "content": "q"}, {"role": "system", "content": "late"}]
    assert split_system(conversation) == (None, conversation)


def test_conversation_first_is_the_proposer_prompt_then_the_drafts() -> None:
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q1"},
                    {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    for client in (conversation, conversation[1:]):
        messages = aggregator_messages(client, ["p1", "p2"], AggregationFormat.CONVERSATION_FIRST)
        assert messages[:-1] == proposer_messages(client)  # the cached prefix, byte for byte
        assert messages[-1] == {"role": "user", "content": REFERENCE_TEMPLATE + "\n1. p1\n2. p2"}
    assert aggregator_messages(conversation, ["p"]) == aggregator_messages(conversation, ["p"], AggregationFormat.PAPER)
