"""Write tinytales.txt: short children's stories from a seeded probabilistic grammar.

    python data/corpus/make_corpus.py            # writes data/corpus/tinytales.txt
    python data/corpus/make_corpus.py --check    # fails if the committed file differs

The stories are made by the kit, not collected, so the corpus is free of licence questions (MIT,
like the rest of the kit). Each story has a hero (a child or an animal with a name), a place, a
friend and one of nine plots (a lost thing found, a storm, a gift, a race, baking, a fear
overcome, a trip, a quarrel mended, counting), told in plain sentences with dialogue. The hero's
name, kind and pronoun stay the same through a story, so a small language model can learn to keep
track of them; half the names are invented from syllables, so that the model must copy them from
earlier in the story and byte-pair encoding meets thousands of distinct words. A few names and
words carry accents (Zoë, José, café, naïve) so that multi-byte UTF-8 appears. Stories end with a
line "<|endoftext|>", the document separator GPT-2 used.

Only `random.Random(seed)` with `choice`, `randint` and `random` is used: the output is the same on
every platform and every Python 3 version from 3.2 on.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

SEED = 2016  # the year of Sennrich, Haddow and Birch's BPE paper
TARGET_BYTES = 1_000_000  # stop before the file would grow past this
SEPARATOR = "<|endoftext|>"
HERE = Path(__file__).resolve().parent
OUT = HERE / "tinytales.txt"


def words(text: str, sep: str | None = None) -> list[str]:
    return text.split(sep)


GIRLS = words(
    "Lily Mia Zoë Anna Ella Rosa Nora Ivy Maya Lucy Sara Emma Ruby Hana Leah Tess Amara Chloe "
    "Daisy Fiona Greta Iris Jade Kira Luna Mila Nina Olive Pia Quinn Renée Sofia Talia Una Vera "
    "Willa Yara"
)
BOYS = words(
    "Tom Ben Leo Max Sam Finn Jack Omar Theo Eli Noah Hugo Ravi Kai Luca Ali Milo Oscar Pablo "
    "José Arlo Bruno Caleb Dario Ezra Felix Gus Ivan Jonah Kofi Liam Nico Otto Rafael Silas "
    "Tobias Victor Wes Yusuf Zane"
)
ONSETS = words("b d f g h j k l m n p r s t v w z br pl st tr ch sh th")
VOWELS = words("a e i o u a e i o ai ee oo ia")
CODAS = ["", "", "", "", "n", "l", "r", "s", "m", "x"]
ANIMALS = words(
    "cat dog bunny fox bear mouse owl duck frog pig squirrel hedgehog turtle lamb goat puppy "
    "kitten deer raccoon otter badger beaver chick pony"
)
KIND_ADJ = words(
    "little small happy kind brave curious shy gentle clever cheerful sleepy tiny friendly "
    "playful quiet busy silly proud"
)
THING_ADJ = words(
    "red blue green yellow shiny soft round big little old new striped bright golden tiny "
    "wooden spotted purple silver"
)
THINGS = words(
    "ball kite hat book drum boat key bell shell box cup spoon scarf rock leaf feather star "
    "button coin sock blanket wagon trumpet crayon teddy marble whistle basket ribbon lantern"
)
PLACES = {  # place -> (where one lives there, a spot in it)
    "park": ("in a house next to the park", "by the pond"),
    "forest": ("in a hollow log in the forest", "under the tall trees"),
    "garden": ("in a little house with a big garden", "between the flowers"),
    "village": ("in a small village", "near the old well"),
    "farm": ("on a farm", "behind the red barn"),
    "beach": ("in a blue house near the beach", "next to the waves"),
    "meadow": ("at the edge of a meadow", "in the long grass"),
    "town": ("in a busy town", "on a busy street"),
    "hill": ("on a green hill", "at the top of the path"),
    "river": ("by a wide river", "on the muddy bank"),
    "school": ("near a school", "in the sunny yard"),
    "café": ("above a café", "at a table by the window"),
    "lake": ("by a quiet lake", "on the wooden dock"),
    "castle": ("in an old castle", "in the great hall"),
    "zoo": ("close to the zoo", "by the monkey house"),
    "island": ("on a tiny island", "under the palm trees"),
}
HIDING = words(
    "under the bed|behind the door|in the tall grass|under a pile of leaves|inside an old boot|"
    "on top of the shelf|behind the big rock|in the toy box|under the bench|next to the fence|"
    "in a muddy puddle|beside the garden gate",
    "|",
)
SHELTERS = words("to a little cave|under a big tree|into the old barn|under the bridge", "|")
LIKES = words(
    "play with {pos} ball|draw pictures|sing songs|climb trees|jump in puddles|read books|"
    "dance in the sun|look at the clouds|pick flowers|build with blocks|run fast|"
    "count the stars|splash in the water|help {pos} mom|help {pos} dad|make mud pies|"
    "hum a little tune|watch the birds",
    "|",
)
FOODS = words(
    "apple cake|cookies|pancakes|a berry pie|muffins|soup|bread|a carrot cake|lemon tarts|"
    "a plum pie|honey buns|banana bread",
    "|",
)
WEATHER = words(
    "the sun was warm|the sky was blue|a soft wind was blowing|it was a bright morning|"
    "the air smelled of rain|white clouds floated by|the birds were singing|it was a cold day",
    "|",
)
FEELINGS_GOOD = words("happy glad proud excited joyful calm thankful")
FEELINGS_BAD = words("sad worried scared upset lonely grumpy nervous")
FEARS = words("the dark|the big dog|thunder|deep water|the tall slide|the old bridge|bees", "|")
COUNTED = words("shells stars ducks apples stones birds flowers")
ENDINGS = [
    "From that day on, {a} and {b} were the best of friends.",
    "{a} smiled all the way home.",
    "That night, {a} fell asleep with a big smile.",
    "And {a} never forgot that day.",
    "{a} learned that it is good to share.",
    "{a} learned that friends help each other.",
    "It was the best day ever.",
    "{a} felt {good} and warm inside.",
    "The end.",
]


class Character:
    """A named child or animal, with the pronouns the story must keep using."""

    def __init__(self, rng: random.Random, taken: set[str]) -> None:
        girl = rng.random() < 0.5
        self.name = rng.choice([n for n in (GIRLS if girl else BOYS) if n not in taken])
        if rng.random() < 0.5:  # a made-up name: a model must copy it from earlier in the story
            self.name = invented_name(rng, girl)
        taken.add(self.name)
        self.he, self.him, self.his = ("she", "her", "her") if girl else ("he", "him", "his")
        self.kind = rng.choice(ANIMALS) if rng.random() < 0.6 else ("girl" if girl else "boy")
        self.adj = rng.choice(KIND_ADJ)

    def called(self) -> str:
        return self.name if self.kind in ("girl", "boy") else f"{self.name} the {self.kind}"

    def intro(self) -> str:
        article = "an" if self.adj[0] in "aeiou" else "a"
        return f"{article} {self.adj} {self.kind} named {self.name}"


def invented_name(rng: random.Random, girl: bool) -> str:
    syllables = [rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(rng.choice((1, 2, 2, 3)))]
    ending = rng.choice(("a", "ie", "elle", "i")) if girl else rng.choice(CODAS)
    return (("".join(syllables) + ending).replace("aa", "a").replace("ii", "i")).capitalize()


def cap(s: str) -> str:
    return s[0].upper() + s[1:]


def thing(rng: random.Random) -> str:
    return f"{rng.choice(THING_ADJ)} {rng.choice(THINGS)}"


def said(rng: random.Random, who: str, words: str, question: bool = False) -> str:
    verb = rng.choice(("asked", "said") if question else ("said", "cried", "shouted", "whispered"))
    if rng.random() < 0.3:
        return f'{who} {verb}, "{words}"'
    if words.endswith("."):  # "Let's go," said Tom.
        words = words[:-1] + ","
    return f'"{words}" {verb} {who}.'


def plot_lost(rng, h, f, place, spot):
    t = thing(rng)
    where = rng.choice(HIDING)
    return [
        f"{h.name} had a {t}. {cap(h.he)} loved it very much.",
        f"One day, {h.name} went to the {place} to play. When {h.he} came home, "
        f"the {t.split()[1]} was gone!",
        f"{h.name} felt {rng.choice(FEELINGS_BAD)}. {cap(h.he)} looked everywhere.",
        said(rng, h.name, f"Where is my {t.split()[1]}?", question=True),
        f"{f.called()} saw that {h.name} was {rng.choice(FEELINGS_BAD)}.",
        said(rng, f.name, "I will help you look!"),
        f"They looked {spot}. They looked {rng.choice(HIDING)}. At last, {f.name} found "
        f"the {t.split()[1]} {where}.",
        said(rng, h.name, f"Thank you, {f.name}!"),
        f"{h.name} gave {f.name} a big hug.",
    ]


def plot_storm(rng, h, f, place, spot):
    return [
        f"One day, {h.name} and {f.name} were playing in the {place}. Then the sky turned dark.",
        "A big storm was coming! The wind blew and the rain fell.",
        said(rng, f.name, "I am scared!"),
        f"{h.name} took {f.name} by the hand. "
        + said(rng, h.name, "Follow me. I know a dry place."),
        f"They ran {rng.choice(SHELTERS)} and waited. They told stories until the rain stopped.",
        f"When the sun came out, they saw a rainbow over the {place}.",
        said(rng, f.name, "You were so brave, " + h.name + "."),
    ]


def plot_gift(rng, h, f, place, spot):
    t = thing(rng)
    return [
        f"It was {f.name}'s birthday. {h.name} wanted to give {f.name} a gift.",
        f"But {h.name} did not have any money. {cap(h.he)} thought and thought.",
        f"Then {h.he} had an idea. {cap(h.he)} made a {t} all by {h.him}self.",
        f"{h.name} took the {t.split()[1]} to the {place} and gave it to {f.name}.",
        said(rng, f.name, f"I love it! It is the best {t.split()[1]} in the world!"),
        f"{h.name} felt {rng.choice(FEELINGS_GOOD)}. A gift made with love is the best gift.",
    ]


def plot_race(rng, h, f, place, spot):
    return [
        f"{h.name} and {f.name} wanted to have a race in the {place}.",
        said(rng, f.name, "Ready, set, go!"),
        f"They ran as fast as they could. {h.name} was in front, but then {h.he} saw "
        f"a {rng.choice(ANIMALS)} that was stuck {rng.choice(HIDING)}.",
        f"{h.name} stopped to help it. {f.name} stopped too.",
        "Together they helped the little animal get free. It said thank you and ran away.",
        said(rng, h.name, "Who won the race?", question=True),
        said(rng, f.name, "We both won, because we helped."),
    ]


def plot_baking(rng, h, f, place, spot):
    food = rng.choice(FOODS)
    return [
        f"One morning, {h.name} wanted to make {food}.",
        f"{cap(h.he)} got flour, eggs, milk and sugar. {f.name} came to help.",
        f"They mixed and stirred. Oops! {f.name} spilled the flour, and the kitchen was all white.",
        f"{h.name} laughed. " + said(rng, h.name, "It is okay. We can clean it up."),
        f"They cleaned the kitchen and put the {food.split()[-1]} in the oven.",
        f"Soon the house smelled so good. They shared the {food.split()[-1]} with everyone "
        f"in the {place}.",
        said(rng, f.name, "This is yummy!"),
    ]


def plot_fear(rng, h, f, place, spot):
    fear = rng.choice(FEARS)
    return [
        f"{h.name} was afraid of {fear}. Every time {h.he} thought about it, {h.he} felt "
        f"{rng.choice(FEELINGS_BAD)}.",
        said(rng, f.name, f"Why are you {rng.choice(FEELINGS_BAD)}?", question=True),
        said(rng, h.name, f"I am afraid of {fear}."),
        f"{f.name} held {h.his} hand. "
        + said(rng, f.name, "I will stay with you. Let's try together."),
        f"{h.name} took a deep breath. {cap(h.he)} was scared, but {h.he} tried anyway.",
        f"It was not so bad after all! {h.name} felt {rng.choice(FEELINGS_GOOD)}.",
        said(rng, h.name, "I did it! I am not afraid anymore."),
    ]


def plot_trip(rng, h, f, place, spot):
    other = rng.choice([p for p in PLACES if p != place])
    return [
        f"One day, {h.name} and {h.his} friend {f.name} went on a trip to the {other}.",
        f"They packed a basket with {rng.choice(FOODS)} and a {thing(rng)}.",
        f"On the way, they saw a {rng.choice(ANIMALS)}, a {rng.choice(ANIMALS)} and "
        f"a big {rng.choice(THING_ADJ)} flower.",
        f"At the {other}, {rng.choice(WEATHER)}. They sat down {PLACES[other][1]} and ate.",
        said(rng, f.name, "Can we come back tomorrow?", question=True),
        said(rng, h.name, "Yes! Let's come back every day."),
    ]


def plot_quarrel(rng, h, f, place, spot):
    t = thing(rng)
    return [
        f"{h.name} and {f.name} both wanted to play with the same {t}.",
        said(rng, h.name, "It is mine!"),
        said(rng, f.name, "No, it is mine!"),
        f"They pulled and pulled, and the {t.split()[1]} fell in the mud. Now it was dirty, "
        f"and they both felt {rng.choice(FEELINGS_BAD)}.",
        f"{h.name} thought for a moment. " + said(rng, h.name, "I am sorry. Let's take turns."),
        f"{f.name} smiled. They washed the {t.split()[1]} and played with it together.",
        "Playing together was much more fun than playing alone.",
    ]


def plot_count(rng, h, f, place, spot):
    n, m = rng.randint(3, 99), rng.randint(2, 12)
    kind = rng.choice(COUNTED)
    return [
        f"{h.name} and {f.name} went to the {place} to count {kind}.",
        f"{h.name} counted {n} {kind} {spot}. {f.name} counted {m} more.",
        said(rng, f.name, "How many is that?", question=True),
        f"{h.name} thought hard. " + said(rng, h.name, f"That makes {n + m} {kind}!"),
        f"They were so {rng.choice(FEELINGS_GOOD)} that they counted them all again.",
    ]


PLOTS = (
    plot_lost,
    plot_storm,
    plot_gift,
    plot_race,
    plot_baking,
    plot_fear,
    plot_trip,
    plot_quarrel,
    plot_count,
)


def story(rng: random.Random) -> str:
    taken: set[str] = set()
    h, f = Character(rng, taken), Character(rng, taken)
    place = rng.choice(list(PLACES))
    home, spot = PLACES[place]
    opening = rng.choice(("Once upon a time", "One day", "Long ago", "Once"))
    like = rng.choice(LIKES).format(pos=h.his)
    first = [
        f"{opening}, there was {h.intro()}. {h.name} lived {home}.",
        f"{cap(h.he)} liked to {like}. {cap(rng.choice(WEATHER))}.",
    ]
    if rng.random() < 0.5:
        first.append(f"{h.name} had a friend, {f.intro()}.")
    sentences = first + rng.choice(PLOTS)(rng, h, f, place, spot)
    end = rng.choice(ENDINGS).format(a=h.name, b=f.name, good=rng.choice(FEELINGS_GOOD))
    if rng.random() < 0.05:  # a rare word with a diaeresis keeps multi-byte UTF-8 in the mix
        sentences.append(f"{f.name} said it was naïve to be afraid, and they laughed.")
    return " ".join([*sentences, end])


def make(seed: int = SEED, target_bytes: int = TARGET_BYTES) -> str:
    rng = random.Random(seed)
    parts, size = [], 0
    while True:
        block = story(rng) + "\n" + SEPARATOR + "\n"
        n = len(block.encode("utf-8"))
        if size + n > target_bytes:
            return "".join(parts)
        parts.append(block)
        size += n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed file differs")
    args = parser.parse_args()
    text = make()
    if args.check:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print(
            "tinytales.txt is up to date" if same else "tinytales.txt differs from make_corpus.py"
        )
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {OUT} ({len(text.encode('utf-8'))} bytes, {text.count(SEPARATOR)} stories)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
