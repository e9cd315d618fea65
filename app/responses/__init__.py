"""The Responses API (`POST /v1/responses`) on the chat path's pipeline.

`protocol` holds its wire models; `translate` turns a request into the ChatCompletionRequest the
chat path takes and a chat answer back into a Response; `events` renders the pipeline's stream
events as Responses stream events; `service` ties them to ChatService. Nothing below app/ knows
which API asked.
"""
