"""Chat messages -> one prompt string, for models run as plain text completion (llama.cpp).

Three formats:

``qa`` (the default for models without a chat template, such as the base Gemma 3 270M)
    A question/answer transcript: the system message (or a one-line instruction) on top, then
    ``Q: <user>`` / ``A: <assistant>`` turns, ending with ``A:`` for the model to complete.  Stops
    at ``\\nQ:`` (the model starting the next question) and at a blank line.  A base model has
    seen this shape of text countless times in its pre-training data and answers short factual
    questions in it sensibly ("Q: What is the capital of France?" -> "The capital of France is
    Paris.").  Gemma's turn markers, by contrast, make the *base* 270M model echo the question
    and drift into other languages, and a ``User:``/``Assistant:`` transcript makes it play a
    person ("I'm a student at ...") rather than answer.  See docs/local-models.md.

``gemma``
    Gemma's own turn format (``<start_of_turn>user ... <end_of_turn>``), for instruction-tuned
    Gemma GGUF files that lack an embedded chat template.

``template``
    The chat template embedded in the GGUF file (``tokenizer.chat_template``), rendered the way
    Hugging Face renders it; the default for any model that has one (instruction-tuned models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from modelyard.errors import InvalidRequestError
from modelyard.types import Message

__all__ = [
    "FORMATS",
    "QA_INSTRUCTION",
    "PromptFormat",
    "RenderedPrompt",
    "check_messages",
    "message_text",
    "render_prompt",
]

PromptFormat = Literal["qa", "gemma", "template"]
FORMATS: tuple[PromptFormat, ...] = ("qa", "gemma", "template")

#: put on top of a ``qa`` prompt when the request has no system message (it keeps answers short)
QA_INSTRUCTION = "Answer each question briefly and correctly."
QA_STOP = ("\nQ:", "\n\n")
GEMMA_STOP = ("<end_of_turn>", "<start_of_turn>")


@dataclass(slots=True, frozen=True)
class RenderedPrompt:
    text: str
    #: stop sequences that end the answer in this format
    stop: tuple[str, ...]
    #: True when the tokenizer should add the BOS token (the template may already have it)
    add_bos: bool = True
    #: the prompt ends inside an assistant message (prefill): the answer continues it
    continues: bool = False


def message_text(m: Message, index: int) -> str:
    """The text of a message; images are refused (text-only models)."""
    if isinstance(m.content, list):
        for j, part in enumerate(m.content):
            if part.type != "text":
                raise InvalidRequestError(
                    "this local model reads text only: remove the image from the message",
                    param=f"messages[{index}].content[{j}]",
                )
    return m.text()


def _turns(messages: list[Message]) -> tuple[list[str], list[tuple[str, str]]]:
    """(system texts, [(role, text)]) with consecutive messages of one role joined."""
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        text = message_text(m, i)
        if m.role in ("system", "developer"):
            system.append(text.strip())
            continue
        if m.role not in ("user", "assistant"):
            raise InvalidRequestError(
                f"messages[{i}] has role {m.role!r}: this local model does no tool calling", param=f"messages[{i}].role"
            )
        if turns and turns[-1][0] == m.role:
            turns[-1] = (m.role, f"{turns[-1][1]}\n{text}")
        else:
            turns.append((m.role, text))
    if not turns:
        raise InvalidRequestError("the request has no user message", param="messages")
    return [s for s in system if s], turns


def check_messages(messages: list[Message]) -> None:
    """Refuse what no format can render (images, tool messages, no user message) before a model loads."""
    _turns(messages)


def render_qa(messages: list[Message]) -> RenderedPrompt:
    system, turns = _turns(messages)
    lines = ["\n".join(system) if system else QA_INSTRUCTION, ""]
    for n, (role, text) in enumerate(turns):
        last = n == len(turns) - 1
        if role == "user":
            lines.append(f"Q: {text.strip()}")
            if last:
                lines.append("A:")
        elif last:  # prefill: the answer continues this text
            lines.append(f"A: {text.lstrip()}")
        else:
            lines.extend([f"A: {text.strip()}", ""])
    continues = turns[-1][0] == "assistant"
    return RenderedPrompt("\n".join(lines), QA_STOP, continues=continues)


def render_gemma(messages: list[Message]) -> RenderedPrompt:
    system, turns = _turns(messages)
    parts: list[str] = []
    for n, (role, text) in enumerate(turns):
        if role == "user":
            if n == 0 and system:
                text = "\n".join(system) + "\n\n" + text
            parts.append(f"<start_of_turn>user\n{text}<end_of_turn>\n")
        elif n == len(turns) - 1:
            parts.append(f"<start_of_turn>model\n{text}")
        else:
            parts.append(f"<start_of_turn>model\n{text}<end_of_turn>\n")
    continues = turns[-1][0] == "assistant"
    if not continues:
        parts.append("<start_of_turn>model\n")
    return RenderedPrompt("".join(parts), GEMMA_STOP, continues=continues)


def render_template(messages: list[Message], template: str, *, bos: str, eos: str) -> RenderedPrompt:
    """Render the GGUF's own chat template (Jinja, as llama-cpp-python and Hugging Face do)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    system, turns = _turns(messages)
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "\n".join(system)}] if system else []
    msgs += [{"role": role, "content": text} for role, text in turns]
    continues = turns[-1][0] == "assistant"
    formatter = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos, add_generation_prompt=not continues)
    try:
        result = formatter(messages=cast(Any, msgs))
    except Exception as exc:  # a template may refuse a shape (e.g. a system message)
        raise InvalidRequestError(f"the model's chat template refused the messages: {exc}", param="messages") from exc
    prompt = result.prompt
    if continues and eos and prompt.rstrip().endswith(eos):
        prompt = prompt.rstrip()[: -len(eos)]
    stop = tuple(dict.fromkeys([*([eos] if eos else []), *_as_list(result.stop)]))
    return RenderedPrompt(prompt, stop, add_bos=not (bos and prompt.startswith(bos)), continues=continues)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def render_prompt(
    messages: list[Message], fmt: PromptFormat, *, template: str | None = None, bos: str = "", eos: str = ""
) -> RenderedPrompt:
    if fmt == "qa":
        return render_qa(messages)
    if fmt == "gemma":
        return render_gemma(messages)
    if template is None:
        raise InvalidRequestError(
            "prompt_format 'template' needs a chat template in the GGUF file, and this model has none; "
            "use 'qa' or 'gemma'",
            param="prompt_format",
        )
    return render_template(messages, template, bos=bos, eos=eos)
