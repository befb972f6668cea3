"""A small chat-completions server for the OpenAIChat tests, on a free loopback port.

It answers each POST /v1/chat/completions with the next queued response and records what it
received. With nothing queued it answers like a model would: a tool call for the first tool
offered while the conversation has no tool result yet, then a text answer.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Queued:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def completion(
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    *,
    finish_reason: str | None = None,
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
    model: str = "test-model-2024",
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def function_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


class ChatServer:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.queue: list[Queued] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with server._lock:
                    server.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    queued = server.queue.pop(0) if server.queue else None
                if self.path != "/v1/chat/completions":
                    queued = Queued(404, {"error": {"message": f"no route {self.path}"}})
                if queued is None:
                    queued = Queued(200, server.default_reply(body))
                data = queued.body
                if not isinstance(data, bytes):
                    data = json.dumps(data).encode()
                self.send_response(queued.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in queued.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output quiet

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def default_reply(self, body: dict[str, Any]) -> dict[str, Any]:
        answered = any(m["role"] == "tool" for m in body["messages"])
        tools = body.get("tools") or []
        if tools and not answered:
            name = tools[0]["function"]["name"]
            return completion(tool_calls=[function_call("call_auto", name, '{"query": "auto"}')])
        return completion("done")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
