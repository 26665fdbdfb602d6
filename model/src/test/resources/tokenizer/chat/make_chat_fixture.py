#!/usr/bin/env python3
"""Reference renderings of the upstream chat templates, for Orbit's ChatTemplate.

Renders qwen3.jinja (the chat_template of Qwen3's tokenizer_config.json) and deepseek_v3.jinja
(the chat_template of DeepSeek-V3's tokenizer_config.json) with jinja2 the way transformers'
apply_chat_template does (sandboxed environment, trim_blocks, lstrip_blocks, loopcontrols,
special tokens passed as variables), over a set of conversations, and writes chat_cases.json:

    {"jinja2_version", "templates": {name: {"bos_token", "cases": [
        {"messages", "add_generation_prompt", "enable_thinking" (null = not passed), "rendered"}]}}}

    python3 make_chat_fixture.py            (writes chat_cases.json beside this file)
"""
import json
import os

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))

TEMPLATES = {
    "qwen3": {"file": "qwen3.jinja", "bos_token": None, "eos_token": "<|im_end|>"},
    "deepseek_v3": {"file": "deepseek_v3.jinja", "bos_token": "<\uff5cbegin\u2581of\u2581sentence\uff5c>",
                    "eos_token": "<\uff5cend\u2581of\u2581sentence\uff5c>"},
}


def S(content):
    return {"role": "system", "content": content}


def U(content):
    return {"role": "user", "content": content}


def A(content, reasoning=None):
    m = {"role": "assistant", "content": content}
    if reasoning is not None:
        m["reasoning_content"] = reasoning
    return m


CONVERSATIONS = [
    [U("What is 2+3?")],
    [S("You are a calculator."), U("123+456=")],
    [S("You are a calculator."), U("123+456="), A("579"), U("and 1+1?")],
    [U("Sort: 3 1 2"), A("<think>\nsmallest first\n</think>\n\n1 2 3")],
    [U("Sort: 3 1 2"), A("1 2 3", reasoning="smallest first")],
    [U("q1"), A("<think>\nr1\n</think>\n\na1"), U("q2")],
    [U("q1"), A("a1"), U("q2"), A("a2")],
    [U("q1"), A("<think>r1</think>a1"), U("q2"), A("<think>\n\nr2\n\n</think>\n\n\na2")],
    [S("Only a system prompt.")],
    [S("first system"), S("second system"), U("hi")],
    [S("sys"), U("hi"), S("late system note"), U("again")],
    [U("Line one\nLine two\n\n  indented\ttab \u00e9\u4e2d\U0001F600")],
    [U("")],
    [U("<tool_response>\nresult\n</tool_response>")],
    [U("question"), A("thought only</think>answer")],
    [U("question"), A("\n\nleading newlines")],
    [U("Countdown: reach 24 with 3 8 8 1"), A("<think>\ntry (8-1)*3+... \n</think>\n\n(8/(3-8/3))")],
]

OPTIONS = [(True, None), (True, False), (True, True), (False, None)]


def render(env, template, conversation, add_generation_prompt, enable_thinking, tokens):
    kwargs = {"messages": conversation, "add_generation_prompt": add_generation_prompt,
              "bos_token": tokens["bos_token"], "eos_token": tokens["eos_token"]}
    if enable_thinking is not None:
        kwargs["enable_thinking"] = enable_thinking
    return template.render(**kwargs)


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    out = {"jinja2_version": jinja2.__version__, "templates": {}}
    for name, spec in TEMPLATES.items():
        with open(os.path.join(HERE, spec["file"]), encoding="utf-8") as f:
            template = env.from_string(f.read())
        cases = []
        for conversation in CONVERSATIONS:
            for add_generation_prompt, enable_thinking in OPTIONS:
                cases.append({"messages": conversation, "add_generation_prompt": add_generation_prompt,
                              "enable_thinking": enable_thinking,
                              "rendered": render(env, template, conversation, add_generation_prompt,
                                                 enable_thinking, spec)})
        out["templates"][name] = {"bos_token": spec["bos_token"], "cases": cases}
    with open(os.path.join(HERE, "chat_cases.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print({k: len(v["cases"]) for k, v in out["templates"].items()})


if __name__ == "__main__":
    main()
