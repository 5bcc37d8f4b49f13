"""Known mistakes in `react`, each a plausible slip in one function or method."""

import difflib
import re
import sys
from fractions import Fraction

from graders.impl import reference
from graders.mutants import mutant

ref = reference("react")


def _parse(name, text, thought=None):
    """The reference's parse, in the classes of the module that carries mutant `name` (the
    engine loads it as ladder.mutant.react.<name>), so that its own run_react knows them."""
    own = sys.modules.get(f"ladder.mutant.react.{name}", ref)
    try:
        step = ref.parse_react(text)
    except ref.ReactFormatError as err:
        raise own.ReactFormatError(str(err)) from None
    thought = step.thought if thought is None else thought
    if isinstance(step, ref.Action):
        return own.Action(thought, step.tool, step.tool_input)
    return own.FinalAnswer(thought, step.answer)


@mutant(
    "parse_react",
    "a step with both an Action and a Final Answer is taken as the Action; it must be refused",
)
def action_wins(text):
    if re.search(r"^\s*Action(?:\s+\d+)?\s*:", text, re.M):
        text = re.split(r"^\s*Final Answer", text, flags=re.M)[0]
    return _parse("action_wins", text)


@mutant("parse_react", "the thought keeps its 'Thought:' label; strip the label")
def thought_keeps_label(text):
    label = re.match(r"\s*(Thought(?:[ \t]+\d+)?[ \t]*:)", text)
    step = _parse("thought_keeps_label", text)
    if label is None:
        return step
    return _parse("thought_keeps_label", text, thought=f"{label[1]} {step.thought}".strip())


@mutant("parse_react", "an Action without an Action Input is accepted with an empty input")
def missing_input_accepted(text):
    if re.search(r"^\s*Action(?:\s+\d+)?\s*:", text, re.M) and "Action Input" not in text:
        text += "\nAction Input:"
    return _parse("missing_input_accepted", text)


@mutant(
    "run_react",
    "the model's text is not cut at 'Observation:': an invented observation gets in",
)
def no_cut(llm, tools, question, max_steps):
    def uncut(prompt):
        return llm(prompt).replace("Observation:", "Observed:")

    answer, trajectory = ref.run_react(uncut, tools, question, max_steps)
    restored = [
        ref.Turn(t.text.replace("Observed:", "Observation:"), t.step, t.observation)
        for t in trajectory
    ]
    return answer, restored


def _loop(llm, tools, question, max_steps, *, catch_tool_errors=True, stop_on_bad_step=False):
    """The reference loop, with one of two slips in its error handling."""
    trajectory = []
    for _ in range(max_steps):
        text = llm(ref.format_prompt(tools, question, trajectory)).split("Observation:")[0].strip()
        try:
            step = ref.parse_react(text)
        except ref.ReactFormatError as err:
            trajectory.append(ref.Turn(text, None, f"Error: {err}"))
            if stop_on_bad_step:
                return None, trajectory
            continue
        if isinstance(step, ref.FinalAnswer):
            trajectory.append(ref.Turn(text, step, None))
            return step.answer, trajectory
        if step.tool not in tools:
            observation = f"Error: no tool named {step.tool!r}"
        elif catch_tool_errors:
            try:
                observation = str(tools[step.tool](step.tool_input))
            except Exception as err:
                observation = f"Error: {err}"
        else:
            observation = str(tools[step.tool](step.tool_input))
        trajectory.append(ref.Turn(text, step, observation))
    return None, trajectory


@mutant("run_react", "a tool that raises stops the loop; its error must become an observation")
def tool_errors_raise(llm, tools, question, max_steps):
    return _loop(llm, tools, question, max_steps, catch_tool_errors=False)


@mutant("run_react", "a malformed step ends the episode; it must become an 'Error:' observation")
def format_errors_stop(llm, tools, question, max_steps):
    return _loop(llm, tools, question, max_steps, stop_on_bad_step=True)


@mutant("run_react", "the loop calls the model max_steps + 1 times")
def one_step_too_many(llm, tools, question, max_steps):
    return ref.run_react(llm, tools, question, max_steps + 1)


@mutant(
    "run_react",
    "the observations never reach the model: give format_prompt the whole trajectory",
)
def observations_withheld(llm, tools, question, max_steps):
    def forgetful(prompt):
        return llm(re.sub(r"^Observation: .*$", "Observation: ", prompt, flags=re.M))

    return ref.run_react(forgetful, tools, question, max_steps)


@mutant(
    "Calculator.__call__",
    "evaluates the expression with eval: unsafe, and it accepts Python that is not arithmetic",
)
def calculator_eval(self, expression):
    return ref.format_number(Fraction(eval(expression, {"__builtins__": {}}, {})))


def _misparse(expression, *, right_minus=False, left_power=False, tight_sign=False):
    """A recursive-descent calculator with one of three classic precedence slips."""
    ref.Calculator()(expression)  # refuses whatever the reference refuses
    tokens, i = re.findall(r"\d+\.?\d*|\.\d+|\*\*|[-+*/()]", expression), 0

    def peek():
        return tokens[i] if i < len(tokens) else None

    def take():
        nonlocal i
        i += 1
        return tokens[i - 1]

    def total():
        value = product()
        while peek() in ("+", "-"):
            if take() == "+":
                value += product()
            elif right_minus:  # sum := product ("-" sum)?: a - b - c becomes a - (b - c)
                return value - total()
            else:
                value -= product()
        return value

    def product():
        value = signed()
        while peek() in ("*", "/"):
            value = value * signed() if take() == "*" else value / signed()
        return value

    def signs():
        sign = 1
        while peek() in ("+", "-"):
            sign = -sign if take() == "-" else sign
        return sign

    def signed():
        sign = signs()
        return power(sign) if tight_sign else sign * power(1)

    def power(sign):
        base = sign * atom()
        if left_power:
            while peek() == "**":
                take()
                exponent = signs()
                base = base ** int(exponent * atom())
            return base
        if peek() == "**":
            take()
            return base ** int(signed())
        return base

    def atom():
        token = take()
        if token == "(":
            value = total()
            take()
            return value
        return Fraction(token)

    return ref.format_number(total())


@mutant("Calculator.__call__", "** groups to the left: 2 ** 3 ** 2 must be 2 ** (3 ** 2) = 512")
def power_groups_left(self, expression):
    return _misparse(expression, left_power=True)


@mutant("Calculator.__call__", "- groups to the right: 10 - 4 - 3 must be (10 - 4) - 3 = 3")
def minus_groups_right(self, expression):
    return _misparse(expression, right_minus=True)


@mutant("Calculator.__call__", "a sign binds tighter than **: -2 ** 2 must be -(2 ** 2) = -4")
def sign_binds_tighter(self, expression):
    return _misparse(expression, tight_sign=True)


@mutant(
    "Calculator.__call__",
    "computes in floats: whole numbers beyond 2**53 lose their last digits; use Fraction",
)
def float_arithmetic(self, expression):
    return ref.format_number(Fraction(float(Fraction(ref.Calculator()(expression)))))


@mutant(
    "Calculator.__call__",
    "no bound on powers: check |exponent| * bits before computing (9 ** 9 ** 9 never ends)",
)
def unbounded_power(self, expression):
    calculator = ref.Calculator()
    calculator.MAX_BITS = 10**9
    return calculator(expression)


@mutant("Lookup.__call__", "the lookup is case-sensitive; ignore case and extra spaces")
def case_sensitive(self, query):
    if query in self.knowledge:
        return self.knowledge[query]
    raise LookupError(f"no entry for {query!r}")


@mutant(
    "Lookup.__call__",
    "returns the closest title's fact instead of refusing: a lookup must never guess",
)
def nearest_guess(self, query):
    try:
        return ref.Lookup(self.knowledge)(query)
    except LookupError:
        normal = {t.casefold(): t for t in self.knowledge}
        near = difflib.get_close_matches(query.strip().casefold(), list(normal), n=1, cutoff=0.5)
        if not near:
            raise
        return self.knowledge[normal[near[0]]]
