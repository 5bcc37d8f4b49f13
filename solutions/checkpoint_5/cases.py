"""Hidden cases of checkpoint 5: the learner's pieces, together, on votes and questions they have
not seen.

Each call gets the folder of the learner's pieces and the public spec file's source, whose glue
(the chain-of-thought votes, the ReAct episodes) it runs, so the checkpoint is defined once. The
data travel as inputs: the sandbox sees no file of the kit. The new questions' answers never leave
the trusted side: the sandbox gets only the questions and the scripts, which hold no answer.
"""

import random

from graders.cases import Case
from graders.curriculum import kit_root
from graders.impl import execute

SPEC = kit_root() / "exercises" / "checkpoint_5" / "test_checkpoint_5.py"
glue = execute(SPEC, "ladder.checkpoint_5.glue")  # the trusted side's copy of the same glue


def votes(folder, spec, exemplars, problems, n, seed):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_5.py")
    greedy, voted = ns["chain_of_thought"](own, exemplars, problems, n, seed)
    return {"greedy": greedy, "voted": voted}


def episodes(folder, spec, knowledge, questions):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_5.py")
    return ns["react_answers"](own, knowledge, questions)


def vote_inputs(seed):
    data = glue.load_data()
    return {
        "spec": SPEC.read_text(),
        "exemplars": data["exemplars"][:3],  # fewer exemplars than the specs use
        "problems": data["problems"],
        "n": 9,
        "seed": seed,
    }


def compare_votes(actual, expected, inputs):
    """Every correct implementation draws the same samples from one generator, so the answers
    must equal the reference's; the message gives the accuracies the checkpoint is about."""
    if not isinstance(actual, dict) or sorted(actual) != ["greedy", "voted"]:
        return f"expected a dict with 'greedy' and 'voted' answers, got {type(actual).__name__}"
    truths = [p["answer"] for p in inputs["problems"]]
    for key in ("greedy", "voted"):
        if list(actual[key]) != list(expected[key]):
            mine, theirs = glue.accuracy(actual[key], truths), glue.accuracy(expected[key], truths)
            what = "greedy answers" if key == "greedy" else f"votes of {inputs['n']} samples"
            return (
                f"your {what} over the toy reasoner differ from the reference's (right on "
                f"{mine:.0%}, the reference on {theirs:.0%}): run `pytest exercises/checkpoint_5`"
                " and `ladder check cot`"
            )
    return None


def question_inputs(seed):
    """Sixteen new questions about the shipped world, with scripts that write lookups in odd
    case and spacing, misname a tool once and recover, and compute with the calculator."""
    data = glue.load_data()
    knowledge, rng = data["knowledge"], random.Random(seed)
    towns = sorted({t.split(" of ", 1)[1] for t in knowledge if t.startswith("population of ")})
    questions = []
    for i in range(16):
        a, b = rng.sample(towns, 2)
        if i % 4 == 0:
            questions.append(
                {
                    "question": f"What is the combined elevation of {a} and {b}, in metres?",
                    "script": [
                        f"Thought: {a}.\nAction: lookup\nAction Input:  ELEVATION of {a} in metres",
                        f"Action 2: lookup\nAction Input 2: elevation of {b} in  metres",
                        "Thought: add them.\nAction: calculator\nAction Input: {0} + {1}",
                        "Thought: done.\nFinal Answer: {2}",
                    ],
                }
            )
        elif i % 4 == 1:
            questions.append(
                {
                    "question": f"How many times as many people live in {a} as in {b}?",
                    "script": [
                        f"Thought: I search.\nAction: search\nAction Input: population of {a}",
                        f"Thought: lookup.\nAction: lookup\nAction Input: population of {a}",
                        f"Action: lookup\nAction Input: 'population of {b}'",
                        "Thought: divide.\nAction: calculator\nAction Input: {1} / {2}",
                        "Thought: done.\nFinal Answer: {3}",
                    ],
                }
            )
        elif i % 4 == 2:
            questions.append(
                {
                    "question": f"How many years after its twin town was {a} founded?",
                    "script": [
                        f"Action: lookup\nAction Input: twin town of {a}",
                        f"Action: lookup\nAction Input: founding year of {a}",
                        "Action: lookup\nAction Input: founding year of {0}",
                        "Thought: the difference.\nAction: calculator\nAction Input: {1} - ({2})",
                        "Final Answer: {3}",
                    ],
                }
            )
        else:
            questions.append(
                {
                    "question": f"What is the population of {a} per metre of its elevation?",
                    "script": [
                        f"Thought: two facts.\nAction: lookup\nAction Input: population of {a}",
                        f"Action: lookup\nAction Input: elevation of {a} in metres",
                        "Action: calculator\nAction Input: {0} / {1}",
                        "Thought: I now know it.\nFinal Answer: {2}\nObservation: 12",
                    ],
                }
            )
    return {"spec": SPEC.read_text(), "knowledge": knowledge, "questions": questions}


def compare_answers(actual, expected, inputs):
    actual = list(actual) if isinstance(actual, list | tuple) else []
    if len(actual) != len(expected):
        return f"expected {len(expected)} answers, got {len(actual)}"
    wrong = [
        q["question"]
        for q, a, e in zip(inputs["questions"], actual, expected, strict=True)
        if a != e
    ]
    if wrong:
        return (
            f"your ReAct loop answers {len(expected) - len(wrong)} of {len(expected)} new "
            f"questions; the bar is all of them (first wrong: {wrong[0]!r}): run `pytest "
            "exercises/checkpoint_5` and `ladder check react`"
        )
    return None


CASES = [
    Case(
        "your prompt, extractor and vote over the toy reasoner, with 3 exemplars and votes of 9",
        call=votes,
        inputs=vote_inputs,
        points=3,
        seed=2**37 + 5,
        compare=compare_votes,
    ),
    Case(
        "your ReAct loop and tools answer 16 new multi-step questions",
        call=episodes,
        inputs=question_inputs,
        points=3,
        seed=907,
        compare=compare_answers,
    ),
]
