"""ReAct: synergizing reasoning and acting in language models (Yao et al., 2023).

A language model answers a question by interleaving free-text *thoughts* with *actions* that call
tools (look a fact up, do arithmetic); each tool's result comes back as an *observation* in the
prompt, and the model continues from there until it writes a final answer. The loop around the
model is plain code: parse each step, run the tool, feed the observation back, stop in time, and
never trust the model's text with more power than the tools give it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "Action",
    "Calculator",
    "FinalAnswer",
    "Lookup",
    "ReactFormatError",
    "ScriptedLLM",
    "Turn",
    "format_number",
    "format_prompt",
    "parse_react",
    "run_react",
]

# A tool, as run_react sees it: its input (str) -> an observation (str); it may raise.
Tool = Callable[[str], str]


@dataclass(frozen=True)
class Action:
    """A step that calls a tool (given): `tool(tool_input)` becomes the next observation."""

    thought: str
    tool: str
    tool_input: str


@dataclass(frozen=True)
class FinalAnswer:
    """A step that ends the episode with `answer` (given)."""

    thought: str
    answer: str


class ReactFormatError(ValueError):
    """A model's step that is neither one Action with its Action Input nor one Final Answer."""


@dataclass(frozen=True)
class Turn:
    """One step of a trajectory (given).

    text: the model's output for this step, cut before the first "Observation:" and stripped;
    step: what parse_react made of it (None when it was malformed); observation: what the loop
    fed back (the tool's result, or a message starting with "Error:"), None after a FinalAnswer.
    """

    text: str
    step: Action | FinalAnswer | None
    observation: str | None


def format_prompt(tools: Mapping[str, Tool], question: str, trajectory: list[Turn]) -> str:
    """The prompt for the next step (given): instructions, the question, every turn so far.

    Each turn is its text, then (unless it is None) "Observation: <observation>" on a line of its
    own; the prompt ends with a newline, where the model writes its next "Thought: ...".
    """
    described = "\n".join(
        f"{name}: {getattr(tool, 'description', '')}" for name, tool in tools.items()
    )
    lines = [
        "Answer the question. You can use these tools:",
        described,
        "",
        "Use this format:",
        "Thought: what you think about the question and what to do next",
        f"Action: the tool to use, one of: {', '.join(tools)}",
        "Action Input: the input for the tool",
        "Observation: the tool's result",
        "... (Thought, Action, Action Input and Observation can repeat)",
        "Thought: I now know the final answer",
        "Final Answer: the answer to the question",
        "",
        f"Question: {question}",
    ]
    for turn in trajectory:
        lines.append(turn.text)
        if turn.observation is not None:
            lines.append(f"Observation: {turn.observation}")
    return "\n".join(lines) + "\n"


class ScriptedLLM:
    """A scripted language model (given): the k-th step of an episode writes script[k].

    ScriptedLLM(script) with script a list of str. Called with a prompt, it counts the
    "Observation: " lines after the prompt's last "Question: " line (k of them), and returns
    script[min(k, len(script) - 1)] with every "{i}" replaced by the first line of observation i
    (0-based; "?" when there is no such observation yet). It reads what your loop put in the
    prompt, so its tool inputs and answers are only right when the observations are.
    """

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)

    def __call__(self, prompt: str) -> str:
        episode = prompt.rsplit("\nQuestion: ", 1)[-1]
        seen = re.findall(r"^Observation: (.*)$", episode, flags=re.M)
        template = self.script[min(len(seen), len(self.script) - 1)]
        return re.sub(
            r"\{(\d+)\}", lambda m: seen[int(m[1])] if int(m[1]) < len(seen) else "?", template
        )


LABEL = re.compile(r"^[ \t]*(Thought|Action Input|Action|Final Answer)(?:[ \t]+\d+)?[ \t]*:", re.M)
ORDER = ["Thought", "Action", "Action Input", "Final Answer"]


def parse_react(text: str) -> Action | FinalAnswer:
    """One step of a ReAct model's output, parsed: an Action or a FinalAnswer.

    A step is an optional thought ("Thought: ..." or text without a label), then either
    "Action: <tool>" and "Action Input: <input>", or "Final Answer: <answer>". Labels open a line,
    are case-sensitive and may carry a step number ("Action 2:", as in Yao et al.'s prompts);
    each field runs to the next label (the last to the end of the text) and is stripped of
    surrounding whitespace. The tool's name must fit on its line; a thought may be empty, an
    Action Input too, a Final Answer not.

    Raises ReactFormatError (a ValueError), whose message says what is wrong, when the step has
    neither an Action nor a Final Answer, has both, has an Action without an Action Input or the
    reverse, repeats a label, puts labels out of order (Thought, Action, Action Input), or leaves
    the tool's name or the final answer empty.
    """
    # YOUR CODE HERE
    raise NotImplementedError("parse_react: not implemented yet; see exercises/react/README.md")


def run_react(
    llm: Callable[[str], str], tools: Mapping[str, Tool], question: str, max_steps: int
) -> tuple[str | None, list[Turn]]:
    """Yao et al.'s loop: think, act, observe, until a Final Answer or max_steps model calls.

    Each step: text = llm(format_prompt(tools, question, trajectory)), cut before its first
    "Observation:" (a model that writes its own observations is making them up) and stripped;
    then parse_react(text):
      - a FinalAnswer ends the episode: append Turn(text, step, None), return (answer, trajectory);
      - an Action runs tools[step.tool](step.tool_input) and the result, as a str, is the
        observation;
      - an unknown tool, a tool that raises, or a malformed step (ReactFormatError) does not stop
        the loop: the observation is "Error: <what went wrong>", so the model can correct itself;
    and appends Turn(text, step or None, observation). After max_steps model calls without a
    final answer, returns (None, trajectory). The model is called exactly once per step.
    """
    if max_steps < 1:
        raise ValueError(f"run_react: max_steps must be at least 1; got {max_steps}")
    # YOUR CODE HERE
    raise NotImplementedError("run_react: not implemented yet; see exercises/react/README.md")


def format_number(x: Fraction) -> str:
    """How the calculator writes a number (given): exact to 6 decimal places.

    x is rounded half-to-even to 6 decimals; whole numbers are written without a point
    ("42", "-7"), others with the trailing zeros dropped ("3.5", "0.333333", "-0.125").
    """
    x = round(Fraction(x), 6)
    if x.denominator == 1:
        return str(x.numerator)
    whole, millionths = divmod(abs(x.numerator) * 10**6 // x.denominator, 10**6)
    return f"{'-' if x < 0 else ''}{whole}.{millionths:06d}".rstrip("0")


class Calculator:
    """A tool that evaluates arithmetic safely: a parser of its own, never eval or exec.

    calculator(expression) -> the value, written by format_number. The language: numbers
    ("12", "3.5", ".5"), + - * / with the usual precedence, left to right ("10 - 4 - 3" is 3),
    ** binding tighter than a sign and grouping to the right ("-2 ** 2" is -4, "2 ** 3 ** 2" is
    512), unary + and -, parentheses, spaces anywhere. Arithmetic is exact (fractions.Fraction):
    "0.1 + 0.2" is "0.3".

    Raises ValueError, with a message saying why, for anything else: names, calls, attributes,
    quotes, other operators, a syntax error, an empty expression, more than 200 characters,
    division by zero, a power whose exponent is not a whole number, and a power too large to
    write: |exponent| * (bits of the base's numerator or denominator, the larger) > 10,000.
    """

    description = "evaluates arithmetic, e.g. (4800 + 312) / 2; numbers, + - * / ** and ( )"
    MAX_CHARS, MAX_BITS = 200, 10_000

    def __call__(self, expression: str) -> str:
        # YOUR CODE HERE
        raise NotImplementedError(
            "Calculator.__call__: not implemented yet; see exercises/react/README.md"
        )


class Lookup:
    """A tool that looks facts up in a small knowledge base: title -> text.

    Lookup(knowledge) with knowledge a mapping of titles to texts (data/react/knowledge.json).
    lookup(query) returns the text whose title matches the query, ignoring case, surrounding
    whitespace and quotes, and runs of spaces ("  Population of  AVONWICK " finds "population
    of Avonwick"). Otherwise it raises LookupError, whose message names up to three similar
    titles (difflib.get_close_matches on the normalised titles) when there are any. It never
    guesses: a query that matches no title exactly is an error, not the nearest fact.
    """

    description = "looks a fact up by its title, e.g. population of Avonwick"

    def __init__(self, knowledge: Mapping[str, str]) -> None:
        self.knowledge = dict(knowledge)

    def __call__(self, query: str) -> str:
        # YOUR CODE HERE
        raise NotImplementedError(
            "Lookup.__call__: not implemented yet; see exercises/react/README.md"
        )
