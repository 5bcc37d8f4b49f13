"""Public specs for `react`: run `pytest exercises/react` (`--impl=solutions`: the reference).

Oracles: steps and trajectories worked out by hand, exact rational arithmetic (fractions) for the
calculator, the shipped knowledge base, and scripted language models, a malicious one included:
the specs drive your loop with them and look only at what it returns and what it sends to the
model. Nothing is random or timed.
"""

from __future__ import annotations

import builtins
import json
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import fail
from graders.curriculum import kit_root

DATA = kit_root() / "data" / "react"
KNOWLEDGE = json.loads((DATA / "knowledge.json").read_text(encoding="utf-8"))
QUESTIONS = json.loads((DATA / "questions.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------ parse_react


def fields(step) -> tuple:
    """A step as its kind and fields, so that steps compare by what they say."""
    if type(step).__name__ == "Action":
        return ("Action", step.thought, step.tool, step.tool_input)
    if type(step).__name__ == "FinalAnswer":
        return ("FinalAnswer", step.thought, step.answer)
    return (type(step).__name__, step)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Thought: I need the population of Avonwick.\nAction: lookup\n"
            "Action Input: population of Avonwick",
            ("action", "I need the population of Avonwick.", "lookup", "population of Avonwick"),
        ),
        (  # no "Thought:" label (the prompt may end with it); spaces around fields stripped
            " I should add them.\nAction:  calculator \nAction Input:  4800 + 312  ",
            ("action", "I should add them.", "calculator", "4800 + 312"),
        ),
        (  # Yao et al. number their steps; an input may span lines; an empty thought is fine
            "Action 2: lookup\nAction Input 2: river of\nAvonwick",
            ("action", "", "lookup", "river of\nAvonwick"),
        ),
        ("Thought: I now know the final answer.\nFinal Answer: 5112",
         ("final", "I now know the final answer.", "5112")),
        ("Final Answer: the Wenn, which is 312 km long",
         ("final", "", "the Wenn, which is 312 km long")),
        ("Thought 4: Done.\nFinal Answer 4:\n  42 ", ("final", "Done.", "42")),
    ],
)  # fmt: skip
def test_parse_react_reads_a_step(impl, text, expected):
    step = impl.parse_react(text)
    if expected[0] == "action":
        want = impl.Action(thought=expected[1], tool=expected[2], tool_input=expected[3])
    else:
        want = impl.FinalAnswer(thought=expected[1], answer=expected[2])
    if fields(step) != fields(want):
        fail(f"parse_react({text!r}) returned {step!r}; expected {want!r}")


MALFORMED = {
    "Thought: I am not sure what to do.": "neither an Action nor a Final Answer",
    "I will look it up.": "no labels at all",
    "action: lookup\naction input: x": "labels are case-sensitive",
    "Action: lookup": "an Action without its Action Input",
    "Thought: x\nAction Input: 2 + 2": "an Action Input without an Action",
    "Action: calculator\nAction Input: 1 + 1\nFinal Answer: 2": "an Action and a Final Answer",
    "Action: lookup\nAction Input: a\nAction: lookup\nAction Input: b": "two Actions in one step",
    "Action Input: 2 + 2\nAction: calculator": "labels out of order",
    "Final Answer:   ": "an empty Final Answer",
    "Action:\nAction Input: 2 + 2": "no tool named",
}


@pytest.mark.parametrize("text", list(MALFORMED))
def test_parse_react_rejects_a_malformed_step(impl, text):
    try:
        step = impl.parse_react(text)
    except ValueError as err:  # ReactFormatError is a ValueError (compared by name: see fields)
        if type(err).__name__ == "ReactFormatError" and str(err).strip():
            return
        if type(err).__name__ == "ReactFormatError":
            fail(f"parse_react({text!r}) raised ReactFormatError with an empty message; say why")
        fail(
            f"parse_react({text!r}) raised {type(err).__name__}: {err}; a malformed step "
            f"({MALFORMED[text]}) must raise ReactFormatError"
        )
    except NotImplementedError:
        raise
    except Exception as err:
        fail(
            f"parse_react({text!r}) raised {type(err).__name__}: {err}; a malformed step "
            f"({MALFORMED[text]}) must raise ReactFormatError"
        )
    fail(f"parse_react({text!r}) returned {step!r}; the step is malformed ({MALFORMED[text]})")


free = st.text(st.characters(codec="ascii", categories=["L", "N", "Zs"]), max_size=25).filter(
    lambda s: ":" not in s
)


@given(
    thought=free,
    tool=st.sampled_from(["lookup", "calculator", "search", "wiki_lookup"]),
    tool_input=free,
    answer=free.filter(str.strip),
    numbered=st.booleans(),
    labelled=st.booleans(),
)
def test_parse_react_round_trips(impl, thought, tool, tool_input, answer, numbered, labelled):
    n = " 3" if numbered else ""
    head = f"Thought{n}: {thought}\n" if labelled else f"{thought}\n"
    text = f"{head}Action{n}: {tool}\nAction Input{n}: {tool_input}"
    want = impl.Action(thought=thought.strip(), tool=tool, tool_input=tool_input.strip())
    if fields(step := impl.parse_react(text)) != fields(want):
        fail(f"parse_react({text!r}) returned {step!r}; expected {want!r}")
    text = f"{head}Final Answer{n}: {answer}"
    want = impl.FinalAnswer(thought=thought.strip(), answer=answer.strip())
    if fields(step := impl.parse_react(text)) != fields(want):
        fail(f"parse_react({text!r}) returned {step!r}; expected {want!r}")


# ------------------------------------------------------------------------------- Calculator


class NoEval:
    """Replace eval and exec while the calculator runs: a safe parser never needs them."""

    def __enter__(self):
        self.saved = builtins.eval, builtins.exec

        def refuse(*args, **kwargs):
            raise AssertionError("the Calculator called eval or exec")

        builtins.eval = builtins.exec = refuse

    def __exit__(self, *exc):
        builtins.eval, builtins.exec = self.saved


def calculate(impl, expression):
    with NoEval():
        try:
            return impl.Calculator()(expression)
        except AssertionError:
            fail(
                f"Calculator()({expression!r}) called eval or exec. Never evaluate model text as "
                "Python, not even with empty builtins: parse the arithmetic yourself"
            )


@pytest.mark.parametrize(
    ("expression", "expected", "why"),
    [
        ("2 + 3 * 4", "14", "* binds tighter than +"),
        ("(2 + 3) * 4", "20", "parentheses first"),
        ("10 - 4 - 3", "3", "- groups to the left: (10 - 4) - 3"),
        ("48 / 4 / 2", "6", "/ groups to the left: (48 / 4) / 2"),
        ("2 ** 3 ** 2", "512", "** groups to the right: 2 ** (3 ** 2)"),
        ("-2 ** 2", "-4", "** binds tighter than a sign: -(2 ** 2)"),
        ("2 ** -2", "0.25", "a negative exponent"),
        ("- -3 + +1", "4", "signs stack"),
        ("0.1 + 0.2", "0.3", "exact arithmetic: no 0.30000000000000004"),
        ("7 / 2", "3.5", "a non-whole result, written by format_number"),
        ("-1 / 3", "-0.333333", "rounded to 6 decimals by format_number"),
        ("123456789 * 987654321", "121932631112635269", "exact integers, beyond a float's 2^53"),
        (" ( 4800+312 )/2 ", "2556", "spaces anywhere, or none"),
        (".5 * 4", "2", "a number may start with its point"),
    ],
)
def test_calculator_evaluates_arithmetic(impl, expression, expected, why):
    got = calculate(impl, expression)
    if got != expected:
        fail(f"Calculator()({expression!r}) returned {got!r}; expected {expected!r} ({why})")


def exact(tree) -> Fraction:
    if isinstance(tree, int):
        return Fraction(tree)
    op, left, right = tree
    a, b = exact(left), exact(right)
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]


def written(tree) -> str:
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    return f"({written(left)} {op} {written(right)})"


trees = st.recursive(
    st.integers(0, 999),
    lambda inner: st.tuples(st.sampled_from("+-*/"), inner, inner),
    max_leaves=8,
).filter(lambda t: written(t).count("(") < 20)


@given(tree=trees)
def test_calculator_agrees_with_fractions(impl, tree):
    try:
        value = exact(tree)
    except ZeroDivisionError:
        return  # the next spec checks division by zero
    expression = written(tree)
    got = calculate(impl, expression)
    want = impl.format_number(value)
    if got != want:
        fail(
            f"Calculator()({expression!r}) returned {got!r}; exact arithmetic gives {value} "
            f"(format_number: {want!r})"
        )


REFUSED = {
    "__import__('os').system('echo hacked')": "a name and a call",
    "().__class__.__bases__[0].__subclasses__()": "attributes",
    "open('/etc/passwd').read()": "a call",
    "x + 1": "a name",
    "'ab' * 3": "quotes",
    "[1, 2][0]": "brackets",
    "1; 2": "two statements",
    "1 if 2 else 3": "Python syntax",
    "lambda: 1": "Python syntax",
    "2 ^ 3": "another operator",
    "1e3": "scientific notation is not in the language",
    "": "nothing to evaluate",
    "3 +": "a missing operand",
    "(1 + 2": "an unclosed parenthesis",
    "1 + 2)": "an extra parenthesis",
    "4 4": "two numbers, no operator",
    "1 / (3 - 3)": "division by zero",
    "2 ** 0.5": "an exponent that is not whole",
    "2 ** 12000": "a power too large: 12000 * 2 bits > 10,000",
    "10 ** 100 ** 100": "a power too large",
    "1+" * 100 + "1": "more than 200 characters",
}


@pytest.mark.parametrize("expression", list(REFUSED))
def test_calculator_refuses_anything_else(impl, expression):
    try:
        got = calculate(impl, expression)
    except ValueError as err:
        if not str(err).strip():
            fail(f"Calculator()({expression!r}) raised ValueError with no message; say why")
        return
    except NotImplementedError:
        raise
    except Exception as err:
        fail(
            f"Calculator()({expression!r}) raised {type(err).__name__}: {err}; it must raise "
            f"ValueError ({REFUSED[expression]})"
        )
    fail(
        f"Calculator()({expression!r}) returned {got[:60]!r}; it must refuse with ValueError "
        f"({REFUSED[expression]})"
    )


def test_calculator_takes_200_characters(impl):
    expression = "1+" * 99 + "1"  # 199 characters: within the limit
    got = calculate(impl, expression)
    if got != "100":
        fail(f"Calculator()('1+1+...+1', 199 characters) returned {got!r}; expected '100'")


# ----------------------------------------------------------------------------------- Lookup


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("population of Avonwick", "population of Avonwick"),
        ("  Population of  AVONWICK ", "population of Avonwick"),
        ('"twin town of norton"', "twin town of Norton"),
        ("length of the Wenn in km", "length of the Wenn in km"),
    ],
)
def test_lookup_finds_a_fact(impl, query, title):
    got = impl.Lookup(KNOWLEDGE)(query)
    if got != KNOWLEDGE[title]:
        fail(
            f"Lookup(knowledge)({query!r}) returned {got!r}; expected {KNOWLEDGE[title]!r}, the "
            f"entry {title!r} (ignore case, surrounding spaces and quotes, runs of spaces)"
        )


def test_lookup_refuses_an_unknown_title(impl):
    lookup = impl.Lookup(KNOWLEDGE)
    for query, similar in [
        ("populaton of Avonwick", "population of Avonwick"),
        ("population of Avon", "population of Avonwick"),
        ("capital of Mars", None),
    ]:
        try:
            got = lookup(query)
        except LookupError as err:
            if similar and similar not in str(err):
                fail(
                    f"Lookup(knowledge)({query!r}) raised LookupError({str(err)!r}); the message "
                    f"should suggest {similar!r} (difflib.get_close_matches)"
                )
            continue
        fail(
            f"Lookup(knowledge)({query!r}) returned {got!r}; no title matches it exactly, so it "
            "must raise LookupError (suggesting similar titles), never guess"
        )


# -------------------------------------------------------------------------------- run_react


class Recording:
    """Wraps a model: records every prompt it is given."""

    def __init__(self, model):
        self.model, self.prompts = model, []

    def __call__(self, prompt):
        self.prompts.append(prompt)
        return self.model(prompt)


def tools(impl):
    return {"calculator": impl.Calculator(), "lookup": impl.Lookup(KNOWLEDGE)}


def test_run_react_answers_with_tools(impl):
    question = "What is the combined population of Avonwick and its twin town?"
    script = [
        "Thought: First the twin town.\nAction: lookup\nAction Input: twin town of Avonwick",
        "Thought: It is {0}.\nAction: lookup\nAction Input: population of Avonwick",
        "Thought: Now {0}.\nAction: lookup\nAction Input: population of {0}",
        "Thought: Add them.\nAction: calculator\nAction Input: {1} + {2}",
        "Thought: I now know the final answer.\nFinal Answer: {3}",
    ]
    kit = tools(impl)
    model = Recording(impl.ScriptedLLM(script))
    answer, trajectory = impl.run_react(model, kit, question, 10)
    observations = ["Norton", "4800", KNOWLEDGE["population of Norton"]]
    observations.append(str(4800 + int(observations[2])))
    if answer != observations[3]:
        fail(
            f"run_react(a scripted model, calculator and lookup, {question!r}) answered "
            f"{answer!r}; expected {observations[3]!r}. Trajectory: {trajectory!r}"
        )
    got = [t.observation for t in trajectory]
    if got != [*observations, None]:
        fail(f"run_react's observations were {got!r}; expected {[*observations, None]!r}")
    for k, prompt in enumerate(model.prompts):
        expected = impl.format_prompt(kit, question, trajectory[:k])
        if prompt != expected:
            fail(
                f"at step {k} run_react gave the model\n{prompt!r}\nexpected "
                f"format_prompt(tools, question, the first {k} turns):\n{expected!r}"
            )
    if len(model.prompts) != 5 or [t.text for t in trajectory] != [
        impl.ScriptedLLM(script)(p).strip() for p in model.prompts
    ]:
        fail("run_react should call the model once per step and record each output as Turn.text")
    want = ("Action", "It is Norton.", "lookup", "population of Avonwick")
    if fields(trajectory[1].step) != want:
        fail(
            f"the second turn's step should be the parsed Action {want}; got {trajectory[1].step!r}"
        )


def test_run_react_cuts_the_text_at_observation(impl):
    # The model writes a made-up observation and answer after its action: only the action counts.
    script = [
        "Thought: I need Avonwick's founding year.\nAction: lookup\nAction Input: founding year "
        "of Avonwick\nObservation: 1066\nThought: I now know the final answer.\nFinal Answer: 1066",
        "Thought: The lookup says {0}.\nFinal Answer: {0}",
    ]
    answer, trajectory = impl.run_react(impl.ScriptedLLM(script), tools(impl), "When?", 5)
    if answer != "1711":
        fail(
            f"run_react answered {answer!r} for a model that invents 'Observation: 1066' and a "
            "Final Answer after its Action; cut the model's text before 'Observation:' and run "
            f"the tool (the knowledge base says 1711). Trajectory: {trajectory!r}"
        )
    first = trajectory[0].text
    if "Observation" in first or not first.endswith("Action Input: founding year of Avonwick"):
        fail(
            "Turn.text should be the model's text cut before 'Observation:' and stripped; got "
            f"{first!r}"
        )


def test_run_react_turns_errors_into_observations(impl):
    def broken(_):
        raise RuntimeError("the service is down")

    kit = {**tools(impl), "weather": broken}
    script = [
        "Thought: Let me use Python.\nAction: python\nAction Input: print(1)",  # unknown tool
        "Thought: The weather?\nAction: weather\nAction Input: Avonwick",  # the tool raises
        "Thought: Compute.\nAction: calculator\nAction Input: 1 / 0",  # the calculator refuses
        "Thought: Look it up.\nAction: lookup\nAction Input: mayor of Avonwick",  # no such title
        "Thought: I will just say it.",  # malformed: no Action, no Final Answer
        "Thought: I give up.\nFinal Answer: unknown",
    ]
    answer, trajectory = impl.run_react(impl.ScriptedLLM(script), kit, "What now?", 10)
    observations = [t.observation for t in trajectory]
    if answer != "unknown" or len(trajectory) != 6:
        fail(
            "run_react should keep going after every kind of error and answer 'unknown' at step "
            f"6; it answered {answer!r} after {len(trajectory)} steps, observations "
            f"{observations!r}"
        )
    what = ["an unknown tool", "a tool that raises", "a refused calculation", "an unknown title",
            "a malformed step"]  # fmt: skip
    for k, (observation, why) in enumerate(zip(observations, what, strict=False)):
        if not (observation or "").startswith("Error:"):
            fail(
                f"turn {k} ({why}): the observation should start with 'Error:'; got {observation!r}"
            )
    if "the service is down" not in observations[1] or "python" not in observations[0]:
        fail(
            "an error observation should say what went wrong: the tool's exception message, or "
            f"the unknown tool's name; got {observations[:2]!r}"
        )
    if trajectory[4].step is not None or fields(trajectory[0].step)[0] != "Action":
        fail("a malformed step is recorded with step=None; a parsed one with its Action")


@pytest.mark.parametrize("max_steps", [1, 3, 7])
def test_run_react_stops_at_max_steps(impl, max_steps):
    stubborn = Recording(
        impl.ScriptedLLM(["Thought: Again.\nAction: calculator\nAction Input: 1 + 1"])
    )
    answer, trajectory = impl.run_react(stubborn, tools(impl), "Loop forever?", max_steps)
    if answer is not None or len(trajectory) != max_steps or len(stubborn.prompts) != max_steps:
        fail(
            f"run_react(max_steps={max_steps}) with a model that never answers should call it "
            f"exactly {max_steps} times and return (None, {max_steps} turns); it called it "
            f"{len(stubborn.prompts)} times and returned ({answer!r}, {len(trajectory)} turns)"
        )


def test_run_react_refuses_a_malicious_model(impl, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = [
        "Thought: Take over the machine.\nAction: calculator\n"
        "Action Input: __import__('os').system('touch hacked')",
        "Thought: Try harder.\nAction: calculator\nAction Input: 9 ** 9 ** 9 ** 9",
        "Thought: Call a built-in.\nAction: __import__\nAction Input: os",
        "Thought: Escape through the tool table.\nAction: lookup.__class__\nAction Input: x",
        "Thought: Report.\nFinal Answer: {0} | {1} | {2} | {3}",
    ]
    with NoEval():
        try:
            answer, trajectory = impl.run_react(
                impl.ScriptedLLM(script), tools(impl), "Obey me.", 8
            )
        except AssertionError:
            fail("eval or exec was called while a malicious model drove run_react")
    if (tmp_path / "hacked").exists():
        fail("a malicious model made run_react create a file: the calculator ran its input")
    observations = [t.observation for t in trajectory[:4]]
    if len(trajectory) != 5 or not all((o or "").startswith("Error:") for o in observations):
        fail(
            "a malicious model's code injection, power bomb, built-in and attribute tool names "
            f"must each give an 'Error: ...' observation; got {observations!r}"
        )
    if answer != " | ".join(observations):
        fail(f"the malicious model's report should be its four error observations; got {answer!r}")


def test_run_react_solves_the_shipped_questions(impl):
    kit, wrong = tools(impl), []
    for q in QUESTIONS:
        answer, trajectory = impl.run_react(impl.ScriptedLLM(q["script"]), kit, q["question"], 8)
        if answer != q["answer"]:
            wrong.append(f"{q['question']!r}: {answer!r}, expected {q['answer']!r}; {trajectory!r}")
    if wrong:
        fail(
            f"{len(wrong)} of {len(QUESTIONS)} shipped questions went wrong with the scripted "
            f"models of data/react/questions.json; the first: {wrong[0][:1500]}"
        )
