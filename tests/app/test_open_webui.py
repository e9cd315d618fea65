"""Open WebUI's chat page, replayed: the request shapes it sends (recorded from Open WebUI 0.12.4,
issue 16) reach a service with default settings and get answers.

The chat page sends its builtin tools with every message (about 30 function definitions), and
after an answer asks for a title and tags (`stream: false`, `max_tokens: 1000`)."""

from __future__ import annotations

import json
from typing import Any

from tests.app.tool_service import Service, service_fixture  # noqa: F401 (the `service` fixture)
from tests.fakes import MODEL

# Shaped like Open WebUI's builtin tools: names, descriptions, JSON-schema parameters.
_BUILTIN = [
    ("get_current_timestamp", {}),
    ("calculate_timestamp", {"days_ago": "integer", "weeks_ago": "integer", "months_ago": "integer"}),
    ("search_web", {"query": "string", "count": "integer"}),
    ("fetch_url", {"url": "string"}),
    ("list_knowledge_bases", {"count": "integer", "skip": "integer"}),
    ("search_knowledge_bases", {"query": "string", "count": "integer"}),
    ("query_knowledge_bases", {"query": "string", "count": "integer"}),
    ("search_knowledge_files", {"query": "string", "knowledge_id": "string"}),
    ("query_knowledge_files", {"query": "string", "knowledge_ids": "array"}),
    ("view_knowledge_file", {"file_id": "string"}),
    ("view_file", {"file_id": "string"}),
    ("search_notes", {"query": "string", "count": "integer"}),
    ("view_note", {"note_id": "string"}),
    ("write_note", {"title": "string", "content": "string"}),
    ("replace_note_content", {"note_id": "string", "content": "string"}),
    ("search_chats", {"query": "string", "count": "integer"}),
    ("view_chat", {"chat_id": "string"}),
    ("search_memories", {"query": "string", "count": "integer"}),
    ("add_memory", {"content": "string"}),
    ("replace_memory_content", {"memory_id": "string", "content": "string"}),
    ("delete_memory", {"memory_id": "string"}),
    ("list_memories", {}),
    ("generate_image", {"prompt": "string"}),
    ("edit_image", {"prompt": "string", "image_urls": "array"}),
    ("execute_code", {"code": "string", "language": "string"}),
    ("search_channels", {"query": "string"}),
    ("search_channel_messages", {"query": "string", "channel_id": "string"}),
    ("view_channel_message", {"message_id": "string"}),
    ("view_channel_thread", {"parent_message_id": "string"}),
    ("get_user_info", {}),
]
TOOLS = [{"type": "function", "function": {
    "name": name, "description": f"Builtin tool {name.replace('_', ' ')}.",
    "parameters": {"type": "object", "properties": {p: {"type": t, "description": p} for p, t in params.items()},
                   "required": list(params)[:1]}}} for name, params in _BUILTIN]

CHAT_PAGE: dict[str, Any] = {
    "model": MODEL, "stream": True, "stream_options": {"include_usage": True},
    "messages": [{"role": "user", "content": "Hi! What can you do?"}], "tools": TOOLS,
}
_HISTORY = "<chat_history>\nUSER: Hi! What can you do?\nASSISTANT: A plain answer.\n</chat_history>"
TASKS = [
    "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
    "### Output:\nJSON format: { \"title\": \"your concise title here\" }\n" + _HISTORY,
    "### Task:\nGenerate 1-3 broad tags categorizing the main themes of the chat history.\n"
    "### Output:\nJSON format: { \"tags\": [\"tag1\", \"tag2\", \"tag3\"] }\n" + _HISTORY,
    "### Task:\nSuggest 3-5 relevant follow-up questions.\n"
    "### Output:\nJSON format: { \"follow_ups\": [\"Question 1?\"] }\n" + _HISTORY,
]


async def test_the_chat_page_and_its_follow_up_requests_get_answers(service: Service) -> None:
    async with service() as running:  # default settings: no tool-call parsing
        client, model = running.http, running.model
        async with client.stream("POST", "/v1/chat/completions", json=CHAT_PAGE) as response:
            assert response.status_code == 200, await response.aread()
            events = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert not any("error" in c for c in chunks)
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
        assert chunks[-1]["usage"]["total_tokens"] > 0
        for task in TASKS:
            response = await client.post("/v1/chat/completions", json={
                "model": MODEL, "stream": False, "max_tokens": 1000,
                "messages": [{"role": "user", "content": task}]})
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"]
    assert all(len(body["tools"]) == len(TOOLS) for body in model.bodies[:3])
