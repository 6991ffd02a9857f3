import Foundation
import Testing
import ModelRunner

// The expected strings below are what Python's jinja2 3.1.6 rendered for the same template and context,
// in an Environment(trim_blocks=False, lstrip_blocks=False) with loopcontrols, transformers' tojson
// (json.dumps(x, ensure_ascii=False)) and raise_exception, unless a test says it uses Options.huggingFace.

// MARK: - Chat templates

/// Qwen2.5-Instruct's chat template, verbatim.
private let qwen25Template = #"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}

"""#

/// SmolLM2-Instruct's chat template, verbatim.
private let smolLM2Template = #"""
{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
' }}{% endif %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}
"""#

/// Plain ChatML, verbatim from llama-cpp-python's `CHATML_CHAT_TEMPLATE`.
private let chatMLTemplate = #"""
{% for message in messages %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}
"""#

/// Meta-Llama-3-8B-Instruct, verbatim from llama-cpp-python's `LLAMA3_INSTRUCT_CHAT_TEMPLATE`.
private let llama3Template = #"""
{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %}
"""#

/// Llama-3.1-8B-Instruct's template (the original, whose default date_string is 26 Jul 2024), verbatim.
private let llama31Template = #"""
{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}

"""#

/// Mistral-7B-Instruct-v0.1, verbatim from llama-cpp-python's `MISTRAL_INSTRUCT_CHAT_TEMPLATE`.
private let mistralV01Template = #"""
{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}
"""#

/// Mistral-7B-Instruct-v0.3's template (with tools), as its lmstudio-community GGUF carries it, verbatim.
private let mistralV03Template = #"""
{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}

"""#

/// gemma-2-it's chat template, verbatim.
private let gemma2Template = #"""
{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}
"""#

/// zephyr-7b-beta's chat template, verbatim: it leans on trim_blocks, so Hugging Face's options change its output.
private let zephyrTemplate = #"""
{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}
"""#

// MARK: - Conversations

private let system: JinjaValue = ["role": "system", "content": "You are a helpful assistant."]
private let user: JinjaValue = ["role": "user", "content": "Hello! What's 2+2?"]
private let assistant: JinjaValue = ["role": "assistant", "content": "  2 + 2 = 4.\n"]
private let userAgain: JinjaValue = ["role": "user", "content": "Thanks — and \"quotes\", a back\\slash, ünïcödé 🎉 and a\nnewline?"]
private let assistantAfterTool: JinjaValue = ["role": "assistant", "content": "It is 21.5 °C and clear."]
private let userLast: JinjaValue = ["role": "user", "content": "And tomorrow?"]
private let assistantSummary: JinjaValue = ["role": "assistant", "content": "Paris 21, Rome 25."]
private let parisResult: JinjaValue = ["role": "tool", "content": "Paris: 21"]
private let romeResult: JinjaValue = ["role": "tool", "content": "Rome: 25"]
private let toolCall: JinjaValue = ["role": "assistant", "content": "", "tool_calls": [["id": "call12345", "type": "function", "function": ["name": "get_weather", "arguments": ["city": "Paris", "unit": "celsius"]]]]]
private let toolResult: JinjaValue = ["role": "tool", "tool_call_id": "call12345", "content": "{\"temperature\": 21.5, \"sky\": \"clear\"}"]
private let qwenToolCalls: JinjaValue = ["role": "assistant", "content": "Let me check.", "tool_calls": [["type": "function", "function": ["name": "get_weather", "arguments": ["city": "Paris"]]], ["name": "get_weather", "arguments": ["city": "Rome", "unit": "celsius"]]]]
private let weatherTool: JinjaValue = ["type": "function", "function": ["name": "get_weather", "description": "Get the weather in a city", "parameters": ["type": "object", "properties": ["city": ["type": "string", "description": "City name, e.g. \"Paris\""], "unit": ["type": "string", "enum": ["celsius", "fahrenheit"]]], "required": ["city"]]]]
private let timeTool: JinjaValue = ["type": "function", "function": ["name": "get_time", "description": "Current time", "parameters": ["type": "object", "properties": [:]]]]
private let tools: JinjaValue = [weatherTool, timeTool]

/// A render and the text jinja2 produced for it.
struct JinjaRenderCase: Sendable, CustomTestStringConvertible {
    let name: String
    let context: [String: JinjaValue]
    let expected: String
    /// The template, where the test does not fix it.
    var template = ""
    var testDescription: String { name }
}

private let qwen25Cases: [JinjaRenderCase] = [
    JinjaRenderCase(
        name: "one user message",
        context: ["messages": [user], "add_generation_prompt": false],
        expected: #"""
        <|im_start|>system
        You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>

        """#),
    JinjaRenderCase(
        name: "one user message with the generation prompt",
        context: ["messages": [user], "add_generation_prompt": true],
        expected: #"""
        <|im_start|>system
        You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>
        <|im_start|>assistant

        """#),
    JinjaRenderCase(
        name: "system and user",
        context: ["messages": [system, user], "add_generation_prompt": true],
        expected: #"""
        <|im_start|>system
        You are a helpful assistant.<|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>
        <|im_start|>assistant

        """#),
    JinjaRenderCase(
        name: "system, user, assistant, user",
        context: ["messages": [system, user, assistant, userAgain], "add_generation_prompt": false],
        expected: #"""
        <|im_start|>system
        You are a helpful assistant.<|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>
        <|im_start|>assistant
          2 + 2 = 4.
        <|im_end|>
        <|im_start|>user
        Thanks — and "quotes", a back\slash, ünïcödé 🎉 and a
        newline?<|im_end|>

        """#),
    JinjaRenderCase(
        name: "one tool",
        context: ["messages": [user], "tools": [weatherTool], "add_generation_prompt": true],
        expected: #"""
        <|im_start|>system
        You are Qwen, created by Alibaba Cloud. You are a helpful assistant.

        # Tools

        You may call one or more functions to assist with the user query.

        You are provided with function signatures within <tools></tools> XML tags:
        <tools>
        {"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. \"Paris\""}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
        </tools>

        For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
        <tool_call>
        {"name": <function-name>, "arguments": <args-json-object>}
        </tool_call><|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>
        <|im_start|>assistant

        """#),
    JinjaRenderCase(
        name: "two tools and a system message",
        context: ["messages": [system, user], "tools": tools, "add_generation_prompt": true],
        expected: #"""
        <|im_start|>system
        You are a helpful assistant.

        # Tools

        You may call one or more functions to assist with the user query.

        You are provided with function signatures within <tools></tools> XML tags:
        <tools>
        {"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. \"Paris\""}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
        {"type": "function", "function": {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}}}
        </tools>

        For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
        <tool_call>
        {"name": <function-name>, "arguments": <args-json-object>}
        </tool_call><|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>
        <|im_start|>assistant

        """#),
    JinjaRenderCase(
        name: "tool calls and consecutive tool responses",
        context: ["messages": [user, qwenToolCalls, parisResult, romeResult, assistantSummary], "tools": tools, "add_generation_prompt": true],
        expected: #"""
        <|im_start|>system
        You are Qwen, created by Alibaba Cloud. You are a helpful assistant.

        # Tools

        You may call one or more functions to assist with the user query.

        You are provided with function signatures within <tools></tools> XML tags:
        <tools>
        {"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. \"Paris\""}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
        {"type": "function", "function": {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}}}
        </tools>

        For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
        <tool_call>
        {"name": <function-name>, "arguments": <args-json-object>}
        </tool_call><|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>
        <|im_start|>assistant
        Let me check.
        <tool_call>
        {"name": "get_weather", "arguments": {"city": "Paris"}}
        </tool_call>
        <tool_call>
        {"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}
        </tool_call><|im_end|>
        <|im_start|>user
        <tool_response>
        Paris: 21
        </tool_response>
        <tool_response>
        Rome: 25
        </tool_response><|im_end|>
        <|im_start|>assistant
        Paris 21, Rome 25.<|im_end|>
        <|im_start|>assistant

        """#),
]

private let smolLM2Cases: [JinjaRenderCase] = [
    JinjaRenderCase(
        name: "one user message gets the default system message",
        context: ["messages": [user], "add_generation_prompt": true],
        expected: #"""
        <|im_start|>system
        You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>
        <|im_start|>assistant

        """#),
    JinjaRenderCase(
        name: "a system message replaces the default",
        context: ["messages": [system, user], "add_generation_prompt": false],
        expected: #"""
        <|im_start|>system
        You are a helpful assistant.<|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>

        """#),
    JinjaRenderCase(
        name: "multi-turn with system",
        context: ["messages": [system, user, assistant, userAgain], "add_generation_prompt": true],
        expected: #"""
        <|im_start|>system
        You are a helpful assistant.<|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>
        <|im_start|>assistant
          2 + 2 = 4.
        <|im_end|>
        <|im_start|>user
        Thanks — and "quotes", a back\slash, ünïcödé 🎉 and a
        newline?<|im_end|>
        <|im_start|>assistant

        """#),
    JinjaRenderCase(
        name: "multi-turn without system",
        context: ["messages": [user, assistant, userAgain], "add_generation_prompt": false],
        expected: #"""
        <|im_start|>system
        You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>
        <|im_start|>assistant
          2 + 2 = 4.
        <|im_end|>
        <|im_start|>user
        Thanks — and "quotes", a back\slash, ünïcödé 🎉 and a
        newline?<|im_end|>

        """#),
]

private let chatMLCases: [JinjaRenderCase] = [
    JinjaRenderCase(
        name: "one user message",
        context: ["messages": [user], "add_generation_prompt": true],
        expected: #"""
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>
        <|im_start|>assistant

        """#),
    JinjaRenderCase(
        name: "system and user",
        context: ["messages": [system, user], "add_generation_prompt": false],
        expected: #"""
        <|im_start|>system
        You are a helpful assistant.<|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>

        """#),
    JinjaRenderCase(
        name: "multi-turn",
        context: ["messages": [system, user, assistant, userAgain], "add_generation_prompt": true],
        expected: #"""
        <|im_start|>system
        You are a helpful assistant.<|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>
        <|im_start|>assistant
          2 + 2 = 4.
        <|im_end|>
        <|im_start|>user
        Thanks — and "quotes", a back\slash, ünïcödé 🎉 and a
        newline?<|im_end|>
        <|im_start|>assistant

        """#),
]

private let llama3Cases: [JinjaRenderCase] = [
    JinjaRenderCase(
        name: "one user message",
        context: ["messages": [user], "bos_token": "<|begin_of_text|>", "add_generation_prompt": true],
        expected: #"""
        <|begin_of_text|><|start_header_id|>user<|end_header_id|>

        Hello! What's 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>


        """#),
    JinjaRenderCase(
        name: "system and user",
        context: ["messages": [system, user], "bos_token": "<|begin_of_text|>", "add_generation_prompt": false],
        expected: #"""
        <|begin_of_text|><|start_header_id|>system<|end_header_id|>

        You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>

        Hello! What's 2+2?<|eot_id|>
        """#),
    JinjaRenderCase(
        name: "multi-turn",
        context: ["messages": [system, user, assistant, userAgain], "bos_token": "<|begin_of_text|>", "add_generation_prompt": true],
        expected: #"""
        <|begin_of_text|><|start_header_id|>system<|end_header_id|>

        You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>

        Hello! What's 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

        2 + 2 = 4.<|eot_id|><|start_header_id|>user<|end_header_id|>

        Thanks — and "quotes", a back\slash, ünïcödé 🎉 and a
        newline?<|eot_id|><|start_header_id|>assistant<|end_header_id|>


        """#),
]

private let llama31Cases: [JinjaRenderCase] = [
    JinjaRenderCase(
        name: "one user message",
        context: ["messages": [user], "bos_token": "<|begin_of_text|>", "add_generation_prompt": true],
        expected: #"""
        <|begin_of_text|><|start_header_id|>system<|end_header_id|>

        Cutting Knowledge Date: December 2023
        Today Date: 26 Jul 2024

        <|eot_id|><|start_header_id|>user<|end_header_id|>

        Hello! What's 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>


        """#),
    JinjaRenderCase(
        name: "system and user",
        context: ["messages": [system, user], "bos_token": "<|begin_of_text|>", "add_generation_prompt": false],
        expected: #"""
        <|begin_of_text|><|start_header_id|>system<|end_header_id|>

        Cutting Knowledge Date: December 2023
        Today Date: 26 Jul 2024

        You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>

        Hello! What's 2+2?<|eot_id|>
        """#),
    JinjaRenderCase(
        name: "multi-turn",
        context: ["messages": [system, user, assistant, userAgain], "bos_token": "<|begin_of_text|>", "add_generation_prompt": true],
        expected: #"""
        <|begin_of_text|><|start_header_id|>system<|end_header_id|>

        Cutting Knowledge Date: December 2023
        Today Date: 26 Jul 2024

        You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>

        Hello! What's 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

        2 + 2 = 4.<|eot_id|><|start_header_id|>user<|end_header_id|>

        Thanks — and "quotes", a back\slash, ünïcödé 🎉 and a
        newline?<|eot_id|><|start_header_id|>assistant<|end_header_id|>


        """#),
    JinjaRenderCase(
        name: "tools in the first user message, a tool call and its result",
        context: ["messages": [system, user, toolCall, toolResult, assistantAfterTool, userLast], "tools": tools, "bos_token": "<|begin_of_text|>", "add_generation_prompt": true],
        expected: #"""
        <|begin_of_text|><|start_header_id|>system<|end_header_id|>

        Environment: ipython
        Cutting Knowledge Date: December 2023
        Today Date: 26 Jul 2024

        You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>

        Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.

        Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.

        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {
                            "type": "string",
                            "description": "City name, e.g. \"Paris\""
                        },
                        "unit": {
                            "type": "string",
                            "enum": [
                                "celsius",
                                "fahrenheit"
                            ]
                        }
                    },
                    "required": [
                        "city"
                    ]
                }
            }
        }

        {
            "type": "function",
            "function": {
                "name": "get_time",
                "description": "Current time",
                "parameters": {
                    "type": "object",
                    "properties": {}
                }
            }
        }

        Hello! What's 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

        {"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>

        "{\"temperature\": 21.5, \"sky\": \"clear\"}"<|eot_id|><|start_header_id|>assistant<|end_header_id|>

        It is 21.5 °C and clear.<|eot_id|><|start_header_id|>user<|end_header_id|>

        And tomorrow?<|eot_id|><|start_header_id|>assistant<|end_header_id|>


        """#),
    JinjaRenderCase(
        name: "tools in the system message",
        context: ["messages": [system, user, toolCall, toolResult, assistantAfterTool, userLast], "tools": tools, "tools_in_user_message": false, "bos_token": "<|begin_of_text|>", "add_generation_prompt": true],
        expected: #"""
        <|begin_of_text|><|start_header_id|>system<|end_header_id|>

        Environment: ipython
        Cutting Knowledge Date: December 2023
        Today Date: 26 Jul 2024

        You have access to the following functions. To call a function, please respond with JSON for a function call.Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.

        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {
                            "type": "string",
                            "description": "City name, e.g. \"Paris\""
                        },
                        "unit": {
                            "type": "string",
                            "enum": [
                                "celsius",
                                "fahrenheit"
                            ]
                        }
                    },
                    "required": [
                        "city"
                    ]
                }
            }
        }

        {
            "type": "function",
            "function": {
                "name": "get_time",
                "description": "Current time",
                "parameters": {
                    "type": "object",
                    "properties": {}
                }
            }
        }

        You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>

        Hello! What's 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

        {"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>

        "{\"temperature\": 21.5, \"sky\": \"clear\"}"<|eot_id|><|start_header_id|>assistant<|end_header_id|>

        It is 21.5 °C and clear.<|eot_id|><|start_header_id|>user<|end_header_id|>

        And tomorrow?<|eot_id|><|start_header_id|>assistant<|end_header_id|>


        """#),
    JinjaRenderCase(
        name: "built-in tools and a dated header",
        context: ["messages": [system, user, ["role": "assistant", "tool_calls": [["function": ["name": "brave_search", "arguments": ["query": "weather Paris"]]]]]], "builtin_tools": ["brave_search", "code_interpreter"], "date_string": "1 Jan 2025", "bos_token": "<|begin_of_text|>"],
        expected: #"""
        <|begin_of_text|><|start_header_id|>system<|end_header_id|>

        Environment: ipython
        Tools: brave_search

        Cutting Knowledge Date: December 2023
        Today Date: 1 Jan 2025

        You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>

        Hello! What's 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

        <|python_tag|>brave_search.call(query="weather Paris")<|eom_id|>
        """#),
]

private let mistralV01Cases: [JinjaRenderCase] = [
    JinjaRenderCase(
        name: "one user message",
        context: ["messages": [user], "bos_token": "<s>", "eos_token": "</s>"],
        expected: "<s>[INST] Hello! What's 2+2? [/INST]"),
    JinjaRenderCase(
        name: "multi-turn",
        context: ["messages": [user, assistant, userAgain], "bos_token": "<s>", "eos_token": "</s>"],
        expected: #"""
        <s>[INST] Hello! What's 2+2? [/INST]  2 + 2 = 4.
        </s> [INST] Thanks — and "quotes", a back\slash, ünïcödé 🎉 and a
        newline? [/INST]
        """#),
]

private let mistralV03Cases: [JinjaRenderCase] = [
    JinjaRenderCase(
        name: "one user message",
        context: ["messages": [user], "bos_token": "<s>", "eos_token": "</s>"],
        expected: "<s>[INST] Hello! What's 2+2?[/INST]"),
    JinjaRenderCase(
        name: "the system message joins the last user message",
        context: ["messages": [system, user, assistant, userAgain], "bos_token": "<s>", "eos_token": "</s>"],
        expected: #"""
        <s>[INST] Hello! What's 2+2?[/INST] 2 + 2 = 4.</s>[INST] You are a helpful assistant.

        Thanks — and "quotes", a back\slash, ünïcödé 🎉 and a
        newline?[/INST]
        """#),
    JinjaRenderCase(
        name: "available tools, a tool call and its result",
        context: ["messages": [system, user, toolCall, toolResult, assistantAfterTool, userLast], "tools": tools, "bos_token": "<s>", "eos_token": "</s>"],
        expected: #"""
        <s>[INST] Hello! What's 2+2?[/INST][TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}, "id": "call12345"}]</s>[TOOL_RESULTS] {"content": {"temperature": 21.5, "sky": "clear"}, "call_id": "call12345"}[/TOOL_RESULTS] It is 21.5 °C and clear.</s>[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. \"Paris\""}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}, {"type": "function", "function": {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}}}][/AVAILABLE_TOOLS][INST] You are a helpful assistant.

        And tomorrow?[/INST]
        """#),
]

private let gemma2Cases: [JinjaRenderCase] = [
    JinjaRenderCase(
        name: "one user message",
        context: ["messages": [user], "bos_token": "<bos>", "add_generation_prompt": true],
        expected: #"""
        <bos><start_of_turn>user
        Hello! What's 2+2?<end_of_turn>
        <start_of_turn>model

        """#),
    JinjaRenderCase(
        name: "multi-turn, assistant becomes model",
        context: ["messages": [user, assistant, userAgain], "bos_token": "<bos>", "add_generation_prompt": true],
        expected: #"""
        <bos><start_of_turn>user
        Hello! What's 2+2?<end_of_turn>
        <start_of_turn>model
        2 + 2 = 4.<end_of_turn>
        <start_of_turn>user
        Thanks — and "quotes", a back\slash, ünïcödé 🎉 and a
        newline?<end_of_turn>
        <start_of_turn>model

        """#),
]

private let huggingFaceOptionCases: [JinjaRenderCase] = [
    JinjaRenderCase(
        name: "Qwen2.5, tool calls",
        context: ["messages": [user, qwenToolCalls, parisResult, romeResult, assistantSummary], "tools": tools, "add_generation_prompt": true],
        expected: #"""
        <|im_start|>system
        You are Qwen, created by Alibaba Cloud. You are a helpful assistant.

        # Tools

        You may call one or more functions to assist with the user query.

        You are provided with function signatures within <tools></tools> XML tags:
        <tools>
        {"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. \"Paris\""}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
        {"type": "function", "function": {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}}}
        </tools>

        For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
        <tool_call>
        {"name": <function-name>, "arguments": <args-json-object>}
        </tool_call><|im_end|>
        <|im_start|>user
        Hello! What's 2+2?<|im_end|>
        <|im_start|>assistant
        Let me check.
        <tool_call>
        {"name": "get_weather", "arguments": {"city": "Paris"}}
        </tool_call>
        <tool_call>
        {"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}
        </tool_call><|im_end|>
        <|im_start|>user
        <tool_response>
        Paris: 21
        </tool_response>
        <tool_response>
        Rome: 25
        </tool_response><|im_end|>
        <|im_start|>assistant
        Paris 21, Rome 25.<|im_end|>
        <|im_start|>assistant

        """#,
        template: qwen25Template),
    JinjaRenderCase(
        name: "Llama 3.1, tools",
        context: ["messages": [system, user, toolCall, toolResult, assistantAfterTool, userLast], "tools": tools, "bos_token": "<|begin_of_text|>", "add_generation_prompt": true],
        expected: #"""
        <|begin_of_text|><|start_header_id|>system<|end_header_id|>

        Environment: ipython
        Cutting Knowledge Date: December 2023
        Today Date: 26 Jul 2024

        You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>

        Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.

        Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.

        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {
                            "type": "string",
                            "description": "City name, e.g. \"Paris\""
                        },
                        "unit": {
                            "type": "string",
                            "enum": [
                                "celsius",
                                "fahrenheit"
                            ]
                        }
                    },
                    "required": [
                        "city"
                    ]
                }
            }
        }

        {
            "type": "function",
            "function": {
                "name": "get_time",
                "description": "Current time",
                "parameters": {
                    "type": "object",
                    "properties": {}
                }
            }
        }

        Hello! What's 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

        {"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>

        "{\"temperature\": 21.5, \"sky\": \"clear\"}"<|eot_id|><|start_header_id|>assistant<|end_header_id|>

        It is 21.5 °C and clear.<|eot_id|><|start_header_id|>user<|end_header_id|>

        And tomorrow?<|eot_id|><|start_header_id|>assistant<|end_header_id|>


        """#,
        template: llama31Template),
    JinjaRenderCase(
        name: "Mistral v0.3, tools",
        context: ["messages": [system, user, toolCall, toolResult, assistantAfterTool, userLast], "tools": tools, "bos_token": "<s>", "eos_token": "</s>"],
        expected: #"""
        <s>[INST] Hello! What's 2+2?[/INST][TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}, "id": "call12345"}]</s>[TOOL_RESULTS] {"content": {"temperature": 21.5, "sky": "clear"}, "call_id": "call12345"}[/TOOL_RESULTS] It is 21.5 °C and clear.</s>[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. \"Paris\""}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}, {"type": "function", "function": {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}}}][/AVAILABLE_TOOLS][INST] You are a helpful assistant.

        And tomorrow?[/INST]
        """#,
        template: mistralV03Template),
    JinjaRenderCase(
        name: "zephyr, multi-turn",
        context: ["messages": [system, user, assistant, userAgain], "eos_token": "</s>", "add_generation_prompt": true],
        expected: #"""
        <|system|>
        You are a helpful assistant.</s>
        <|user|>
        Hello! What's 2+2?</s>
        <|assistant|>
          2 + 2 = 4.
        </s>
        <|user|>
        Thanks — and "quotes", a back\slash, ünïcödé 🎉 and a
        newline?</s>
        <|assistant|>

        """#,
        template: zephyrTemplate),
]

private let featureContext: [String: JinjaValue] = [
    "messages": [system, user, assistant],
    "d": ["b": 2, "a": 1],
    "n": JinjaValue.none,
    "xs": [3, 1, 2],
    "s": "  Hello World  ",
    "users": [["name": "Bob", "age": 30], ["name": "alice", "age": 25], ["name": "Carol", "age": 30, "admin": true]],
]

@Suite struct JinjaTests {
    private func render(_ source: String, _ context: [String: JinjaValue] = [:], options: JinjaTemplate.Options = .init()) throws(JinjaError) -> String {
        try JinjaTemplate(source: source, options: options).render(context)
    }

    /// Renders each source with the shared context and compares it with what jinja2 rendered.
    private func expectRenders(_ pairs: [(source: String, expected: String)], sourceLocation: SourceLocation = #_sourceLocation) {
        for (source, expected) in pairs {
            do throws(JinjaError) {
                let output = try JinjaTemplate(source: source).render(featureContext)
                #expect(output == expected, "\(source)", sourceLocation: sourceLocation)
            } catch {
                Issue.record("\(source): \(error)", sourceLocation: sourceLocation)
            }
        }
    }

    @Test("Qwen2.5 renders conversations, tools, tool calls and tool responses as jinja2 does", arguments: qwen25Cases)
    func qwen25(_ c: JinjaRenderCase) throws {
        #expect(try render(qwen25Template, c.context) == c.expected)
    }

    @Test("SmolLM2 adds its default system message only when there is none, as jinja2 does", arguments: smolLM2Cases)
    func smolLM2(_ c: JinjaRenderCase) throws {
        #expect(try render(smolLM2Template, c.context) == c.expected)
    }

    @Test("Plain ChatML renders every turn and the generation prompt as jinja2 does", arguments: chatMLCases)
    func chatML(_ c: JinjaRenderCase) throws {
        #expect(try render(chatMLTemplate, c.context) == c.expected)
    }

    @Test("Llama 3 trims each turn and puts the BOS token on the first, as jinja2 does", arguments: llama3Cases)
    func llama3(_ c: JinjaRenderCase) throws {
        #expect(try render(llama3Template, c.context) == c.expected)
    }

    @Test("Llama 3.1 renders its dated header, tools and tool calls as jinja2 does", arguments: llama31Cases)
    func llama31(_ c: JinjaRenderCase) throws {
        #expect(try render(llama31Template, c.context) == c.expected)
    }

    @Test("Mistral Instruct v0.1 renders alternating [INST] turns as jinja2 does", arguments: mistralV01Cases)
    func mistralV01(_ c: JinjaRenderCase) throws {
        #expect(try render(mistralV01Template, c.context) == c.expected)
    }

    @Test("Mistral Instruct v0.3 renders available tools, tool calls and results as jinja2 does", arguments: mistralV03Cases)
    func mistralV03(_ c: JinjaRenderCase) throws {
        #expect(try render(mistralV03Template, c.context) == c.expected)
    }

    @Test("Gemma 2 renders assistant turns as model turns, as jinja2 does", arguments: gemma2Cases)
    func gemma2(_ c: JinjaRenderCase) throws {
        #expect(try render(gemma2Template, c.context) == c.expected)
    }

    @Test("Hugging Face's trim_blocks and lstrip_blocks options render as jinja2 with them does", arguments: huggingFaceOptionCases)
    func huggingFaceOptions(_ c: JinjaRenderCase) throws {
        #expect(try render(c.template, c.context, options: .huggingFace) == c.expected)
    }

    @Test("trim_blocks drops the newline after a block tag and lstrip_blocks the indentation before it")
    func trimAndLstripBlocks() throws {
        // zephyr without Hugging Face's options: every tag leaves its newline
        #expect(try render(zephyrTemplate, ["messages": [system, user, assistant, userAgain], "eos_token": "</s>", "add_generation_prompt": true]) == "\n\n<|system|>\nYou are a helpful assistant.</s>\n\n\n\n\n<|user|>\nHello! What's 2+2?</s>\n\n\n\n\n<|assistant|>\n  2 + 2 = 4.\n</s>\n\n\n\n\n<|user|>\nThanks — and \"quotes\", a back\\slash, ünïcödé 🎉 and a\nnewline?</s>\n\n\n<|assistant|>\n\n")
        let source = "<s>\n  {% for m in messages %}\n    {{ m.role }}: {{ m.content }}\n  {% endfor %}\n  {# done #}\n</s>\n"
        let context: [String: JinjaValue] = ["messages": [system, user]]
        #expect(try render(source, context) == "<s>\n  \n    system: You are a helpful assistant.\n  \n    user: Hello! What's 2+2?\n  \n  \n</s>")
        #expect(try render(source, context, options: .huggingFace) == "<s>\n    system: You are a helpful assistant.\n    user: Hello! What's 2+2?\n</s>")
        #expect(try render("x\n", [:], options: JinjaTemplate.Options(keepTrailingNewline: true)) == "x\n")
    }

    @Test("A - after a tag's opening or before its closing strips the white space on that side")
    func whitespace() {
        expectRenders([
            ("a  {{- 'x' -}}  b",
             "axb"),
            ("a\n  {%- if true %}\n  x\n  {%- endif %}\nb",
             #"""
             a
               x
             b
             """#),
            ("a\n  {% if true -%}\n  x\n  {% endif %}\nb",
             "a\n  x\n  \nb"),
            ("  {# comment #}\n  x\n  {#- c -#}  y",
             "  \n  xy"),
            ("{% for i in xs %}\n  {{ i }}\n{% endfor %}\n",
             #"""

               3

               1

               2

             """#),
            ("x\r\ny\n\n",
             #"""
             x
             y

             """#),
            ("a {% raw -%}  {{ kept }} {%- endraw %} b",
             "a {{ kept }} b"),
        ])
    }

    @Test("A set inside a loop stays in the loop; a namespace carries values out of it")
    func scoping() {
        expectRenders([
            ("{% set x = 0 %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }}{% endfor %}{{ x }}",
             "01020"),
            ("{% for i in [1] %}{% set y = 5 %}{% endfor %}[{{ y }}]{% if true %}{% set z = 4 %}{% endif %}{{ z }}",
             "[]4"),
            ("{% set ns = namespace(total=0, found=false) %}{% for i in xs %}{% set ns.total = ns.total + i %}{% if i == 1 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.total }} {{ ns.found }}",
             "6 True"),
            ("{% set ns = namespace(roles=[]) %}{% for m in messages %}{% set ns.roles = ns.roles + [m.role] %}{% endfor %}{{ ns.roles|join('/') }}",
             "system/user/assistant"),
            ("{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set body %}inner {{ 1 + 1 }}{% endset %}[{{ body }}]",
             "12 [inner 2]"),
        ])
    }

    @Test("Macros take positional, keyword and default arguments and read the template's variables")
    func macros() {
        expectRenders([
            ("{% macro greet(name, greeting='Hello', punct='!') %}{{ greeting }}, {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }} {{ greet('Al', punct='?') }} {{ greet('Cy', 'Hi') }} [{{ greet() }}]",
             "Hello, Bob! Hello, Al? Hi, Cy! [Hello, !]"),
            ("{% macro r(n) %}{% if n > 0 %}{{ n }}{{ r(n - 1) }}{% endif %}{% endmacro %}{{ r(3) }}",
             "321"),
            ("{% macro m() %}{{ x }}{% endmacro %}{% set x = 1 %}{{ m() }}{% set x = 2 %}{{ m() }}",
             "12"),
            ("{% set x = 1 %}{% macro m() %}{{ x }} {{ loop is defined }}{% endmacro %}{% for x in [5] %}{{ m() }}{% endfor %}",
             "1 False"),
            ("{% macro add(ns) %}{% set ns.v = ns.v + 1 %}{% endmacro %}{% set ns = namespace(v=0) %}{{ add(ns) }}{{ add(ns) }}{{ ns.v }}",
             "2"),
        ])
    }

    @Test("Loops expose loop.index and friends, filter with if, and support else, break and continue")
    func loops() {
        expectRenders([
            ("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }} {{ loop.first }} {{ loop.last }} {{ loop.length }}|{% endfor %}",
             "1032 True False 3|2121 False False 3|3210 False True 3|"),
            ("{% for x in xs %}{{ loop.previtem }}-{{ loop.nextitem }} {{ loop.cycle('a', 'b') }}|{% endfor %}",
             "-1 a|3-2 b|1- a|"),
            ("{% for x in xs if x > 1 %}{{ x }}/{{ loop.length }}/{{ loop.last }} {% else %}none{% endfor %}",
             "3/2/False 2/2/True "),
            ("{% for x in [] %}{{ x }}{% else %}empty{% endfor %} {% for x in range(10) %}{% if x % 2 == 0 %}{% continue %}{% endif %}{% if x > 6 %}{% break %}{% endif %}{{ x }}{% endfor %}",
             "empty 135"),
            ("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {% for c in 'abc' %}{{ c }}.{% endfor %} {% for k in d %}{{ k }}{% endfor %} [{% for x in missing %}{{ x }}{% endfor %}]",
             "b=2;a=1; a.b.c. ba []"),
            ("{% for a in [1, 2] %}{% for b in [3, 4] %}{{ a }}{{ b }}{{ loop.index }} {% endfor %}{{ loop.index }}|{% endfor %}",
             "131 142 1|231 242 2|"),
        ])
    }

    @Test("Operators, precedence and literals follow jinja2")
    func expressions() {
        expectRenders([
            ("{{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 7 // -2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 4 / 2 }} {{ 2 ** -1 }} {{ 1 + 2 * 3 - 4 }} {{ 7 % 2.5 }}",
             "64 4 -4 2 3.5 2.0 0.5 3 2.0"),
            ("{{ 'x' ~ 1 ~ none ~ true }} {{ 'a' 'b' }} {{ \"tab\\there\" }} {{ 'q\\'s' }} {{ '\\x41\\u00e9' }} {{ 'x' * 3 }} {{ [1] + [2] }}",
             "x1NoneTrue ab tab\there q's Aé xxx [1, 2]"),
            ("{{ 1 if true else 2 }} [{{ 1 if false }}] {{ none or 'x' }} {{ 0 and 1 }} {{ not n }} {{ 1 < 2 < 3 }} {{ 1 == 1.0 }} {{ true == 1 }}",
             "1 [] x 0 True True True True"),
            ("{{ 'ell' in 'hello' }} {{ 2 in xs }} {{ 'a' in d }} {{ 'z' not in d }} {{ {'a': [1]} == {'a': [1]} }} {{ messages[0] == messages[1] }}",
             "True True True True True False"),
            ("{{ [1, 'a', none, true, 1.5, {'k': \"it's\"}] }} {{ d }} {{ n }}",
             "[1, 'a', None, True, 1.5, {'k': \"it's\"}] {'b': 2, 'a': 1} None"),
        ])
    }

    @Test("Numbers print as Python's str() prints them")
    func numbers() {
        expectRenders([
            ("{{ 1.0 }} {{ 3.14 }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ 1.5e-7 }} {{ 9999999999999998.0 }} {{ 1 / 3 }} {{ 10 / 5 }} {{ 1_000 }}",
             "1.0 3.14 0.30000000000000004 1e+16 1000000000000000.0 0.0001 1e-05 1.5e-07 9999999999999998.0 0.3333333333333333 2.0 1000"),
        ])
    }

    @Test("Subscripts and slices follow Python; a missing item is undefined")
    func subscripts() {
        expectRenders([
            ("{{ messages[0].role }} {{ messages[0]['role'] }} {{ messages[-1].content|trim }} {{ messages[1:]|length }} {{ xs[::-1] }} {{ 'hello'[1:-1] }} {{ xs[:-1] }} {{ xs[::2] }} [{{ xs[5] }}] {{ xs[5] is defined }}",
             "system system 2 + 2 = 4. 2 [2, 1, 3] ell [3, 1] [3, 2] [] False"),
            ("{{ d.a }} {{ d['b'] }} [{{ d.zz }}] [{{ n.attr }}] {{ 'abc'[0] }} {{ '😀é'|length }} {{ '😀é'[0] }}",
             "1 2 [] [] a 2 😀"),
        ])
    }

    @Test("is-tests answer as jinja2's do")
    func tests() {
        expectRenders([
            ("{{ x is defined }} {{ d is defined }} {{ d.zz is undefined }} {{ n is none }} {{ n is not none }} {{ 'a' is string }} {{ 1 is number }} {{ true is number }} {{ d is mapping }} {{ xs is mapping }}",
             "False True True True False True True True True False"),
            ("{{ xs is iterable }} {{ 'abc' is iterable }} {{ 1 is iterable }} {{ d is sequence }} {{ true is boolean }} {{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ 1 is integer }} {{ true is integer }} {{ 1.0 is float }}",
             "True True False True True True True True True False True"),
            ("{{ true is true }} {{ 1 is true }} {{ 3 is eq 3 }} {{ 3 is equalto 4 }} {{ 2 is lt 3 }} {{ 2 is ge 3 }} {{ n is sameas none }} {{ 2 is in xs }} {{ 'ab' is lower }} {{ 'AB' is upper }}",
             "True False True False True False True True True True"),
        ])
    }

    @Test("Filters behave as jinja2's")
    func filters() {
        expectRenders([
            ("[{{ s|trim }}] [{{ 'xxhixx'|trim('x') }}] {{ s|length }} {{ xs|count }} {{ s|lower }} {{ s|upper }} {{ 'hello wORLD-foo(bar)'|title }} {{ 'hELLO world'|capitalize }}",
             "[Hello World] [hi] 15 3   hello world     HELLO WORLD   Hello World-Foo(Bar) Hello world"),
            ("{{ xs|first }} {{ xs|last }} {{ xs|join(', ') }} {{ users|join(',', attribute='name') }} {{ xs|list }} {{ 'ab'|list }} {{ d|list }} {{ d|items|list|length }}",
             "3 2 3, 1, 2 Bob,alice,Carol [3, 1, 2] ['a', 'b'] ['b', 'a'] 2"),
            ("{{ missing|default('dflt') }} [{{ ''|default('dflt') }}] {{ ''|default('dflt', true) }} {{ n|d('x') }} {{ 'aXbXc'|replace('X', '-') }} {{ 'aXbXc'|replace('X', '-', 1) }}",
             "dflt [] dflt None a-b-c a-bXc"),
            ("{{ users|map(attribute='name')|list }} {{ users|map(attribute='admin', default=false)|list }} {{ ['a', 'B']|map('upper')|join }} {{ users|selectattr('age', 'equalto', 30)|map(attribute='name')|join(',') }} {{ users|rejectattr('admin')|map(attribute='name')|join(',') }} {{ users|selectattr('admin', 'defined')|list|length }} {{ xs|select('odd')|list }} {{ xs|reject('gt', 1)|list }}",
             "['Bob', 'alice', 'Carol'] [False, False, True] AB Bob,Carol Bob,alice 1 [3, 1] [1]"),
            ("{{ 'one\\ntwo\\n\\nthree'|indent }}|{{ 'one\\ntwo'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(2, blank=true) }}",
             "one\n    two\n\n    three|  one\n  two|a\n  \n  b"),
            ("{{ -3|abs }} {{ 3|round }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 3.7|round(method='floor') }} {{ 3.2|round(0, 'ceil') }}",
             "3 3 2.0 4.0 2.67 3.0 4.0"),
            ("{{ '42'|int }} {{ '3.9'|int }} {{ 'x'|int }} {{ 3.9|int }} {{ true|int }} {{ '2.5'|float }} {{ 'x'|float }} {{ 3|float }} {{ 1|string }} {{ n|string }} {{ xs|string }}",
             "42 3 0 3 1 2.5 0.0 3.0 1 None [3, 1, 2]"),
            ("{{ xs|sort }} {{ xs|sort(reverse=true) }} {{ ['b', 'A', 'c']|sort }} {{ users|sort(attribute='age')|map(attribute='name')|join }} {{ [1, 2, 1, 'a', 'A']|unique|list }} {{ xs|reverse|list }} {{ 'abc'|reverse }} {{ d|dictsort|length }}",
             "[1, 2, 3] [3, 2, 1] ['A', 'b', 'c'] aliceBobCarol [1, 2, 'a'] [2, 1, 3] cba 2"),
            ("{{ '<a href=\"x\">&</a>'|escape }} {{ '<b>'|safe }} {{ s.strip() }}|{{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }} {{ \"they're bill's\".title() }} {{ d.get('zz', 'dflt') }} {{ d.keys()|list }} {{ d.values()|list }}",
             "&lt;a href=&#34;x&#34;&gt;&amp;&lt;/a&gt; <b> Hello World|['a', 'b', '', 'c'] ['a', 'b'] True True They'Re Bill'S dflt ['b', 'a'] [2, 1]"),
        ])
    }

    @Test("tojson is json.dumps with ensure_ascii=False, as in transformers")
    func tojson() {
        expectRenders([
            ("{{ d|tojson }} {{ users|tojson }} {{ 'é\"\\\\\\n\\t\\u0001🎉'|tojson }} {{ [1.0, 2.5, none, true]|tojson }} {{ {}|tojson }} {{ []|tojson }}",
             "{\"b\": 2, \"a\": 1} [{\"name\": \"Bob\", \"age\": 30}, {\"name\": \"alice\", \"age\": 25}, {\"name\": \"Carol\", \"age\": 30, \"admin\": true}] \"é\\\"\\\\\\n\\t\\u0001🎉\" [1.0, 2.5, null, true] {} []"),
            ("{{ users[0]|tojson(indent=2) }}\n{{ [1, [2, {}], {'a': []}]|tojson(indent=4) }}\n{{ d|tojson(sort_keys=true) }} {{ 'é'|tojson(ensure_ascii=true) }}",
             #"""
             {
               "name": "Bob",
               "age": 30
             }
             [
                 1,
                 [
                     2,
                     {}
                 ],
                 {
                     "a": []
                 }
             ]
             {"a": 1, "b": 2} "\u00e9"
             """#),
        ])
    }

    @Test("Undefined values print empty, iterate as empty and answer is defined; their attributes are errors")
    func undefined() {
        expectRenders([
            ("[{{ missing }}] [{{ missing|string }}] [{{ missing|trim }}] {{ missing|length }} [{% for x in missing %}x{% endfor %}] {{ missing is defined }} {{ 'x' ~ missing ~ 'y' }} {{ missing == missing }} {{ 'x' in missing }}",
             "[] [] [] 0 [] False xy True False"),
            ("[{{ messages[0].missing }}] {{ messages[0].missing is defined }} {{ (1 if false) is defined }} {{ missing|default('fallback') }} [{{ n.attr }}]",
             "[] False False fallback []"),
        ])
    }

    private func renderError(_ source: String, _ context: [String: JinjaValue] = [:]) -> JinjaError? {
        do throws(JinjaError) { _ = try render(source, context) } catch { return error }
        return nil
    }

    @Test("raise_exception(message) fails the render with exactly the template's message")
    func raiseException() {
        // Mistral v0.1 rejects a system message
        #expect(renderError(mistralV01Template, ["messages": [system, user], "bos_token": "<s>", "eos_token": "</s>"])?.message == "Conversation roles must alternate user/assistant/user/assistant/...")
        // Mistral v0.3 rejects a tool call id that is not 9 characters
        #expect(renderError(mistralV03Template, ["messages": [user, ["role": "assistant", "tool_calls": [["id": "x", "function": ["name": "f", "arguments": [:]]]]]], "bos_token": "<s>", "eos_token": "</s>"])?.message == "Tool call IDs should be alphanumeric strings with length 9!")
        // Mistral v0.3 rejects two user messages in a row
        #expect(renderError(mistralV03Template, ["messages": [user, user], "bos_token": "<s>", "eos_token": "</s>"])?.message == "After the optional system message, conversation roles must alternate user/assistant/user/assistant/...")
        // Gemma 2 rejects a system message
        #expect(renderError(gemma2Template, ["messages": [system, user], "bos_token": "<bos>"])?.message == "System role not supported")
        // Gemma 2 rejects two user messages in a row
        #expect(renderError(gemma2Template, ["messages": [user, user], "bos_token": "<bos>"])?.message == "Conversation roles must alternate user/assistant/user/assistant/...")
        #expect(renderError("ok\n   {{ raise_exception('Custom failure: ' ~ 42) }}") == JinjaError(message: "Custom failure: 42", line: 2, column: 4))
    }

    /// The error a parse reports, or nil when the source parses.
    private func parseError(_ source: String) -> String? {
        do { _ = try JinjaTemplate(source: source) } catch { return error.description }
        return nil
    }

    @Test("Unsupported constructs are parse errors that quote them", arguments: [
        ("{{ x | wordwrap }}", "line 1, column 8: unsupported filter 'wordwrap' in {{ x | wordwrap }}"),
        ("Hello\n  {{ user.name | nope }}", "line 2, column 18: unsupported filter 'nope' in {{ user.name | nope }}"),
        ("{% include 'header.jinja' %}", "line 1, column 4: unsupported tag 'include' in {% include 'header.jinja' %}"),
        ("{% extends 'base.jinja' %}", "line 1, column 4: unsupported tag 'extends' in {% extends 'base.jinja' %}"),
        ("{% call m() %}{% endcall %}", "line 1, column 4: unsupported tag 'call' in {% call m() %}"),
        ("{% filter upper %}x{% endfilter %}", "line 1, column 4: unsupported tag 'filter' in {% filter upper %}"),
        ("{% for x in xs recursive %}{% endfor %}", "line 1, column 16: unsupported 'recursive' loop in {% for x in xs recursive %}"),
        ("{{ x is prime }}", "line 1, column 9: unsupported test 'prime' in {{ x is prime }}"),
        ("{{ f(*args) }}", "line 1, column 6: unsupported argument unpacking with '*' in {{ f(*args) }}"),
        ("{% frobnicate %}", "line 1, column 4: unknown tag 'frobnicate' in {% frobnicate %}"),
    ])
    func unsupportedConstructs(source: String, description: String) {
        #expect(parseError(source) == description)
    }

    @Test("Syntax errors name what was expected and what was found", arguments: [
        ("{% if true %}unclosed", "line 1, column 1: expected 'elif' or 'else' or 'endif', found the end of the template; the block opened at line 1 in {% if true %}"),
        ("{{ 1 + }}", "line 1, column 8: expected an expression, found the end of the tag ('}}') in {{ 1 + }}"),
        ("{% for x in %}{% endfor %}", "line 1, column 13: expected an expression, found the end of the tag ('%}') in {% for x in %}"),
        ("{% for x in xs %}{% endif %}", "line 1, column 21: unexpected 'endif' in {% endif %}"),
        ("{{ a b }}", "line 1, column 6: expected the end of the tag ('}}'), found 'b' in {{ a b }}"),
        ("{% set = 1 %}", "line 1, column 8: expected a variable name, found '=' in {% set = 1 %}"),
        ("{{ 'unterminated }}", "line 1, column 4: expected the closing ' of the string, found the end of the template in {{ 'unterminated }}"),
        ("{{ [1, 2 }}", "line 1, column 10: expected ']', found '}' in {{ [1, 2 }}"),
        ("{% break %}", "line 1, column 4: 'break' outside a loop in {% break %}"),
        ("{{ " + String(repeating: "(", count: 120) + "1" + String(repeating: ")", count: 120) + " }}",
         "line 1, column 54: blocks or expressions nested deeper than 100 levels in {{ " + String(repeating: "(", count: 120) + "1" + String(repeating: ")", count: 120) + " }}"),
    ])
    func syntaxErrors(source: String, description: String) {
        #expect(parseError(source) == description)
    }

    @Test("What jinja2 fails to render fails here too, at the tag, quoting it", arguments: [
        ("{{ missing.attr }}", "line 1, column 1: 'missing' is undefined in {{ missing.attr }}"),
        ("{{ missing + 1 }}", "line 1, column 1: 'missing' is undefined in {{ missing + 1 }}"),
        ("{{ 'a' + 1 }}", "line 1, column 1: unsupported operand types for +: 'str' and 'int' in {{ 'a' + 1 }}"),
        ("{{ 1 / 0 }}", "line 1, column 1: division by zero in {{ 1 / 0 }}"),
        ("{{ n|length }}", "line 1, column 1: object of type 'NoneType' has no len() in {{ n|length }}"),
        ("{% for x in n %}{% endfor %}", "line 1, column 1: 'NoneType' object is not iterable in {% for x in n %}"),
        ("{{ missing|tojson }}", "line 1, column 1: Object of type Undefined is not JSON serializable in {{ missing|tojson }}"),
        ("{% set d.x = 1 %}", "line 1, column 1: cannot assign attribute 'x' on 'd', which is not a namespace in {% set d.x = 1 %}"),
        ("{{ xs < 'a' }}", "line 1, column 1: '<' not supported between instances of 'list' and 'str' in {{ xs < 'a' }}"),
        ("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", "line 1, column 31: macro 'm' takes not more than 1 argument(s), found 2 in {{ m(1, 2) }}"),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "line 1, column 16: rendering nested deeper than 250 levels (a macro calling itself without end?) in {{ m() }}"),
    ])
    func renderErrors(source: String, description: String) throws {
        let template = try JinjaTemplate(source: source)
        do {
            let output = try template.render(featureContext)
            Issue.record("rendered \(output)")
        } catch {
            #expect(error.description == description)
        }
    }

    @Test("strftime_now formats the current local time")
    func strftimeNow() throws {
        let year = try render("{{ strftime_now('%Y') }}")
        #expect(year.count == 4 && Int(year).map { $0 >= 2025 } == true)
        #expect(try render("{{ strftime_now('%d %b %Y') }}").hasSuffix(year))
    }

    @Test("JinjaObject keeps insertion order, and a key set again keeps its place")
    func objectOrder() throws {
        var object: JinjaObject = ["z": 1, "a": 2]
        object["m"] = "x"
        object["z"] = 3
        #expect(object.keys == ["z", "a", "m"])
        #expect(try render("{{ o|tojson }} {% for k, v in o.items() %}{{ k }}{% endfor %}", ["o": .object(object)]) == #"{"z": 3, "a": 2, "m": "x"} zam"#)
        object["a"] = nil
        #expect(object.keys == ["z", "m"] && object.count == 2)
        let pairs = JinjaObject([("b", 1), ("a", 2), ("b", 3)])
        #expect(pairs.keys == ["b", "a"] && pairs["b"] == 3)
        #expect(JinjaValue.object(["a": 1, "b": 2]) == JinjaValue.object(["b": 2, "a": 1]))
        #expect(try render("{{ x is defined }} {{ x is undefined }}", ["x": .undefined]) == "False True")
    }

    // MARK: Untrusted templates and conversations

    /// What rendering `source` fails with, as `JinjaError.description`; nil when it renders.
    private func renderFailure(_ source: String, _ context: [String: JinjaValue] = featureContext, limits: JinjaTemplate.Limits = .default) -> String? {
        do throws(JinjaError) {
            _ = try JinjaTemplate(source: source).render(context, limits: limits)
            return nil
        } catch {
            return error.description
        }
    }

    @Test("Integer arithmetic near Int.min and Int.max gives Python's answer where it fits in 64 bits")
    func integerEdges() {
        expectRenders([
            ("{{ range(0, -5, -9223372036854775807 - 1) }} {{ range(9223372036854775806, 9223372036854775807, 5) }} {{ range(-9223372036854775807 - 1, 9223372036854775807, 9223372036854775807) }} {{ range(5, 0, -2) }}",
             "[0] [9223372036854775806] [-9223372036854775808, -1, 9223372036854775806] [5, 3, 1]"),
            ("{{ 'abc'[1::9223372036854775807] }} {{ 'abc'[::-9223372036854775807 - 1] }} {{ xs[-9223372036854775807 - 1:9223372036854775807] }} {{ xs[9223372036854775807:] }} {{ xs[::-9223372036854775807] }}",
             "b c [3, 1, 2] [] [2]"),
            ("{{ (-9223372036854775807 - 1) % -1 }} {{ 7 // -1 }} {{ -7 % -1 }} {{ 2 ** 62 }} {{ (-2) ** 63 }} {{ 1 ** 9223372036854775807 }}",
             "0 -7 0 4611686018427387904 -9223372036854775808 1"),
            ("{{ 5|round(-9223372036854775807 - 1) }} {{ 5.5|round(-400) }} [{{ 'a\\nb'|indent(-3) }}] {{ 'ab' * -9223372036854775807 }}|{{ [] * 9223372036854775807 }}",
             "0 0.0 [a\nb] |[]"),
            ("{{ '10'|int(base=99) }} {{ '0x1f'|int(base=0) }} {{ '0x1f'|int(base=16) }} {{ 'z'|int(base=36) }} {{ '-0b11'|int(base=0) }}",
             "10 31 31 35 -3"),
        ])
    }

    @Test("Integer overflow is an error naming the operation, as is a range or sequence too large to build", arguments: [
        ("{{ range(9223372036854775807) }}",
         "line 1, column 1: range of 9223372036854775807 items is larger than the template's budget of 10000000 steps in {{ range(9223372036854775807) }}"),
        ("{{ range(-9223372036854775807 - 1, 9223372036854775807) }}",
         "line 1, column 1: range of 18446744073709551615 items is larger than the template's budget of 10000000 steps in {{ range(-9223372036854775807 - 1, 9223372036854775807) }}"),
        ("{{ 9223372036854775807 + 1 }}", "line 1, column 1: integer overflow in 9223372036854775807 + 1 in {{ 9223372036854775807 + 1 }}"),
        ("{{ -9223372036854775807 - 2 }}", "line 1, column 1: integer overflow in -9223372036854775807 - 2 in {{ -9223372036854775807 - 2 }}"),
        ("{{ 4611686018427387904 * 2 }}", "line 1, column 1: integer overflow in 4611686018427387904 * 2 in {{ 4611686018427387904 * 2 }}"),
        ("{{ (-9223372036854775807 - 1) // -1 }}", "line 1, column 1: integer overflow in -9223372036854775808 // -1 in {{ (-9223372036854775807 - 1) // -1 }}"),
        ("{{ 2 ** 63 }}", "line 1, column 1: integer overflow in 2 ** 63 in {{ 2 ** 63 }}"),
        ("{{ -(-9223372036854775807 - 1) }}", "line 1, column 1: integer overflow in -(-9223372036854775808) in {{ -(-9223372036854775807 - 1) }}"),
        ("{{ (-9223372036854775807 - 1)|abs }}", "line 1, column 1: integer overflow in abs(-9223372036854775808) in {{ (-9223372036854775807 - 1)|abs }}"),
        ("{{ 9223372036854775807|round(-1) }}", "line 1, column 1: integer overflow in round(9223372036854775807, -1) in {{ 9223372036854775807|round(-1) }}"),
        ("{{ 'ab' * 9223372036854775807 }}",
         "line 1, column 1: a string of at least 9223372036854775807 bytes would be longer than the limit of 33554432 bytes in {{ 'ab' * 9223372036854775807 }}"),
        ("{{ [1, 2] * 9223372036854775807 }}",
         "line 1, column 1: the template exceeded its budget of 10000000 steps (loop iterations, expressions, and items and text handled) in {{ [1, 2] * 9223372036854775807 }}"),
        ("{{ 'a\\nb'|indent(9223372036854775807) }}",
         "line 1, column 1: a string of at least 9223372036854775807 bytes would be longer than the limit of 33554432 bytes in {{ 'a\\nb'|indent(9223372036854775807) }}"),
        ("{{ [1]|tojson(indent=9223372036854775807) }}",
         "line 1, column 1: a string of at least 9223372036854775807 bytes would be longer than the limit of 33554432 bytes in {{ [1]|tojson(indent=9223372036854775807) }}"),
    ])
    func integerOverflow(source: String, description: String) {
        #expect(renderFailure(source) == description)
    }

    @Test("Lists, dicts and namespaces hold data only, so a template cannot make a cycle; values nest at most 250 levels", arguments: [
        ("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}",
         "line 1, column 27: cannot set 'ns.me' to a Namespace: a namespace holds only none, booleans, numbers, strings, lists and dicts in {% set ns.me = ns %}"),
        ("{% set ns = namespace() %}{% set ns.all = [1, {'inner': ns}] %}",
         "line 1, column 27: a dict holds only none, booleans, numbers, strings, lists and dicts, found a Namespace at 'inner' in {% set ns.all = [1, {'inner': ns}] %}"),
        ("{% set a = namespace() %}{% set b = namespace(other=a) %}",
         "line 1, column 26: cannot set the namespace's 'other' to a Namespace: a namespace holds only none, booleans, numbers, strings, lists and dicts in {% set b = namespace(other=a) %}"),
        ("{% macro m() %}{% endmacro %}{% set ns = namespace() %}{% set ns.f = m %}",
         "line 1, column 56: cannot set 'ns.f' to a function: a namespace holds only none, booleans, numbers, strings, lists and dicts in {% set ns.f = m %}"),
        ("{% set ns = namespace() %}{% set pair = (ns, ns) %}",
         "line 1, column 27: a list holds only none, booleans, numbers, strings, lists and dicts, found a Namespace in {% set pair = (ns, ns) %}"),
        ("{% for x in xs %}{% set l = [loop] %}{% endfor %}",
         "line 1, column 18: a list holds only none, booleans, numbers, strings, lists and dicts, found a LoopContext in {% set l = [loop] %}"),
        ("{% set d = dict(f=range) %}",
         "line 1, column 1: a dict holds only none, booleans, numbers, strings, lists and dicts, found a function at 'f' in {% set d = dict(f=range) %}"),
        ("{% set ns = namespace(x=0) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
         "line 1, column 58: lists, dicts and namespaces nest at most 250 levels deep, found a value nesting 251 in {% set ns.x = [ns.x] %}"),
        ("{% set ns = namespace(x=0) %}{% for i in range(100000) %}{% set ns.x = {'k': ns.x} %}{% endfor %}{{ ns.x }}",
         "line 1, column 58: lists, dicts and namespaces nest at most 250 levels deep, found a value nesting 251 in {% set ns.x = {'k': ns.x} %}"),
        // Without a namespace: each call of the macro wraps its argument in 45 more lists.
        ("{% macro m(x) %}{{ m(" + String(repeating: "[", count: 45) + "x" + String(repeating: "]", count: 45) + ") }}{% endmacro %}{{ m(0) }}",
         "line 1, column 17: lists, dicts and namespaces nest at most 250 levels deep, found a value nesting 251 in {{ m(" + String(repeating: "[", count: 45) + "x" + String(repeating: "]", count: 45) + ") }}"),
        // map through map would recurse once per argument the template gives.
        ("{{ [[1]]|map('map', 'map', 'string')|list }}",
         "line 1, column 1: map cannot apply the filter 'map' itself in {{ [[1]]|map('map', 'map', 'string')|list }}"),
    ])
    func dataOnlyAndNesting(source: String, description: String) {
        #expect(renderFailure(source) == description)
    }

    @Test("A context value nested deeper than 250 levels is an error naming the variable")
    func deepContext() throws {
        var deep: JinjaValue = 0
        for _ in 0..<300 { deep = [deep] }
        #expect(renderFailure("{{ deep|length }}", ["deep": deep]) == "line 1, column 1: lists and dicts nest at most 250 levels deep, found deeper ones in the variable 'deep'")
        var fits: JinjaValue = 0
        for _ in 0..<250 { fits = ["k": fits] }
        let json = try render("{{ fits|tojson }}", ["fits": fits])
        #expect(json == String(repeating: #"{"k": "#, count: 250) + "0" + String(repeating: "}", count: 250))
        #expect(try render("{{ fits == fits }} {{ fits|string|length }} {{ fits.k|list }}", ["fits": fits]) == "True 1751 ['k']")
        #expect(renderFailure("{{ [fits] }}", ["fits": fits]) == "line 1, column 1: lists, dicts and namespaces nest at most 250 levels deep, found a value nesting 251 in {{ [fits] }}")
    }

    @Test("Runaway loops and strings stop at the step and text budgets, naming them", arguments: [
        // The review's examples, with the default budgets.
        ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}", nil as Int?, nil as Int?,
         "line 1, column 56: a string of 67108864 bytes would be longer than the limit of 33554432 bytes in {% set ns.s = ns.s ~ ns.s %}"),
        ("{% for i in range(100000) %}{{ range(100000)|length }}{% endfor %}", nil, nil,
         "line 1, column 29: the template exceeded its budget of 10000000 steps (loop iterations, expressions, and items and text handled) in {{ range(100000)|length }}"),
        // Smaller budgets, to keep the test quick.
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", 1_000_000, nil,
         "line 1, column 29: the template exceeded its budget of 1000000 steps (loop iterations, expressions, and items and text handled) in {% for j in range(100000) %}"),
        ("{% set s = 'x' * 1000 %}{% for i in range(100) %}{{ s }}{% endfor %}", nil, 65536,
         "line 1, column 50: the rendered text of 66000 bytes would be longer than the limit of 65536 bytes in {{ s }}"),
        ("{% set s = 'x' * 40000 %}{{ [s, s]|join }}", nil, 65536,
         "line 1, column 26: a string of 80000 bytes would be longer than the limit of 65536 bytes in {{ [s, s]|join }}"),
        ("{% set s = 'x' * 40000 %}{{ s.replace('x', 'yy') }}", nil, 65536,
         "line 1, column 26: a string of 80000 bytes would be longer than the limit of 65536 bytes in {{ s.replace('x', 'yy') }}"),
        ("{% set s = 'é' * 20000 %}{{ s|tojson(ensure_ascii=true) }}", nil, 65536,
         "line 1, column 26: a string of 120002 bytes would be longer than the limit of 65536 bytes in {{ s|tojson(ensure_ascii=true) }}"),
        ("{% set l = ['x' * 1000] * 70 %}{{ l }}", nil, 65536,
         "line 1, column 32: a string of 66261 bytes would be longer than the limit of 65536 bytes in {{ l }}"),
        ("{% set l = ['x' * 1000] * 70 %}{{ l|tojson(indent=2) }}", nil, 65536,
         "line 1, column 32: a string of 66394 bytes would be longer than the limit of 65536 bytes in {{ l|tojson(indent=2) }}"),
        ("{{ range(2000)|unique|list|length }}", 1_000_000, nil,
         "line 1, column 1: the template exceeded its budget of 1000000 steps (loop iterations, expressions, and items and text handled) in {{ range(2000)|unique|list|length }}"),
        ("{{ (range(100000)|list * 100)|length }}", 1_000_000, nil,
         "line 1, column 1: the template exceeded its budget of 1000000 steps (loop iterations, expressions, and items and text handled) in {{ (range(100000)|list * 100)|length }}"),
    ])
    func budgets(source: String, steps: Int?, textBytes: Int?, description: String) {
        var limits = JinjaTemplate.Limits()
        if let steps { limits.steps = steps }
        if let textBytes { limits.textBytes = textBytes }
        #expect(renderFailure(source, limits: limits) == description)
    }

    @Test("The budgets can be set per render")
    func customLimits() throws {
        #expect(renderFailure("{% for i in range(300) %}{{ i }}{% endfor %}", limits: .init(steps: 1000))
            == "line 1, column 1: the template exceeded its budget of 1000 steps (loop iterations, expressions, and items and text handled) in {% for i in range(300) %}")
        let text = JinjaTemplate.Limits(textBytes: 100)
        #expect(renderFailure("{{ 'x' * 101 }}", limits: text)
            == "line 1, column 1: a string of 101 bytes would be longer than the limit of 100 bytes in {{ 'x' * 101 }}")
        #expect(renderFailure("{% for i in range(60) %}{{ 'ab' }}{% endfor %}", limits: text)
            == "line 1, column 25: the rendered text of 102 bytes would be longer than the limit of 100 bytes in {{ 'ab' }}")
        #expect(try JinjaTemplate(source: "{% for i in range(50) %}{{ 'ab' }}{% endfor %}").render([:], limits: text).count == 100)
    }

    @Test("Searching, counting, splitting and replacing take time linear in the text")
    func linearSearch() throws {
        // A naive search would compare 10^12 characters here.
        let source = "{% set h = 'a' * 1000000 %}{% set n = 'a' * 500000 ~ 'b' %}{{ n in h }} {{ h.count(n) }} {{ h.replace(n, 'x')|length }} {{ h.find(n) }} {{ h.split(n)|length }} {{ (h ~ 'b').find(n) }}"
        #expect(try render(source) == "False 0 1000000 -1 1 500000")
    }

    @Test("Long conversations and megabyte messages render well within the default budgets")
    func longConversations() throws {
        let template = try JinjaTemplate(source: qwen25Template, options: .huggingFace)
        let turns: [JinjaValue] = (0..<30_000).map { i in
            ["role": i % 2 == 0 ? "user" : "assistant", "content": .string("Message number \(i), with some words in it.")]
        }
        let prompt = try template.render(["messages": .array(turns), "add_generation_prompt": true])
        #expect(prompt.hasSuffix("<|im_start|>user\nMessage number 29998, with some words in it.<|im_end|>\n<|im_start|>assistant\nMessage number 29999, with some words in it.<|im_end|>\n<|im_start|>assistant\n"))
        let big = String(repeating: "Lorem ipsum dolor sit amet. ", count: 150_000)  // 4.2 MB
        let single = try template.render(["messages": [["role": "user", "content": .string(big)]], "add_generation_prompt": true])
        #expect(single == "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + big + "<|im_end|>\n<|im_start|>assistant\n")
        let withTools = try template.render(["messages": [["role": "user", "content": .string(big)]], "tools": tools, "add_generation_prompt": true])
        #expect(withTools.contains(big))
    }

    /// Templates that reach the depth limits the costliest ways: a macro recursing until the render depth
    /// runs out, each call building, printing, serializing, comparing and (as the error unwinds) freeing
    /// lists and dicts nested 249 levels (the deepest a namespace holds); recursion through a macro's
    /// default argument, a loop's condition, a test's and a filter's arguments; and templates at the
    /// parser's limit for parentheses, blocks, loops and macros.
    private static let atTheLimits: [(source: String, result: String)] = [
        ("""
         {%- set ns = namespace(x=0, y=0) -%}
         {%- for i in range(249) %}{% set ns.x = [ns.x] %}{% set ns.y = {'k': ns.y} %}{% endfor -%}
         {%- macro down(n) -%}
           {%- set local = namespace(v=0) -%}
           {%- for i in range(249) %}{% set local.v = [local.v] %}{% endfor -%}
           {{- ns.x|string|length }} {{ ns.y|tojson|length }} {{ ns.x == local.v }} {{ ns.x <= local.v }} {{ [ns.x, ns.y]|unique|length }};
           {%- for once in [1] %}{% if n >= 0 %}{{ down(n + 1) }}{% endif %}{% endfor -%}
         {%- endmacro -%}
         {{- down(0) -}}
         """,
         "rendering nested deeper than 250 levels (a macro calling itself without end?) in {%- set local = namespace(v=0) -%}"),
        ("{% macro m(x=m()) %}{% endmacro %}{{ m() }}",
         "rendering nested deeper than 250 levels (a macro calling itself without end?) in {% macro m(x=m()) %}"),
        ("{% macro m() %}{% for x in [1] if m() %}{% endfor %}{% endmacro %}{{ m() }}",
         "rendering nested deeper than 250 levels (a macro calling itself without end?) in {% for x in [1] if m() %}"),
        ("{% macro m() %}{{ 1 is eq(m()) }}{% endmacro %}{{ m() }}",
         "rendering nested deeper than 250 levels (a macro calling itself without end?) in {{ 1 is eq(m()) }}"),
        ("{% macro m() %}{{ 'a'|replace('a', m()) }}{% endmacro %}{{ m() }}",
         "rendering nested deeper than 250 levels (a macro calling itself without end?) in {{ 'a'|replace('a', m()) }}"),
        // The deepest the parser takes: two levels per parenthesis, one per block and two for an `if`'s
        // condition, four for a loop's `[1]`.
        ("{{ " + String(repeating: "(", count: 49) + "1" + String(repeating: ")", count: 49) + " }}", "1"),
        (String(repeating: "{% if true %}", count: 98) + "x" + String(repeating: "{% endif %}", count: 98), "x"),
        (String(repeating: "{% for x in [1] %}", count: 96) + "x" + String(repeating: "{% endfor %}", count: 96), "x"),
        (String(repeating: "{% macro m() %}", count: 99) + String(repeating: "{% endmacro %}", count: 99) + "x", "x"),
    ]

    /// Parses and renders each of `atTheLimits`: its output, or the message it fails with.
    private static func renderAtTheLimits() -> [String] {
        atTheLimits.map(\.source).map { source in
            do throws(JinjaError) {
                return try JinjaTemplate(source: source).render([:])
            } catch {
                return error.message
            }
        }
    }

    @Test("Rendering up to every depth limit fits the stack of a Swift concurrency task")
    func depthLimitsInATask() async {
        let results = await Task { Self.renderAtTheLimits() }.value
        #expect(results == Self.atTheLimits.map(\.result))
    }

    @Test("Rendering up to every depth limit fits a 512 KiB stack, the size of macOS's secondary and task threads")
    func depthLimitsOnASmallStack() async {
        // Linux gives tasks 8 MiB; a thread of our own has the stack macOS gives them.
        let results = await withCheckedContinuation { continuation in
            let thread = Thread { continuation.resume(returning: Self.renderAtTheLimits()) }
            thread.stackSize = 512 << 10
            thread.start()
        }
        #expect(results == Self.atTheLimits.map(\.result))
    }
}
