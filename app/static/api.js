// The API as any client sees it (docs/api.md): its error shape, Bearer keys, and a chat
// completion streamed as Server-Sent Events. URLs are relative to the page.

/** An error as the API returned it: {"error": {"message", "type", "param", "code"}}. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = body && typeof body.error === "object" && body.error !== null ? body.error : {};
    super(error.message || `HTTP ${status}`);
    this.status = status; // null for an error event in the middle of a stream
    this.type = error.type || null;
    this.code = error.code || null;
  }

  toString() {
    const head = [this.status, this.type].filter((part) => part !== null).join(" ");
    return head ? `${head}: ${this.message}` : this.message;
  }
}

async function apiError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's error page, say): the status alone says what happened.
  }
  return new ApiError(response.status, body);
}

function headers(key) {
  const result = { "Content-Type": "application/json" };
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

export async function getJSON(url, key, signal) {
  const response = await fetch(url, { headers: headers(key), signal });
  if (!response.ok) throw await apiError(response);
  return response.json();
}

/** The data of each Server-Sent Event of `body`, until `data: [DONE]`. */
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the stream ended before data: [DONE]");
      buffer += value;
      const events = buffer.split(/\r?\n\r?\n/);
      buffer = events.pop(); // an event is complete only once its blank line has come
      for (const event of events) {
        const data = event.split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data === "[DONE]") return;
        if (data) yield data;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * POST v1/chat/completions with `stream: true`; yields each chat.completion.chunk. A refused
 * request throws its ApiError before the first chunk, an error event in the stream its own.
 */
export async function* streamChat(request, key, signal) {
  const response = await fetch("v1/chat/completions", {
    method: "POST",
    headers: headers(key),
    body: JSON.stringify({ ...request, stream: true }),
    signal,
  });
  if (!response.ok) throw await apiError(response);
  for await (const data of sseData(response.body)) {
    const chunk = JSON.parse(data);
    if (chunk.error) throw new ApiError(null, chunk);
    yield chunk;
  }
}
