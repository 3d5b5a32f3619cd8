"""Loopback stand-ins for OpenAI's Batch API and Anthropic's Message Batches.

Every request body is checked against the official SDK's request types (strictly: no unknown key,
every element of every list), and every answer is built with the SDK's response models, so the
batch client is tested against the shapes the real services speak. A job answers each request with
``"answer to CUSTOM_ID"``, or an error for the ids in ``fail``; it ends on the second poll.
"""

from __future__ import annotations

import email.parser
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.providers.sdk_types import check


class FakeBatchAPI:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.requests: list[dict[str, Any]] = []
        """Every request line (OpenAI) or request (Anthropic) received, in order."""
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.fail: set[str] = set()
        self.expire: bool = False
        self.hold: bool = False
        """Jobs stay in progress while set (a run that is stopped while it waits)."""
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer(fake.get(self.path))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    self._answer(fake.post(self.path, self.headers.get("Content-Type", ""), body))
                except AssertionError as exc:
                    fake.problems.append(str(exc))
                    self._answer((400, {"error": {"message": str(exc)[:500]}}))

            def _answer(self, reply: tuple[int, Any]) -> None:
                status, payload = reply
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- OpenAI -------------------------------------------------------------------------------

    def post(self, path: str, content_type: str, body: bytes) -> tuple[int, Any]:
        if path == "/v1/files":
            return self._upload(content_type, body)
        if path == "/v1/batches":
            return self._create_openai(json.loads(body))
        if path == "/v1/messages/batches":
            return self._create_anthropic(json.loads(body))
        if path.startswith("/v1beta/models/") and path.endswith(":batchGenerateContent"):
            return self._create_gemini(path.split("/")[-1].split(":")[0], json.loads(body))
        return 404, {"error": {"message": f"no route {path}"}}

    def _upload(self, content_type: str, body: bytes) -> tuple[int, Any]:
        from openai.types import FileObject
        from openai.types.chat import completion_create_params

        message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        assert message.is_multipart(), "the upload is not multipart/form-data"
        fields = {part.get_param("name", header="content-disposition"): part for part in message.get_payload()}
        assert fields["purpose"].get_payload(decode=True) == b"batch", "purpose must be batch"
        data = fields["file"].get_payload(decode=True)
        assert data.endswith(b"\n"), "a JSONL file ends with a newline"
        for line in data.splitlines():
            item = json.loads(line)
            assert set(item) == {"custom_id", "method", "url", "body"}, f"a batch line has {sorted(item)}"
            assert item["method"] == "POST" and item["url"] == "/v1/chat/completions"
            check(item["body"], completion_create_params.CompletionCreateParamsNonStreaming)
            with self.lock:
                self.requests.append(item)
        file_id = f"file-{len(self.files)}"
        self.files[file_id] = data
        obj = FileObject(
            id=file_id,
            bytes=len(data),
            created_at=int(time.time()),
            filename="batch.jsonl",
            object="file",
            purpose="batch",
            status="processed",
        )
        return 200, obj.model_dump(mode="json")

    def _create_openai(self, body: dict[str, Any]) -> tuple[int, Any]:
        from openai.types import Batch, batch_create_params

        check(body, batch_create_params.BatchCreateParams)
        assert body["input_file_id"] in self.files, "the batch names a file never uploaded"
        job_id = f"batch_{len(self.jobs)}"
        job = Batch(
            id=job_id,
            object="batch",
            endpoint=body["endpoint"],
            input_file_id=body["input_file_id"],
            completion_window="24h",
            status="validating",
            created_at=int(time.time()),
        ).model_dump(mode="json")
        self.jobs[job_id] = job
        return 200, job

    def _openai_poll(self, job_id: str) -> tuple[int, Any]:
        from openai.types import Batch

        job = self.jobs[job_id]
        self.polls[job_id] = self.polls.get(job_id, 0) + 1
        if self.polls[job_id] == 1 or self.hold:
            job["status"] = "in_progress"
        elif job["status"] == "in_progress":
            job.update(self._openai_results(job))
        return 200, Batch.model_validate(job).model_dump(mode="json")

    def _openai_results(self, job: dict[str, Any]) -> dict[str, Any]:
        from openai.types.chat import ChatCompletion

        if self.expire:
            return {"status": "expired"}
        out, errors = [], []
        for line in self.files[job["input_file_id"]].splitlines():
            item = json.loads(line)
            cid = item["custom_id"]
            if cid in self.fail:
                body = {"error": {"message": f"refused {cid}", "type": "invalid_request_error"}}
                errors.append({"id": f"r-{cid}", "custom_id": cid, "response": {"status_code": 400, "body": body}})
                continue
            completion = ChatCompletion.model_validate(
                {
                    "id": f"chatcmpl-{cid}",
                    "object": "chat.completion",
                    "created": 1,
                    "model": item["body"]["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"answer to {cid}"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 4, "total_tokens": 104},
                }
            )
            response = {"status_code": 200, "request_id": "req", "body": completion.model_dump(mode="json")}
            out.append({"id": f"r-{cid}", "custom_id": cid, "response": response, "error": None})
        done: dict[str, Any] = {"status": "completed"}
        for key, lines in (("output_file_id", out), ("error_file_id", errors)):
            if lines:
                file_id = f"file-{len(self.files)}"
                self.files[file_id] = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
                done[key] = file_id
        return done

    # --- Anthropic ----------------------------------------------------------------------------

    def _create_anthropic(self, body: dict[str, Any]) -> tuple[int, Any]:
        from anthropic.types.messages import MessageBatch, batch_create_params

        check(body, batch_create_params.BatchCreateParams)
        with self.lock:
            self.requests.extend(body["requests"])
        job_id = f"msgbatch_{len(self.jobs)}"
        counts = {"processing": len(body["requests"]), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        job = MessageBatch(
            id=job_id,
            type="message_batch",
            processing_status="in_progress",
            request_counts=counts,
            created_at="2025-01-01T00:00:00Z",
            expires_at="2025-01-02T00:00:00Z",
        ).model_dump(mode="json")
        job["_requests"] = body["requests"]
        self.jobs[job_id] = job
        return 200, {k: v for k, v in job.items() if not k.startswith("_")}

    def _anthropic_poll(self, job_id: str) -> tuple[int, Any]:
        from anthropic.types.messages import MessageBatch

        job = self.jobs[job_id]
        self.polls[job_id] = self.polls.get(job_id, 0) + 1
        if self.polls[job_id] >= 2 and not self.hold:
            job.update(
                processing_status="ended",
                ended_at="2025-01-01T01:00:00Z",
                results_url=f"{self.base}/v1/messages/batches/{job_id}/results",
            )
        public = {k: v for k, v in job.items() if not k.startswith("_")}
        return 200, MessageBatch.model_validate(public).model_dump(mode="json")

    def _anthropic_results(self, job_id: str) -> bytes:
        from anthropic.types.messages import MessageBatchIndividualResponse

        lines = []
        for request in self.jobs[job_id]["_requests"]:
            cid = request["custom_id"]
            if cid in self.fail:
                result: dict[str, Any] = {
                    "type": "errored",
                    "error": {"type": "error", "error": {"type": "invalid_request_error", "message": f"refused {cid}"}},
                }
            elif self.expire:
                result = {"type": "expired"}
            else:
                message = {
                    "id": f"msg_{cid}",
                    "type": "message",
                    "role": "assistant",
                    "model": request["params"]["model"],
                    "content": [{"type": "text", "text": f"answer to {cid}"}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 100, "output_tokens": 4},
                }
                result = {"type": "succeeded", "message": message}
            item = MessageBatchIndividualResponse.model_validate({"custom_id": cid, "result": result})
            lines.append(json.dumps(item.model_dump(mode="json", exclude_none=True)).encode() + b"\n")
        return b"".join(lines)

    # --- Gemini -------------------------------------------------------------------------------

    def _create_gemini(self, model: str, body: dict[str, Any]) -> tuple[int, Any]:
        from google.genai import types

        assert set(body) == {"batch"} and set(body["batch"]) <= {"displayName", "inputConfig"}, sorted(body)
        config = body["batch"]["inputConfig"]
        assert set(config) == {"requests"} and set(config["requests"]) == {"requests"}, sorted(config)
        requests = config["requests"]["requests"]
        for item in requests:
            assert set(item) == {"request", "metadata"}, sorted(item)
            request = item["request"]
            assert set(request) <= {"contents", "system_instruction", "generationConfig"}, sorted(request)
            for content in request["contents"]:
                types.Content.model_validate_json(json.dumps(content))
            if "generationConfig" in request:
                types.GenerationConfig.model_validate_json(json.dumps(request["generationConfig"]))
            with self.lock:
                self.requests.append(item)
        name = f"batches/{len(self.jobs)}"
        job = {"name": name, "metadata": {"model": f"models/{model}", "state": "BATCH_STATE_PENDING"}}
        self.jobs[name] = {**job, "_requests": requests}
        return 200, self._gemini_checked(job)

    def _gemini_poll(self, name: str) -> tuple[int, Any]:
        from google.genai import types

        job = self.jobs[name]
        self.polls[name] = self.polls.get(name, 0) + 1
        if self.polls[name] >= 2 and not self.hold:
            responses = []
            for item in job["_requests"]:
                cid = item["metadata"]["key"]
                if cid in self.fail:
                    error = {"code": 400, "message": f"refused {cid}"}
                    responses.append({"error": error, "metadata": {"key": cid}})
                    continue
                response = {
                    "candidates": [
                        {"content": {"role": "model", "parts": [{"text": f"answer to {cid}"}]}, "finishReason": "STOP"}
                    ],
                    "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 4, "totalTokenCount": 104},
                }
                types.GenerateContentResponse.model_validate(response)
                responses.append({"response": response, "metadata": {"key": cid}})
            job["metadata"] = {
                **job["metadata"],
                "state": "BATCH_STATE_SUCCEEDED",
                "output": {"inlinedResponses": {"inlinedResponses": responses}},
            }
        return 200, self._gemini_checked({k: v for k, v in job.items() if not k.startswith("_")})

    @staticmethod
    def _gemini_checked(job: dict[str, Any]) -> dict[str, Any]:
        """The job as the Gemini API writes it, read back by the SDK's own reader into its ``BatchJob``."""
        from google.genai import batches, types

        read = types.BatchJob.model_validate(batches._BatchJob_from_mldev(json.loads(json.dumps(job))))
        assert read.name == job["name"] and read.state is not None
        return job

    # --- reads --------------------------------------------------------------------------------

    def get(self, path: str) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "batches"] and len(parts) == 3:
            return self._openai_poll(parts[2])
        if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "content":
            return 200, self.files[parts[2]]
        if parts[:3] == ["v1", "messages", "batches"] and len(parts) == 4:
            return self._anthropic_poll(parts[3])
        if parts[:3] == ["v1", "messages", "batches"] and len(parts) == 5 and parts[4] == "results":
            return 200, self._anthropic_results(parts[3])
        if parts[:2] == ["v1beta", "batches"] and len(parts) == 3:
            return self._gemini_poll(f"batches/{parts[2]}")
        return 404, {"error": {"message": f"no route {path}"}}
