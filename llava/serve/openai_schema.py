"""The OpenAI chat-completions wire format: a request body checked field by field into what
ChatSession needs (history, question, at most one image), and the objects clients expect back.

Checked by hand rather than by a pydantic model so that every refusal names the
field in the request's own terms (`messages[2].content[0].image_url.url`) and
says what to do instead; the subset of the API is small enough to read in one go.

Rules where LLaVA-1.5 differs from a general chat model (docs/serving.md lists them):
- one image per conversation, given to the model with the first user turn,
  wherever it appears in the messages (LLaVA puts it first);
- system (and developer) messages at the start replace the template's system prompt
  (joined with a newline when there are several); the model was trained with the
  template's own, so answers may change.  Later in the conversation they are
  refused: the templates have one system prompt, at the top, and text-only;
  a template with no system prompt at all (plain) refuses them too;
- consecutive messages of the same role are joined with a newline;
- the literal "<image>" is removed from message text: it is LLaVA's placeholder
  for the image's tokens, and the image comes from an image_url part instead;
- parameters that would change the answer and are not implemented (n > 1, stop,
  tools, logprobs, a JSON response_format) are refused, not ignored; others
  (user, metadata, frequency_penalty, ...) are ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from llava.constants import DEFAULT_IMAGE_TOKEN

DEFAULT_TEMPERATURE = 1.0  # OpenAI's default when a request gives none
# Below this (and above 0) the logits divided by the temperature overflow float32 and sampling fails;
# the same bound under which vLLM samples greedily.  0 is the way to ask for greedy decoding.
MIN_TEMPERATURE = 1e-5
SEED_RANGE = (-2**63, 2**64 - 1)  # what torch.manual_seed takes
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_UTF8 = re.compile(rb"\xed[\xa0-\xbf]")
_LONG_NUMBER = re.compile(rb"-?\d{4000,}")


class APIError(Exception):
    """A request the server answers with `status` and OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param=None, code=None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, f"{param}: {message}" if param else message, param=param, code=code)


@dataclass
class ChatRequest:
    model: str
    question: str
    history: list[tuple[str, str]] = field(default_factory=list)
    image_url: str | None = None
    image_param: str | None = None  # where the image is, for messages about it
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float | None = None
    max_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False
    seed: int | None = None
    system: str | None = None  # None: the template's own system prompt


def parse_chat_request(body: bytes, max_tokens_cap: int) -> ChatRequest:
    data = _load_json(body)
    if not isinstance(data, dict):
        raise bad(f"the request body must be a JSON object, not {type(data).__name__}", code="invalid_json")
    if _may_hold_surrogates(body):  # else skip walking every string of a big body
        _refuse_surrogates(data)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad("required: the id of the model (see GET /v1/models)", "model", "missing_required_parameter")
    _refuse_unsupported(data)
    system, turns, image_url, image_param = _conversation(data.get("messages"))
    max_tokens = _max_tokens(data, max_tokens_cap)
    stream = _typed(data, "stream", bool, False)
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad("must be an object such as {\"include_usage\": true}", "stream_options")
    include_usage = _typed(options or {}, "include_usage", bool, False, "stream_options.include_usage")
    temperature = _number(data, "temperature", 0.0, 2.0, DEFAULT_TEMPERATURE)
    if 0 < temperature < MIN_TEMPERATURE:
        raise bad(f"{temperature!r} is too small to sample with (the scaled logits overflow); use 0 for greedy "
                  f"decoding, or at least {MIN_TEMPERATURE:g}", "temperature")
    top_p = _number(data, "top_p", 0.0, 1.0, None)
    if top_p is not None and top_p <= 0:
        raise bad("must be more than 0 and at most 1", "top_p")
    seed = _typed(data, "seed", int, None)
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise bad(f"must be an integer from -2**63 to 2**64-1, not one of {len(str(abs(seed)))} digits", "seed")
    history = [(turns[i][1], turns[i + 1][1]) for i in range(0, len(turns) - 1, 2)]
    return ChatRequest(model, turns[-1][1], history, image_url, image_param, temperature, top_p, max_tokens,
                       stream, include_usage, seed, system)


def _load_json(body: bytes):
    """The parsed body; JSON that Python's parser cannot take (too deep, too long a number) is a 400 too."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"the request body is not valid JSON ({exc})", code="invalid_json") from exc
    except RecursionError as exc:  # raised by the parser itself, cleanly, on arrays or objects nested ~1000 deep
        raise bad("the request body nests arrays or objects deeper than this server parses; a chat request "
                  "needs a few levels", code="invalid_json") from exc
    except ValueError as exc:  # an integer of more than sys.get_int_max_str_digits() digits
        raise bad(f"the request body has a number too long to read{_where_long_number(body)} ({exc})",
                  code="invalid_json") from exc


def _where_long_number(body: bytes) -> str:
    """' (field "seed", at byte N)' for the first overlong number, so the message can name the field."""
    number = _LONG_NUMBER.search(body)
    if not number:
        return ""
    key = re.search(rb'"((?:[^"\\]|\\.){1,64})"\s*:\s*$', body[max(0, number.start() - 200):number.start()])
    name = f"field {key.group(1).decode('utf-8', 'replace')!r}, " if key else ""
    return f" ({name}at byte {number.start()})"


def _may_hold_surrogates(body: bytes) -> bool:
    """json.loads decodes bytes with "surrogatepass": a surrogate comes from a \\u escape, from UTF-8's bytes
    for one (0xED 0xA0-0xBF), or from a UTF-16/32 body (a byte order mark or NULs at the start)."""
    head = body[:4]
    return (b"\x00" in head or head[:2] in (b"\xff\xfe", b"\xfe\xff")
            or (b"\\u" in body and _SURROGATE_ESCAPE.search(body) is not None)
            or (b"\xed" in body and _SURROGATE_UTF8.search(body) is not None))


def _refuse_surrogates(data) -> None:
    """Refuse a string (or key) with an unpaired surrogate such as "\\ud83d", naming where it is: JSON's escapes
    allow it, but it is not a character, and the tokenizer and every UTF-8 encoder fail on it."""
    todo = [(data, "")]
    while todo:  # iterative: the parser allows nesting deeper than Python's recursion limit
        value, where = todo.pop()
        if isinstance(value, str):
            found = _SURROGATE.search(value)
            if found:
                raise bad(f"contains an unpaired surrogate (\\u{ord(found.group()):04x}) at character "
                          f"{found.start()}; text must be valid Unicode", where or None, "invalid_unicode")
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    raise bad(f"the key {_short_repr(ascii(key))} has an unpaired surrogate; text must be valid "
                              "Unicode", where or None, "invalid_unicode")
                todo.append((item, f"{where}.{key}" if where else key))
        elif isinstance(value, list):
            todo.extend((item, f"{where}[{i}]") for i, item in enumerate(value))


def _refuse_unsupported(data: dict) -> None:
    if data.get("n") not in (None, 1):
        raise bad("only n=1 is supported: ask again for another answer", "n", "unsupported_parameter")
    if data.get("stop"):
        raise bad("stop sequences are not supported; the answer ends at the model's end of turn", "stop",
                  "unsupported_parameter")
    for name in ("tools", "functions"):
        if data.get(name):
            raise bad("tool and function calling are not supported by LLaVA-1.5", name, "unsupported_parameter")
    if data.get("logprobs"):
        raise bad("log probabilities are not supported", "logprobs", "unsupported_parameter")
    fmt = data.get("response_format")
    if fmt not in (None, {"type": "text"}):
        raise bad("only {\"type\": \"text\"} is supported", "response_format", "unsupported_parameter")


def _conversation(messages) -> tuple[str | None, list[tuple[str, str]], str | None, str | None]:
    """The system text (None if none), [(role, text), ...] alternating user/assistant and ending with user,
    and the one image (url, param)."""
    if not isinstance(messages, list) or not messages:
        raise bad("required: a non-empty list of messages", "messages", "missing_required_parameter")
    turns: list[tuple[str, list[str]]] = []  # consecutive same-role texts are collected, then joined once
    images: list[tuple[str, str]] = []
    system: list[str] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad("must be an object with role and content", where)
        role = message.get("role")
        if role in ("system", "developer"):
            if turns:
                raise bad(f"a {role} message after the conversation has begun is not supported: LLaVA's "
                          "templates have one system prompt, at the top; move it first, or put the instruction "
                          "in a user message", f"{where}.role", "unsupported_role")
            text = _content(message.get("content"), f"{where}.content", role, images)
            system.append(text.replace(DEFAULT_IMAGE_TOKEN, ""))
            continue
        if role not in ("user", "assistant"):
            raise bad(f"role {_short_repr(role)} is not supported; use user or assistant", f"{where}.role",
                      "unsupported_role")
        text = _content(message.get("content"), f"{where}.content", role, images)
        text = text.replace(DEFAULT_IMAGE_TOKEN, "")
        if turns and turns[-1][0] == role:
            turns[-1][1].append(text)
        else:
            turns.append((role, [text]))
    if len(images) > 1:
        where = ", ".join(p for _, p in images[:4]) + (", ..." if len(images) > 4 else "")
        raise bad(f"{len(images)} images in the conversation ({where}); LLaVA-1.5 "
                  "takes at most one image per conversation", "messages", "too_many_images")
    if not turns:
        raise bad("a user message must follow the system message", "messages", "invalid_value")
    if turns[0][0] != "user":
        raise bad("the conversation must start with a user message", "messages[0].role", "invalid_value")
    if turns[-1][0] != "user":
        raise bad("the last message must be from the user (the assistant answers it)", "messages", "invalid_value")
    url, param = images[0] if images else (None, None)
    return ("\n".join(system) if system else None), [(r, "\n".join(t).strip()) for r, t in turns], url, param


def _content(content, where: str, role: str, images: list) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad("must be a string or a list of content parts", where)
    texts = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad("must be a string", f"{at}.text")
            texts.append(part["text"])
        elif kind == "image_url":
            if role != "user":
                raise bad("only user messages may carry an image", at)
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not url.strip():
                raise bad("required: {\"url\": \"data:image/png;base64,...\"}", f"{at}.image_url.url")
            images.append((url, f"{at}.image_url.url"))
        else:
            raise bad(f"content part type {_short_repr(kind)} is not supported; use text or image_url",
                      f"{at}.type")
    return "\n".join(texts)


def _max_tokens(data: dict, cap: int) -> int | None:
    values = {k: data.get(k) for k in ("max_tokens", "max_completion_tokens") if data.get(k) is not None}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad(f"must be a positive integer, not {_short_repr(value)}", name)
    if len(set(values.values())) > 1:
        raise bad("max_tokens and max_completion_tokens differ; give one", "max_tokens")
    if not values:
        return None
    name, value = next(iter(values.items()))
    if value > cap:
        raise bad(f"{_short_repr(value)} is more than this server's limit of {cap} tokens (--max-tokens)", name,
                  "max_tokens_too_large")
    return value


def _typed(data: dict, name: str, kind: type, default, param: str | None = None):
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise bad(f"must be {'a boolean' if kind is bool else 'an integer'}, not {_short_repr(value)}",
                  param or name)
    return value


def _number(data: dict, name: str, low: float, high: float, default):
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise bad(f"must be a number from {low:g} to {high:g}, not {_short_repr(value)}", name)
    return float(value)


def _short_repr(value, limit: int = 80) -> str:
    """A value as a message quotes it: a 4000-digit integer or a long list is cut."""
    if isinstance(value, int) and abs(value) >= 10**limit:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# --- responses ---------------------------------------------------------------------------------------


def completion_object(request_id: str, created: int, model: str, content: str, finish_reason: str,
                      usage: dict) -> dict:
    return {"id": request_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage}


def chunk_object(request_id: str, created: int, model: str, delta: dict | None = None,
                 finish_reason: str | None = None, usage: dict | None = None) -> dict:
    """A chat.completion.chunk; delta=None with usage gives OpenAI's final usage chunk (no choices)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish_reason}]
    return {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": choices, "usage": usage}


def models_object(model: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "llava"}]}
