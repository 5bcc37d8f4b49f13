"""Hidden grading cases for `react`: other steps, expressions, knowledge, tools and models."""

import json

from graders.cases import Case
from graders.curriculum import kit_root


def parsed(m, texts):
    """parse_react on each text: the step's kind and fields, or the error's type."""
    out = []
    for text in texts:
        try:
            step = m.parse_react(text)
        except Exception as err:
            out.append(["error", type(err).__name__])
            continue
        kind = type(step).__name__
        if kind == "Action":
            out.append([kind, step.thought, step.tool, step.tool_input])
        else:
            out.append([kind, step.thought, getattr(step, "answer", None)])
    return out


def parse_inputs(seed):
    return {
        "texts": [
            "Thought: Let me compute.\nAction: calculator\nAction Input: (3 + 4) * 2\n",
            "  Thought 7 : spaced label\n  Action 7 : lookup\n  Action Input 7 : river of Selby",
            "Final Answer: 1711\n\n",
            "Thought: the ratio is simple\nFinal Answer: 3:4",
            "Thought: The Action: label comes next.\nFinal Answer: 3",
            "Thought:\nFinal Answer: ok",
            "I will act.\nAction: calculator\nAction Input: 2+2\nFinal Answer: 4",
            "Thought: a\nAction: lookup\nAction Input: x\nThought: b",
            "Final Answer: 5\nFinal Answer: 6",
            "Action: lookup\nAction Input: x\nAction Input: y",
            "Thought: hmm\nAction: search wiki\nAction Input: Selby",
            "Thought: no input\nAction: lookup",
            "Thought: Two lines\nof thought.\nAction: calc\nAction Input:\n  12 * 3\n  ",
            "Action Input: 12\nThought: x\nAction: calc",
            "FINAL ANSWER: 9",
            "Thought 1: first\nAction 1: lookup\nAction Input 2: founding year of Selby",
        ]
    }


def calculated(m, expressions):
    """The calculator on each expression ('refused' for a ValueError), and whether it ever
    called eval or exec (they are replaced by recorders while it runs)."""
    import builtins

    called = []
    saved = builtins.eval, builtins.exec

    def record(*args, **kwargs):
        called.append(True)
        raise RuntimeError("eval and exec are not allowed")

    builtins.eval = builtins.exec = record
    out = []
    try:
        for expression in expressions:
            try:
                out.append(str(m.Calculator()(expression)))
            except ValueError:
                out.append("refused")
            except Exception as err:
                out.append(f"crashed: {type(err).__name__}")
    finally:
        builtins.eval, builtins.exec = saved
    return {"results": out, "eval_called": bool(called)}


def expression_inputs(seed):
    return {
        "expressions": [
            "3 * (2 + 5) - 4 / 8",
            "100 - 20 - 30 - 40",
            "2 ** 2 ** 3",
            "-3 ** 2",
            "(-3) ** 2",
            "(-2) ** 3",
            "0.25 * 0.25",
            "1 / 7",
            "2 / 3",
            "-(5 - 8)",
            "((1 + 2) * (3 + 4)) / 5",
            "99999999999 * 99999999999",
            "10 / 4 * 2",
            "7 - -2",
            "3 ** 0",
            "1.5 ** 2",
            "0.000001 * 3",
            "1 / 3 * 3",
            "60 - 12 - 3 * 2 ** 2",
            "1e5",
            "0x1F",
            "True + 1",
            "abs(-3)",
            "2 ** (1 / 2)",
            "1 // 2",
            "5 % 3",
            "2 ** 9000",
            "4 (2)",
            ")",
        ]
    }


def bomb_inputs(seed):
    return {
        "expressions": [
            "9 ** 9 ** 9",
            "99 ** 99 ** 99",
            "(10 ** 100) ** (10 ** 100)",
            "2 ** 3 ** 4 ** 5",
            "(" * 120 + "1" + ")" * 120,
        ]
    }


def looked_up(m, knowledge, queries):
    """Lookup(knowledge) on each query: ['found', text] or ['refused', suggests the title?]."""
    lookup = m.Lookup(knowledge)
    out = []
    for query, similar in queries:
        try:
            out.append(["found", str(lookup(query))])
        except LookupError as err:
            out.append(["refused", bool(similar) and similar in str(err)])
        except Exception as err:
            out.append(["crashed", type(err).__name__])
    return out


def lookup_inputs(seed):
    return {
        "knowledge": {
            "capital of Norland": "Brackholm",
            "Capital of Sudland": "Wesby",
            "height of Mount Kel in metres": "2417",
            "author of The Tide": "Ina Roe",
            "year The Tide was written": "1903",
            "population of Selby": "12050",
        },
        "queries": [
            ["CAPITAL OF NORLAND", None],
            ["'capital of sudland'", None],
            [" height of  mount kel in metres ", None],
            ['"author of the tide"', None],
            ["capital of Norlandia", "capital of Norland"],
            ["population of Selby?", "population of Selby"],
            ["year the tide was written", None],
            ["who wrote The Tide", None],
            ["", None],
        ],
    }


def episodes(m, scenarios):
    """run_react on scripted models: the answer, each turn (text, step, observation), calls."""
    knowledge = {
        "river of Selby": "Arle",
        "length of the Arle in km": "148",
        "twin of Selby": "Dunby",
    }

    def weather(place):
        raise ValueError(f"no weather station in {place}")

    def count_letters(word):
        return len(word.strip())

    tools = {
        "search": m.Lookup(knowledge),
        "calc": m.Calculator(),
        "weather": weather,
        "letters": count_letters,
    }
    results = []
    for script, max_steps in scenarios:
        model = m.ScriptedLLM(script)
        calls = []

        def llm(prompt, model=model, calls=calls):
            calls.append(prompt)
            return model(prompt)

        answer, trajectory = m.run_react(llm, tools, "What about Selby?", int(max_steps))
        turns = []
        for turn in trajectory:
            step = turn.step
            if step is None:
                fields = None
            elif type(step).__name__ == "Action":
                fields = ["Action", step.thought, step.tool, step.tool_input]
            else:
                fields = ["FinalAnswer", step.thought, getattr(step, "answer", None)]
            turns.append([turn.text, fields, turn.observation])
        results.append({"answer": answer, "turns": turns, "calls": len(calls)})
    return results


def episode_inputs(seed):
    return {
        "scenarios": [
            [  # Yao et al.'s numbered steps, an error on the way, a multi-hop lookup
                [
                    "Thought 1: Which river?\nAction 1: search\nAction Input 1: river of selby",
                    "Thought 2: The {0}. Its length?\nAction 2: search\nAction Input 2: "
                    "length of the {0} in km",
                    "Thought 3: I will check with a tool that does not exist.\nAction 3: wiki\n"
                    "Action Input 3: Arle",
                    "Thought 4: in miles, roughly\nAction 4: calc\nAction Input 4: {1} * 5 / 8",
                    "Thought 5: Done.\nFinal Answer 5: {1} km, about {3} miles",
                ],
                9,
            ],
            [  # invented observations in the middle of a line and on their own lines
                [
                    "Thought: Twin?\nAction: search\nAction Input: twin of Selby Observation: "
                    "Selbyton\nFinal Answer: Selbyton",
                    "Thought: It is {0}.\nFinal Answer: {0}\nObservation: and more",
                ],
                5,
            ],
            [  # tool errors, a non-str result, a malformed step, then an answer
                [
                    "Thought: Weather.\nAction: weather\nAction Input: Selby",
                    "Thought: Count.\nAction: letters\nAction Input: Selby",
                    "Thought: I just know it.",
                    "Thought: Check.\nAction: calc\nAction Input: {1} ** 2 / 0",
                    "Thought: Done.\nFinal Answer: {1}",
                ],
                8,
            ],
            [  # never answers: stopped at max_steps
                ["Thought: More.\nAction: calc\nAction Input: 1 + 1"],
                4,
            ],
            [  # answers at once
                ["Final Answer: Selby is a town."],
                1,
            ],
        ]
    }


def compare_episodes(actual, expected, inputs):
    """Answers, calls, texts and steps exactly; observations exactly, except that two error
    observations match when both start with 'Error:' (the wording is yours)."""
    if not isinstance(actual, list) or len(actual) != len(expected):
        return f"expected {len(expected)} episodes; got {actual!r}"[:300]
    for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
        where = f"episode {k} (max_steps={inputs['scenarios'][k][1]})"
        if a["calls"] != e["calls"]:
            return f"{where}: the model was called {a['calls']} times; expected {e['calls']}"
        if len(a["turns"]) != len(e["turns"]):
            return f"{where}: {len(a['turns'])} turns; expected {len(e['turns'])}"
        for t, (ta, te) in enumerate(zip(a["turns"], e["turns"], strict=True)):
            if ta[0] != te[0]:
                return f"{where}, turn {t}: Turn.text {ta[0]!r}; expected {te[0]!r}"
            if ta[1] != te[1]:
                return f"{where}, turn {t}: step {ta[1]!r}; expected {te[1]!r}"
            errors = [str(o).startswith("Error:") for o in (ta[2], te[2]) if o is not None]
            if ta[2] != te[2] and not (len(errors) == 2 and all(errors)):
                return f"{where}, turn {t}: observation {ta[2]!r}; expected {te[2]!r}"
        if a["answer"] != e["answer"]:
            return f"{where}: answer {a['answer']!r}; expected {e['answer']!r}"
    return None


def shipped(m, knowledge, questions):
    """The shipped questions, with their scripted models and the learner's tools and loop."""
    tools = {"calculator": m.Calculator(), "lookup": m.Lookup(knowledge)}
    return [m.run_react(m.ScriptedLLM(q["script"]), tools, q["question"], 8)[0] for q in questions]


def shipped_inputs(seed):
    folder = kit_root() / "data" / "react"
    knowledge = json.loads((folder / "knowledge.json").read_text(encoding="utf-8"))
    questions = json.loads((folder / "questions.json").read_text(encoding="utf-8"))
    return {"knowledge": knowledge, "questions": questions[1::2]}


CASES = [
    Case(
        "parse_react on 16 steps, well-formed and not", call=parsed, inputs=parse_inputs, points=2
    ),
    Case(
        "Calculator on 29 expressions, never calling eval",
        call=calculated,
        inputs=expression_inputs,
        points=2,
    ),
    Case(
        "Calculator refuses power bombs and deep nesting at once",
        call=calculated,
        inputs=bomb_inputs,
        points=1,
        timeout=30,
    ),
    Case("Lookup over another knowledge base", call=looked_up, inputs=lookup_inputs, points=1),
    Case(
        "run_react on 5 scripted episodes (errors, invented observations, max_steps)",
        call=episodes,
        inputs=episode_inputs,
        compare=compare_episodes,
        points=3,
    ),
    Case(
        "run_react answers 12 shipped questions with your tools",
        call=shipped,
        inputs=shipped_inputs,
        points=2,
    ),
]
